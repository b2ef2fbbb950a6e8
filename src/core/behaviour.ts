/**
 * What a device model plugs into the core: handlers for its register BARs, its reset and close,
 * built once from the context the core hands it (interrupts, DMA, BAR memory). Device authors
 * write against `defineDevice` (define.ts), which validates a definition and builds this.
 */
import type { ConfigSpace } from './config.js';
import type { DmaSpace } from './dma.js';

/**
 * The size of one trapped access, naturally aligned, as vfio_pci_core_do_io_rw cuts a
 * pread/pwrite: 1, 2 or 4 bytes, and on Linux >= 6.11 ("vfio/pci: Support 8-byte PCI loads and
 * stores", VFIO_IORDWR(64)) 8 bytes where at least 8 remain at an 8-aligned offset (the 7.3
 * profile), unless the BAR's `maxAccessSize` is 4.
 */
export type AccessSize = 1 | 2 | 4 | 8;

/**
 * A register BAR's accesses. One value type for every width: a bigint holds an 8-byte register
 * exactly, and 1/2/4-byte ones need no second signature. The core keeps the low `size` bytes of
 * what `read` returns (so -1n reads all-ones); `write` gets the access's bytes zero-extended.
 */
export interface RegisterHandlers {
  read(offset: number, size: AccessSize): bigint;
  write(offset: number, size: AccessSize, value: bigint): void;
}

/** What the core gives a device when it is built. */
export interface BehaviourContext {
  readonly config: ConfigSpace;
  readonly dma: DmaSpace;
  /** The memory behind BAR `bar` (a memory BAR's bytes), or undefined for an I/O BAR. */
  barMemory(bar: number): Uint8Array | undefined;
  /** Raise interrupt `vector` of whatever type the driver enabled (INTx: 0). */
  raise(vector?: number): boolean;
  /**
   * INTx is a level: the device deasserts its line (QEMU's pci_set_irq(dev, 0)). The Interrupt
   * Status bit clears, and an unmask no longer re-sends it. No-op for MSI.
   */
  lower(): void;
  readonly irqType: 'none' | 'intx' | 'msi' | 'msix';
  /** Notable device events (DeviceOptions.log; nowhere by default). */
  log(line: string): void;
}

/** The device side the core calls. */
export interface DeviceBehaviour {
  /** Handlers of the register (`backing: 'trapped'`) BARs, by BAR index. */
  readonly bars?: { readonly [bar: number]: RegisterHandlers | undefined };
  /** Device reset (DEVICE_RESET, vfio-user RESET, a vfio-user client leaving). */
  reset?(): void;
  close?(): void;
  /** Resolves when no work the device started (a DMA, a command) is still running. */
  settled?(): Promise<void>;
}

/** Builds a device's behaviour from its context: once, when the core builds the device. */
export type BehaviourFactory = (ctx: BehaviourContext) => DeviceBehaviour;
