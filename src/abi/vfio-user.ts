/**
 * The vfio-user protocol: command numbers, header flags, payload layouts, default capability
 * values and limits. Constants and layouts only; src/wire/vfio-user/ encodes and decodes.
 *
 * Authority: QEMU `docs/interop/vfio-user.rst` ("the spec" below). Where the real peers disagree
 * with it, the layout says so and cites them: QEMU's client (`hw/vfio-user/protocol.h`,
 * `proxy.c`, `device.c`, `pci.c`, `container.c`) and nutanix/libvfio-user (`include/vfio-user.h`,
 * `lib/libvfio-user.c`, `lib/tran.c`, `lib/private.h`). docs/vfio-user-wire.md collects the
 * wrinkles.
 *
 * Every integer on the wire is in the host's byte order (spec, "Protocol Specification"); vfio-ts
 * runs on little-endian hosts only (x86_64, aarch64), so the codecs read and write little endian.
 *
 * Names are grouped in objects (`VfioUserCommand.DMA_MAP`) so that they never collide with the
 * vfio.h names that src/abi/vfio.ts exports: several vfio-user flag sets restate vfio.h values.
 *
 * Payload layouts have the one shape of src/abi/layout.ts. Where the spec's payload *is* a vfio.h
 * struct ("struct vfio_region_info", "struct vfio_irq_set", ...), the layout is vfio.ts's own, so
 * the ABI probe that checks it against <linux/vfio.h> guards the vfio-user codecs too.
 */
import { bytes, field, layout } from './layout.js';
import {
  VfioMigState,
  vfio_device_feature,
  vfio_info_cap_header,
  vfio_irq_info,
  vfio_irq_set,
  vfio_region_info,
  vfio_region_info_cap_sparse_mmap,
  vfio_region_info_cap_type,
  vfio_region_sparse_mmap_area,
} from './vfio.js';

// ---------------------------------------------------------------------------------------------
// Commands (spec, "Commands")
// ---------------------------------------------------------------------------------------------
export const VfioUserCommand = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  /** Server to client. */
  DMA_READ: 11,
  /** Server to client. */
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  // 14 was VFIO_USER_DIRTY_PAGES (old migration); unused, absent from the spec's table.
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;
export type VfioUserCommandName = keyof typeof VfioUserCommand;
export type VfioUserCommandNumber = (typeof VfioUserCommand)[VfioUserCommandName];

/** Command 14: QEMU's protocol.h still names it VFIO_USER_DIRTY_PAGES; nothing sends it. */
export const VFIO_USER_DIRTY_PAGES_UNUSED = 14;

const commandNames = new Map<number, VfioUserCommandName>(
  (Object.entries(VfioUserCommand) as [VfioUserCommandName, number][]).map(([n, v]) => [v, n]),
);

/** `VFIO_USER_DMA_MAP` for 2; `VFIO_USER_COMMAND_99` for a number the spec does not define. */
export function vfioUserCommandName(command: number): string {
  const n = commandNames.get(command);
  return n === undefined ? `VFIO_USER_COMMAND_${command}` : `VFIO_USER_${n}`;
}

export function isVfioUserCommand(command: number): command is VfioUserCommandNumber {
  return commandNames.has(command);
}

// ---------------------------------------------------------------------------------------------
// Header (spec, "Header"): 16 bytes.
// ---------------------------------------------------------------------------------------------
export const VFIO_USER_HEADER_SIZE = 16;

/** QEMU: VFIOUserHdr; libvfio-user: struct vfio_user_header. */
export const vfio_user_header = layout('vfio_user_header', VFIO_USER_HEADER_SIZE, 'vfio-user', {
  msg_id: field(0, 'u16'),
  command: field(2, 'u16'),
  msg_size: field(4, 'u32'),
  flags: field(8, 'u32'),
  error: field(12, 'u32'),
});

export const VfioUserFlags = {
  /** Bits 0-3: message type. */
  TYPE_MASK: 0xf,
  TYPE_COMMAND: 0x0,
  TYPE_REPLY: 0x1,
  /** Bit 4: "no reply is needed for this command". */
  NO_REPLY: 0x10,
  /** Bit 5: "the command being acknowledged had an error"; the error field is valid. */
  ERROR: 0x20,
  /** Bits 6-31: not defined by the spec; a header with any of them set is refused. */
  RESERVED_MASK: 0xffffffc0,
} as const;

