/**
 * PCI configuration space: register offsets, bit masks and capability layouts, named as in
 * include/uapi/linux/pci_regs.h. Only the registers vfio-ts builds or virtualizes are listed.
 * Numbers only: the behaviour that uses them lives in src/core/config.ts.
 */

// ---------------------------------------------------------------------------------------------
// Sizes (pci_regs.h)
// ---------------------------------------------------------------------------------------------
/** Conventional PCI: 256 bytes of configuration space. */
export const PCI_CFG_SPACE_SIZE = 256;
/** PCI Express and PCI-X mode 2: 4096 bytes. */
export const PCI_CFG_SPACE_EXP_SIZE = 4096;
/** The standard (type 0/1) header: the first 64 bytes. */
export const PCI_STD_HEADER_SIZEOF = 64;
export const PCI_STD_NUM_BARS = 6;

// ---------------------------------------------------------------------------------------------
// Type 0 header
// ---------------------------------------------------------------------------------------------
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_SPECIAL = 0x8;
export const PCI_COMMAND_INVALIDATE = 0x10;
export const PCI_COMMAND_VGA_PALETTE = 0x20;
export const PCI_COMMAND_PARITY = 0x40;
export const PCI_COMMAND_WAIT = 0x80;
export const PCI_COMMAND_SERR = 0x100;
export const PCI_COMMAND_FAST_BACK = 0x200;
export const PCI_COMMAND_INTX_DISABLE = 0x400;

export const PCI_STATUS = 0x06;
export const PCI_STATUS_IMM_READY = 0x01;
export const PCI_STATUS_INTERRUPT = 0x08;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_STATUS_66MHZ = 0x20;
export const PCI_STATUS_FAST_BACK = 0x80;
export const PCI_STATUS_PARITY = 0x100;
export const PCI_STATUS_DEVSEL_MASK = 0x600;
export const PCI_STATUS_SIG_TARGET_ABORT = 0x800;
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
export const PCI_STATUS_DETECTED_PARITY = 0x8000;

export const PCI_CLASS_REVISION = 0x08;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_HEADER_TYPE_NORMAL = 0;
export const PCI_HEADER_TYPE_MFD = 0x80;
export const PCI_BIST = 0x0f;

export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_BASE_ADDRESS_1 = 0x14;
export const PCI_BASE_ADDRESS_2 = 0x18;
export const PCI_BASE_ADDRESS_3 = 0x1c;
export const PCI_BASE_ADDRESS_4 = 0x20;
export const PCI_BASE_ADDRESS_5 = 0x24;
export const PCI_BASE_ADDRESS_SPACE = 0x01;
export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_SPACE_MEMORY = 0x00;
export const PCI_BASE_ADDRESS_MEM_TYPE_MASK = 0x06;
export const PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;
/** ~0x0f as an unsigned 32-bit value. */
export const PCI_BASE_ADDRESS_MEM_MASK = 0xfffffff0;
/** ~0x03 as an unsigned 32-bit value. */
export const PCI_BASE_ADDRESS_IO_MASK = 0xfffffffc;

export const PCI_CARDBUS_CIS = 0x28;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_ROM_ADDRESS_ENABLE = 0x01;
/** ~0x7ff as an unsigned 32-bit value. */
export const PCI_ROM_ADDRESS_MASK = 0xfffff800;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_MIN_GNT = 0x3e;
export const PCI_MAX_LAT = 0x3f;

// ---------------------------------------------------------------------------------------------
// Capability list
// ---------------------------------------------------------------------------------------------
export const PCI_CAP_LIST_ID = 0;
export const PCI_CAP_LIST_NEXT = 1;
export const PCI_CAP_FLAGS = 2;
export const PCI_CAP_SIZEOF = 4;

