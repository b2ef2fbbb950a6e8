/**
 * vfio-ts: a userspace vfio-pci device core with write-combining mappings, served over vfio-user
 * and run against Linux VFIO through one device interface.
 */
export * from './abi/errno.js';
export * as abi from './abi/vfio.js';
export * from './core/index.js';
export { createDevice, DEVICE_NAMES, type DeviceName, isDeviceName } from './devices/index.js';
export { type DeviceReport, describeDevice, formatReport, reportJson } from './driver/describe.js';
export { type MapOptions, VfioDevice, WC_PATH_ORDER, type WcPath } from './driver/device.js';
export type { DmaMemory, Mapping, Transport, VfioDeviceFile } from './driver/file.js';
export { LocalDeviceFile } from './driver/local.js';
export { MalformedError, VfioError } from './errors.js';
export { allocateShared, nativeEnvironment } from './runtime.js';
