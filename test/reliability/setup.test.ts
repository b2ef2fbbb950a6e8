/**
 * Limits are checked together before any client is served, and a failure while a connection is
 * being set up never leaks its fd.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { createDevice } from '../../src/devices/index.js';
import { closeFd, openFdCount, socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { messageSizeFor, resolveLimits, type ServerLimits, VfioUserServer } from '../../src/server/index.js';
import { repoRoot } from '../harness/index.js';

const errnoOf = (fn: () => unknown): number => {
  try {
    fn();
    return 0;
  } catch (e) {
    return (e as { errno?: number }).errno ?? -1;
  }
};

describe('limits are validated together', () => {
  const cases: [string, Partial<ServerLimits>, number][] = [
    ['defaults', {}, 0],
    [
      'largest transfer whose derived message size fits',
      { maxDataXferSize: 0xffff_ffff - messageSizeFor(0) },
      0,
    ],
    ['transfer size 2^32-1 derives 2^32+31', { maxDataXferSize: 0xffff_ffff }, Errno.EINVAL],
    [
      'transfer size 2^32-1 with a message size given',
      { maxDataXferSize: 0xffff_ffff, maxMessageSize: 1 << 20 },
      0,
    ],
    ['message size 2^32', { maxMessageSize: 2 ** 32 }, Errno.EINVAL],
    ['message size below the header', { maxMessageSize: 15 }, Errno.EINVAL],
    ['zero fds', { maxMsgFds: 0 }, Errno.EINVAL],
    ['fractional', { maxPendingRequests: 1.5 }, Errno.EINVAL],
  ];
  for (const [name, l, errno] of cases)
    it(name, () => {
      assert.equal(
        errnoOf(() => resolveLimits(l)),
        errno,
      );
    });

  it('vfio-ts serve --max-data-xfer-size 4294967295 is refused before listening', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-limits-'));
    try {
      const r = spawnSync(
        process.execPath,
        [
          join(repoRoot(), 'dist/src/cli/main.js'),
          'serve',
          '--device',
          'edu',
          '--socket',
          join(dir, 's'),
          '--max-data-xfer-size',
          '4294967295',
        ],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /message size 4294967327/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('connection setup owns the fd', () => {
  it('a SocketChannel that cannot be built closes the adopted fd (no leak per connect)', () => {
    const device = createDevice('edu', { env: nativeEnvironment() });
    const server = new VfioUserServer(device, { log: () => {} });
    // Bypass validation to reach the setup failure the old CLI reached on every connection.
    (server as { limits: ServerLimits }).limits = { ...server.limits, maxMessageSize: 2 ** 32 + 31 };
    const baseline = openFdCount();
    for (let i = 0; i < 20; i++) {
      const [a, b] = socketPair();
      assert.equal(
        errnoOf(() => server.adopt(b)),
        Errno.EINVAL,
      );
      closeFd(a);
    }
    assert.equal(openFdCount(), baseline, 'every adopted fd closed');
    assert.equal(server.client, undefined);
    server.stop();
    device.close();
  });
});
