/**
 * A small fio for one queue pair: sequential or random reads or writes of one block size at a
 * fixed queue depth for a fixed time, with per-I/O latency, and an optional verify that stamps
 * every logical block it writes and checks every block it reads back.
 *
 * Verify pattern, per logical block: "VFTS", the write generation (u32), the LBA (u64), then a
 * xorshift32 stream seeded from both, so a block read from the wrong LBA, a stale write or a
 * torn transfer all mismatch. Reads verify as they complete (after a prefill, for read modes);
 * writes are all read back at the end. Two writes to one LBA are never in flight together.
 */
import { Errno } from '../../abi/errno.js';
import { fail, VfioError } from '../../errors.js';
import type { NvmeController } from './controller.js';
import type { DmaBuffer } from './dma.js';
import type { IoQueuePair } from './io.js';
import { findSignatures, SIGNATURE_PROBE_BYTES } from './signatures.js';

export type PerfMode = 'read' | 'write' | 'randread' | 'randwrite';
export const PERF_MODES: readonly PerfMode[] = ['read', 'write', 'randread', 'randwrite'];
/** Verify keeps a generation per logical block; it covers at most this much of a namespace. */
export const DEFAULT_VERIFY_SPAN = 1n << 30n;
/** Latency samples kept (beyond it, later I/Os are counted but not sampled). */
export const MAX_LATENCY_SAMPLES = 1 << 22;
const MAGIC = 0x53544656; // "VFTS" little endian

export interface PerfOptions {
  readonly rw: PerfMode;
  /** Bytes per I/O: a multiple of the namespace's block size. */
  readonly bs: number;
  readonly qd: number;
  readonly seconds: number;
  readonly nsid?: number;
  readonly verify?: boolean;
  /** Bytes of the namespace to use, from LBA 0 (default: all of it; with verify at most 1 GiB). */
  readonly size?: bigint;
  /** Write even over a partition table or filesystem signature. */
  readonly force?: boolean;
  readonly seed?: number;
  /** Stop after this many I/Os (tests). */
  readonly maxIos?: number;
}

export interface PerfResult {
  readonly rw: PerfMode;
  readonly bs: number;
  readonly qd: number;
  readonly seconds: number;
  readonly ios: number;
  readonly iops: number;
  /** Decimal megabytes per second, as fio prints MB/s. */
  readonly mbPerSec: number;
  readonly latencyUs: {
    readonly p50: number;
    readonly p99: number;
    readonly mean: number;
    readonly max: number;
  };
  /** Logical blocks checked against the pattern (0 without verify). */
  readonly verifiedBlocks: number;
}

