/**
 * DMA faults over vfio-user: edu pointed at memory the client never mapped records EFAULT and
 * the server stays up; DMA_UNMAP while an edu DMA waits on the client's DMA_READ reply is safe
 * (the access resolved its range when it started; the next one sees EFAULT); a DMA_MAP larger
 * than its fd is refused, so the device can never touch pages past the file's end (SIGBUS).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import { type EduModel, eduDevice } from '../../src/devices/edu.js';
import { VfioError } from '../../src/errors.js';
import {
  closeFd,
  F_SEAL_SHRINK,
  ftruncate,
  getSeals,
  memfdCreate,
  pwrite,
  socketPair,
} from '../../src/native/index.js';
import { allocateShared, nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { encodeDmaReadReply } from '../../src/wire/vfio-user.js';
import { RawClient } from '../fuzz/client.js';
import { concat, message, u32, u64 } from '../fuzz/server.js';

function rig() {
  const { device, model: edu, state } = eduDevice().instantiate({ env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const [a, b] = socketPair();
  server.adopt(b);
  const c = new RawClient(a);
  return {
    edu,
    state,
    device,
    c,
    async close() {
      c.close();
      await server.idle();
      server.stop();
      device.close();
    },
  };
}

/** The device's last DMA error, read through a call so that assertions do not narrow it. */
const dmaError = (edu: EduModel): unknown => edu.dmaError;
const isErrno = (e: unknown, errno: number) => e instanceof VfioError && e.errno === errno;

const write = (offset: bigint, data: Uint8Array) => concat(u64(offset), u32(0, data.length), data);

async function startDma(c: RawClient, src: bigint, count: number): Promise<void> {
  for (const [reg, v] of [
    [0x80n, u64(src)],
    [0x88n, u64(0x40000n)],
    [0x90n, u64(BigInt(count))],
    [0x98n, u32(1)],
  ] as const)
    assert.equal((await c.call(C.REGION_WRITE, write(reg, v)))?.errno, 0);
}

describe('DMA faults', () => {
  it('edu DMA from an unmapped IOVA: EFAULT recorded in the device, the server answers on', async () => {
    const r = rig();
    await r.c.negotiate();
    await startDma(r.c, 0xdead0000n, 64);
    await r.device.settled();
    assert.ok(
      r.edu.dmaError instanceof VfioError && r.edu.dmaError.errno === Errno.EFAULT,
      String(r.edu.dmaError),
    );
    const cmd = await r.c.call(C.REGION_READ, concat(u64(0x98n), u32(0, 4)));
    assert.equal(
      new DataView(cmd!.payload.buffer, cmd!.payload.byteOffset).getUint32(16, true) & 1,
      0,
      'DMA done',
    );
    assert.equal((await r.c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0);
    await r.close();
  });

  it('DMA_UNMAP while edu waits on the DMA_READ reply: safe; the next DMA there is EFAULT', async () => {
    const r = rig();
    await r.c.negotiate();
    assert.equal(
      (await r.c.call(C.DMA_MAP, concat(u32(32, 3), u64(0n), u64(0x200000n), u64(0x1000n))))?.errno,
      0,
    );
    await startDma(r.c, 0x200000n, 16);
    // The server asks us for the bytes; hold the answer.
    const req = await r.c.next();
    assert.ok(req && req.header.command === C.DMA_READ, 'a DMA_READ request');
    const unmap = concat(u32(24, 0), u64(0x200000n), u64(0x1000n));
    assert.equal((await r.c.call(C.DMA_UNMAP, unmap))?.errno, 0);
    // Now answer (the spec's layout, which a 0.0 client gets too).
    const data = new Uint8Array(16).fill(0xab);
    r.c.send(
      message(
        req.header.msgId,
        C.DMA_READ,
        encodeDmaReadReply({ address: 0x200000n, data }, 'spec'),
        VfioUserFlags.TYPE_REPLY,
      ),
    );
    await r.device.settled();
    assert.equal(dmaError(r.edu), undefined);
    assert.deepEqual(r.state.dmaBuffer.subarray(0, 16), data);
    await startDma(r.c, 0x200000n, 16);
    await r.device.settled();
    assert.ok(isErrno(dmaError(r.edu), Errno.EFAULT), String(dmaError(r.edu)));
    await r.close();
  });

  it('a client that leaves while edu waits on its DMA_READ: the DMA fails, the device is free', async () => {
    const r = rig();
    await r.c.negotiate();
    await r.c.call(C.DMA_MAP, concat(u32(32, 3), u64(0n), u64(0x200000n), u64(0x1000n)));
    await startDma(r.c, 0x200000n, 16);
    assert.equal((await r.c.next())?.header.command, C.DMA_READ);
    await r.close();
    await r.device.settled();
    assert.ok(isErrno(dmaError(r.edu), Errno.ECONNRESET), String(dmaError(r.edu)));
  });

  it('DMA_MAP larger than its fd is EINVAL (no SIGBUS when the device touches the tail)', async () => {
    const r = rig();
    await r.c.negotiate();
    const mfd = memfdCreate('small', 0x1000);
    const map = concat(u32(32, 3), u64(0n), u64(0x100000n), u64(0x10000n));
    assert.equal((await r.c.call(C.DMA_MAP, map, [mfd]))?.errno, Errno.EINVAL);
    closeFd(mfd);
    await r.close();
  });

  it('a client that shrinks its unsealed memfd after DMA_MAP: the DMA fails EFAULT, no SIGBUS', async () => {
    const r = rig();
    await r.c.negotiate();
    const mfd = memfdCreate('shrinks', 0x10000);
    pwrite(mfd, new Uint8Array(64).fill(0x5a), 0x8000n);
    const map = concat(u32(32, 3), u64(0n), u64(0x100000n), u64(0x10000n));
    assert.equal((await r.c.call(C.DMA_MAP, map, [mfd]))?.errno, 0);
    // Still whole: the device reads through the fd.
    await startDma(r.c, 0x108000n, 64);
    await r.device.settled();
    assert.equal(dmaError(r.edu), undefined);
    assert.deepEqual(r.state.dmaBuffer.subarray(0, 64), new Uint8Array(64).fill(0x5a));
    // Truncated under the server: a mapping would now SIGBUS the whole process.
    ftruncate(mfd, 0);
    await startDma(r.c, 0x108000n, 64);
    await r.device.settled();
    assert.ok(isErrno(dmaError(r.edu), Errno.EFAULT), String(dmaError(r.edu)));
    assert.equal((await r.c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0, 'server answers on');
    closeFd(mfd);
    await r.close();
  });

  it('a sealed memfd (F_SEAL_SHRINK, as QEMU seals guest RAM) is mapped directly', async () => {
    const r = rig();
    await r.c.negotiate();
    const mem = allocateShared('sealed', 0x10000);
    assert.ok(getSeals(mem.fd!) & F_SEAL_SHRINK);
    assert.throws(
      () => ftruncate(mem.fd!, 0),
      (e: unknown) => isErrno(e, Errno.EPERM),
    );
    mem.bytes.fill(0x3c, 0x2000, 0x2040);
    const map = concat(u32(32, 3), u64(0n), u64(0x100000n), u64(0x10000n));
    assert.equal((await r.c.call(C.DMA_MAP, map, [mem.fd!]))?.errno, 0);
    await startDma(r.c, 0x102000n, 64);
    await r.device.settled();
    assert.deepEqual(r.state.dmaBuffer.subarray(0, 64), new Uint8Array(64).fill(0x3c));
    mem.close();
    await r.close();
  });
});
