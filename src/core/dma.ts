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

  async read(iova: bigint, length: number): Promise<Uint8Array> {
    const { r, off } = this.find(iova, length, false);
    if (r.target.bytes) return r.target.bytes.slice(off, off + length);
    return r.target.remote!.read(iova, length);
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
