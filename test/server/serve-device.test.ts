/**
 * serveDevice (src/server/serve-device.ts), the library call under `vfio-ts serve`: a definition
 * served at a path and driven by our client, the path claimed (stale replaced, live, non-socket
 * and missing-directory refused with their errno), stop() removing only our own socket, and a
 * device the caller built left open. Signals are covered through the command line
 * (serve-cli.test.ts), which runs on it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserClient } from '../../src/client/index.js';
import { defineDevice } from '../../src/core/define.js';
import { createDevice } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { closeFd, unixConnect, unixListen } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { claimSocketPath, serveDevice } from '../../src/server/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-serve-device-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A register that reads back what was written, plus 0x1234 at offset 4. */
const echo = defineDevice({
  name: 'echo',
  identity: { vendorId: 0x1b36, deviceId: 0x7e57, classCode: 0xff0000 },
  bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
  state: () => ({ value: 0n }),
  create: ({ state }) => ({
    bars: {
      0: {
        read: (offset) => (offset === 0 ? state.value : offset === 4 ? 0x1234n : 0n),
        write: (offset, _size, v) => {
          if (offset === 0) state.value = v;
        },
      },
    },
  }),
});

function errnoOf(fn: () => unknown): { errno: number; message: string } {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VfioError, String(e));
    return { errno: e.errno, message: e.message };
  }
  return assert.fail('no error');
}

describe('serveDevice', () => {
  test('serves a definition: a client reads and writes its register; stop() closes and removes the socket', async () => {
    const socket = join(dir, 'echo.sock');
    const log: string[] = [];
    const served = await serveDevice(echo, { socket, signals: false, log: (l) => log.push(l) });
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const dev = new VfioDevice(await VfioUserClient.connect(socket));
    await dev.write32(0, 0, 0xcafe);
    assert.equal(await dev.read32(0, 0), 0xcafe);
    assert.equal(await dev.read32(0, 4), 0x1234);
    await dev.close();
    await served.server.idle();
    await served.stop();
    assert.equal(await served.stopped, 'stopped');
    assert.throws(() => statSync(socket), 'socket removed');
    assert.match(log.join('\n'), /client 1 connected/);
    assert.equal(
      errnoOf(() => served.device.readRegion(0, 0n, 4)).errno,
      Errno.EBADF,
      'the device serveDevice built is closed',
    );
  });

  test('a device the caller built stays open after stop()', async () => {
    const socket = join(dir, 'own.sock');
    const device = createDevice('edu', { env: nativeEnvironment() });
    const served = await serveDevice(device, { socket, signals: false });
    await served.stop();
    assert.equal(device.readRegion(0, 0n, 4).length, 4);
    device.close();
  });

  test('a path another server took over is left alone by stop()', async () => {
    const socket = join(dir, 'taken.sock');
    const served = await serveDevice(echo, { socket, signals: false });
    rmSync(socket);
    const theirs = unixListen(socket);
    try {
      await served.stop();
      closeFd(unixConnect(socket)); // still theirs, still listening
    } finally {
      closeFd(theirs);
      rmSync(socket, { force: true });
    }
  });

  test('a definition refused by the device options fails before anything listens', async () => {
    const socket = join(dir, 'bad-options.sock');
    await assert.rejects(
      serveDevice(echo, { socket, signals: false, device: { offsetBits: 8 } }),
      (e) => e instanceof VfioError,
    );
    assert.throws(() => statSync(socket), 'no socket left behind');
  });
});

describe('claimSocketPath', () => {
  test('a stale socket is removed; nothing there is fine', () => {
    const stale = join(dir, 'stale.sock');
    closeFd(unixListen(stale)); // bound, nobody listens: ECONNREFUSED
    claimSocketPath(stale);
    assert.throws(() => statSync(stale));
    claimSocketPath(stale);
  });
  test('a live socket is EADDRINUSE, a file EEXIST, a missing directory ENOENT, a file for a directory ENOTDIR; each names the path', () => {
    const live = join(dir, 'live.sock');
    const fd = unixListen(live);
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    try {
      for (const [path, errno, want] of [
        [live, Errno.EADDRINUSE, /live\.sock: EADDRINUSE \(a live socket: another server answers there\)$/],
        [file, Errno.EEXIST, /plain: EEXIST \(exists and is not a socket; refusing to replace it\)$/],
        [
          join(dir, 'nope', 'x.sock'),
          Errno.ENOENT,
          /nope\/x\.sock: ENOENT \(cannot create the socket: directory \S+nope does not exist\)$/,
        ],
        [
          join(file, 'x.sock'),
          Errno.ENOTDIR,
          /plain\/x\.sock: ENOTDIR \(cannot create the socket: \S+plain is not a directory\)$/,
        ],
      ] as const) {
        const e = errnoOf(() => claimSocketPath(path));
        assert.equal(e.errno, errno, e.message);
        assert.match(e.message, want);
      }
      assert.equal(statSync(live).isSocket(), true, 'the live socket is left alone');
    } finally {
      closeFd(fd);
    }
  });
});