export const PCI_CAP_ID_PM = 0x01;
export const PCI_CAP_ID_AGP = 0x02;
export const PCI_CAP_ID_VPD = 0x03;
export const PCI_CAP_ID_SLOTID = 0x04;
export const PCI_CAP_ID_MSI = 0x05;
export const PCI_CAP_ID_CHSWP = 0x06;
export const PCI_CAP_ID_PCIX = 0x07;
export const PCI_CAP_ID_HT = 0x08;
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_DBG = 0x0a;
export const PCI_CAP_ID_CCRC = 0x0b;
export const PCI_CAP_ID_SHPC = 0x0c;
export const PCI_CAP_ID_SSVID = 0x0d;
export const PCI_CAP_ID_AGP3 = 0x0e;
export const PCI_CAP_ID_SECDEV = 0x0f;
export const PCI_CAP_ID_EXP = 0x10;
export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_CAP_ID_SATA = 0x12;
export const PCI_CAP_ID_AF = 0x13;
export const PCI_CAP_ID_EA = 0x14;
export const PCI_CAP_ID_MAX = PCI_CAP_ID_EA;

// ---------------------------------------------------------------------------------------------
// Power management capability
// ---------------------------------------------------------------------------------------------
export const PCI_PM_PMC = 2;
export const PCI_PM_CAP_VER_MASK = 0x0007;
export const PCI_PM_CAP_DSI = 0x0020;
export const PCI_PM_CAP_AUX_POWER = 0x01c0;
export const PCI_PM_CAP_D1 = 0x0200;
export const PCI_PM_CAP_D2 = 0x0400;
export const PCI_PM_CAP_PME_MASK = 0xf800;
export const PCI_PM_CTRL = 4;
export const PCI_PM_CTRL_STATE_MASK = 0x0003;
export const PCI_PM_CTRL_NO_SOFT_RESET = 0x0008;
export const PCI_PM_CTRL_PME_ENABLE = 0x0100;
export const PCI_PM_CTRL_DATA_SEL_MASK = 0x1e00;
export const PCI_PM_CTRL_DATA_SCALE_MASK = 0x6000;
export const PCI_PM_CTRL_PME_STATUS = 0x8000;
export const PCI_PM_PPB_EXTENSIONS = 6;
export const PCI_PM_DATA_REGISTER = 7;
export const PCI_PM_SIZEOF = 8;

/** Power states as PMCSR encodes them (PCI PM 1.2 §3.2.4), and as pci_power_t numbers them. */
export const PCI_D0 = 0;
export const PCI_D1 = 1;
export const PCI_D2 = 2;
export const PCI_D3hot = 3;

// ---------------------------------------------------------------------------------------------
// MSI capability
// ---------------------------------------------------------------------------------------------
export const PCI_MSI_FLAGS = 0x02;
export const PCI_MSI_FLAGS_ENABLE = 0x0001;
/** Multiple Message Capable (log2 of vectors), bits 3:1. */
export const PCI_MSI_FLAGS_QMASK = 0x000e;
/** Multiple Message Enable (log2 of vectors), bits 6:4. */
export const PCI_MSI_FLAGS_QSIZE = 0x0070;
export const PCI_MSI_FLAGS_64BIT = 0x0080;
export const PCI_MSI_FLAGS_MASKBIT = 0x0100;
export const PCI_MSI_RFU = 3;
export const PCI_MSI_ADDRESS_LO = 0x04;
export const PCI_MSI_ADDRESS_HI = 0x08;
export const PCI_MSI_DATA_32 = 0x08;
export const PCI_MSI_MASK_32 = 0x0c;
export const PCI_MSI_PENDING_32 = 0x10;
export const PCI_MSI_DATA_64 = 0x0c;
export const PCI_MSI_MASK_64 = 0x10;
export const PCI_MSI_PENDING_64 = 0x14;
/** Largest vector count MSI can express: 32 (MMC = 5). */
export const PCI_MSI_VECTORS_MAX = 32;

