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
}

interface DmaRange {
  readonly iova: bigint;
  readonly size: bigint;
  readonly target: DmaTarget;
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

export class DmaSpace {
  private ranges: DmaRange[] = [];

  constructor(readonly maxMaps: number = DEFAULT_MAX_DMA_MAPS) {}

  get count(): number {
    return this.ranges.length;
  }

  /** Adds [iova, iova+size). EINVAL for size 0 or wrap, EEXIST for overlap, ENOSPC past maxMaps. */
  map(iova: bigint, size: bigint, target: DmaTarget): void {
    const op = 'DMA_MAP';
    if (size <= 0n || iova < 0n || iova + size > 1n << 64n)
      throw new VfioError(Errno.EINVAL, op, 'empty or wrapping range');
    if (target.bytes && BigInt(target.bytes.length) < size)
      throw new VfioError(Errno.EINVAL, op, 'backing smaller than range');
    if (this.ranges.length >= this.maxMaps)
      throw new VfioError(Errno.ENOSPC, op, `${this.maxMaps} maps already`);
    if (this.ranges.some((r) => iova < r.iova + r.size && r.iova < iova + size))
      throw new VfioError(Errno.EEXIST, op, `0x${iova.toString(16)} overlaps a mapping`);
    this.ranges.push({ iova, size, target });
    this.ranges.sort((a, b) => (a.iova < b.iova ? -1 : 1));
  }

  /**
   * Removes every mapping inside [iova, iova+size); a mapping that is only partly covered is
   * EINVAL (type1 and libvfio-user refuse to split). Returns how many were removed.
   */
  unmap(iova: bigint, size: bigint): number {
    const end = iova + size;
    const hit = this.ranges.filter((r) => r.iova < end && iova < r.iova + r.size);
    if (hit.some((r) => r.iova < iova || r.iova + r.size > end))
      throw new VfioError(Errno.EINVAL, 'DMA_UNMAP', 'range splits a mapping');
    this.ranges = this.ranges.filter((r) => !hit.includes(r));
    for (const r of hit) r.target.release?.();
    return hit.length;
  }

  /**
   * Removes the mapping that is exactly [iova, iova+size), as vfio-user's DMA_UNMAP requires
   * ("The address and size of the DMA region being unmapped must match exactly a previous
   * mapping"; libvfio-user dma_controller_remove_region). False when there is none.
   */
  unmapExact(iova: bigint, size: bigint): boolean {
    const i = this.ranges.findIndex((r) => r.iova === iova && r.size === size);
    if (i < 0) return false;
    const [r] = this.ranges.splice(i, 1);
    r?.target.release?.();
    return true;
  }

  unmapAll(): void {
    const all = this.ranges;
    this.ranges = [];
    for (const r of all) r.target.release?.();
  }

  private find(iova: bigint, length: number, write: boolean): { r: DmaRange; off: number } {
    const op = write ? 'DMA write' : 'DMA read';
    const end = iova + BigInt(length);
    const r = this.ranges.find((x) => iova >= x.iova && end <= x.iova + x.size);
    if (!r) throw new VfioError(Errno.EFAULT, op, `0x${iova.toString(16)}+${length} not mapped`);
    if (write ? !r.target.writable : !r.target.readable)
      throw new VfioError(Errno.EPERM, op, 'mapping forbids it');
    return { r, off: Number(iova - r.iova) };
  }

  /**
   * A copy of [iova, iova+length) (the device may keep it; the client's memory may be unmapped
   * under it). Prefer `readInto` when the device has somewhere to put the bytes: no allocation.
   */
  async read(iova: bigint, length: number): Promise<Uint8Array> {
    const { r, off } = this.find(iova, length, false);
    if (r.target.bytes) {
      const out = fresh(length);
      out.set(r.target.bytes.subarray(off, off + length));
      return out;
    }
    return r.target.remote!.read(iova, length);
  }

  /** Reads [iova, iova+dst.length) into `dst`: one memcpy from mapped memory, nothing allocated. */
  async readInto(iova: bigint, dst: Uint8Array): Promise<void> {
    const { r, off } = this.find(iova, dst.length, false);
    if (r.target.bytes) dst.set(r.target.bytes.subarray(off, off + dst.length));
    else dst.set(await r.target.remote!.read(iova, dst.length));
  }

  async write(iova: bigint, data: Uint8Array): Promise<void> {
    const { r, off } = this.find(iova, data.length, true);
    if (r.target.bytes) {
      r.target.bytes.set(data, off);
      return;
    }
    await r.target.remote!.write(iova, data);
  }
}
