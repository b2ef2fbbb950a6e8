/**
 * serveDevice (src/server/serve-device.ts), the library call under `vfio-ts serve`: a definition
 * served at a path and driven by our client, the path claimed (stale replaced, live, non-socket
 * and missing-directory refused with their errno), stop() removing only our own socket, and a
 * device the caller built left open; a DeviceModule built and served in a worker with each
 * thread loop, or in this thread with libuv, and what a worker cannot take refused. Signals are
 * covered through the command line (serve-cli.test.ts), which runs on it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserClient } from '../../src/client/index.js';
import { createDevice } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { closeFd, unixConnect, unixListen } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import {
  claimSocketPath,
  type LoopMode,
  serveDevice,
  ThreadedServer,
  VfioUserServer,
} from '../../src/server/index.js';
import echo from './echo-device.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-serve-device-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ECHO_MODULE = { module: new URL('./echo-device.js', import.meta.url) };

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
      errnoOf(() => served.device!.readRegionInto(0, 0, new Uint8Array(4))).errno,
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

/** A client writes and reads the echo register; `[value, 0x1234, built in the main thread]`. */
async function drive(socket: string): Promise<number[]> {
  const dev = new VfioDevice(await VfioUserClient.connect(socket));
  try {
    await dev.write32(0, 0, 0xcafe);
    return [await dev.read32(0, 0), await dev.read32(0, 4), await dev.read32(0, 8)];
  } finally {
    await dev.close();
  }
}

describe('serveDevice: where the device runs', () => {
  const cases: [string, LoopMode | undefined, 'worker' | 'this thread'][] = [
    ['blocking (the default for a module)', undefined, 'worker'],
    ['poll', 'poll', 'worker'],
    ['libuv', 'libuv', 'this thread'],
  ];
  for (const [label, loop, where] of cases)
    test(`a DeviceModule, loop ${label}: built and served in ${where}`, async () => {
      const socket = join(dir, `module-${label.split(' ')[0]}.sock`);
      const log: string[] = [];
      const served = await serveDevice(ECHO_MODULE, {
        socket,
        signals: false,
        log: (l) => log.push(l),
        ...(loop ? { loop } : {}),
        pollIdleMs: 20,
      });
      try {
        assert.equal(served.name, 'echo');
        assert.equal(served.server instanceof ThreadedServer, where === 'worker');
        assert.equal(served.device === undefined, where === 'worker', 'a device only where it lives');
        assert.deepEqual(await drive(socket), [0xcafe, 0x1234, where === 'worker' ? 0 : 1]);
        await served.server.idle();
        assert.match(log.join('\n'), /client 1 connected/, 'the log, relayed from a worker too');
      } finally {
        await served.stop();
      }
      assert.throws(() => statSync(socket), 'socket removed');
    });

  test('a definition with a thread loop runs it in this thread, as ServerOptions.loop does', async () => {
    const socket = join(dir, 'definition-blocking.sock');
    const served = await serveDevice(echo, { socket, signals: false, loop: 'blocking' });
    try {
      assert.ok(served.server instanceof VfioUserServer);
      assert.deepEqual(await drive(socket), [0xcafe, 0x1234, 1]);
    } finally {
      await served.stop();
    }
  });

  test('a worker refuses what cannot cross to it; a module that fails there rejects with its errno; no socket left', async () => {
    const socket = join(dir, 'refused.sock');
    const refusals: [
      Parameters<typeof serveDevice>[0],
      Partial<Parameters<typeof serveDevice>[1]>,
      number,
      RegExp,
    ][] = [
      [ECHO_MODULE, { device: { env: nativeEnvironment() } }, Errno.EINVAL, /native environment/],
      [ECHO_MODULE, { events: {} }, Errno.EINVAL, /events and stopFlag/],
      // Device options reach the worker: these are refused there, by the core.
      [ECHO_MODULE, { device: { offsetBits: 8 } }, Errno.EINVAL, /offset space: EINVAL \(width 8 bits\)/],
      [{ module: join(dir, 'missing.js') }, {}, Errno.ENOENT, /missing\.js: ENOENT \(cannot load it/],
      [{ ...ECHO_MODULE, export: 'nope' }, {}, Errno.EINVAL, /no export nope/],
      [{ module: 'echo-device.js' }, {}, Errno.EINVAL, /a URL or an absolute path/],
      [{ ...ECHO_MODULE, export: 'default', arg: () => 0 }, {}, Errno.EINVAL, /must be plain data/],
    ];
    for (const [device, extra, errno, message] of refusals) {
      await assert.rejects(serveDevice(device, { socket, signals: false, ...extra }), (e: unknown) => {
        assert.ok(e instanceof VfioError, String(e));
        assert.equal(e.errno, errno, e.message);
        assert.match(e.message, message);
        return true;
      });
      assert.throws(() => statSync(socket), 'no socket left behind');
    }
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