/**
 * Largest errno a reply's error field may carry before it is read as EINVAL.
 * libvfio-user lib/private.h: SERVER_MAX_ERROR_NO (4096); lib/tran_sock.c maps `error_no <= 0 ||
 * error_no > SERVER_MAX_ERROR_NO` to EINVAL.
 */
export const VFIO_USER_MAX_ERRNO = 4096;

// ---------------------------------------------------------------------------------------------
// VERSION (spec, "VFIO_USER_VERSION")
// ---------------------------------------------------------------------------------------------
/** u16 major, u16 minor, then the optional NUL-terminated JSON. */
export const vfio_user_version = layout('vfio_user_version', 4, 'vfio-user', {
  major: field(0, 'u16'),
  minor: field(2, 'u16'),
  data: bytes(4),
});

/** Protocol version vfio-ts speaks. QEMU 11 sends 0.0 (protocol.h: VFIO_USER_MAJOR_VER/MINOR_VER). */
export const VFIO_USER_MAJOR = 0;
/** libvfio-user speaks 0.2 (include/libvfio-user.h: LIB_VFIO_USER_MINOR); the rust-vmm client 0.1. */
export const VFIO_USER_MINOR = 0;

/** JSON member names (spec capability table; QEMU protocol.h VFIO_USER_CAP_*). */
export const VfioUserCapKey = {
  CAPABILITIES: 'capabilities',
  MAX_MSG_FDS: 'max_msg_fds',
  MAX_DATA_XFER_SIZE: 'max_data_xfer_size',
  MAX_DMA_MAPS: 'max_dma_maps',
  PGSIZES: 'pgsizes',
  TWIN_SOCKET: 'twin_socket',
  WRITE_MULTIPLE: 'write_multiple',
  /** Not in the spec's table; QEMU and libvfio-user both send it. */
  MIGRATION: 'migration',
  /** twin_socket members */
  SUPPORTED: 'supported',
  FD_INDEX: 'fd_index',
  /** migration members (QEMU protocol.h: VFIO_USER_CAP_PGSIZE, VFIO_USER_CAP_MAX_BITMAP) */
  PGSIZE: 'pgsize',
  MAX_BITMAP_SIZE: 'max_bitmap_size',
} as const;

/** Spec: "If not specified then the receiver must assume a value of 1". */
export const VFIO_USER_DEFAULT_MAX_MSG_FDS = 1;
/** Spec: "with a default value of 1048576 bytes". libvfio-user: VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE. */
export const VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE = 1024 * 1024;
/** Spec: "with a value of 65535 (64k-1)". QEMU: VFIO_USER_DEF_MAP_MAX. */
export const VFIO_USER_DEFAULT_MAX_DMA_MAPS = 65535;
/** Spec: "default value of supporting only 4k pages". QEMU: VFIO_USER_DEF_PGSIZE. */
export const VFIO_USER_DEFAULT_PGSIZES = 4096n;
/** QEMU protocol.h VFIO_USER_DEF_PGSIZE, used for migration.pgsize too. */
export const VFIO_USER_DEFAULT_MIGRATION_PGSIZE = 4096;
/** QEMU protocol.h VFIO_USER_DEF_MAX_BITMAP: 256 MiB. */
export const VFIO_USER_DEFAULT_MAX_BITMAP_SIZE = 256 * 1024 * 1024;
/** QEMU protocol.h VFIO_USER_MAX_MAX_FDS: the most fds QEMU accepts in one message (and sends). */
export const VFIO_USER_QEMU_MAX_MSG_FDS = 16;
/** QEMU protocol.h VFIO_USER_MAX_MAX_XFER: QEMU refuses a larger max_data_xfer_size. */
export const VFIO_USER_QEMU_MAX_DATA_XFER_SIZE = 64 * 1024 * 1024;
/** libvfio-user lib/tran.h VFIO_USER_CLIENT_MAX_MSG_FDS_LIMIT: it refuses a larger max_msg_fds. */
export const VFIO_USER_LIBVFIO_USER_MAX_MSG_FDS = 1024;
/** Nesting limit of the VERSION JSON we parse (the real documents nest 3 deep). */
export const VFIO_USER_MAX_JSON_DEPTH = 32;

