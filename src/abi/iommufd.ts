/**
 * The iommufd uAPI pieces the kernel backend's device-cdev path uses (include/uapi/linux/iommufd.h,
 * include/uapi/linux/vfio.h "VFIO_DEVICE_BIND_IOMMUFD", Linux >= 6.6 with CONFIG_VFIO_DEVICE_CDEV).
 * Numbers only; struct sizes are the first versions of each struct (argsz/size is checked
 * against the minimum by the kernel, so the short form stays valid on newer kernels).
 */
import { VFIO_BASE, VFIO_TYPE } from './vfio.js';

/** iommufd.h: IOMMUFD_TYPE (';') and IOMMUFD_CMD_BASE 0x80; ioctls are _IO(type, base + cmd). */
export const IOMMUFD_TYPE = 0x3b;
export const IOMMUFD_CMD_BASE = 0x80;
const iommufdIoctl = (cmd: number): number => (IOMMUFD_TYPE << 8) | (IOMMUFD_CMD_BASE + cmd);
export const IOMMU_DESTROY = iommufdIoctl(0);
export const IOMMU_IOAS_ALLOC = iommufdIoctl(1);
export const IOMMU_IOAS_MAP = iommufdIoctl(5);
export const IOMMU_IOAS_UNMAP = iommufdIoctl(6);

/** struct iommu_ioas_alloc { size, flags, out_ioas_id } */
export const IOMMU_IOAS_ALLOC_SIZE = 12;
/** struct iommu_ioas_map { size, flags, ioas_id, __reserved, user_va, length, iova } */
export const IOMMU_IOAS_MAP_SIZE = 40;
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;
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
