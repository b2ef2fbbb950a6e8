/**
 * Live migration through our vfio-user client (src/driver/migrate.ts over VfioUserClient):
 * between two `vfio-ts serve` processes while edu DMAs into memory the client owns, and between
 * two servers in this process for what needs the device at hand; a client that leaves mid-
 * migration; a stream the target refuses.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioMigState as S } from '../../src/abi/vfio.js';
import { createDmaMemory, type OwnedDmaMemory, VfioUserClient } from '../../src/client/index.js';
import { migrate, migrationState, setMigrationState } from '../../src/driver/migrate.js';
import { VfioError } from '../../src/errors.js';
import { socketPair } from '../../src/native/index.js';
import { servedProcess } from '../helpers/cli.js';
import { servedClient } from './rig.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-migrate-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const IOVA = 0x100000n;
const RAM = 64 * 1024;
const PAGE = 4096;
const BUF = 0x40000n; // edu's DMA buffer, also in BAR0 (src/devices/edu.ts)

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const served = (device: string, name: string) => servedProcess(device, join(dir, name));

const w32 = (c: VfioUserClient, off: bigint, v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return c.pwrite(off, b);
};
const r32 = async (c: VfioUserClient, off: bigint) =>
  new DataView((await c.pread(off, 4)).buffer).getUint32(0, true);

/** A page of `seed`-derived bytes. */
function pattern(seed: number, n = PAGE): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return b;
}

/** Fills edu's DMA buffer through BAR0 and starts a DMA of `count` bytes of it to RAM at `iova`. */
async function eduDmaToRam(c: VfioUserClient, data: Uint8Array, iova: bigint): Promise<void> {
  await c.pwrite(BUF, data);
  await w32(c, 0x80n, Number(BUF));
  await w32(c, 0x88n, Number(iova));
  await w32(c, 0x90n, data.length);
  await w32(c, 0x98n, 3); // start, EDU -> RAM
}

/** Waits for edu's DMA command register to drop its start bit (the transfer is done). */
async function eduIdle(c: VfioUserClient): Promise<void> {
  await until(async () => ((await r32(c, 0x98n)) & 1) === 0, 'the edu DMA to finish');
}

/** A client of `socket` with `RAM` bytes of memfd memory mapped at IOVA. */
async function clientWithRam(socket: string): Promise<{ c: VfioUserClient; ram: OwnedDmaMemory }> {
  const c = await VfioUserClient.connect(socket, { timeoutMs: 20_000 });
  const ram = createDmaMemory(RAM);
  await c.dmaMap(IOVA, ram);
  return { c, ram };
}