// ---------------------------------------------------------------------------------------------
// DMA_MAP / DMA_UNMAP (spec; vfio.h struct vfio_iommu_type1_dma_map / _unmap)
// ---------------------------------------------------------------------------------------------
export const vfio_user_dma_map = layout('vfio_user_dma_map', 32, 'vfio-user', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  offset: field(8, 'u64'),
  address: field(16, 'u64'),
  size: field(24, 'u64'),
});

export const VfioUserDmaMapFlags = {
  READ: 1 << 0,
  WRITE: 1 << 1,
  /** libvfio-user extensions (include/vfio-user.h), not in the spec. */
  LIBVFIO_USER_MMAP: 1 << 2,
  LIBVFIO_USER_FILE_IO: 1 << 3,
} as const;

/** Request and (spec: "The server responds with the original DMA entry") reply. */
export const vfio_user_dma_unmap = layout('vfio_user_dma_unmap', 24, 'vfio-user', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  address: field(8, 'u64'),
  size: field(16, 'u64'),
});

export const VfioUserDmaUnmapFlags = {
  /** vfio.h VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: a struct vfio_bitmap follows; vfio-ts refuses it. */
  GET_DIRTY_BITMAP: 1 << 0,
  /** vfio.h VFIO_DMA_UNMAP_FLAG_ALL: address and size must be 0 (QEMU sends it on teardown). */
  ALL: 1 << 1,
} as const;

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_INFO (spec; like vfio_device_info without cap_offset: 16 bytes)
// ---------------------------------------------------------------------------------------------
export const vfio_user_device_info = layout('vfio_user_device_info', 16, 'vfio-user', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  num_regions: field(8, 'u32'),
  num_irqs: field(12, 'u32'),
});

export const VfioUserDeviceFlags = { RESET: 1 << 0, PCI: 1 << 1 } as const;

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_INFO (spec; vfio.h struct vfio_region_info, 32 bytes, then capabilities)
// ---------------------------------------------------------------------------------------------
export const vfio_user_region_info = vfio_region_info;

export const VfioUserRegionFlags = { READ: 1 << 0, WRITE: 1 << 1, MMAP: 1 << 2, CAPS: 1 << 3 } as const;

/** vfio.h struct vfio_info_cap_header; `next` counts from the start of vfio_region_info. */
export const vfio_user_cap_header = vfio_info_cap_header;
/** Capabilities are placed at 8-byte boundaries (vfio.h vfio_info_cap_add aligns to 8). */
export const VFIO_USER_CAP_ALIGN = 8;
/** A chain longer than this is refused (it would need a 1 MiB reply anyway). */
export const VFIO_USER_MAX_REGION_CAPS = 64;

export const VfioUserRegionCapId = { SPARSE_MMAP: 1, TYPE: 2, MSIX_MAPPABLE: 3 } as const;
/** Spec: "VFIO sparse mmap cap header ... version 0x1". */
export const VFIO_USER_SPARSE_MMAP_VERSION = 1;
export const VFIO_USER_CAP_TYPE_VERSION = 1;

/** The capabilities as vfio.h defines them; offsets count from the capability header's start. */
export const vfio_user_cap_sparse_mmap = vfio_region_info_cap_sparse_mmap;
export const vfio_user_sparse_mmap_area = vfio_region_sparse_mmap_area;
export const vfio_user_cap_type = vfio_region_info_cap_type;

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_IO_FDS (spec; libvfio-user include/vfio-user.h)
// ---------------------------------------------------------------------------------------------
/** Request, and the fixed part of the reply: argsz, flags, index, count = 16 bytes. */
export const vfio_user_region_io_fds = layout('vfio_user_region_io_fds', 16, 'vfio-user', {
  argsz: field(0, 'u32'),
  flags: field(4, 'u32'),
  index: field(8, 'u32'),
  count: field(12, 'u32'),
  sub_regions: bytes(16),
});

/**
 * One sub-region as the spec gives it, 40 bytes for both types: padding at 28, then `data`, the
 * ioeventfd's datamatch or the ioregionfd's user_data, at 32.
 */
export const vfio_user_sub_region_io_fd = layout('vfio_user_sub_region_io_fd', 40, 'vfio-user', {
  offset: field(0, 'u64'),
  size: field(8, 'u64'),
  fd_index: field(16, 'u32'),
  type: field(20, 'u32'),
  flags: field(24, 'u32'),
  padding: field(28, 'u32'),
  data: field(32, 'u64'),
});

