/**
 * The VFIO uAPI: constants and struct layouts of include/uapi/linux/vfio.h, plus the seed RFC's
 * additions (never merged) and vfio-ts's own extensions, each marked by its `origin`.
 *
 * Layouts are data (src/abi/layout.ts): `test/abi/probe.test.ts` compiles a C program against the machine's
 * <linux/vfio.h> and checks every `uapi` constant, `sizeof` and `offsetof` listed here.
 * Nothing in this file encodes or decodes; src/wire/vfio.ts does, by these layouts.
 */
import { bytes, field, layout, type Origin, type StructLayout } from './layout.js';

// ---------------------------------------------------------------------------------------------
// ioctl numbers. vfio.h: "#define VFIO_TYPE (';')", "#define VFIO_BASE 100"; every VFIO ioctl is
// _IO(VFIO_TYPE, VFIO_BASE + n) regardless of direction ("the argsz field ... is used instead of
// the ioctl size", vfio.h header comment). _IO(type, nr) = (type << 8) | nr  (asm-generic/ioctl.h)
// ---------------------------------------------------------------------------------------------
export const VFIO_TYPE = 0x3b; // ';'
export const VFIO_BASE = 100;
export const vfioIoctl = (n: number): number => (VFIO_TYPE << 8) | (VFIO_BASE + n);

export const VFIO_API_VERSION = 0;

export const VFIO_GET_API_VERSION = vfioIoctl(0);
export const VFIO_CHECK_EXTENSION = vfioIoctl(1);
export const VFIO_SET_IOMMU = vfioIoctl(2);
export const VFIO_GROUP_GET_STATUS = vfioIoctl(3);
export const VFIO_GROUP_SET_CONTAINER = vfioIoctl(4);
export const VFIO_GROUP_UNSET_CONTAINER = vfioIoctl(5);
export const VFIO_GROUP_GET_DEVICE_FD = vfioIoctl(6);
export const VFIO_DEVICE_GET_INFO = vfioIoctl(7);
export const VFIO_DEVICE_GET_REGION_INFO = vfioIoctl(8);
export const VFIO_DEVICE_GET_IRQ_INFO = vfioIoctl(9);
export const VFIO_DEVICE_SET_IRQS = vfioIoctl(10);
export const VFIO_DEVICE_RESET = vfioIoctl(11);
export const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = vfioIoctl(12);
export const VFIO_DEVICE_PCI_HOT_RESET = vfioIoctl(13);
export const VFIO_DEVICE_QUERY_GFX_PLANE = vfioIoctl(14);
export const VFIO_DEVICE_GET_GFX_DMABUF = vfioIoctl(15);
export const VFIO_DEVICE_IOEVENTFD = vfioIoctl(16);
export const VFIO_DEVICE_FEATURE = vfioIoctl(17);
/** Container ioctls share numbers with device ioctls; they go to a different fd. */
export const VFIO_IOMMU_GET_INFO = vfioIoctl(12);
export const VFIO_IOMMU_MAP_DMA = vfioIoctl(13);
export const VFIO_IOMMU_UNMAP_DMA = vfioIoctl(14);
/**
 * Seed RFC (kbusch, 2024-07-31, "vfio-pci: Allow write combining"): `_IO(VFIO_TYPE, VFIO_BASE + 21)`
 * on the device fd. Never merged. (On a container fd the same number is VFIO_EEH_PE_OP; the
 * real kernel answers ENOTTY for it on a vfio-pci device fd — seen in the 6.1 probe.)
 */
export const VFIO_DEVICE_SET_REGION_FLAGS = vfioIoctl(21);

/** Type1 IOMMU types for VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION. */
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_NOIOMMU_IOMMU = 8;

// ---------------------------------------------------------------------------------------------
// Flags and indexes
// ---------------------------------------------------------------------------------------------
export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;
export const VFIO_DEVICE_FLAGS_CAPS = 1 << 7;

export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;
/** Seed RFC: "Region is prefetchable". Never merged; reported by vfio-ts models only. */
export const VFIO_REGION_INFO_FLAG_PREFETCH = 1 << 4;

export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_TYPE = 2;
export const VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;

export const VFIO_REGION_TYPE_PCI_VENDOR_TYPE = 1 << 31;
export const VFIO_REGION_TYPE_PCI_VENDOR_MASK = 0xffff;
export const VFIO_REGION_TYPE_GFX = 1;
export const VFIO_REGION_TYPE_CCW = 2;
export const VFIO_REGION_TYPE_MIGRATION_DEPRECATED = 3;

