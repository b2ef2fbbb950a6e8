/**
 * The device fd's offset space: who owns which range of mmap/pread offsets.
 *
 * The kernel encodes region `i` at `i << 40` (VFIO_PCI_OFFSET_SHIFT) — a fixed window per index.
 * The seed thread's alternative is "mmap cookies": opaque offsets allocated on demand and packed
 * densely, because a 32-bit pgoff (44 usable offset bits with 4 KiB pages) fits only 16 fixed
 * windows. This allocator does both over one ordered map: `reserveFixed` claims a window at a
 * given base, `allocate` packs a range first-fit into the gaps (page aligned), `lookup` finds the
 * owner of an offset in O(log n). Exhausting the space is ENOSPC, never a wrapped offset.
 */
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';

export const PAGE_SIZE = 4096n;
/** Offsets are loff_t (signed 64-bit): 63 usable bits on a 64-bit kernel. */
export const DEFAULT_OFFSET_BITS = 63;
/** A 32-bit pgoff with 4 KiB pages: 44 usable offset bits (the seed thread's worry). */
export const PGOFF32_OFFSET_BITS = 44;

export interface Range<T> {
  readonly base: bigint;
  readonly size: bigint;
  readonly owner: T;
}

export class OffsetSpace<T> {
  /** Sorted by base, non-overlapping. */
  private readonly ranges: Range<T>[] = [];
  readonly limit: bigint;

  constructor(readonly bits: number = DEFAULT_OFFSET_BITS) {
    if (bits < 13 || bits > 63) throw new VfioError(Errno.EINVAL, 'offset space', `width ${bits} bits`);
    this.limit = 1n << BigInt(bits);
  }

  get size(): number {
    return this.ranges.length;
  }

  /** Claims [base, base+size) exactly; ENOSPC if it does not fit the width, EEXIST if taken. */
  reserveFixed(base: bigint, size: bigint, owner: T): Range<T> {
    if (base < 0n || size <= 0n || base + size > this.limit)
      throw new VfioError(
        Errno.ENOSPC,
        'offset space',
        `0x${base.toString(16)}+0x${size.toString(16)} beyond 2^${this.bits}`,
      );
    const i = this.insertionPoint(base);
    const prev = this.ranges[i - 1];
    const next = this.ranges[i];
    if ((prev && prev.base + prev.size > base) || (next && base + size > next.base))
      throw new VfioError(Errno.EEXIST, 'offset space', `0x${base.toString(16)} overlaps`);
    const r = { base, size, owner };
    this.ranges.splice(i, 0, r);
    return r;
  }

  /**
   * Packs a page-aligned range of `size` (rounded up to pages) into the first gap at or above
   * `floor` that fits. Appending after the last range is O(1); gaps are searched only when the
   * tail is full, so filling the space is linear overall.
   */
  allocate(size: bigint, owner: T, floor = 0n): Range<T> {
    const want = roundUp(size > 0n ? size : PAGE_SIZE, PAGE_SIZE);
    const last = this.ranges[this.ranges.length - 1];
    const tail = roundUp(last ? last.base + last.size : 0n, PAGE_SIZE);
    const start = tail > floor ? tail : floor;
    if (start + want <= this.limit) {
      const r = { base: start, size: want, owner };
      this.ranges.push(r);
      return r;
    }
    let cursor = floor;
    for (let i = 0; i <= this.ranges.length; i++) {
      const next = this.ranges[i];
      if (next && next.base + next.size <= floor) continue;
      const gapEnd = next ? next.base : this.limit;
      const base = roundUp(cursor, PAGE_SIZE);
      if (base + want <= gapEnd) {
        const r = { base, size: want, owner };
        this.ranges.splice(i, 0, r);
        return r;
      }
      if (next && next.base + next.size > cursor) cursor = next.base + next.size;
    }
    throw new VfioError(
      Errno.ENOSPC,
      'offset space',
      `no room for 0x${want.toString(16)} bytes in 2^${this.bits}`,
    );
  }

  release(base: bigint): boolean {
    const i = this.indexOf(base);
    if (i < 0 || this.ranges[i]!.base !== base) return false;
    this.ranges.splice(i, 1);
    return true;
  }

  /** The range containing `offset`, if any. */
  lookup(offset: bigint): Range<T> | undefined {
    const i = this.indexOf(offset);
    const r = this.ranges[i];
    return r && offset < r.base + r.size ? r : undefined;
  }

  /** Index of the last range with base <= offset, or -1. */
  private indexOf(offset: bigint): number {
    let lo = 0;
    let hi = this.ranges.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.ranges[mid]!.base <= offset) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  }

  private insertionPoint(base: bigint): number {
    return this.indexOf(base) + 1;
  }
}

export const roundUp = (n: bigint, a: bigint): bigint => ((n + a - 1n) / a) * a;