// ---------------------------------------------------------------------------------------------
// MSI-X capability
// ---------------------------------------------------------------------------------------------
export const PCI_MSIX_FLAGS = 2;
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_TABLE = 4;
export const PCI_MSIX_TABLE_BIR = 0x00000007;
export const PCI_MSIX_TABLE_OFFSET = 0xfffffff8;
export const PCI_MSIX_PBA = 8;
export const PCI_MSIX_PBA_BIR = 0x00000007;
export const PCI_MSIX_PBA_OFFSET = 0xfffffff8;
export const PCI_CAP_MSIX_SIZEOF = 12;
export const PCI_MSIX_ENTRY_SIZE = 16;
export const PCI_MSIX_ENTRY_LOWER_ADDR = 0x0;
export const PCI_MSIX_ENTRY_UPPER_ADDR = 0x4;
export const PCI_MSIX_ENTRY_DATA = 0x8;
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 0xc;
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x00000001;
/** Table Size is N-1 in 11 bits: at most 2048 entries. */
export const PCI_MSIX_VECTORS_MAX = 2048;

// ---------------------------------------------------------------------------------------------
// PCI Express capability
// ---------------------------------------------------------------------------------------------
export const PCI_EXP_FLAGS = 0x02;
export const PCI_EXP_FLAGS_VERS = 0x000f;
export const PCI_EXP_FLAGS_TYPE = 0x00f0;
export const PCI_EXP_TYPE_ENDPOINT = 0x0;
export const PCI_EXP_TYPE_LEG_END = 0x1;
export const PCI_EXP_TYPE_RC_END = 0x9;
export const PCI_EXP_FLAGS_SLOT = 0x0100;
export const PCI_EXP_FLAGS_IRQ = 0x3e00;
export const PCI_EXP_DEVCAP = 0x04;
export const PCI_EXP_DEVCAP_PAYLOAD = 0x00000007;
export const PCI_EXP_DEVCAP_PHANTOM = 0x00000018;
export const PCI_EXP_DEVCAP_EXT_TAG = 0x00000020;
export const PCI_EXP_DEVCAP_L0S = 0x000001c0;
export const PCI_EXP_DEVCAP_L1 = 0x00000e00;
export const PCI_EXP_DEVCAP_RBER = 0x00008000;
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
export const PCI_EXP_DEVCTL = 0x08;
export const PCI_EXP_DEVCTL_CERE = 0x0001;
export const PCI_EXP_DEVCTL_NFERE = 0x0002;
export const PCI_EXP_DEVCTL_FERE = 0x0004;
export const PCI_EXP_DEVCTL_URRE = 0x0008;
export const PCI_EXP_DEVCTL_RELAX_EN = 0x0010;
export const PCI_EXP_DEVCTL_PAYLOAD = 0x00e0;
export const PCI_EXP_DEVCTL_EXT_TAG = 0x0100;
export const PCI_EXP_DEVCTL_PHANTOM = 0x0200;
export const PCI_EXP_DEVCTL_AUX_PME = 0x0400;
export const PCI_EXP_DEVCTL_NOSNOOP_EN = 0x0800;
export const PCI_EXP_DEVCTL_READRQ = 0x7000;
export const PCI_EXP_DEVCTL_READRQ_512B = 0x2000;
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
export const PCI_EXP_DEVSTA = 0x0a;
export const PCI_EXP_DEVSTA_CED = 0x0001;
export const PCI_EXP_DEVSTA_NFED = 0x0002;
export const PCI_EXP_DEVSTA_FED = 0x0004;
export const PCI_EXP_DEVSTA_URD = 0x0008;
export const PCI_EXP_DEVSTA_TRPND = 0x0020;
export const PCI_CAP_EXP_RC_ENDPOINT_SIZEOF_V1 = 12;
export const PCI_EXP_LNKCAP = 0x0c;
export const PCI_EXP_LNKCAP_SLS = 0x0000000f;
export const PCI_EXP_LNKCAP_SLS_2_5GB = 0x00000001;
export const PCI_EXP_LNKCAP_MLW = 0x000003f0;
export const PCI_EXP_LNKCTL = 0x10;
export const PCI_EXP_LNKSTA = 0x12;
export const PCI_EXP_LNKSTA_CLS = 0x000f;
export const PCI_EXP_LNKSTA_CLS_2_5GB = 0x0001;
export const PCI_EXP_LNKSTA_NLW = 0x03f0;
export const PCI_EXP_LNKSTA_NLW_X1 = 0x0010;
export const PCI_CAP_EXP_ENDPOINT_SIZEOF_V1 = 20;
export const PCI_EXP_SLTCAP = 0x14;
export const PCI_EXP_SLTCTL = 0x18;
export const PCI_EXP_SLTSTA = 0x1a;
export const PCI_EXP_RTCTL = 0x1c;
export const PCI_EXP_RTCAP = 0x1e;
export const PCI_EXP_RTSTA = 0x20;
export const PCI_EXP_DEVCAP2 = 0x24;
export const PCI_EXP_DEVCTL2 = 0x28;
export const PCI_EXP_DEVCTL2_ARI = 0x0020;
export const PCI_EXP_DEVSTA2 = 0x2a;
export const PCI_CAP_EXP_RC_ENDPOINT_SIZEOF_V2 = 0x2c;
export const PCI_EXP_LNKCAP2 = 0x2c;
export const PCI_EXP_LNKCAP2_SLS_2_5GB = 0x00000002;
export const PCI_EXP_LNKCTL2 = 0x30;
export const PCI_EXP_LNKCTL2_TLS_2_5GT = 0x0001;
export const PCI_EXP_LNKSTA2 = 0x32;
/**
 * 0x34 in Linux 7.3's header; bookworm's 6.1 header (and so 6.1's vfio_cap_len) says 0x32, which
 * ends the capability before Link Status 2 (found by test/abi/probe.test.ts). The model uses 0x34.
 */
