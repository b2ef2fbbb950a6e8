/**
 * The iommufd uAPI pieces the kernel backend's device-cdev path uses (include/uapi/linux/iommufd.h,
 * include/uapi/linux/vfio.h "VFIO_DEVICE_BIND_IOMMUFD", Linux >= 6.6 with CONFIG_VFIO_DEVICE_CDEV).
 * Numbers only; struct sizes are the first versions of each struct (argsz/size is checked
 * against the minimum by the kernel, so the short form stays valid on newer kernels).
 */
import { type StructLayout, VFIO_BASE, VFIO_TYPE } from './vfio.js';

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
export const iommu_destroy: StructLayout = {
  name: 'iommu_destroy',
  size: IOMMU_DESTROY_SIZE,
  origin: 'uapi',
  fields: { size: { offset: 0, type: 'u32' }, id: { offset: 4, type: 'u32' } },
};
export const iommu_ioas_alloc: StructLayout = {
  name: 'iommu_ioas_alloc',
  size: IOMMU_IOAS_ALLOC_SIZE,
  origin: 'uapi',
  fields: {
    size: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    out_ioas_id: { offset: 8, type: 'u32' },
  },
};
export const iommu_ioas_map: StructLayout = {
  name: 'iommu_ioas_map',
  size: IOMMU_IOAS_MAP_SIZE,
  origin: 'uapi',
  fields: {
    size: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    ioas_id: { offset: 8, type: 'u32' },
    __reserved: { offset: 12, type: 'u32' },
    user_va: { offset: 16, type: 'u64' },
    length: { offset: 24, type: 'u64' },
    iova: { offset: 32, type: 'u64' },
  },
};
export const iommu_ioas_map_file: StructLayout = {
  name: 'iommu_ioas_map_file',
  size: IOMMU_IOAS_MAP_FILE_SIZE,
  origin: 'uapi',
  fields: {
    size: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    ioas_id: { offset: 8, type: 'u32' },
    fd: { offset: 12, type: 's32' },
    start: { offset: 16, type: 'u64' },
    length: { offset: 24, type: 'u64' },
    iova: { offset: 32, type: 'u64' },
  },
};
export const iommu_ioas_unmap: StructLayout = {
  name: 'iommu_ioas_unmap',
  size: IOMMU_IOAS_UNMAP_SIZE,
  origin: 'uapi',
  fields: {
    size: { offset: 0, type: 'u32' },
    ioas_id: { offset: 4, type: 'u32' },
    iova: { offset: 8, type: 'u64' },
    length: { offset: 16, type: 'u64' },
  },
};
/** vfio.h; 7.3 appends `token_uuid_ptr` (VFIO_DEVICE_BIND_FLAG_TOKEN), making it 24 bytes. */
export const vfio_device_bind_iommufd: StructLayout = {
  name: 'vfio_device_bind_iommufd',
  size: VFIO_DEVICE_BIND_IOMMUFD_SIZE,
  origin: 'uapi',
  sizes: { '7.3': 24 },
  fields: {
    argsz: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    iommufd: { offset: 8, type: 's32' },
    out_devid: { offset: 12, type: 'u32' },
    token_uuid_ptr: { offset: 16, type: 'u64', since: '7.3' },
  },
};
/** vfio.h; 7.3 appends `pasid` (VFIO_DEVICE_ATTACH_PASID), making it 16 bytes. */
export const vfio_device_attach_iommufd_pt: StructLayout = {
  name: 'vfio_device_attach_iommufd_pt',
  size: VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE,
  origin: 'uapi',
  sizes: { '7.3': 16 },
  fields: {
    argsz: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    pt_id: { offset: 8, type: 'u32' },
    pasid: { offset: 12, type: 'u32', since: '7.3' },
  },
};

/** vfio.h; 7.3 appends `pasid` (VFIO_DEVICE_DETACH_PASID), making it 12 bytes. */
export const vfio_device_detach_iommufd_pt: StructLayout = {
  name: 'vfio_device_detach_iommufd_pt',
  size: VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE,
  origin: 'uapi',
  sizes: { '7.3': 12 },
  fields: {
    argsz: { offset: 0, type: 'u32' },
    flags: { offset: 4, type: 'u32' },
    pasid: { offset: 8, type: 'u32', since: '7.3' },
  },
};

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
