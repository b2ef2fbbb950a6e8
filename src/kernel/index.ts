/** The kernel backend: Linux VFIO through the same VfioDeviceFile as every other backend. */
export {
  IOMMUFD_PATH,
  KernelDeviceFile,
  type KernelIommuPath,
  type KernelOpened,
  kernelPathFor,
  type OpenKernelOptions,
  openKernelDevice,
  VFIO_CDEV_DIR,
  VFIO_CONTAINER_PATH,
} from './device.js';
export {
  type BindOptions,
  type BindResult,
  bindVfioPci,
  boundDriver,
  deviceDir,
  groupMembers,
  groupViability,
  iommuGroup,
  isBdf,
  normalizeBdf,
  resourceWcPath,
  unbindVfioPci,
  vfioCdevName,
  vfioPciLoaded,
} from './sysfs.js';
