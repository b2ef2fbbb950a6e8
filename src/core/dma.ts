/**
 * The device's view of its client's memory: IOVA ranges mapped by the client (vfio-user DMA_MAP,
 * or the in-process driver's dmaMap), each either directly addressable bytes (the client's memfd,
 * mapped into the server) or a remote accessor (vfio-user DMA_READ/DMA_WRITE messages for
 * memory the client did not pass an fd for).
 *
 * An access outside every mapped range fails with EFAULT and touches nothing. Unmapping while a
 * device operation is in flight is safe: every access resolves its range at the moment it runs.
 */
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';
import type { DirtyLog } from './migration/dirty.js';
import { TombstoneArray } from './tombstones.js';

/** libvfio-user's and the spec's default `max_dma_maps`. */
export const DEFAULT_MAX_DMA_MAPS = 65535;

export interface RemoteMemory {
  read(iova: bigint, length: number): Promise<Uint8Array>;
  write(iova: bigint, data: Uint8Array): Promise<void>;
}

export interface DmaTarget {
  /** Directly addressable memory for this range (index 0 = the range's first byte). */
  readonly bytes?: Uint8Array;
  /** Otherwise, how to reach it. */
  readonly remote?: RemoteMemory;
  readonly readable: boolean;
  readonly writable: boolean;
  /** Called once when the range is unmapped (release the mapping and fd). */
  release?(): void;
  /**
   * What backs the range (file identity, offset, permissions), compared when the same range is
   * mapped again: libvfio-user dma_controller_add_region takes an identical re-map as success.
   */
  readonly identity?: string;
}

interface DmaRange {
  readonly iova: bigint;
  readonly size: bigint;
  readonly target: DmaTarget;
  /**
   * [lo, hi) as doubles when hi <= Number.MAX_SAFE_INTEGER (exact), else NaN (every comparison
   * false): the device's accesses are checked against the range last hit without BigInt
   * arithmetic, which allocates.
   */
  readonly lo: number;
  readonly hi: number;
  /** Unmapped, left in place until the next compaction (a tombstone). */
  dead?: true;
}

function dmaRange(iova: bigint, size: bigint, target: DmaTarget): DmaRange {
  const exact = iova + size <= BigInt(Number.MAX_SAFE_INTEGER);
  return {
    iova,
    size,
    target,
    lo: exact ? Number(iova) : Number.NaN,
    hi: exact ? Number(iova + size) : Number.NaN,
  };
}

/** Reads up to this size get their copy carved from a shared slab (see `fresh`). */
export const DMA_SLAB_MAX_READ = 16 * 1024;
/** Size of one slab: small reads share one ArrayBuffer until it is used up. */
export const DMA_SLAB_BYTES = 256 * 1024;

let slab = new ArrayBuffer(0);
let slabUsed = 0;

/**
 * Memory for a read's copy. Every fresh ArrayBuffer costs far more than the memcpy into it: V8
 * creates and later collects a backing store (microseconds, whatever the size), and one of 1 MiB
 * is a new calloc'd mapping the kernel faults in page by page and unmaps when it is collected.
 * That is why a mapped DMA read ran 10-20x slower than the write of the same size, which copies
 * into pages that already exist. Small reads therefore share slabs, as Node's Buffer pool does
 * (a held 16 KiB copy keeps at most its 256 KiB slab alive); the view's byteOffset may not be 0.
 */
function fresh(length: number): Uint8Array {
  if (length > DMA_SLAB_MAX_READ) return new Uint8Array(length);
  if (slabUsed + length > slab.byteLength) {
    slab = new ArrayBuffer(DMA_SLAB_BYTES);
    slabUsed = 0;
  }
  const out = new Uint8Array(slab, slabUsed, length);
  slabUsed += (length + 7) & ~7; // every copy 8-byte aligned, for DataView and BigUint64Array users
  return out;
}

