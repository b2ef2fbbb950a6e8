/**
 * The devices written on the device API (src/core/define.ts): edu, ivshmem and nvme by the names
 * the command line uses, and the model of QEMU's e1000e the differential test compares.
 */
import type { DeviceDefinition } from '../core/define.js';
import type { DeviceOptions, VfioPciDevice } from '../core/device.js';
import { eduDevice } from './edu.js';
import { ivshmemDevice } from './ivshmem.js';
import { nvmeDevice } from './nvme.js';

export { e1000eModel } from './e1000e.js';
export {
  EDU_DEFAULT_DMA_MASK,
  EDU_DMA_BUFFER,
  EDU_DMA_SIZE,
  EDU_ID,
  type EduModel,
  type EduOptions,
  type EduState,
  eduDevice,
} from './edu.js';
export {
  IVSHMEM_DEFAULT_SIZE,
  IVSHMEM_REG,
  IVSHMEM_SHM_BAR,
  type IvshmemState,
  ivshmemDevice,
} from './ivshmem.js';
export {
  NVME_CMB_BAR,
  NVME_IDENTITY,
  NVME_MSIX_PBA,
  NVME_MSIX_TABLE,
  NVME_MSIX_VECTORS,
  type NvmeDiskOptions,
  type NvmeModel,
  type NvmeOptions,
  nvmeDevice,
  nvmeDiskDevice,
} from './nvme.js';

export const DEVICE_NAMES = ['edu', 'ivshmem', 'nvme'] as const;
export type DeviceName = (typeof DEVICE_NAMES)[number];

export function isDeviceName(name: string): name is DeviceName {
  return (DEVICE_NAMES as readonly string[]).includes(name);
}

/**
 * The definition `vfio-ts serve --device NAME` serves (nvme: a namespace in memory; `serve
 * --device nvme --disk` builds one on a file).
 */
export function namedDevice(name: DeviceName): DeviceDefinition {
  switch (name) {
    case 'edu':
      return eduDevice();
    case 'ivshmem':
      return ivshmemDevice();
    case 'nvme':
      return nvmeDevice();
  }
}

/** A new device: one of the named ones, or any definition (defineDevice). */
export function createDevice(device: DeviceName | DeviceDefinition, options: DeviceOptions): VfioPciDevice {
  return (typeof device === 'string' ? namedDevice(device) : device).instantiate(options).device;
}