/** Runs the workload on `qp` (whose depth must exceed `qd`). Throws EIO on a verify mismatch. */
export async function runPerf(ctrl: NvmeController, qp: IoQueuePair, o: PerfOptions): Promise<PerfResult> {
  const nsid = o.nsid ?? 1;
  const ns = ctrl.namespace(nsid);
  const write = o.rw === 'write' || o.rw === 'randwrite';
  const random = o.rw === 'randread' || o.rw === 'randwrite';
  if (!Number.isInteger(o.bs) || o.bs <= 0 || o.bs % ns.blockBytes)
    fail(
      Errno.EINVAL,
      'nvme perf',
      `block size ${o.bs} is not a multiple of the ${ns.blockBytes}-byte logical block`,
    );
  if (!Number.isInteger(o.qd) || o.qd < 1 || o.qd > qp.depth - 1)
    fail(Errno.EINVAL, 'nvme perf', `queue depth ${o.qd}: this queue pair holds 1..${qp.depth - 1}`);
  if (!(o.seconds > 0)) fail(Errno.EINVAL, 'nvme perf', `seconds ${o.seconds}`);
  const nsBytes = ns.nsze * BigInt(ns.blockBytes);
  const span = o.size ?? (o.verify && nsBytes > DEFAULT_VERIFY_SPAN ? DEFAULT_VERIFY_SPAN : nsBytes);
  if (span <= 0n || span > nsBytes)
    fail(Errno.EINVAL, 'nvme perf', `size ${span} bytes: the namespace has ${nsBytes}`);
  const per = o.bs / ns.blockBytes;
  const slots = Number(span / BigInt(o.bs));
  if (slots < o.qd)
    fail(
      Errno.EINVAL,
      'nvme perf',
      `size ${span} holds ${slots} I/Os of ${o.bs} bytes, fewer than the queue depth ${o.qd}`,
    );
  if ((write || o.verify) && !o.force) await refuseIfFormatted(ctrl, qp, nsid, ns.blockBytes);

  const bufs: DmaBuffer[] = [];
  for (let i = 0; i < o.qd; i++) bufs.push(await ctrl.alloc(o.bs));
  const pattern = o.verify ? new Pattern(ns.blockBytes, slots * per) : undefined;
  if (pattern && !write) await prefill({ qp, nsid, bufs, pattern, per, slots });

  let rng = (o.seed ?? 0x2545f491) >>> 0 || 1;
  let next = 0;
  const busy = new Set<number>();
  const pick = (): number => {
    for (;;) {
      let slot: number;
      if (random) {
        rng ^= rng << 13;
        rng ^= rng >>> 17;
        rng ^= rng << 5;
        rng >>>= 0;
        slot = rng % slots;
      } else slot = next++ % slots;
      // Writes to one LBA are never in flight together: the result would be either.
      if (!(write && busy.has(slot))) return slot;
    }
  };
  const samples: number[] = [];
  let ios = 0;
  let maxUs = 0;
  let sumUs = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(o.seconds * 1e9));
  const worker = async (buf: DmaBuffer) => {
    while (process.hrtime.bigint() < end && (o.maxIos === undefined || ios < o.maxIos)) {
      const slot = pick();
      const lba = BigInt(slot * per);
      busy.add(slot);
      if (pattern && write) pattern.stamp(buf.bytes, slot * per, per);
      ios++;
      const t0 = process.hrtime.bigint();
      if (write) await qp.write(nsid, lba, per, buf);
      else await qp.read(nsid, lba, per, buf);
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      busy.delete(slot);
      if (samples.length < MAX_LATENCY_SAMPLES) samples.push(us);
      sumUs += us;
      if (us > maxUs) maxUs = us;
      if (pattern && !write) pattern.check(buf.bytes, slot * per, per);
    }
  };
  await Promise.all(bufs.map(worker));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  let verifiedBlocks = pattern && !write ? ios * per : 0;
  if (pattern && write) verifiedBlocks = await readBack({ qp, nsid, bufs, pattern, per, slots });
  samples.sort((a, b) => a - b);
  const pct = (p: number) =>
    samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))] ?? 0;
  return {
    rw: o.rw,
    bs: o.bs,
    qd: o.qd,
    seconds,
    ios,
    iops: ios / seconds,
    mbPerSec: (ios * o.bs) / seconds / 1e6,
    latencyUs: { p50: pct(50), p99: pct(99), mean: ios ? sumUs / ios : 0, max: maxUs },
    verifiedBlocks,
  };
}

/** EPERM when the namespace starts with a partition table or filesystem (signatures.ts). */
async function refuseIfFormatted(ctrl: NvmeController, qp: IoQueuePair, nsid: number, blockBytes: number) {
  const ns = ctrl.namespace(nsid);
  const bytes = Math.min(SIGNATURE_PROBE_BYTES, Number(ns.nsze) * blockBytes, ctrl.maxTransferBytes);
  const head = await ctrl.alloc(bytes);
  await qp.read(nsid, 0n, bytes / blockBytes, head);
  const found = findSignatures(head.bytes, blockBytes);
  if (found.length)
    fail(
      Errno.EPERM,
      'nvme perf',
      `namespace ${nsid} holds ${found.join(' and ')}: refusing to write to it (--force writes anyway, destroying it)`,
    );
}

