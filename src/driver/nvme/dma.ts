/**
 * DMA memory for the driver: memfd chunks this process maps, each mapped for the device through
 * the backend (VfioDevice.dmaMap: type1 MAP_DMA, vfio-user DMA_MAP, the core's DmaSpace) at an
 * IOVA the pool chooses. Queues, PRP lists, identify buffers and data buffers are carved from
 * the chunks, page aligned; everything is released together when the pool closes (a driver's
 * memory lives as long as its controller, as in ixy's mempools).
 */
import { Errno } from '../../abi/errno.js';
import type { SharedMemory } from '../../core/env.js';
import { fail } from '../../errors.js';
import { allocateShared } from '../../runtime.js';
import type { VfioDevice } from '../device.js';

export const PAGE = 4096;
/** Default IOVA of the first chunk: above 4 GiB, clear of the x86 MSI window and 32-bit BARs. */
export const DEFAULT_IOVA_BASE = 0x1_0000_0000n;
/** Default chunk size; a larger allocation gets a chunk of its own. */
export const DEFAULT_CHUNK_BYTES = 4 << 20;
/** Most DMA memory one pool maps (a bound on what a bad queue depth or block size can ask for). */
export const MAX_DMA_BYTES = 1 << 30;

/** A piece of DMA memory: the device sees it at `iova`, the driver through `bytes`. */
export interface DmaBuffer {
  readonly iova: bigint;
  readonly bytes: Uint8Array;
}

interface Chunk {
  readonly memory: SharedMemory;
  readonly iova: bigint;
  used: number;
}

export interface DmaPoolOptions {
  readonly iovaBase?: bigint;
  readonly chunkBytes?: number;
  /** IOVA ranges the pool must not use (the CMB's controller address, for one). */
  readonly avoid?: readonly { start: bigint; end: bigint }[];
}

export class DmaPool {
  private readonly chunks: Chunk[] = [];
  private nextIova: bigint;
  private mapped = 0;
  private readonly chunkBytes: number;
  private readonly avoid: { start: bigint; end: bigint }[];

  constructor(
    private readonly dev: VfioDevice,
    opts: DmaPoolOptions = {},
  ) {
    this.nextIova = opts.iovaBase ?? DEFAULT_IOVA_BASE;
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.avoid = [...(opts.avoid ?? [])];
    if (this.nextIova % BigInt(PAGE)) fail(Errno.EINVAL, 'nvme DMA', 'IOVA base must be page aligned');
  }

  /** Adds a range the pool must keep out of (e.g. the CMB once its address is known). */
  reserve(range: { start: bigint; end: bigint }): void {
    for (const c of this.chunks)
      if (c.iova < range.end && c.iova + BigInt(c.memory.size) > range.start)
        fail(Errno.EBUSY, 'nvme DMA', `IOVA 0x${c.iova.toString(16)} already overlaps the reserved range`);
    this.avoid.push(range);
  }

  /** `bytes` of zeroed DMA memory, aligned to `align` (a power of two up to a page). */
  async alloc(bytes: number, align = PAGE): Promise<DmaBuffer> {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) fail(Errno.EINVAL, 'nvme DMA', `size ${bytes}`);
    if (align > PAGE || align & (align - 1)) fail(Errno.EINVAL, 'nvme DMA', `alignment ${align}`);
    for (const c of this.chunks) {
      const at = Math.ceil(c.used / align) * align;
      if (at + bytes <= c.memory.size) {
        c.used = at + bytes;
        return { iova: c.iova + BigInt(at), bytes: c.memory.bytes.subarray(at, at + bytes) };
      }
    }
    const c = await this.addChunk(Math.max(this.chunkBytes, Math.ceil(bytes / PAGE) * PAGE));
    c.used = bytes;
    return { iova: c.iova, bytes: c.memory.bytes.subarray(0, bytes) };
  }

  private async addChunk(size: number): Promise<Chunk> {
    if (this.mapped + size > MAX_DMA_BYTES)
      fail(Errno.ENOMEM, 'nvme DMA', `more than ${MAX_DMA_BYTES} bytes of DMA memory (MAX_DMA_BYTES)`);
    let iova = this.nextIova;
    for (let moved = true; moved; ) {
      moved = false;
      for (const r of this.avoid)
        if (iova < r.end && iova + BigInt(size) > r.start) {
          iova = (r.end + BigInt(PAGE) - 1n) & ~(BigInt(PAGE) - 1n);
          moved = true;
        }
    }
    const memory = allocateShared('vfio-ts-nvme-dma', size);
    try {
      await this.dev.dmaMap(iova, { fd: memory.fd, size: memory.size, bytes: memory.bytes });
    } catch (e) {
      memory.close();
      throw e;
    }
    const c: Chunk = { memory, iova, used: 0 };
    this.chunks.push(c);
    this.nextIova = iova + BigInt(size);
    this.mapped += size;
    return c;
  }

  /** Unmaps every chunk from the device and frees it. */
  async close(): Promise<void> {
    for (const c of this.chunks.splice(0)) {
      try {
        await this.dev.dmaUnmap(c.iova, BigInt(c.memory.size));
      } finally {
        c.memory.close();
      }
    }
    this.mapped = 0;
  }
}
