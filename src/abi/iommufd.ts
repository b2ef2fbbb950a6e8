/**
 * The iommufd uAPI pieces the kernel backend's device-cdev path uses (include/uapi/linux/iommufd.h,
 * include/uapi/linux/vfio.h "VFIO_DEVICE_BIND_IOMMUFD", Linux >= 6.6 with CONFIG_VFIO_DEVICE_CDEV).
 * Numbers only; struct sizes are the first versions of each struct (argsz/size is checked
 * against the minimum by the kernel, so the short form stays valid on newer kernels).
 */
import { field, layout, type StructLayout } from './layout.js';
import { VFIO_BASE, VFIO_TYPE } from './vfio.js';

/** iommufd.h: IOMMUFD_TYPE (';') and IOMMUFD_CMD_BASE 0x80; ioctls are _IO(type, base + cmd). */
export const IOMMUFD_TYPE = 0x3b;
export const IOMMUFD_CMD_BASE = 0x80;
const iommufdIoctl = (cmd: number): number => (IOMMUFD_TYPE << 8) | (IOMMUFD_CMD_BASE + cmd);
export const IOMMU_DESTROY = iommufdIoctl(0);
export const IOMMU_IOAS_ALLOC = iommufdIoctl(1);
export const IOMMU_IOAS_MAP = iommufdIoctl(5);
export const IOMMU_IOAS_UNMAP = iommufdIoctl(6);
/**
 * Linux >= 6.13 maps a memfd; 7.3 also a vfio-pci dma-buf of one range (drivers/iommu/iommufd/
 * io_pagetable.c: iopt_map_file_pages, dma_buf_get first; vfio_pci_dma_buf_iommufd_map).
 */
export const IOMMU_IOAS_MAP_FILE = iommufdIoctl(0xf);

/** struct iommu_ioas_alloc { size, flags, out_ioas_id } */
export const IOMMU_IOAS_ALLOC_SIZE = 12;
/** struct iommu_ioas_map { size, flags, ioas_id, __reserved, user_va, length, iova } */
export const IOMMU_IOAS_MAP_SIZE = 40;
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;
/** struct iommu_ioas_map_file { size, flags, ioas_id, fd (s32), start, length, iova } */
export const IOMMU_IOAS_MAP_FILE_SIZE = 40;
/** struct iommu_ioas_unmap { size, ioas_id, iova, length } */
export const IOMMU_IOAS_UNMAP_SIZE = 24;
/** struct iommu_destroy { size, id } */
export const IOMMU_DESTROY_SIZE = 8;