export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_BAR5_REGION_INDEX = 5;
export const VFIO_PCI_ROM_REGION_INDEX = 6;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const VFIO_PCI_VGA_REGION_INDEX = 8;
export const VFIO_PCI_NUM_REGIONS = 9;
/** include/linux/pci.h: PCI_STD_NUM_BARS */
export const PCI_STD_NUM_BARS = 6;

export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
export const VFIO_PCI_REQ_IRQ_INDEX = 4;
export const VFIO_PCI_NUM_IRQS = 5;

export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
export const VFIO_IRQ_INFO_MASKABLE = 1 << 1;
export const VFIO_IRQ_INFO_AUTOMASKED = 1 << 2;
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;
export const VFIO_IRQ_SET_DATA_TYPE_MASK =
  VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD;
export const VFIO_IRQ_SET_ACTION_TYPE_MASK =
  VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER;

export const VFIO_DEVICE_FEATURE_MASK = 0xffff;
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;

export const VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0;
export const VFIO_DEVICE_FEATURE_MIGRATION = 1;
export const VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
export const VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3;
export const VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4;
export const VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
/** Linux 6.8+ (absent from 6.1's header). */
export const VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;
/** Linux 6.x+: bus master control (absent from 6.1's header). */
export const VFIO_DEVICE_FEATURE_BUS_MASTER = 10;
/** Linux 6.19+ (`vfio_pci_dmabuf.c`); absent from 6.1's header, present in 7.3's. */
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;

// ---------------------------------------------------------------------------------------------
// Migration v2 (vfio.h: VFIO_DEVICE_FEATURE_MIGRATION, _MIG_DEVICE_STATE, _MIG_DATA_SIZE,
// VFIO_MIG_GET_PRECOPY_INFO; docs/migration.md)
// ---------------------------------------------------------------------------------------------
/** struct vfio_device_feature_migration flags: STOP, STOP_COPY and RESUMING are supported. */
export const VFIO_MIGRATION_STOP_COPY = 1 << 0;
/** RUNNING_P2P is supported (and PRE_COPY_P2P with PRE_COPY). */
export const VFIO_MIGRATION_P2P = 1 << 1;
/** PRE_COPY is supported (Linux 6.2+; absent from 6.1's header). */
export const VFIO_MIGRATION_PRE_COPY = 1 << 2;
/** ioctl on the migration data fd, valid in the PRE_COPY states (Linux 6.2+). */
export const VFIO_MIG_GET_PRECOPY_INFO = vfioIoctl(21);

/**
 * enum vfio_device_mig_state. An object, not VFIO_ constants: PRE_COPY and PRE_COPY_P2P are enum
 * members 6.1's header lacks, and the ABI probe cannot #ifdef an enum member.
 */
export const VfioMigState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;

/**
 * DMA_BUF attribute field in `vfio_device_feature_dma_buf.flags`: posted and reviewed upstream
 * (April 2026), not merged as of Linux 7.3, whose vfio_pci_core_feature_dma_buf() still demands
 * `flags == 0`.
 */
export const VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK = 0xf << 28;
export const VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC = 0;
export const VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC = 1 << 28;

/** Seed RFC: `struct vfio_region_flags.flags` bit. */
export const VFIO_REGION_FLAG_WRITE_COMBINE = 1 << 0;

export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;

/**
 * vfio_pci_core.c / vfio_pci_priv.h: VFIO_PCI_OFFSET_SHIFT = 40; region offset = index << 40.
 * Not uAPI ("the mmap offsets are not (supposed to be) ABI", seed thread), but what every kernel
 * reports, so the models report it too for the fixed regions.
 */
export const VFIO_PCI_OFFSET_SHIFT = 40n;

