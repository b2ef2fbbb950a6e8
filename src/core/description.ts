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
   * 'trapped': every access goes to the behaviour's handler for the BAR (registers).
   */
  readonly backing?: 'memory' | 'trapped';
  /**
   * What a device reset does to the BAR's memory: 'keep' it (the default for memory BARs: device
   * memory, a host memory backend) or 'zero' it (the default for the page behind a trapped BAR).
   */
  readonly reset?: 'keep' | 'zero';
  /**
   * The widest access the handler of a trapped BAR takes: 8 (default) or 4, when an 8-byte
   * access (7.3 profile) becomes two 4-byte ones, low half first (QEMU's
   * `.impl.max_access_size = 4`).
   */
  readonly maxAccessSize?: 4 | 8;
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
  /**
   * Where the standard capabilities sit, in chain order, as a real device lays them out (QEMU's
   * nvme: MSI-X 0x40, PCIe 0x80, PM 0x60). Every capability the description has must be listed.
   * Default: packed from 0x40 in the order PM, MSI, PCIe, MSI-X.
   */
  readonly capabilityLayout?: readonly CapabilityPlacement[];
  /**
   * PCI Express extended capabilities (config space 0x100 and up), chained in this order with
   * read-only zero bodies: enough for a device whose vfio-pci view lists them (QEMU's e1000e has
   * AER v2 at 0x100 and DSN at 0x140). The model gives them no behaviour.
   */
  readonly extendedCapabilities?: readonly ExtendedCapability[];
}

export interface ExtendedCapability {
  /** PCI_EXT_CAP_ID_* (1 AER, 3 DSN, ...). */
  readonly id: number;
  readonly version: number;
  /** Dword aligned, 0x100..0xffc; the first one must be at 0x100. */
  readonly offset: number;
}

export interface CapabilityPlacement {
  readonly cap: 'pm' | 'msi' | 'pcie' | 'msix';
  /** Config-space offset, dword aligned, 0x40..0xfc. */
  readonly offset: number;
  /** PCIe only: capability version (default 2; QEMU's e1000e has a version 1 structure, 20 bytes). */
  readonly pcieVersion?: 1 | 2;
  /** PCIe only: device/port type (PCI_EXP_TYPE_*; default 0, endpoint; QEMU's q35 root-bus devices are 9, RC integrated). */
  readonly pcieType?: number;
  /** PCIe only: FLR in Device Capabilities (default: the device is resettable). */
  readonly pcieFlr?: boolean;
  /**
   * PCIe only: 'spec' (default) fills registers with the PCIe 4.0 reset values; 'qemu' the way
   * QEMU's hw/pci/pcie.c does (Device Control 0, ASPM L0s in Link Capabilities, Device
   * Capabilities 2 with Extended Fmt Field and End-End TLP Prefix, no Link Capabilities 2).
   */
  readonly pcieStyle?: 'spec' | 'qemu';
  /** PM only: the PMC register (default 0x0003: version 3, nothing else). */
  readonly pmc?: number;
  /** PM only: No_Soft_Reset in PMCSR (default: set unless a PM reset is the device's reset). */
  readonly pmNoSoftReset?: boolean;
}
