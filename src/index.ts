/**
 * vfio-ts: a userspace vfio-pci device core with write-combining mappings, served over vfio-user
 * and run against Linux VFIO through one device interface.
 *
 * The root holds what device and driver authors need; the subpaths hold each layer whole
 * (`vfio-ts/core`, `/devices`, `/server`, `/client`, `/kernel`, `/abi`, `/wire`). Every path
 * re-exports the same modules, so a class is one class whichever path it was imported from.
 */
export * from './abi/errno.js';
export * as abi from './abi/vfio.js';
export { type ClientOptions, VfioUserClient } from './client/client.js';
export {
  createDmaMemory,
  createMessageOnlyDmaMemory,
  Eventfd,
  type OwnedDmaMemory,
} from './client/memory.js';
export * from './core/index.js';
export {
  createDevice,
  DEVICE_NAMES,
  type DeviceName,
  type EduModel,
  type EduOptions,
  type EduState,
  eduDevice,
  type IvshmemState,
  isDeviceName,
  ivshmemDevice,
} from './devices/index.js';
export { type DeviceReport, describeDevice, formatReport, reportJson } from './driver/describe.js';
export { type MapOptions, VfioDevice, WC_PATH_ORDER, type WcPath } from './driver/device.js';
export type { DmaMemory, Mapping, Transport, VfioDeviceFile } from './driver/file.js';
export { LocalDeviceFile } from './driver/local.js';
export { MalformedError, VfioError } from './errors.js';
export { KernelDeviceFile, type OpenKernelOptions, openKernelDevice } from './kernel/device.js';
export { allocateShared, nativeEnvironment } from './runtime.js';
export type { DeviceModule, DeviceModuleContext, ServableDevice } from './server/device-module.js';
export type { LoopMode } from './server/loop.js';
export { type ServeDeviceOptions, type ServedDevice, serveDevice } from './server/serve-device.js';
export { type ServerOptions, VfioUserServer } from './server/server.js';