// ---------------------------------------------------------------------------------------------
// vfio-ts extensions (docs/wc-uapi.md). Feature numbers sit at the top of the 16-bit feature
// space, far from upstream's small sequential numbers.
// ---------------------------------------------------------------------------------------------
/** Per-request mmap cookie: GET returns a new opaque offset for (region, attribute). */
export const VFIO_TS_FEATURE_MMAP_COOKIE = 0xf001;
/** WC alias region: GET creates (or finds) a device-specific region aliasing a BAR with WC. */
export const VFIO_TS_FEATURE_ALIAS_REGION = 0xf002;
/** `vfio_ts_mmap_cookie.flags`: release the cookie named by `offset` (SET). */
export const VFIO_TS_MMAP_COOKIE_FLAG_RELEASE = 1 << 0;
/**
 * Region type of every vfio-ts alias region (Alex Williamson's proposal in the seed thread), in
 * the vendor type space as vfio.h does for device-specific regions: upstream numbers its own
 * types sequentially (1 GFX, 2 CCW, 3 MIGRATION_DEPRECATED, and more to come), so a small number
 * would collide; vendors use `VFIO_REGION_TYPE_PCI_VENDOR_TYPE | vendor id` (Intel IGD:
 * `| 0x8086`, NVIDIA: `| 0x10de`). vfio-ts has no PCI vendor id and takes 0xffff, the id PCI
 * reserves as "no device" and never assigns, so no real vendor's types can collide with ours.
 */
export const VFIO_TS_REGION_VENDOR_ID = 0xffff;
export const VFIO_TS_REGION_TYPE_ALIAS = (VFIO_REGION_TYPE_PCI_VENDOR_TYPE | VFIO_TS_REGION_VENDOR_ID) >>> 0;
/** Subtype of BARn's WC alias: VFIO_TS_REGION_SUBTYPE_BAR0_WC + n (1..6). */
export const VFIO_TS_REGION_SUBTYPE_BAR0_WC = 1;
/** The BAR whose WC alias a (type, subtype) names, or undefined. */
export function aliasRegionBar(type: number, subtype: number): number | undefined {
  const bar = subtype - VFIO_TS_REGION_SUBTYPE_BAR0_WC;
  return type >>> 0 === VFIO_TS_REGION_TYPE_ALIAS && bar >= 0 && bar < PCI_STD_NUM_BARS ? bar : undefined;
}

// ---------------------------------------------------------------------------------------------
// Struct layouts (the shape is src/abi/layout.ts; src/wire/struct.ts reads and writes by them)
// ---------------------------------------------------------------------------------------------
export {
  type Field,
  type FieldType,
  type HeaderVersion,
  type Origin,
  type StructLayout,
  sizeIn,
} from './layout.js';

/** vfio.h: struct vfio_info_cap_header */
export const vfio_info_cap_header = layout('vfio_info_cap_header', 8, 'uapi', {
  id: field(0, 'u16'),
  version: field(2, 'u16'),
  next: field(4, 'u32'),
});

export const vfio_group_status = layout('vfio_group_status', 8, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
});

/**
 * vfio.h: struct vfio_device_info. cap_offset arrived in 4.20; a trailing `__u32 pad` makes it
 * 24 bytes in 7.3's header (20 in 6.1's) — found by the ABI probe against both headers.
 */
export const vfio_device_info = layout(
  'vfio_device_info',
  20,
  'uapi',
  {
    argsz: field(0, 'u32'),
    flags: field(4, 'u32'),
    num_regions: field(8, 'u32'),
    num_irqs: field(12, 'u32'),
    cap_offset: field(16, 'u32'),
    pad: field(20, 'u32', '7.3'),
  },
  { '7.3': 24 },
);

/**
 * vfio.h: struct vfio_region_info. The two-call argsz exchange: the caller passes argsz =
 * sizeof(struct) (32); if capabilities do not fit, the kernel sets FLAG_CAPS, leaves cap_offset 0
 * and returns the argsz it needs; the caller retries with a buffer that large
 * (vfio_pci_core.c: vfio_pci_ioctl_get_region_info → vfio_info_add_capability).
 */
export const vfio_region_info = layout('vfio_region_info', 32, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  index: field(8, 'u32'),
  cap_offset: field(12, 'u32'),
  size: field(16, 'u64'),
  offset: field(24, 'u64'),
});

export const vfio_region_sparse_mmap_area = layout('vfio_region_sparse_mmap_area', 16, 'uapi', {
  offset: field(0, 'u64'),
  size: field(8, 'u64'),
});

export const vfio_region_info_cap_sparse_mmap = layout('vfio_region_info_cap_sparse_mmap', 16, 'uapi', {
  header: field(0, 'cap'),
  nr_areas: field(8, 'u32'),
  reserved: field(12, 'u32'),
  areas: bytes(16),
});

