/**
 * The device core: the device authoring API (defineDevice), and the vfio-pci model it builds
 * (VfioPciDevice, from a description and a behaviour).
 */

export {
  type BarIndex,
  type BarSpec,
  type DeviceContext,
  type DeviceDefinition,
  type DeviceDma,
  type DeviceInstance,
  type DeviceIrq,
  type DeviceModel,
  type DeviceSpec,
  defineDevice,
  type IdentitySpec,
  isDeviceDefinition,
  type MemoryBarSpec,
  type MsiSpec,
  type MsixSpec,
  type RegisterBarSpec,
  registerRead,
  registerWrite,
} from './define.js';
export type {
  BarDescription,
  BarKind,
  DeviceDescription,
  KernelProfile,
  MsiDescription,
  MsixDescription,
  PciIdentity,
} from './description.js';
export {
  type AccessSize,
  ALL_EXTENSIONS,
  type BehaviourContext,
  type BehaviourFactory,
  type DeviceBehaviour,
  type DeviceMapping,
  type DeviceOptions,
  type Extensions,
  type MappingPath,
  type MappingSource,
  type MemoryAttribute,
  NO_EXTENSIONS,
  type RegisterHandlers,
  VfioPciDevice,
} from './device.js';
export { DmaSpace, type DmaTarget, type RemoteMemory } from './dma.js';
export {
  type CoreEnvironment,
  type EventSignal,
  heapEnvironment,
  type MemoryMapping,
  type SharedMemory,
} from './env.js';
export { DEFAULT_OFFSET_BITS, OffsetSpace, PAGE_SIZE, PGOFF32_OFFSET_BITS } from './offsets.js';
export { type DeviceState, MAX_STATE_DEPTH, type StateValue } from './state.js';