/**
 * libvfio-user, the only implementation, sends 48-byte ioeventfd entries (include/vfio-user.h:
 * struct vfio_user_sub_region_ioeventfd): shadow_mem_fd_index at 28, shadow_offset at 32,
 * datamatch at 40.
 */
export const vfio_user_sub_region_ioeventfd = layout('vfio_user_sub_region_ioeventfd', 48, 'libvfio-user', {
  offset: field(0, 'u64'),
  size: field(8, 'u64'),
  fd_index: field(16, 'u32'),
  type: field(20, 'u32'),
  flags: field(24, 'u32'),
  shadow_mem_fd_index: field(28, 'u32'),
  shadow_offset: field(32, 'u64'),
  datamatch: field(40, 'u64'),
});

export const VfioUserIoFdType = {
  IOEVENTFD: 0,
  IOREGIONFD: 1,
  /** libvfio-user only: ioeventfd with a shadow memory fd. */
  IOEVENTFD_SHADOW: 2,
} as const;

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_IRQ_INFO / DEVICE_SET_IRQS (spec; vfio.h vfio_irq_info / vfio_irq_set)
// ---------------------------------------------------------------------------------------------
export const vfio_user_irq_info = vfio_irq_info;

export const VfioUserIrqInfoFlags = {
  EVENTFD: 1 << 0,
  MASKABLE: 1 << 1,
  AUTOMASKED: 1 << 2,
  NORESIZE: 1 << 3,
} as const;

/** 20 bytes, then data: one byte per interrupt for DATA_BOOL, nothing for NONE and EVENTFD. */
export const vfio_user_irq_set = vfio_irq_set;

/** Same values as vfio.h VFIO_IRQ_SET_*; the spec's SET_IRQS table restates them. */
export const VfioUserIrqSetFlags = {
  DATA_NONE: 1 << 0,
  DATA_BOOL: 1 << 1,
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
  DATA_TYPE_MASK: 0x7,
  ACTION_TYPE_MASK: 0x38,
} as const;

// ---------------------------------------------------------------------------------------------
// REGION_READ / REGION_WRITE / REGION_WRITE_MULTI (spec, "Read and Write Operations")
// ---------------------------------------------------------------------------------------------
/** offset u64, region u32, count u32, then data. QEMU: VFIOUserRegionRW. */
export const vfio_user_region_access = layout('vfio_user_region_access', 16, 'vfio-user', {
  offset: field(0, 'u64'),
  region: field(8, 'u32'),
  count: field(12, 'u32'),
  data: bytes(16),
});

/** Spec: "This format can only describe writes of 8 bytes or less". QEMU: VFIO_USER_MULTI_DATA. */
export const VFIO_USER_MULTI_DATA = 8;
/** wr_cnt u64, then wr_cnt entries. QEMU: VFIOUserWRMulti. */
export const vfio_user_region_write_multi = layout('vfio_user_region_write_multi', 8, 'vfio-user', {
  wr_cnt: field(0, 'u64'),
  wrs: bytes(8),
});
/** One coalesced write: data is always an 8-byte slot. QEMU: VFIOUserWROne. */
export const vfio_user_region_write_one = layout('vfio_user_region_write_one', 24, 'vfio-user', {
  offset: field(0, 'u64'),
  region: field(8, 'u32'),
  count: field(12, 'u32'),
  data: bytes(16, VFIO_USER_MULTI_DATA),
});
/** QEMU protocol.h VFIO_USER_MULTI_MAX: the most writes QEMU coalesces into one message. */
export const VFIO_USER_QEMU_MULTI_MAX = 200;

// ---------------------------------------------------------------------------------------------
// DMA_READ / DMA_WRITE (server to client). Two layouts are in use; see docs/vfio-user-wire.md.
// ---------------------------------------------------------------------------------------------
/** Spec and libvfio-user (struct vfio_user_dma_region_access): address u64, count u64, data at 16. */
export const vfio_user_dma_region_access_spec = layout('vfio_user_dma_region_access', 16, 'vfio-user', {
  address: field(0, 'u64'),
  count: field(8, 'u64'),
  data: bytes(16),
});
/**
 * QEMU hw/vfio-user/protocol.h VFIOUserDMARW: address u64, count u32, data at 12 (28 from the
 * message start). The C struct is padded to 16 bytes, so QEMU's messages are still 16 + count
 * bytes of payload: QEMU requires msg_size >= sizeof(VFIOUserDMARW) (32) and sends DMA_READ
 * replies of sizeof(VFIOUserDMARW) + count, the last 4 bytes zero (pci.c: vfio_user_dma_read).
 */
