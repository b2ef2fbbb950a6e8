/**
 * A sorted array whose entries are removed by marking them dead (tombstones) rather than by
 * splicing: removal stays a binary search and a store, trailing tombstones are dropped at once
 * (so appending after the last live entry stays O(1)), and the array is compacted in one O(n)
 * pass once tombstones are half of it — removing n entries one by one is O(n log n), not O(n^2).
 * DmaSpace (DMA maps) and OffsetSpace (regions and mmap cookies) both keep their ranges here.
 */

/** Tombstones tolerated before any compaction (small arrays are not worth a pass). */
const COMPACT_MIN_DEAD = 64;

export class TombstoneArray<T> {
  /** Sorted entries, live and dead. Callers search it and insert live entries into it directly. */
  items: T[] = [];
  private dead = 0;

  constructor(private readonly isDead: (item: T) => boolean) {}

  /** Live entries. */
  get live(): number {
    return this.items.length - this.dead;
  }

  /** `n` entries were just marked dead: drop trailing tombstones, compact once half are dead. */
  died(n: number): void {
    this.dead += n;
    this.trimTail();
    if (this.dead > COMPACT_MIN_DEAD && this.dead * 2 > this.items.length) this.compact();
  }

  /** Replaces the `n` tombstones at `i..i+n-1` (none of them live) with `item`, in order. */
  replaceDead(i: number, n: number, item: T): void {
    if (i === this.items.length) this.items.push(item);
    else this.items.splice(i, n, item);
    this.dead -= n;
  }

  /** Drops trailing tombstones. */
  trimTail(): void {
    while (this.items.length > 0 && this.isDead(this.items[this.items.length - 1]!)) {
      this.items.pop();
      this.dead--;
    }
  }

  /** Removes every tombstone in one pass. */
  compact(): void {
    if (this.dead === 0) return;
    this.items = this.items.filter((t) => !this.isDead(t));
    this.dead = 0;
  }

  clear(): T[] {
    const all = this.items;
    this.items = [];
    this.dead = 0;
    return all;
  }
}