/**
 * The mapped ranges: an array sorted by IOVA, non-overlapping, searched by binary search.
 * Map splices its range in (appending in ascending IOVA order, as a VM's memory map comes, is
 * O(1)); unmap leaves tombstones (TombstoneArray), so unmapping every range one by one is
 * O(n log n) rather than O(n^2) splices.
 */
export class DmaSpace {
  private readonly list = new TombstoneArray<DmaRange>((r) => r.dead === true);
  /** The range the last access hit: devices stream through one buffer at a time. */
  #last: DmaRange | undefined;
  /**
   * DMA logging (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): every write the device issues is
   * recorded here, into mapped memory and by message alike. Writes are the only way a device
   * reaches host memory to change it: `read` and `readInto` copy out, and no view of mapped
   * memory is ever handed to a device.
   */
  logger: DirtyLog | undefined;

  constructor(readonly maxMaps: number = DEFAULT_MAX_DMA_MAPS) {}

  get count(): number {
    return this.list.live;
  }

  private get ranges(): DmaRange[] {
    return this.list.items;
  }

  /** Adds [iova, iova+size). EINVAL for size 0 or wrap, EEXIST for overlap, ENOSPC past maxMaps. */
  map(iova: bigint, size: bigint, target: DmaTarget): void {
    const op = 'DMA_MAP';
    if (size <= 0n || iova < 0n || iova + size > 1n << 64n)
      throw new VfioError(Errno.EINVAL, op, 'empty or wrapping range');
    if (target.bytes && BigInt(target.bytes.length) < size)
      throw new VfioError(Errno.EINVAL, op, 'backing smaller than range');
    if (this.count >= this.maxMaps) throw new VfioError(Errno.ENOSPC, op, `${this.maxMaps} maps already`);
    // Sorted and non-overlapping: the ranges overlapping [iova, end) are those from the first
    // one ending after iova up to the first one starting at or after end. Tombstones there go.
    const end = iova + size;
    const i = this.firstEndingAfter(iova);
    let j = i;
    for (; j < this.ranges.length && this.ranges[j]!.iova < end; j++)
      if (!this.ranges[j]!.dead)
        throw new VfioError(Errno.EEXIST, op, `0x${iova.toString(16)} overlaps a mapping`);
    this.list.replaceDead(i, j - i, dmaRange(iova, size, target));
  }

  /**
   * Removes every mapping inside [iova, iova+size); a mapping that is only partly covered is
   * EINVAL (type1 and libvfio-user refuse to split). Returns how many were removed.
   */
  unmap(iova: bigint, size: bigint): number {
    const end = iova + size;
    const hit: DmaRange[] = [];
    for (let j = this.firstEndingAfter(iova); j < this.ranges.length && this.ranges[j]!.iova < end; j++) {
      const r = this.ranges[j]!;
      if (r.dead) continue;
      if (r.iova < iova || r.iova + r.size > end)
        throw new VfioError(Errno.EINVAL, 'DMA_UNMAP', 'range splits a mapping');
      hit.push(r);
    }
    this.bury(hit);
    return hit.length;
  }

  /**
   * Removes the mapping that is exactly [iova, iova+size), as vfio-user's DMA_UNMAP requires
   * ("The address and size of the DMA region being unmapped must match exactly a previous
   * mapping"; libvfio-user dma_controller_remove_region). False when there is none.
   */
  unmapExact(iova: bigint, size: bigint): boolean {
    const r = this.ranges[this.firstEndingAfter(iova)];
    if (!r || r.dead || r.iova !== iova || r.size !== size) return false;
    this.bury([r]);
    return true;
  }

  /** Unmaps live ranges: each becomes a tombstone (TombstoneArray), then its target is released. */
  private bury(hit: readonly DmaRange[]): void {
    for (const r of hit) r.dead = true;
    this.list.died(hit.length);
    for (const r of hit) r.target.release?.();
  }

