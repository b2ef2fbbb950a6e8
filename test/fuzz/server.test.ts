/**
 * Bounded run of the server fuzzer (test/fuzz/server.ts) for CI: a live server over a
 * socketpair, fixed seeds, a count of batches (no time assertions).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { createDevice } from '../../src/devices/index.js';
import { closeFd, eventfdCreate, openFdCount, socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { type ServerLimits, type ThreadLoopMode, VfioUserServer } from '../../src/server/index.js';
import { RawClient } from './client.js';
import { summary } from './prng.js';
import { fuzzServer, u32 } from './server.js';

describe('vfio-user server fuzz', () => {
  const small = {
    maxPendingBytes: 8192,
    maxPendingRequests: 4,
    maxDataXferSize: 4096,
    maxMsgFds: 2,
    maxDmaMaps: 2,
  };
  // Tracing (verbose) turns the fast path off: the non-verbose runs fuzz it. The thread runs put
  // the server in a worker with its own loop (ThreadedServer), as `vfio-ts serve` does.
  const runs: [
    number,
    'edu' | 'ivshmem',
    Partial<ServerLimits>,
    { verbose?: boolean; thread?: ThreadLoopMode },
  ][] = [
    [21, 'edu', {}, {}],
    [22, 'ivshmem', {}, {}],
    [23, 'edu', {}, { verbose: false }],
    [24, 'ivshmem', small, {}],
    [25, 'edu', {}, { verbose: false, thread: 'blocking' }],
    [26, 'ivshmem', small, { verbose: false, thread: 'poll' }],
  ];
  for (const [seed, device, limits, how] of runs) {
    const named = [
      Object.keys(limits).length ? ' with small limits' : '',
      how.verbose === false ? ', fast path' : '',
      how.thread ? `, in a worker (${how.thread} loop)` : '',
    ].join('');
    it(`${device}${named}, seed ${seed}: answers good requests after every batch, no fd leaks`, async () => {
      const s = await fuzzServer({ seed, batches: 150, device, limits, ...how });
      console.log(summary(s));
      assert.deepEqual(s.crashes, [], s.crashes.join('\n'));
      assert.deepEqual(s.leaks, []);
      assert.ok((s.outcomes.get('check-ok') ?? 0) > 20, summary(s));
    });
  }
});

describe('bugs the server fuzzer found', () => {
  const rig = () => {
    const device = createDevice('edu', { env: nativeEnvironment() });
    const server = new VfioUserServer(device);
    const connect = () => {
      const [a, b] = socketPair();
      server.adopt(b);
      return new RawClient(a);
    };
    const close = () => {
      server.stop();
      device.close();
    };
    return { device, server, connect, close };
  };

  it('SET_IRQS DATA_EVENTFD without fds and a huge count is EINVAL before any allocation', async () => {
    const r = rig();
    const c = r.connect();
    await c.negotiate();
    for (const count of [0x40000000, 0xffffffff, 2]) {
      const reply = await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 1, 0, count));
      assert.equal(reply?.errno, Errno.EINVAL, `count ${count}`);
    }
    const ok = await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
    assert.equal(ok?.errno, 0);
    c.close();
    await r.server.idle();
    r.close();
  });

  it('ERR and REQ eventfds of a client are released when it goes', async () => {
    const r = rig();
    const before = openFdCount();
    const c = r.connect();
    await c.negotiate();
    const efd = eventfdCreate();
    for (const index of [3, 4]) {
      const reply = await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, index, 0, 1), [efd]);
      assert.equal(reply?.errno, 0, `index ${index}`);
    }
    closeFd(efd);
    c.close();
    await r.server.idle();
    assert.equal(openFdCount(), before);
    r.close();
  });
});
