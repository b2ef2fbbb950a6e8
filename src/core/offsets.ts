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
import { TombstoneArray } from './tombstones.js';

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

/**
 * A released range left in place (a tombstone) until the next compaction: release is a binary
 * search and one store instead of an O(n) splice, so releasing many ranges one by one (a client
 * leaving with every mmap cookie it held) is O(n log n) in all, not O(n^2).
 */
const DEAD: unique symbol = Symbol('released');

export class OffsetSpace<T> {
  /** Sorted by base, non-overlapping; released entries are tombstones (owner DEAD). */
  private readonly list = new TombstoneArray<Range<T | typeof DEAD>>((r) => r.owner === DEAD);
  readonly limit: bigint;

  constructor(readonly bits: number = DEFAULT_OFFSET_BITS) {
    if (bits < 13 || bits > 63) throw new VfioError(Errno.EINVAL, 'offset space', `width ${bits} bits`);
    this.limit = 1n << BigInt(bits);
  }

  /** Live ranges. */
  get size(): number {
    return this.list.live;
  }

  private get ranges(): Range<T | typeof DEAD>[] {
    return this.list.items;
  }

  /** Array slots (live + tombstones); stays within twice the live count plus one (compaction). */
  get slots(): number {
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
    this.list.compact();
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
    this.list.trimTail();
    const want = roundUp(size > 0n ? size : PAGE_SIZE, PAGE_SIZE);
    const last = this.ranges[this.ranges.length - 1];
    const tail = roundUp(last ? last.base + last.size : 0n, PAGE_SIZE);
    const start = tail > floor ? tail : floor;
    if (start + want <= this.limit) {
      const r = { base: start, size: want, owner };
      this.ranges.push(r);
      return r;
    }
    this.list.compact(); // the gap search below wants live ranges only (O(n), like the search)
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

  /** O(log n): a binary search and a tombstone; compaction is amortized O(1) per release. */
  release(base: bigint): boolean {
    const i = this.indexOf(base);
    const r = this.ranges[i];
    if (!r || r.base !== base || r.owner === DEAD) return false;
    this.ranges[i] = { base: r.base, size: r.size, owner: DEAD };
    this.list.died(1);
    return true;
  }

  /** The range containing `offset`, if any. */
  lookup(offset: bigint): Range<T> | undefined {
    const i = this.indexOf(offset);
    const r = this.ranges[i];
    // Ranges do not overlap: a tombstone at or below `offset` means no live range holds it.
    return r && r.owner !== DEAD && offset < r.base + r.size ? (r as Range<T>) : undefined;
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
