/**
 * The client's own migration code (src/client/migration.ts) against a scripted server: a
 * DMA_LOGGING_REPORT asked for in pieces the server's max_bitmap_size allows and put together;
 * replies that do not answer what was asked (another range, another length, more data than asked,
 * an argsz that does not add up) are EPROTO.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_GET,
} from '../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { VfioUserClient } from '../../src/client/index.js';
import { reportPieces } from '../../src/client/migration.js';
import { dirtyLoggingStart, dirtyReport } from '../../src/driver/migrate.js';
import { VfioError } from '../../src/errors.js';
import { encodeVfioDeviceFeature } from '../../src/wire/vfio.js';
import type { CapabilitiesInput } from '../../src/wire/vfio-user.js';
import { FakeServer } from './fake.js';
import { servedClient } from './rig.js';

async function connected(t: TestContext, caps: CapabilitiesInput) {
  const fake = new FakeServer(caps);
  t.after(() => fake.hangUp());
  const client = await VfioUserClient.fromFd(fake.clientFd, { timeoutMs: 5000 });
  t.after(() => client.close());
  return { fake, client };
}

const isErrno = (errno: number) => (e: unknown) => e instanceof VfioError && e.errno === errno;

/** A REPORT of [iova, iova + length) in 4 KiB pages, with room for its bitmap. */
function report(iova: bigint, length: bigint): Uint8Array {
  const pages = Number(length / 4096n);
  const d = new Uint8Array(24 + Math.ceil(pages / 64) * 8);
  const v = new DataView(d.buffer);
  v.setBigUint64(0, iova, true);
  v.setBigUint64(8, length, true);
  v.setBigUint64(16, 4096n, true);
  return encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, d);
}

/** The server's answer to a REPORT: its struct, then a bitmap of argsz's room with `dirty` set. */
function answerWith(req: Uint8Array, dirty: readonly bigint[]): Uint8Array {
  const rv = new DataView(req.buffer, req.byteOffset, req.byteLength);
  const out = new Uint8Array(rv.getUint32(0, true));
  out.set(req.subarray(0, 32));
  const iova = rv.getBigUint64(8, true);
  const length = rv.getBigUint64(16, true);
  for (const p of dirty)
    if (p >= iova && p < iova + length) {
      const bit = Number((p - iova) / 4096n);
      out[32 + (bit >> 3)]! |= 1 << (bit & 7);
    }
  return out;
}

test('reportPieces: ranges whose bitmap fits the limit, each at a whole u64 of the caller bitmap', () => {
  // 8 bytes of bitmap: 64 pages, 256 KiB of IOVA per piece.
  assert.deepEqual(reportPieces(0x100000n, 0x90000n, 4096n, 8), [
    { iova: 0x100000n, length: 0x40000n, at: 0 },
    { iova: 0x140000n, length: 0x40000n, at: 8 },
    { iova: 0x180000n, length: 0x10000n, at: 16 },
  ]);
  // A limit that is not a multiple of 8 is rounded down; under 8 is taken as 8.
  assert.equal(reportPieces(0n, 1n << 20n, 4096n, 13).length, 4);
  assert.equal(reportPieces(0n, 1n << 20n, 4096n, 1).length, 4);
  assert.equal(reportPieces(0n, 1n << 20n, 4096n, 1 << 20).length, 1);
});

test('a REPORT larger than max_bitmap_size goes in pieces and comes back whole', async (t) => {
  const { fake, client } = await connected(t, {
    maxMsgFds: 16,
    maxDataXferSize: 1 << 20,
    migration: { pgsize: 4096, maxBitmapSize: 8 },
  });
  assert.deepEqual(client.negotiated.migration, { pgsize: 4096, maxBitmapSize: 8 });
  const base = 0x100000n;
  const dirty = [base, base + 63n * 4096n, base + 64n * 4096n, base + 200n * 4096n, base + 255n * 4096n];
  fake.answer = (s) => ({ payload: answerWith(s.payload, dirty) });
  const arg = report(base, 256n * 4096n);
  await client.ioctl(VFIO_DEVICE_FEATURE, arg);
  const reqs = fake.seen.filter((s) => s.command === C.DEVICE_FEATURE);
  assert.equal(reqs.length, 4, 'four pieces of 64 pages');
  for (const [i, r] of reqs.entries()) {
    // The struct alone, argsz with room for the piece's 8 bytes of bitmap (libvfio-user's form).
    assert.equal(r.payload.length, 8 + 24);
    assert.equal(new DataView(r.payload.buffer).getUint32(0, true), 8 + 24 + 8);
    assert.equal(new DataView(r.payload.buffer).getBigUint64(8, true), base + BigInt(i) * 64n * 4096n);
  }
  const bits: bigint[] = [];
  const bitmap = arg.subarray(32);
  for (let i = 0; i < 256; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) bits.push(base + BigInt(i) * 4096n);
  assert.deepEqual(bits, dirty);
});