export const vfio_user_dma_region_access_qemu = layout('VFIOUserDMARW', 16, 'qemu', {
  address: field(0, 'u64'),
  count: field(8, 'u32'),
  data: bytes(12),
});
/**
 * Spec's DMA_WRITE reply table: address u64, count u32 (12 bytes). libvfio-user reads 16 (a u64
 * count, vfu_dma_transfer); QEMU sends no payload at all (pci.c: vfio_user_dma_write).
 */
export const VFIO_USER_DMA_WRITE_REPLY_SPEC_TABLE_SIZE = 12;

// ---------------------------------------------------------------------------------------------
// DEVICE_FEATURE (spec; vfio.h struct vfio_device_feature)
// ---------------------------------------------------------------------------------------------
export const vfio_user_device_feature = vfio_device_feature;

export const VfioUserFeatureFlags = {
  MASK: 0xffff,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
} as const;

/** Spec, "Device Features": the feature indexes vfio-user defines. */
export const VfioUserFeature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;

/** Data of VFIO_DEVICE_FEATURE_MIGRATION: u64 flags. */
export const vfio_user_feature_migration = layout('vfio_user_feature_migration', 8, 'vfio-user', {
  flags: field(0, 'u64'),
});
export const VfioUserMigrationFlags = { STOP_COPY: 1 << 0, P2P: 1 << 1, PRE_COPY: 1 << 2 } as const;
/** Data of VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: u32 device_state, u32 data_fd (unused). */
export const vfio_user_feature_mig_state = layout('vfio_user_feature_mig_state', 8, 'vfio-user', {
  device_state: field(0, 'u32'),
  data_fd: field(4, 'u32'),
});
/** The spec's state table is vfio.h's enum vfio_device_mig_state. */
export const VfioUserMigState = VfioMigState;
/** Data of DMA_LOGGING_START: page_size u64, num_ranges u32, reserved u32, ranges at 16. */
export const vfio_user_dma_logging_control = layout('vfio_user_dma_logging_control', 16, 'vfio-user', {
  page_size: field(0, 'u64'),
  num_ranges: field(8, 'u32'),
  reserved: field(12, 'u32'),
  ranges: bytes(16),
});
export const vfio_user_dma_logging_range = layout('vfio_user_dma_logging_range', 16, 'vfio-user', {
  iova: field(0, 'u64'),
  length: field(8, 'u64'),
});
/** Data of DMA_LOGGING_REPORT: iova, length, page_size (u64 each), then the bitmap at 24. */
export const vfio_user_dma_logging_report = layout('vfio_user_dma_logging_report', 24, 'vfio-user', {
  iova: field(0, 'u64'),
  length: field(8, 'u64'),
  page_size: field(16, 'u64'),
  bitmap: bytes(24),
});

// ---------------------------------------------------------------------------------------------
// MIG_DATA_READ / MIG_DATA_WRITE (spec; libvfio-user struct vfio_user_mig_data)
// ---------------------------------------------------------------------------------------------
export const vfio_user_mig_data = layout('vfio_user_mig_data', 8, 'vfio-user', {
  argsz: field(0, 'u32'),
  size: field(4, 'u32'),
  data: bytes(8),
});

// ---------------------------------------------------------------------------------------------
// Message size limit
// ---------------------------------------------------------------------------------------------
/**
 * Largest message the framer accepts by default: enough for a REGION_WRITE of the default
 * max_data_xfer_size, i.e. 1 MiB + 16 (header) + 16 (region access). libvfio-user lib/private.h:
 * SERVER_MAX_MSG_SIZE, which it enforces with EINVAL. It also covers QEMU's largest DMA_READ reply
 * (sizeof(VFIOUserDMARW) + 1 MiB = 1 MiB + 32).
 */
export const VFIO_USER_DEFAULT_MAX_MSG_SIZE =
  VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE + VFIO_USER_HEADER_SIZE + vfio_user_region_access.size;
