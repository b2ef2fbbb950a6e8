/**
 * What the vfio-user server needs of a device, and nothing more: the seam between the server and
 * the device core. `VfioPciDevice` (src/core/device.ts) implements it as it is (structurally);
 * a device split into other objects, or a test double, only has to offer these members.
 *
 * The server forwards the uAPI commands whose answer is the kernel's struct (GET_INFO,
 * GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS, RESET, FEATURE) through `ioctl`, so it answers exactly
 * what vfio-pci answers; everything it decides itself (bounds of a region access, the fd and fd
 * offset sent with a region, DMA_MAP's rules) it reads from the members below instead of
 * decoding an ioctl's bytes again.
 */
import type { DmaSpace } from '../core/dma.js';
import type { VfioRegionCap } from '../wire/vfio.js';

/** A region as VFIO_DEVICE_GET_REGION_INFO reports it (capabilities before the argsz exchange). */
export interface PortRegion {
  readonly index: number;
  readonly size: bigint;
  readonly flags: number;
  /** The region's offset in the device fd (REGION_INFO's `offset`): where `mappingSource` looks. */
  readonly base: bigint;
  readonly caps: readonly VfioRegionCap[];
}

/** Where a page of the device fd maps: this fd (a BAR's memfd, or none: heap memory) at this offset. */
export interface PortMappingSource {
  readonly memory: { readonly fd: number | undefined };
  readonly memoryOffset: bigint;
}

/** The device's DMA space as DMA_MAP / DMA_UNMAP use it (src/core/dma.ts). */
export type PortDma = Pick<
  DmaSpace,
  'maxMaps' | 'count' | 'exact' | 'overlaps' | 'map' | 'unmapExact' | 'unmapAll'
>;

/** The saving / resuming stream of the device's migration session. */
export interface PortMigration {
  /** Up to `max` bytes of the saving stream; fewer when no more is there now. EINVAL outside the saving states. */
  read(max: number): Uint8Array;
  /** Bytes for the RESUMING device; EINVAL otherwise, or for a stream it refuses. */
  write(data: Uint8Array): void;
}

export interface DevicePort {
  /**
   * The device fd's ioctl (vfio.h layouts, `arg` read and written in place); returns 0 or, for
   * VFIO_DEVICE_FEATURE_DMA_BUF, the new dma-buf fd.
   * @throws VfioError with the errno vfio-pci gives
   */
  ioctl(request: number, arg: Uint8Array): number;
  /** `ioctl` for a request that may wait for the device (MIG_DEVICE_STATE SET). */
  ioctlAsync(request: number, arg: Uint8Array): Promise<number>;
  /**
   * The migration driver's data transfer session (src/core/migration/engine.ts), which
   * MIG_DATA_READ / MIG_DATA_WRITE reach; absent when the device has no migration.
   */
  readonly migration: PortMigration | undefined;
  /** VFIO_DEVICE_GET_INFO's num_regions. */
  readonly numRegions: number;
  /** Region `index`, or undefined past the last one. */
  region(index: number): PortRegion | undefined;
  /**
   * pread of region `index` at `pos` (a number below 2^53) into all of `dst` (vfio_pci_rw's
   * checks and errnos); returns the bytes read. The fast path reads into its reply buffer.
   */
  readRegionInto(index: number, pos: number, dst: Uint8Array): number;
  /** pwrite of region `index` at `pos`; returns the bytes written. */
  writeRegion(index: number, pos: bigint, data: Uint8Array): number;
  /** What mmap of the device fd at `offset` would map (vfio_pci_core_mmap's checks). */
  mappingSource(offset: bigint, length: number): PortMappingSource;
  /** Releases a dma-buf fd `ioctl` returned (once the server has sent it). */
  closeDmaBuf(fd: number): void;
  /** vfio_pci_get_irq_count: interrupts of IRQ index `index`. */
  irqCount(index: number): number;
  /** The interrupt state; `close` drops every trigger (eventfd) a client set. */
  readonly irqs: { close(): void };
  /** The client's memory as the device reaches it. */
  readonly dma: PortDma;
  /** Device reset for the next client (vfio_pci_core_disable resets a device its last user left). */
  reset(): void;
}
