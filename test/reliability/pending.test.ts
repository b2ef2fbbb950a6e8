/**
 * Back-pressure counts requests and fds too, not bytes only: every queued DMA_BUF reply holds a
 * dma-buf fd until it is sent, so a client flooding DMA_BUF without reading its replies must
 * not drive the server to EMFILE. Reading pauses at maxPendingRequests queued replies (or fds
 * held by them) and resumes as they drain; every request is answered once the client reads.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET } from '../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { createDevice } from '../../src/devices/index.js';
import { closeFd, openFdCount, sendMsg, socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { RawClient } from '../fuzz/client.js';
import { concat, message, u32, u64 } from '../fuzz/server.js';

const tick = () => new Promise((r) => setTimeout(r, 2));

/** vfio_device_feature + vfio_device_feature_dma_buf (BAR2, O_RDWR, UC, 1 range) + the range. */
const dmaBuf = () =>
  concat(
    u32(8 + 16 + 16, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF),
    u32(2, 2, 0, 1),
    u64(0n),
    u64(0x1000n),
  );

describe('back-pressure: maxPendingRequests', () => {
  it('a DMA_BUF flood without reading keeps the server fd count bounded; all replies arrive', async () => {
    const maxPendingRequests = 32;
    const device = createDevice('ivshmem', { env: nativeEnvironment() });
    const log: string[] = [];
    const server = new VfioUserServer(device, { log: (l) => log.push(l), limits: { maxPendingRequests } });
    const [a, b] = socketPair();
    server.adopt(b);
    const c = new RawClient(a);
    await c.negotiate();
    const baseline = openFdCount();
    const reqs: Uint8Array[] = [];
    for (let i = 0; i < 16; i++) reqs.push(message(i, C.DEVICE_FEATURE, dmaBuf()));
    const burst = concat(...reqs);
    let sent = 0;
    let worst = 0;
    for (let idle = 0; idle < 50 && sent < 200_000; ) {
      const n = sendMsg(a, [burst], []);
      if (n === null) {
        idle++;
        await tick();
      } else {
        assert.equal(n, burst.length, 'whole bursts (the socket takes them or not)');
        sent += 16;
        idle = 0;
        await new Promise((r) => setImmediate(r));
      }
      worst = Math.max(worst, openFdCount() - baseline);
    }
    assert.ok(server.client, 'the client is still connected');
    assert.ok(sent > 4 * maxPendingRequests, `flooded ${sent} requests`);
    assert.ok(
      worst <= maxPendingRequests,
      `the server held ${worst} fds (maxPendingRequests ${maxPendingRequests})`,
    );
    // Now read: every request gets its reply with its dma-buf fd.
    let got = 0;
    while (got < sent) {
      const f = await c.next(5000);
      assert.ok(f, `reply ${got} of ${sent}`);
      assert.equal(f.header.error, 0);
      assert.equal(f.fds.length, 1);
      for (const fd of f.fds) closeFd(fd);
      got++;
    }
    assert.equal(openFdCount(), baseline, 'no fd held once everything is read');
    assert.equal((await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0, 'still served');
    assert.deepEqual(
      log.filter((l) => /internal error|disconnected/.test(l)),
      [],
    );
    c.close();
    await server.idle();
    server.stop();
    device.close();
  });
});
