/**
 * What a device is made of: its PCI identity, BARs, capabilities, and which kernel it answers like.
 * A description is plain data; `VfioPciDevice` (device.ts) turns it into a working device.
 */

/** Which kernel's vfio-pci the model answers like. See docs/kernel-profiles.md. */
export type KernelProfile = '6.1' | '7.3';

export type BarKind = 'mem32' | 'mem64' | 'io';

export interface BarDescription {
  /** Size in bytes: a power of two, at least 16 for I/O and 16 for memory (PCI 3.0 §6.2.5.1). */
  readonly size: number;
  readonly kind: BarKind;
  /** Prefetchable bit of a memory BAR (PCI 3.0 §6.2.5.1, bit 3). */
  readonly prefetchable?: boolean;
  /**
   * May userspace mmap it? vfio-pci allows mmap of memory BARs whose size is at least a page
   * (vfio_pci_core.c: vfio_pci_core_enable / bar_mmap_supported). Default: true for memory BARs
   * of a page or more.
   */
  readonly mmappable?: boolean;
  /**
   * 'memory' (default): plain memory in shared memory (memfd), mappable and handed to peers.
   * 'trapped': every access goes to the device behaviour's barRead/barWrite (registers).
   */
  readonly backing?: 'memory' | 'trapped';
}

export interface MsiDescription {
  /** Vectors the device can use: 1, 2, 4, 8, 16 or 32 (Multiple Message Capable). */
  readonly vectors: number;
  /** 64-bit address capable. */
  readonly addr64: boolean;
  /** Per-vector masking capable. */
  readonly perVectorMask: boolean;
}

export interface MsixDescription {
  /** Table size in entries (1..2048). */
  readonly tableSize: number;
  /** BAR index (BIR) holding the table, and offset of the table within it (8-byte aligned). */
  readonly tableBar: number;
  readonly tableOffset: number;
  /** BAR index and offset of the Pending Bit Array. */
  readonly pbaBar: number;
  readonly pbaOffset: number;
}

export interface PciIdentity {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  /** 24-bit class code: base class << 16 | sub class << 8 | prog-if. */
  readonly classCode: number;
  readonly revision: number;
  /** Interrupt pin: 0 none, 1 INTA# .. 4 INTD#. */
  readonly interruptPin: number;
}

export interface DeviceDescription {
  readonly name: string;
  readonly identity: PciIdentity;
  /** BAR0..BAR5; `undefined` where a BAR is not implemented (or is the upper half of a mem64). */
  readonly bars: readonly (BarDescription | undefined)[];
  readonly rom?: { readonly size: number };
  readonly msi?: MsiDescription;
  readonly msix?: MsixDescription;
  /** A PCI Express endpoint: adds the PCIe capability and a 4 KiB config space. */
  readonly pcie?: boolean;
  /** Power-management capability (most real devices have one). */
  readonly pm?: boolean;
  /** The device can reset itself (function-level or PM reset): DEVICE_GET_INFO sets FLAGS_RESET. */
  readonly resettable?: boolean;
  /** Is it a VGA device (class 0x0300)? Then the VGA region (index 8) exists. */
  readonly vga?: boolean;
}