export const PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 = 0x34;
export const PCI_EXP_SLTCAP2 = 0x34;
export const PCI_EXP_SLTCTL2 = 0x38;
export const PCI_EXP_SLTSTA2 = 0x3a;
/** Whole version-2 capability structure, slot registers included (PCIe 4.0 §7.5.3). */
export const PCI_EXP_VER2_SIZEOF = 0x3c;

// ---------------------------------------------------------------------------------------------
// Extended capabilities (PCIe, at 0x100)
// ---------------------------------------------------------------------------------------------
export const PCI_EXT_CAP_ID = (header: number): number => header & 0x0000ffff;
export const PCI_EXT_CAP_VER = (header: number): number => (header >>> 16) & 0xf;
export const PCI_EXT_CAP_NEXT = (header: number): number => (header >>> 20) & 0xffc;
export const PCI_EXT_CAP_ID_ERR = 0x01;
export const PCI_EXT_CAP_ID_DSN = 0x03;
export const PCI_EXT_CAP_ID_VNDR = 0x0b;
export const PCI_EXT_CAP_ID_DVSEC = 0x23;

/** Constants whose value an older supported header defines differently (probe.test.ts). */
export const PCI_HEADER_VALUES: Readonly<Record<string, Readonly<Partial<Record<'6.1' | '7.3', number>>>>> = {
  PCI_CAP_EXP_ENDPOINT_SIZEOF_V2: { '6.1': 0x32 },
};

