/**
 * Codecs of the iommufd structs the kernel backend's device-cdev path sends
 * (include/uapi/linux/iommufd.h, vfio.h VFIO_DEVICE_BIND_IOMMUFD), on src/abi/iommufd.ts's
 * probe-checked layouts. Each is sent in its first, shortest version (`size`/`argsz` say so).
 * Also udmabuf's create struct (src/abi/dmabuf.ts), the dma-buf the kernel tests make.
 */
import { udmabuf_create } from '../abi/dmabuf.js';
import {
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_ioas_map,
  iommu_ioas_map_file,
  iommu_ioas_unmap,
  vfio_device_attach_iommufd_pt,
  vfio_device_bind_iommufd,
  vfio_device_detach_iommufd_pt,
} from '../abi/iommufd.js';
import { struct } from './struct.js';

export const iommuDestroyStruct = struct(iommu_destroy);
export const ioasAllocStruct = struct(iommu_ioas_alloc);
export const ioasMapStruct = struct(iommu_ioas_map);
export const ioasMapFileStruct = struct(iommu_ioas_map_file);
export const ioasUnmapStruct = struct(iommu_ioas_unmap);
export const bindIommufdStruct = struct(vfio_device_bind_iommufd);
export const attachIommufdPtStruct = struct(vfio_device_attach_iommufd_pt);
export const detachIommufdPtStruct = struct(vfio_device_detach_iommufd_pt);
export const udmabufCreateStruct = struct(udmabuf_create);