test('a REPORT ending exactly at 2^64 is EOVERFLOW (a u64 overflow, vfio_main.c), and nothing is sent', async (t) => {
  const { fake, client } = await connected(t, {
    maxMsgFds: 16,
    maxDataXferSize: 4096,
    migration: { pgsize: 4096, maxBitmapSize: 1024 },
  });
  const before = fake.seen.length;
  await assert.rejects(
    client.ioctl(VFIO_DEVICE_FEATURE, report((1n << 64n) - 0x10000n, 0x10000n)),
    isErrno(Errno.EOVERFLOW),
  );
  assert.equal(fake.seen.length, before);
});

test('replies that do not answer the request: EPROTO', async (t) => {
  const { fake, client } = await connected(t, {
    maxMsgFds: 16,
    maxDataXferSize: 4096,
    migration: { pgsize: 4096, maxBitmapSize: 1024 },
  });
  // A REPORT of another range; one of another length.
  fake.answer = (s) => {
    const out = answerWith(s.payload, []);
    new DataView(out.buffer).setBigUint64(8, 0x200000n, true);
    return { payload: out };
  };
  await assert.rejects(client.ioctl(VFIO_DEVICE_FEATURE, report(0x100000n, 0x10000n)), isErrno(Errno.EPROTO));
  fake.answer = (s) => ({ payload: answerWith(s.payload, []).subarray(0, 32 + 4) });
  await assert.rejects(client.ioctl(VFIO_DEVICE_FEATURE, report(0x100000n, 0x10000n)), isErrno(Errno.EPROTO));
  // MIG_DATA_READ: more than asked (the reply is bounded to 8 + size: the connection refuses it);
  // size within the reply but an argsz that does not add up; padded past size (libvfio-user) is fine.
  const data = client.migrationData(0);
  const mig = (argsz: number, size: number, bytes: number) => {
    const p = new Uint8Array(8 + bytes);
    const v = new DataView(p.buffer);
    v.setUint32(0, argsz, true);
    v.setUint32(4, size, true);
    p.fill(0xab, 8, 8 + size);
    return p;
  };
  fake.answer = () => ({ payload: mig(8 + 16, 16, 16) });
  await assert.rejects(data.read(8), (e: unknown) => e instanceof VfioError);
  fake.answer = () => ({ payload: mig(100, 4, 4) });
  await assert.rejects(data.read(16), isErrno(Errno.EPROTO));
  fake.answer = () => ({ payload: mig(8 + 4, 4, 16) });
  assert.deepEqual([...(await data.read(16))], [0xab, 0xab, 0xab, 0xab]);
  // Writes go in pieces of max_data_xfer_size.
  fake.answer = () => ({ payload: new Uint8Array(0) });
  const before = fake.seen.length;
  await data.write(new Uint8Array(10_000));
  const writes = fake.seen.slice(before).filter((s) => s.command === C.MIG_DATA_WRITE);
  assert.deepEqual(
    writes.map((w) => w.payload.length - 8),
    [4096, 4096, 1808],
  );
});

test('over our server: a REPORT whose bitmap is larger than a DEVICE_FEATURE request may be (4 GiB: 128 KiB)', async () => {
  const s = await servedClient('edu');
  try {
    const pages = [0n, 0x12345000n, 0xfffff000n];
    for (const iova of pages)
      s.device.dma.map(iova, 4096n, { bytes: new Uint8Array(4096), readable: true, writable: true });
    await dirtyLoggingStart(s.client, 4096n, [{ iova: 0n, length: 1n << 32n }]);
    for (const iova of pages) await s.device.dma.write(iova + 7n, new Uint8Array(3));
    assert.deepEqual(await dirtyReport(s.client, 0n, 1n << 32n, 4096n), pages);
    assert.deepEqual(await dirtyReport(s.client, 0n, 1n << 32n, 4096n), [], 'a report clears');
  } finally {
    await s.close();
  }
});