export const vfio_region_info_cap_type = layout('vfio_region_info_cap_type', 16, 'uapi', {
  header: field(0, 'cap'),
  type: field(8, 'u32'),
  subtype: field(12, 'u32'),
});

export const vfio_irq_info = layout('vfio_irq_info', 16, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  index: field(8, 'u32'),
  count: field(12, 'u32'),
});

/** vfio.h: struct vfio_irq_set; `data` holds u8 bools or s32 eventfds. */
export const vfio_irq_set = layout('vfio_irq_set', 20, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  index: field(8, 'u32'),
  start: field(12, 'u32'),
  count: field(16, 'u32'),
  data: bytes(20),
});

/** vfio.h: struct vfio_pci_hot_reset_info; `devices` (or group dependencies) follow. */
export const vfio_pci_hot_reset_info = layout('vfio_pci_hot_reset_info', 12, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  count: field(8, 'u32'),
  devices: bytes(12),
});

/** vfio.h: struct vfio_pci_hot_reset; `group_fds` (s32) follow. */
export const vfio_pci_hot_reset = layout('vfio_pci_hot_reset', 12, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  count: field(8, 'u32'),
  group_fds: bytes(12),
});

/**
 * vfio.h: struct vfio_device_ioeventfd. 32 bytes in both headers: 6.1's ends in padding after
 * `fd`, which 7.3's names `reserved`.
 */
export const vfio_device_ioeventfd = layout('vfio_device_ioeventfd', 32, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  offset: field(8, 'u64'),
  data: field(16, 'u64'),
  fd: field(24, 's32'),
  reserved: field(28, 'u32', '7.3'),
});

/** vfio.h: struct vfio_device_feature; the feature's `data` follows. */
export const vfio_device_feature = layout('vfio_device_feature', 8, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  data: bytes(8),
});

/** vfio.h: data of VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP. */
export const vfio_device_low_power_entry_with_wakeup = layout(
  'vfio_device_low_power_entry_with_wakeup',
  8,
  'uapi',
  { wakeup_eventfd: field(0, 's32'), reserved: field(4, 'u32') },
);

/** vfio.h: data of VFIO_DEVICE_FEATURE_MIGRATION (GET). */
export const vfio_device_feature_migration = layout('vfio_device_feature_migration', 8, 'uapi', {
  flags: field(0, 'u64'),
});

/** vfio.h: data of VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE; data_fd is -1 when no session opened. */
export const vfio_device_feature_mig_state = layout('vfio_device_feature_mig_state', 8, 'uapi', {
  device_state: field(0, 'u32'),
  data_fd: field(4, 's32'),
});

/** vfio.h (6.8+): data of VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (GET). */
export const vfio_device_feature_mig_data_size = layout('vfio_device_feature_mig_data_size', 8, 'uapi-6.19', {
  stop_copy_length: field(0, 'u64'),
});

/** vfio.h (6.2+): VFIO_MIG_GET_PRECOPY_INFO's argument. */
export const vfio_precopy_info = layout('vfio_precopy_info', 24, 'uapi-6.19', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  initial_bytes: field(8, 'u64'),
  dirty_bytes: field(16, 'u64'),
});

export const vfio_region_dma_range = layout('vfio_region_dma_range', 16, 'uapi-6.19', {
  offset: field(0, 'u64'),
  length: field(8, 'u64'),
});

/** vfio.h (6.19+): struct vfio_device_feature_dma_buf; `dma_ranges[]` follow. */
export const vfio_device_feature_dma_buf = layout('vfio_device_feature_dma_buf', 16, 'uapi-6.19', {
  region_index: field(0, 'u32'),
  open_flags: field(4, 'u32'),
  flags: field(8, 'u32'),
  nr_ranges: field(12, 'u32'),
  dma_ranges: bytes(16),
});

/** Seed RFC: struct vfio_region_flags { __u32 index; __u32 flags; }. */
export const vfio_region_flags = layout('vfio_region_flags', 8, 'rfc', {
  index: field(0, 'u32'),
  flags: field(4, 'u32'),
});

/** vfio-ts: data of VFIO_TS_FEATURE_MMAP_COOKIE (docs/wc-uapi.md). */
export const vfio_ts_mmap_cookie = layout('vfio_ts_mmap_cookie', 24, 'vfio-ts', {
  region_index: field(0, 'u32'),
  flags: field(4, 'u32'),
  offset: field(8, 'u64'),
  size: field(16, 'u64'),
});

