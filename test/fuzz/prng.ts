/**
 * The fuzzers' randomness: a seeded PRNG (mulberry32, 32-bit state) so that every run is
 * reproducible from its printed seed, and byte mutators that start from valid inputs.
 * Our own code; the mutation set follows the usual ones (bit flips, interesting integers at
 * field offsets, truncation, extension, splicing), aimed at little-endian u32/u64 fields.
 */

export class Rng {
  #s: number;
  constructor(readonly seed: number) {
    this.#s = seed >>> 0;
  }

  /** Uniform in [0, 2^32). */
  u32(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 4294967296) * n);
  }

  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A u32 biased to the values that break size and offset arithmetic. */
  interesting32(): number {
    return this.chance(0.8) ? this.pick(INTERESTING_32) : this.u32();
  }

  interesting64(): bigint {
    return this.chance(0.8) ? this.pick(INTERESTING_64) : this.u64();
  }
}

export const INTERESTING_32: readonly number[] = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 19, 20, 23, 24, 28, 31, 32, 33, 40, 48, 63, 64, 127, 128, 255, 256, 4095,
  4096, 4097, 0x7fff, 0x8000, 0xffff, 0x10000, 0x100000, 0x100010, 0x7fffffff, 0x80000000, 0xfffffff0,
  0xfffffffe, 0xffffffff,
];
export const INTERESTING_64: readonly bigint[] = [
  0n,
  1n,
  0xfffn,
  0x1000n,
  0x40000n,
  0xfffffn,
  0x100000n,
  0xffffffffn,
  0x100000000n,
  1n << 40n,
  (1n << 40n) - 1n,
  (1n << 44n) - 1n,
  1n << 63n,
  (1n << 64n) - 0x1000n,
  (1n << 64n) - 1n,
];

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/**
 * One to `maxOps` mutations of `src` (never modified), biased to 4- and 8-byte aligned fields
 * since every struct here is made of them. `protect` leading bytes are left as they are (a
 * header the caller rewrites itself).
 */
export function mutate(rng: Rng, src: Uint8Array, maxOps = 4, protect = 0): Uint8Array {
  let b = src.slice();
  const ops = 1 + rng.int(maxOps);
  for (let k = 0; k < ops; k++) {
    const room = b.length - protect;
    const at = (align: number) => protect + Math.floor(rng.int(Math.max(1, room)) / align) * align;
    switch (rng.int(10)) {
      case 0: {
        // flip one bit
        if (room <= 0) break;
        const i = at(1);
        b[i] = b[i]! ^ (1 << rng.int(8));
        break;
      }
      case 1: {
        // a random byte
        if (room <= 0) break;
        b[at(1)] = rng.u32() & 0xff;
        break;
      }
      case 2:
      case 3: {
        // an interesting u32 at an aligned offset
        const i = at(4);
        if (i + 4 <= b.length) view(b).setUint32(i, rng.interesting32(), true);
        break;
      }
      case 4: {
        // an interesting u64 at an aligned offset
        const i = at(8);
        if (i + 8 <= b.length) view(b).setBigUint64(i, rng.interesting64(), true);
        break;
      }
      case 5: {
        // truncate
        if (room <= 0) break;
        b = b.slice(0, protect + rng.int(room));
        break;
      }
      case 6: {
        // extend with zeros or noise
        const n = rng.pick([1, 4, 8, 16, 64, 4096]);
        const ext = new Uint8Array(b.length + n);
        ext.set(b);
        if (rng.chance(0.5)) ext.set(rng.bytes(n), b.length);
        b = ext;
        break;
      }
      case 7: {
        // small arithmetic on a u32 field
        const i = at(4);
        if (i + 4 <= b.length) {
          const v = view(b).getUint32(i, true);
          view(b).setUint32(i, (v + rng.pick([-8, -4, -1, 1, 4, 8, 4096])) >>> 0, true);
        }
        break;
      }
      case 8: {
        // duplicate a block inside (overlapping structs, repeated capability headers)
        if (room < 8) break;
        const from = at(4);
        const to = at(4);
        const n = Math.min(8 + rng.int(24), b.length - from, b.length - to);
        if (n > 0) b.copyWithin(to, from, from + n);
        break;
      }
      default: {
        // zero a run
        if (room <= 0) break;
        const i = at(1);
        b.fill(0, i, Math.min(b.length, i + 1 + rng.int(16)));
      }
    }
  }
  return b;
}

/** Splits `bytes` into random chunks (some empty) for stream reassembly fuzzing. */
export function chunkings(rng: Rng, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    const n = rng.chance(0.1) ? 0 : 1 + rng.int(rng.chance(0.5) ? 8 : 64);
    out.push(bytes.subarray(at, Math.min(bytes.length, at + n)));
    at += n;
  }
  return out;
}

export const toHex = (b: Uint8Array): string =>
  Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/** A seed from the command line or the clock. */
export function seedFrom(value: string | undefined): number {
  if (value !== undefined && value !== '') return Number(value) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** What a harness reports. */
export interface FuzzStats {
  harness: string;
  seed: number;
  /** Inputs tried (ioctl calls, decoder calls, messages sent). */
  tried: number;
  /** Escapes of anything but the documented error types, or broken invariants (all counted). */
  crashCount: number;
  /** The first MAX_CRASH_REPORTS of them in full (input as hex). */
  crashes: string[];
  /** fd or memory leaks found by the end-of-run checks. */
  leaks: string[];
  /** Counts per outcome, e.g. errno names, for the report. */
  outcomes: Map<string, number>;
}

export function newStats(harness: string, seed: number): FuzzStats {
  return { harness, seed, tried: 0, crashCount: 0, crashes: [], leaks: [], outcomes: new Map() };
}

export function count(stats: FuzzStats, outcome: string): void {
  stats.outcomes.set(outcome, (stats.outcomes.get(outcome) ?? 0) + 1);
}

/** Keeps the first few crash reports in full; counts the rest. */
export const MAX_CRASH_REPORTS = 20;
export function crash(stats: FuzzStats, report: string): void {
  stats.crashCount++;
  if (stats.crashes.length < MAX_CRASH_REPORTS) stats.crashes.push(report);
}

export function summary(s: FuzzStats): string {
  const top = [...s.outcomes.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 8)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `${s.harness}: seed ${s.seed}, ${s.tried} tried, ${s.crashCount} crashes, ${s.leaks.length} leaks [${top}]`;
}