test('two vfio-ts serve processes: edu migrates while it DMAs; every byte lands, the bitmaps name exactly the pages written', async () => {
  const a = await served('edu', 'src.sock');
  const b = await served('edu', 'dst.sock');
  const src = await clientWithRam(join(dir, 'src.sock'));
  const dst = await clientWithRam(join(dir, 'dst.sock'));
  try {
    assert.deepEqual(src.c.negotiated.migration, { pgsize: 4096, maxBitmapSize: 256 * 1024 });
    // Before: a DMA into page 1 (not logged: logging starts with the migration) and a register.
    await eduDmaToRam(src.c, pattern(1), IOVA + 0x1000n);
    await eduIdle(src.c);
    await w32(src.c, 0x04n, 0x1234_5678); // liveness: reads back inverted
    // During pre-copy: round 1 DMAs into page 3 and across pages 5-6 and waits; round 2 starts
    // one into page 9 and leaves it in flight (the arc into STOP waits for it).
    const written = new Set<bigint>();
    const reported: bigint[] = [];
    const r = await migrate(src.c, dst.c, {
      memory: [{ iova: IOVA, source: src.ram.bytes, target: dst.ram.bytes }],
      maxRounds: 2,
      async round(n) {
        if (n === 1) {
          await eduDmaToRam(src.c, pattern(3), IOVA + 0x3000n);
          await eduIdle(src.c);
          await eduDmaToRam(src.c, pattern(5), IOVA + 0x5800n);
          await eduIdle(src.c);
          for (const p of [3n, 5n, 6n]) written.add(IOVA + p * 0x1000n);
        } else {
          await eduDmaToRam(src.c, pattern(9), IOVA + 0x9000n);
          written.add(IOVA + 0x9000n);
        }
      },
      dirty: (_round, iovas) => reported.push(...iovas),
    });
    assert.equal(r.precopy, true);
    assert.equal(r.rounds, 2);
    // Each page once (each was written once), and nothing else.
    assert.deepEqual(
      [...reported].sort((x, y) => (x < y ? -1 : 1)),
      [...written].sort((x, y) => (x < y ? -1 : 1)),
    );
    assert.equal(r.dirtyPages, written.size);
    assert.equal(await migrationState(src.c), S.STOP);
    assert.equal(await migrationState(dst.c), S.RUNNING);
    // Every byte: the target's memory is the source's, and each DMA is where it went.
    assert.ok(Buffer.from(dst.ram.bytes).equals(Buffer.from(src.ram.bytes)), 'target memory = source memory');
    const at = (o: number, n = PAGE) => dst.ram.bytes.subarray(o, o + n);
    assert.deepEqual(at(0x1000), pattern(1));
    assert.deepEqual(at(0x3000), pattern(3));
    assert.deepEqual(at(0x5800), pattern(5));
    assert.deepEqual(at(0x9000), pattern(9));
    assert.ok(
      at(0xb000).every((x) => x === 0),
      'a page nobody wrote stayed zero',
    );
    // The device itself came across: its registers, its DMA buffer (the last pattern).
    assert.equal(await r32(dst.c, 0x04n), ~0x1234_5678 >>> 0);
    assert.deepEqual(await dst.c.pread(BUF, PAGE), pattern(9));
    // And it works on the target: a DMA after the resume lands in the target's memory only.
    await eduDmaToRam(dst.c, pattern(12), IOVA + 0xc000n);
    await eduIdle(dst.c);
    assert.deepEqual(at(0xc000), pattern(12));
    assert.ok(src.ram.bytes.subarray(0xc000, 0xd000).every((x) => x === 0));
  } finally {
    await src.c.close();
    await dst.c.close();
    src.ram.close();
    dst.ram.close();
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    assert.equal(await a.exit, 0, a.out());
    assert.equal(await b.exit, 0, b.out());
  }
});