/** vfio-ts: data of VFIO_TS_FEATURE_ALIAS_REGION (docs/wc-uapi.md). */
export const vfio_ts_alias_region = layout('vfio_ts_alias_region', 16, 'vfio-ts', {
  region_index: field(0, 'u32'),
  flags: field(4, 'u32'),
  alias_index: field(8, 'u32'),
  reserved: field(12, 'u32'),
});

export const vfio_iommu_type1_dma_map = layout('vfio_iommu_type1_dma_map', 32, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  vaddr: field(8, 'u64'),
  iova: field(16, 'u64'),
  size: field(24, 'u64'),
});

export const vfio_iommu_type1_dma_unmap = layout('vfio_iommu_type1_dma_unmap', 24, 'uapi', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  iova: field(8, 'u64'),
  size: field(16, 'u64'),
});

/**
 * Where each constant that is not plain merged uAPI comes from. The ABI probe test requires every
 * other exported VFIO_ constant in the installed <linux/vfio.h>; these it checks when present and
 * otherwise reports as skipped by name.
 */
export const CONSTANT_ORIGIN: Readonly<Record<string, Origin>> = {
  VFIO_DEVICE_SET_REGION_FLAGS: 'rfc',
  VFIO_REGION_INFO_FLAG_PREFETCH: 'rfc',
  VFIO_REGION_FLAG_WRITE_COMBINE: 'rfc',
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: 'uapi-6.19',
  VFIO_MIGRATION_PRE_COPY: 'uapi-6.19',
  VFIO_MIG_GET_PRECOPY_INFO: 'uapi-6.19',
  VFIO_DEVICE_FEATURE_BUS_MASTER: 'uapi-6.19',
  VFIO_DEVICE_FEATURE_DMA_BUF: 'uapi-6.19',
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK: 'proposed',
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC: 'proposed',
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC: 'proposed',
  VFIO_PCI_OFFSET_SHIFT: 'vfio-ts',
  VFIO_TS_FEATURE_MMAP_COOKIE: 'vfio-ts',
  VFIO_TS_FEATURE_ALIAS_REGION: 'vfio-ts',
  VFIO_TS_MMAP_COOKIE_FLAG_RELEASE: 'vfio-ts',
  VFIO_TS_REGION_VENDOR_ID: 'vfio-ts',
  VFIO_TS_REGION_TYPE_ALIAS: 'vfio-ts',
  VFIO_TS_REGION_SUBTYPE_BAR0_WC: 'vfio-ts',
};

/** Region and IRQ indexes are C enum members in vfio.h, not macros (no #ifdef possible). */
export const ENUM_CONSTANTS: ReadonlySet<string> = new Set([
  'VFIO_PCI_BAR0_REGION_INDEX',
  'VFIO_PCI_BAR5_REGION_INDEX',
  'VFIO_PCI_ROM_REGION_INDEX',
  'VFIO_PCI_CONFIG_REGION_INDEX',
  'VFIO_PCI_VGA_REGION_INDEX',
  'VFIO_PCI_NUM_REGIONS',
  'VFIO_PCI_INTX_IRQ_INDEX',
  'VFIO_PCI_MSI_IRQ_INDEX',
  'VFIO_PCI_MSIX_IRQ_INDEX',
  'VFIO_PCI_ERR_IRQ_INDEX',
  'VFIO_PCI_REQ_IRQ_INDEX',
  'VFIO_PCI_NUM_IRQS',
]);

/** Every layout, for the ABI probe test and for documentation. */
export const ALL_LAYOUTS: readonly StructLayout[] = [
  vfio_info_cap_header,
  vfio_group_status,
  vfio_device_info,
  vfio_region_info,
  vfio_region_sparse_mmap_area,
  vfio_region_info_cap_sparse_mmap,
  vfio_region_info_cap_type,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_hot_reset_info,
  vfio_pci_hot_reset,
  vfio_device_ioeventfd,
  vfio_device_feature,
  vfio_device_low_power_entry_with_wakeup,
  vfio_device_feature_migration,
  vfio_device_feature_mig_state,
  vfio_device_feature_mig_data_size,
  vfio_precopy_info,
  vfio_region_dma_range,
  vfio_device_feature_dma_buf,
  vfio_region_flags,
  vfio_ts_mmap_cookie,
  vfio_ts_alias_region,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
];
