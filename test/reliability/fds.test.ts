/**
 * fds held for a message still arriving are capped at max_msg_fds: a client that sends a big
 * header and then trickles 1-byte sendmsgs carrying 253 fds each must not drive the server to
 * its fd limit. Counted in /proc/self/fd (server and client share this process; the client
 * holds one memfd throughout).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { createDevice } from '../../src/devices/index.js';
import {
  closeFd,
  MAX_FDS_PER_MSG,
  memfdCreate,
  openFdCount,
  sendMsg,
  socketPair,
} from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { MessageFramer } from '../../src/wire/vfio-user.js';
import { RawClient } from '../fuzz/client.js';
import { u32 } from '../fuzz/server.js';

const tick = () => new Promise((r) => setTimeout(r, 2));

describe('fds of a half-received message', () => {
  it('MessageFramer keeps maxFds for the message in flight and hands the rest out at once', () => {
    const fr = new MessageFramer({ maxFds: 3 });
    const hdr = new Uint8Array(16);
    new DataView(hdr.buffer).setUint32(4, 20, true);
    fr.push(hdr.subarray(0, 10), [1, 2]);
    assert.ok('need' in fr.next());
    assert.deepEqual(fr.takeExcessFds(), []);
    fr.push(hdr.subarray(10), [3, 4, 5]);
    assert.ok('need' in fr.next());
    assert.deepEqual(fr.takeExcessFds(), [4, 5]);
    fr.push(new Uint8Array(4), [6]);
    const f = fr.next();
    assert.ok(!('need' in f));
    // The last chunk completed the message: its fds are the caller's to refuse (not held long).
    assert.deepEqual(f.fds, [1, 2, 3, 6]);
    assert.equal(f.droppedFds, 2);
    // A trickle of 1-byte pushes with an fd each: every fd past the cap is handed out at once.
    const big = new Uint8Array(16);
    new DataView(big.buffer).setUint32(4, 16 + 5000, true);
    fr.push(big, [100]);
    assert.ok('need' in fr.next());
    for (let i = 0; i < 5000; i++) {
      fr.push(new Uint8Array(1), [1000 + i]);
      const n = fr.next();
      if (i < 4999) {
        assert.ok('need' in n);
        assert.deepEqual(fr.takeExcessFds(), i < 2 ? [] : [1000 + i]);
      } else {
        assert.ok(!('need' in n));
        assert.deepEqual(n.fds, [100, 1000, 1001, 4999 + 1000]);
        assert.equal(n.droppedFds, 4999 - 2);
      }
    }
    fr.push(hdr, [7, 8, 9, 10]);
    assert.ok('need' in fr.next());
    assert.deepEqual(fr.takeFds(), [10, 7, 8, 9], 'excess first, then the held ones');
  });

  it('are capped at max_msg_fds; the excess is closed at once and the message is EINVAL', async () => {
    const maxMsgFds = 4;
    const device = createDevice('edu', { env: nativeEnvironment() });
    const server = new VfioUserServer(device, { log: () => {}, limits: { maxMsgFds } });
    const mfd = memfdCreate('fd-flood', 4096);
    const [a, b] = socketPair();
    server.adopt(b);
    const c = new RawClient(a);
    await c.negotiate();
    const baseline = openFdCount();
    // DEVICE_GET_INFO claiming a 64 KiB payload: the header, then the body a byte at a time.
    const size = 16 + 65536;
    const hdr = new Uint8Array(16);
    const dv = new DataView(hdr.buffer);
    dv.setUint16(0, 0x777, true);
    dv.setUint16(2, C.DEVICE_GET_INFO, true);
    dv.setUint32(4, size, true);
    c.send(hdr);
    const fds = new Array<number>(MAX_FDS_PER_MSG).fill(mfd);
    let worst = 0;
    const rounds = 40; // 40 x 253 = 10120 fds sent
    for (let i = 0; i < rounds; i++) {
      assert.equal(sendMsg(a, [new Uint8Array(1)], fds), 1);
      await tick();
      worst = Math.max(worst, openFdCount() - baseline);
    }
    assert.ok(worst <= maxMsgFds, `the server held ${worst} fds for one message (max_msg_fds ${maxMsgFds})`);
    // The rest of the body: the message is refused with EINVAL, the stream stays in step.
    let left = size - 16 - rounds;
    const zeros = new Uint8Array(4096);
    while (left > 0) {
      const n = sendMsg(a, [zeros.subarray(0, Math.min(left, zeros.length))], []);
      if (n === null) await tick();
      else left -= n;
    }
    const f = await c.next();
    assert.equal(f?.header.msgId, 0x777);
    assert.equal(f?.header.error, Errno.EINVAL);
    assert.equal(openFdCount(), baseline, 'every fd of the refused message closed');
    assert.equal((await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0, 'still served');
    c.close();
    await server.idle();
    closeFd(mfd);
    server.stop();
    device.close();
  });
});