/** Every slot once, in order, with as many I/Os in flight as there are buffers. */
async function eachSlot(
  bufs: DmaBuffer[],
  slots: number,
  fn: (buf: DmaBuffer, slot: number) => Promise<void>,
) {
  let next = 0;
  await Promise.all(
    bufs.map(async (buf) => {
      while (next < slots) await fn(buf, next++);
    }),
  );
}

/** What the verify passes need: the queue, the buffers, the pattern, and the slot geometry. */
interface VerifyRun {
  readonly qp: IoQueuePair;
  readonly nsid: number;
  readonly bufs: DmaBuffer[];
  readonly pattern: Pattern;
  /** Logical blocks per I/O, and I/O-sized slots in the span. */
  readonly per: number;
  readonly slots: number;
}

/** Read modes with verify: every slot written once, each block with its first generation. */
function prefill(v: VerifyRun) {
  return eachSlot(v.bufs, v.slots, async (buf, s) => {
    v.pattern.stamp(buf.bytes, s * v.per, v.per);
    await v.qp.write(v.nsid, BigInt(s * v.per), v.per, buf);
  });
}

/** Write modes with verify: reads back every slot written and checks it; returns blocks checked. */
async function readBack(v: VerifyRun) {
  let checked = 0;
  await eachSlot(v.bufs, v.slots, async (buf, s) => {
    if (!v.pattern.written(s * v.per, v.per)) return;
    await v.qp.read(v.nsid, BigInt(s * v.per), v.per, buf);
    v.pattern.check(buf.bytes, s * v.per, v.per);
    checked += v.per;
  });
  return checked;
}

/** The verify pattern and the generation last written to each logical block. */
export class Pattern {
  private readonly gens: Uint32Array;
  private gen = 0;

  constructor(
    private readonly blockBytes: number,
    blocks: number,
  ) {
    this.gens = new Uint32Array(blocks);
  }

  /** Fills `blocks` blocks of `buf` for LBA `lba` onwards with a new generation each. */
  stamp(buf: Uint8Array, lba: number, blocks: number): void {
    for (let i = 0; i < blocks; i++) {
      const g = ++this.gen >>> 0 || ++this.gen;
      this.gens[lba + i] = g;
      this.fill(buf.subarray(i * this.blockBytes, (i + 1) * this.blockBytes), lba + i, g);
    }
  }

  written(lba: number, blocks: number): boolean {
    for (let i = 0; i < blocks; i++) if (this.gens[lba + i]) return true;
    return false;
  }

  /** Throws EIO naming the first byte that differs from what was last written there. */
  check(buf: Uint8Array, lba: number, blocks: number): void {
    const want = new Uint8Array(this.blockBytes);
    for (let i = 0; i < blocks; i++) {
      const g = this.gens[lba + i]!;
      const got = buf.subarray(i * this.blockBytes, (i + 1) * this.blockBytes);
      this.fill(want, lba + i, g);
      for (let b = 0; b < this.blockBytes; b++)
        if (got[b] !== want[b])
          throw new VfioError(
            Errno.EIO,
            'nvme verify',
            `MISMATCH at LBA ${lba + i}, byte ${b}: expected 0x${want[b]!.toString(16)} (generation ${g}), read 0x${got[b]!.toString(16)}; header read: ${hex(got.subarray(0, 16))}`,
          );
    }
  }

  private fill(block: Uint8Array, lba: number, gen: number): void {
    const w = new Uint32Array(block.buffer, block.byteOffset, block.byteLength / 4);
    w[0] = MAGIC;
    w[1] = gen;
    w[2] = lba >>> 0;
    w[3] = Math.floor(lba / 2 ** 32);
    let x = (Math.imul(lba ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(gen, 0xc2b2ae35)) >>> 0 || 1;
    for (let i = 4; i < w.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[i] = x;
    }
  }
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}
