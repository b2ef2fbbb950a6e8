/**
 * What a device model (src/devices/*) plugs into the core: a behaviour for its trapped BARs and
 * reset, and the context it gets back to raise interrupts, reach DMA and its BAR memory.
 */
import type { ConfigSpace } from './config.js';
import type { DmaSpace } from './dma.js';

/** What a device's behaviour (src/devices/*) can reach. */
export interface DeviceContext {
  readonly config: ConfigSpace;
  readonly dma: DmaSpace;
  /** The memory of a memory-backed BAR. */
  barMemory(bar: number): Uint8Array | undefined;
  /** Raise interrupt `vector` of whatever type the driver enabled (INTx: 0). */
  raise(vector?: number): boolean;
  /**
   * INTx is a level: the device deasserts its line (QEMU's pci_set_irq(dev, 0)). The Interrupt
   * Status bit clears, and an unmask no longer re-sends it. No-op for MSI.
   */
  lower(): void;
  readonly irqType: 'none' | 'intx' | 'msi' | 'msix';
}

/**
 * Trapped BAR accesses, naturally aligned, as vfio_pci_core_do_io_rw cuts a pread/pwrite: 1, 2
 * or 4 bytes, and on Linux >= 6.11 ("vfio/pci: Support 8-byte PCI loads and stores",
 * VFIO_IORDWR(64)) 8 bytes where at least 8 remain at an 8-aligned offset (the 7.3 profile).
 */
export interface DeviceBehaviour {
  attach?(ctx: DeviceContext): void;
  barRead?(bar: number, offset: number, size: 1 | 2 | 4): number;
  barWrite?(bar: number, offset: number, size: 1 | 2 | 4, value: number): void;
  /**
   * An 8-byte access. A behaviour without these takes it as two 4-byte accesses, low half first,
   * as QEMU's memory core splits an access wider than a region's `.impl.max_access_size`
   * (softmmu/memory.c access_with_adjusted_size).
   */
  barRead64?(bar: number, offset: number): bigint;
  barWrite64?(bar: number, offset: number, value: bigint): void;
  reset?(): void;
  /** The device closes; a promise (a file flushed and closed) is what VfioPciDevice.close() waits for. */
  close?(): void | Promise<void>;
}