  unmapAll(): void {
    this.#last = undefined;
    for (const r of this.list.clear()) if (!r.dead) r.target.release?.();
  }

  /** The live mapping of exactly [iova, iova+size), if there is one. */
  exact(iova: bigint, size: bigint): DmaTarget | undefined {
    const r = this.ranges[this.firstEndingAfter(iova)];
    return r && !r.dead && r.iova === iova && r.size === size ? r.target : undefined;
  }

  /** Whether a live mapping overlaps [iova, iova+size). */
  overlaps(iova: bigint, size: bigint): boolean {
    const end = iova + size;
    for (let j = this.firstEndingAfter(iova); j < this.ranges.length && this.ranges[j]!.iova < end; j++)
      if (!this.ranges[j]!.dead) return true;
    return false;
  }

  /**
   * Index of the first range that ends after `iova` (ranges are sorted by iova and do not
   * overlap, so ends are sorted too): O(log n). ranges.length if there is none.
   */
  private firstEndingAfter(iova: bigint): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.ranges[mid]!;
      if (r.iova + r.size <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * The live range holding [iova, iova+length): EFAULT when none does, EPERM when its access
   * forbids the direction. The range last hit is tried first, in doubles (see DmaRange.lo).
   */
  private find(iova: bigint, length: number, write: boolean): DmaRange {
    const x = Number(iova);
    let r = this.#last;
    if (r === undefined || r.dead === true || !(x >= r.lo && x + length <= r.hi)) {
      const end = iova + BigInt(length);
      r = this.ranges[this.firstEndingAfter(iova)];
      if (!r || r.dead || iova < r.iova || end > r.iova + r.size)
        throw new VfioError(
          Errno.EFAULT,
          write ? 'DMA write' : 'DMA read',
          `0x${iova.toString(16)}+${length} not mapped`,
        );
      this.#last = r;
    }
    if (write ? !r.target.writable : !r.target.readable)
      throw new VfioError(Errno.EPERM, write ? 'DMA write' : 'DMA read', 'mapping forbids it');
    return r;
  }

  /**
   * A copy of [iova, iova+length) (the device may keep it; the client's memory may be unmapped
   * under it). Prefer `readInto` when the device has somewhere to put the bytes: no allocation.
   */
  async read(iova: bigint, length: number): Promise<Uint8Array> {
    const r = this.find(iova, length, false);
    const bytes = r.target.bytes;
    if (bytes) {
      const off = offsetIn(r, iova);
      const out = fresh(length);
      out.set(bytes.subarray(off, off + length));
      return out;
    }
    return r.target.remote!.read(iova, length);
  }

  /** Reads [iova, iova+dst.length) into `dst`: one memcpy from mapped memory, nothing allocated. */
  async readInto(iova: bigint, dst: Uint8Array): Promise<void> {
    const r = this.find(iova, dst.length, false);
    const bytes = r.target.bytes;
    if (bytes) {
      const off = offsetIn(r, iova);
      dst.set(bytes.subarray(off, off + dst.length));
    } else dst.set(await r.target.remote!.read(iova, dst.length));
  }

  async write(iova: bigint, data: Uint8Array): Promise<void> {
    const r = this.find(iova, data.length, true);
    if (r.target.bytes) {
      r.target.bytes.set(data, offsetIn(r, iova));
      this.logger?.mark(iova, data.length);
      return;
    }
    try {
      await r.target.remote!.write(iova, data);
    } finally {
      // Marked once the client had the message, failed or not: a report read in between still
      // leaves the bit for the next one, so the page is never copied before the write landed.
      this.logger?.mark(iova, data.length);
    }
  }
}

/** Where `iova` (inside `r`) is in the range's bytes: in doubles when the range is exact there. */
function offsetIn(r: DmaRange, iova: bigint): number {
  return Number.isNaN(r.hi) ? Number(iova - r.iova) : Number(iova) - r.lo;
}