// ---------------------------------------------------------------------------------------------
// Bits `vfio-ts info` decodes the way lspci -vv prints them (src/driver/pci-config.ts,
// src/driver/lspci.ts); pci_regs.h names, checked against the headers like every PCI_ above.
// ---------------------------------------------------------------------------------------------
export const PCI_STATUS_UDF = 0x40;
export const PCI_STATUS_DEVSEL_FAST = 0x000;
export const PCI_STATUS_DEVSEL_MEDIUM = 0x200;
export const PCI_STATUS_DEVSEL_SLOW = 0x400;
export const PCI_HEADER_TYPE_MASK = 0x7f;
export const PCI_HEADER_TYPE_BRIDGE = 1;
export const PCI_HEADER_TYPE_CARDBUS = 2;
export const PCI_BIST_CODE_MASK = 0x0f;
export const PCI_BIST_START = 0x40;
export const PCI_BIST_CAPABLE = 0x80;
export const PCI_BASE_ADDRESS_MEM_TYPE_1M = 0x02;
export const PCI_PM_CAP_PME_CLOCK = 0x0008;
export const PCI_PM_CAP_PME_D0 = 0x0800;
export const PCI_PM_CAP_PME_D1 = 0x1000;
export const PCI_PM_CAP_PME_D2 = 0x2000;
export const PCI_PM_CAP_PME_D3hot = 0x4000;
export const PCI_PM_CAP_PME_D3cold = 0x8000;
export const PCI_PM_PPB_B2_B3 = 0x40;
export const PCI_PM_BPCC_ENABLE = 0x80;
export const PCI_EXP_TYPE_ROOT_PORT = 0x4;
export const PCI_EXP_TYPE_UPSTREAM = 0x5;
export const PCI_EXP_TYPE_DOWNSTREAM = 0x6;
export const PCI_EXP_TYPE_PCI_BRIDGE = 0x7;
export const PCI_EXP_TYPE_PCIE_BRIDGE = 0x8;
export const PCI_EXP_TYPE_RC_EC = 0xa;
export const PCI_EXP_DEVCAP_ATN_BUT = 0x00001000;
export const PCI_EXP_DEVCAP_ATN_IND = 0x00002000;
export const PCI_EXP_DEVCAP_PWR_IND = 0x00004000;
export const PCI_EXP_DEVCAP_PWR_VAL = 0x03fc0000;
export const PCI_EXP_DEVCAP_PWR_SCL = 0x0c000000;
export const PCI_EXP_DEVSTA_AUXPD = 0x0010;
export const PCI_EXP_LNKCAP_ASPMS = 0x00000c00;
export const PCI_EXP_LNKCAP_L0SEL = 0x00007000;
export const PCI_EXP_LNKCAP_L1EL = 0x00038000;
export const PCI_EXP_LNKCAP_CLKPM = 0x00040000;
export const PCI_EXP_LNKCAP_SDERC = 0x00080000;
export const PCI_EXP_LNKCAP_DLLLARC = 0x00100000;
export const PCI_EXP_LNKCAP_LBNC = 0x00200000;
export const PCI_EXP_LNKCAP_PN = 0xff000000;
export const PCI_EXP_LNKCTL_ASPMC = 0x0003;
export const PCI_EXP_LNKCTL_RCB = 0x0008;
export const PCI_EXP_LNKCTL_LD = 0x0010;
export const PCI_EXP_LNKCTL_CCC = 0x0040;
export const PCI_EXP_LNKCTL_ES = 0x0080;
export const PCI_EXP_LNKCTL_CLKREQ_EN = 0x0100;
export const PCI_EXP_LNKCTL_HAWD = 0x0200;
export const PCI_EXP_LNKCTL_LBMIE = 0x0400;
export const PCI_EXP_LNKCTL_LABIE = 0x0800;
export const PCI_EXP_LNKSTA_LT = 0x0800;
export const PCI_EXP_LNKSTA_SLC = 0x1000;
export const PCI_EXP_LNKSTA_DLLLA = 0x2000;
export const PCI_EXP_LNKSTA_LBMS = 0x4000;
export const PCI_EXP_LNKSTA_LABS = 0x8000;
export const PCI_VNDR_HEADER = 4;
export const PCI_EXT_CAP_DSN_SIZEOF = 12;
/**
 * Bits the PCIe Base Specification defines that pci_regs.h does not name (so outside the header
 * probe): Link Capabilities bit 22, ASPM Optionality Compliance (r3.0 §7.8.6); Link Status bit 10,
 * Link Training Error (PCIe 1.1 §7.8.8, reserved since 2.0). lspci prints both.
 */
export const SPEC_EXP_LNKCAP_ASPM_OPT_COMPLIANCE = 0x00400000;
export const SPEC_EXP_LNKSTA_TRAINING_ERROR = 0x0400;
