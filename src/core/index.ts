/** The device core: build a vfio-pci device from a description and a behaviour. */
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
  ALL_EXTENSIONS,
  type DeviceBehaviour,
  type DeviceContext,
  type DeviceMapping,
  type DeviceOptions,
  type Extensions,
  type MappingPath,
  type MappingSource,
  type MemoryAttribute,
  NO_EXTENSIONS,
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