test('a client that leaves mid-migration: the server puts the device back in RUNNING, usable', async () => {
  const a = await served('edu', 'leave.sock');
  const sock = join(dir, 'leave.sock');
  try {
    // The saving side, left in PRE_COPY with the stream half read; then in STOP_COPY.
    for (const state of [S.PRE_COPY, S.STOP_COPY, S.RESUMING]) {
      const c = await VfioUserClient.connect(sock, { timeoutMs: 20_000 });
      const fd = await setMigrationState(c, state);
      assert.ok(fd >= 0, 'a session opened');
      const data = c.migrationData(fd);
      if (state === S.RESUMING) await data.write(new Uint8Array([0x76, 0x66]));
      else assert.ok((await data.read(64)).length > 0);
      assert.equal(await migrationState(c), state);
      await c.close();
      // vfio_pci_core_disable resets the device its last user left: RUNNING, no session.
      const d = await VfioUserClient.connect(sock, { timeoutMs: 20_000 });
      assert.equal(await migrationState(d), S.RUNNING, `after leaving ${state}`);
      await w32(d, 0x04n, 7);
      assert.equal(await r32(d, 0x04n), ~7 >>> 0);
      await assert.rejects(
        d.migrationData(fd).read(16),
        (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
      );
      await d.close();
    }
  } finally {
    a.child.kill('SIGTERM');
    assert.equal(await a.exit, 0, a.out());
  }
});

test('a foreign stream: edu into ivshmem is EINVAL; the source RUNNING again, the target usable once its client goes', async () => {
  const src = await servedClient('edu');
  const dst = await servedClient('ivshmem');
  try {
    await assert.rejects(
      migrate(src.client, dst.client),
      (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
    );
    assert.equal(await migrationState(src.client), S.RUNNING);
    // ivshmem has no reset method (VFIO_DEVICE_RESET is EINVAL, as vfio-pci's), so the refused
    // stream leaves it RESUMING as it was; the reset when its client leaves takes it to RUNNING.
    assert.equal(await migrationState(dst.client), S.RESUMING);
    await dst.client.close();
    await dst.server.idle();
    const [a, b] = socketPair();
    dst.server.adopt(a);
    const again = await VfioUserClient.fromFd(b);
    assert.equal(await migrationState(again), S.RUNNING);
    await again.close();
    // The source still migrates where it should: edu into a fresh edu, stop-and-copy only.
    const other = await servedClient('edu');
    try {
      const r = await migrate(src.client, other.client, { maxRounds: 0 });
      assert.equal(r.precopy, false);
      assert.ok(r.streamBytes > 0);
      assert.equal(await migrationState(other.client), S.RUNNING);
    } finally {
      await other.close();
    }
  } finally {
    await src.close();
    await dst.server.idle();
    dst.server.stop();
    dst.device.close();
  }
});

test("ivshmem and nvme migrate over vfio-user: ivshmem's shared memory and nvme's registers come across", async () => {
  for (const name of ['ivshmem', 'nvme'] as const) {
    const src = await servedClient(name);
    const dst = await servedClient(name);
    try {
      // What each keeps: ivshmem's shared memory BAR2; nvme's controller registers (CC written).
      const probe = name === 'ivshmem' ? { off: 2n << 40n, data: pattern(44, 256) } : undefined;
      if (probe) await src.client.pwrite(probe.off, probe.data);
      const r = await migrate(src.client, dst.client);
      assert.ok(r.streamBytes > 0);
      assert.equal(await migrationState(dst.client), S.RUNNING);
      if (probe) assert.deepEqual(await dst.client.pread(probe.off, probe.data.length), probe.data);
      assert.deepEqual(await dst.client.pread(0n, 8), await src.client.pread(0n, 8), `${name} BAR0 head`);
    } finally {
      await src.close();
      await dst.close();
    }
  }
});

/**
 * NVMe over vfio-user with its queues in memory the client owns: a write before the migration
 * and one during pre-copy, then on the target the next slot of the same SQ and CQ (positions and
 * phase carried in the device state) reads both back.
 */
async function nvmeMidIo(src: VfioUserClient, dst: VfioUserClient): Promise<void> {
  const srcRam = createDmaMemory(RAM);
  const dstRam = createDmaMemory(RAM);
  try {
    await src.dmaMap(IOVA, srcRam);
    await dst.dmaMap(IOVA, dstRam);
    const nvme = nvmeOver(src, srcRam.bytes);
    await nvme.enable();
    await nvme.createIoQueues();
    const data = [pattern(21), pattern(22)];
    srcRam.bytes.set(data[0]!, 0x4000);
    assert.equal(await nvme.io(0x01, 0x4000, 0), 0, 'write LBA 0');
    const reported: bigint[] = [];
    await migrate(src, dst, {
      memory: [{ iova: IOVA, source: srcRam.bytes, target: dstRam.bytes }],
      maxRounds: 2,
      async round(n) {
        if (n !== 1) return;
        srcRam.bytes.set(data[1]!, 0x5000);
        assert.equal(await nvme.io(0x01, 0x5000, 8), 0, 'write LBA 8 during pre-copy');
      },
      dirty: (_r, iovas) => reported.push(...iovas),
    });
    // The device wrote one completion into the I/O CQ page during pre-copy, nothing else.
    assert.deepEqual(reported, [IOVA + 0x3000n]);
    // The guest goes on on the target: same queues, next slots.
    const there = nvmeOver(dst, dstRam.bytes, nvme.positions());
    assert.equal(await there.io(0x02, 0x6000, 0), 0, 'read LBA 0 on the target');
    assert.equal(await there.io(0x02, 0x7000, 8), 0, 'read LBA 8 on the target');
    assert.deepEqual(dstRam.bytes.subarray(0x6000, 0x7000), data[0]);
    assert.deepEqual(dstRam.bytes.subarray(0x7000, 0x8000), data[1]);
  } finally {
    await src.dmaUnmap(IOVA, BigInt(RAM)).catch(() => undefined);
    await dst.dmaUnmap(IOVA, BigInt(RAM)).catch(() => undefined);
    srcRam.close();
    dstRam.close();
  }
}

test('nvme in this process: queues and its memory namespace come across mid-I/O', async () => {
  const src = await servedClient('nvme');
  const dst = await servedClient('nvme');
  try {
    await nvmeMidIo(src.client, dst.client);
  } finally {
    await src.close();
    await dst.close();
  }
});

test('nvme between two vfio-ts serve processes on one disk file (shared storage): the target reads what the source wrote', async () => {
  const disk = join(dir, 'shared.img');
  const a = await servedProcess('nvme', join(dir, 'nvme-a.sock'), ['--disk', disk, '--size', '16M']);
  const b = await servedProcess('nvme', join(dir, 'nvme-b.sock'), ['--disk', disk]);
  const src = await VfioUserClient.connect(join(dir, 'nvme-a.sock'), { timeoutMs: 20_000 });
  const dst = await VfioUserClient.connect(join(dir, 'nvme-b.sock'), { timeoutMs: 20_000 });
  try {
    await nvmeMidIo(src, dst);
  } finally {
    await src.close();
    await dst.close();
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    assert.equal(await a.exit, 0, a.out());
    assert.equal(await b.exit, 0, b.out());
  }
});

/** Queue positions a driver keeps: the I/O SQ tail and CQ head, and the phase it expects. */
interface NvmePositions {
  sqTail: number;
  cqHead: number;
  phase: number;
  cid: number;
}

/**
 * The few NVMe steps the test needs (NVMe base spec 2.0 §3.1 registers, §5 admin commands, §4.2
 * queue entries), polled, no interrupts. Memory: admin SQ 0x0, admin CQ 0x1000, I/O SQ 0x2000,
 * I/O CQ 0x3000 (16 entries each), data pages from 0x4000.
 */
function nvmeOver(c: VfioUserClient, ram: Uint8Array, at?: NvmePositions) {
  const Q = 16;
  const v = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  const admin = { sq: 0x0, cq: 0x1000, tail: 0, head: 0, phase: 1, qid: 0 };
  const io = {
    sq: 0x2000,
    cq: 0x3000,
    tail: at?.sqTail ?? 0,
    head: at?.cqHead ?? 0,
    phase: at?.phase ?? 1,
    qid: 1,
  };
  let cid = at?.cid ?? 1;
  const doorbell = (n: number, value: number) => w32(c, 0x1000n + BigInt(n * 4), value);
  async function submit(q: typeof admin, sqe: (o: number) => void): Promise<number> {
    const o = q.sq + q.tail * 64;
    ram.fill(0, o, o + 64);
    sqe(o);
    v.setUint16(o + 2, cid++, true);
    q.tail = (q.tail + 1) % Q;
    await doorbell(2 * q.qid, q.tail);
    const cqe = q.cq + q.head * 16;
    await until(() => (v.getUint16(cqe + 14, true) & 1) === q.phase, `a completion on queue ${q.qid}`);
    const status = v.getUint16(cqe + 14, true) >> 1;
    q.head = (q.head + 1) % Q;
    if (q.head === 0) q.phase ^= 1;
    await doorbell(2 * q.qid + 1, q.head);
    return status;
  }
  return {
    async enable() {
      await w32(c, 0x24n, ((Q - 1) << 16) | (Q - 1)); // AQA
      await c.pwrite(0x28n, u64(IOVA + BigInt(admin.sq))); // ASQ
      await c.pwrite(0x30n, u64(IOVA + BigInt(admin.cq))); // ACQ
      await w32(c, 0x14n, 1 | (6 << 16) | (4 << 20)); // CC: EN, IOSQES 64, IOCQES 16
      await until(async () => ((await r32(c, 0x1cn)) & 1) === 1, 'CSTS.RDY');
    },
    async createIoQueues() {
      const create = (opcode: number, base: number, cdw11: number) =>
        submit(admin, (o) => {
          v.setUint8(o, opcode);
          v.setBigUint64(o + 24, IOVA + BigInt(base), true);
          v.setUint32(o + 40, ((Q - 1) << 16) | 1, true);
          v.setUint32(o + 44, cdw11, true);
        });
      assert.equal(await create(0x05, io.cq, 1), 0, 'Create I/O CQ 1, contiguous, no interrupts');
      assert.equal(await create(0x01, io.sq, (1 << 16) | 1), 0, 'Create I/O SQ 1 on CQ 1');
    },
    /** One 4 KiB Write (0x01) or Read (0x02) at `slba` (512-byte blocks) to/from `page`. */
    io: (opcode: number, page: number, slba: number) =>
      submit(io, (o) => {
        v.setUint8(o, opcode);
        v.setUint32(o + 4, 1, true);
        v.setBigUint64(o + 24, IOVA + BigInt(page), true);
        v.setUint32(o + 40, slba, true);
        v.setUint32(o + 48, 7, true);
      }),
    positions: (): NvmePositions => ({ sqTail: io.tail, cqHead: io.head, phase: io.phase, cid }),
  };
}

function u64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}