/** vfio.h: VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18) and friends. */
export const VFIO_DEVICE_BIND_IOMMUFD = (VFIO_TYPE << 8) | (VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = (VFIO_TYPE << 8) | (VFIO_BASE + 19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = (VFIO_TYPE << 8) | (VFIO_BASE + 20);
/** struct vfio_device_bind_iommufd { argsz, flags, iommufd (s32), out_devid } */
export const VFIO_DEVICE_BIND_IOMMUFD_SIZE = 16;
/** struct vfio_device_attach_iommufd_pt { argsz, flags, pt_id } */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE = 12;
/** struct vfio_device_detach_iommufd_pt { argsz, flags } */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE = 8;

/**
 * The structs above as layouts (checked against Linux 7.3's <linux/iommufd.h> and
 * <linux/vfio.h> by test/abi/probe.test.ts). `size` is the first version, the one the backend
 * sends; `sizes` says what a newer header grew it to (the kernel accepts the short form:
 * copy_struct_from_user / the argsz minimum).
 */
export const iommu_destroy = layout('iommu_destroy', IOMMU_DESTROY_SIZE, 'uapi', {
  size: field(0, 'u32'),
  id: field(4, 'u32'),
});
export const iommu_ioas_alloc = layout('iommu_ioas_alloc', IOMMU_IOAS_ALLOC_SIZE, 'uapi', {
  size: field(0, 'u32'),
  flags: field(4, 'u32'),
  out_ioas_id: field(8, 'u32'),
});
export const iommu_ioas_map = layout('iommu_ioas_map', IOMMU_IOAS_MAP_SIZE, 'uapi', {
  size: field(0, 'u32'),
  flags: field(4, 'u32'),
  ioas_id: field(8, 'u32'),
  __reserved: field(12, 'u32'),
  user_va: field(16, 'u64'),
  length: field(24, 'u64'),
  iova: field(32, 'u64'),
});
export const iommu_ioas_map_file = layout('iommu_ioas_map_file', IOMMU_IOAS_MAP_FILE_SIZE, 'uapi', {
  size: field(0, 'u32'),
  flags: field(4, 'u32'),
  ioas_id: field(8, 'u32'),
  fd: field(12, 's32'),
  start: field(16, 'u64'),
  length: field(24, 'u64'),
  iova: field(32, 'u64'),
});
export const iommu_ioas_unmap = layout('iommu_ioas_unmap', IOMMU_IOAS_UNMAP_SIZE, 'uapi', {
  size: field(0, 'u32'),
  ioas_id: field(4, 'u32'),
  iova: field(8, 'u64'),
  length: field(16, 'u64'),
});
/** vfio.h; 7.3 appends `token_uuid_ptr` (VFIO_DEVICE_BIND_FLAG_TOKEN), making it 24 bytes. */
export const vfio_device_bind_iommufd = layout(
  'vfio_device_bind_iommufd',
  VFIO_DEVICE_BIND_IOMMUFD_SIZE,
  'uapi',
  {
    argsz: field(0, 'u32'),
    flags: field(4, 'u32'),
    iommufd: field(8, 's32'),
    out_devid: field(12, 'u32'),
    token_uuid_ptr: field(16, 'u64', '7.3'),
  },
  { '7.3': 24 },
);
/** vfio.h; 7.3 appends `pasid` (VFIO_DEVICE_ATTACH_PASID), making it 16 bytes. */
export const vfio_device_attach_iommufd_pt = layout(
  'vfio_device_attach_iommufd_pt',
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE,
  'uapi',
  {
    argsz: field(0, 'u32'),
    flags: field(4, 'u32'),
    pt_id: field(8, 'u32'),
    pasid: field(12, 'u32', '7.3'),
  },
  { '7.3': 16 },
);

/** vfio.h; 7.3 appends `pasid` (VFIO_DEVICE_DETACH_PASID), making it 12 bytes. */
export const vfio_device_detach_iommufd_pt = layout(
  'vfio_device_detach_iommufd_pt',
  VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE,
  'uapi',
  {
    argsz: field(0, 'u32'),
    flags: field(4, 'u32'),
    pasid: field(8, 'u32', '7.3'),
  },
  { '7.3': 12 },
);

export const IOMMUFD_LAYOUTS: readonly StructLayout[] = [
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  vfio_device_bind_iommufd,
  vfio_device_attach_iommufd_pt,
  vfio_device_detach_iommufd_pt,
];

/** C enum members in iommufd.h (no #ifdef possible): the command base and the map flags. */
export const IOMMUFD_ENUM_CONSTANTS: ReadonlySet<string> = new Set([
  'IOMMUFD_CMD_BASE',
  'IOMMU_IOAS_MAP_FIXED_IOVA',
  'IOMMU_IOAS_MAP_WRITEABLE',
  'IOMMU_IOAS_MAP_READABLE',
]);

/** Our names for sizeof(struct ...): the probe checks them as sizes, not as header macros. */
export const IOMMUFD_SIZE_CONSTANTS: Readonly<Record<string, StructLayout>> = {
  IOMMU_DESTROY_SIZE: iommu_destroy,
  IOMMU_IOAS_ALLOC_SIZE: iommu_ioas_alloc,
  IOMMU_IOAS_MAP_SIZE: iommu_ioas_map,
  IOMMU_IOAS_MAP_FILE_SIZE: iommu_ioas_map_file,
  IOMMU_IOAS_UNMAP_SIZE: iommu_ioas_unmap,
  VFIO_DEVICE_BIND_IOMMUFD_SIZE: vfio_device_bind_iommufd,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE: vfio_device_attach_iommufd_pt,
  VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE: vfio_device_detach_iommufd_pt,
};
