/** The example devices, by the names the command line uses. */
import type { DeviceOptions } from '../core/device.js';
import { VfioPciDevice } from '../core/device.js';
import { EduBehaviour, eduDescription } from './edu.js';
import { IvshmemBehaviour, ivshmemDescription } from './ivshmem.js';
import { NvmeBehaviour, nvmeDescription } from './nvme.js';

export const DEVICE_NAMES = ['edu', 'ivshmem', 'nvme'] as const;
export type DeviceName = (typeof DEVICE_NAMES)[number];

export function isDeviceName(name: string): name is DeviceName {
  return (DEVICE_NAMES as readonly string[]).includes(name);
}

export function createDevice(name: DeviceName, options: DeviceOptions): VfioPciDevice {
  switch (name) {
    case 'edu':
      return new VfioPciDevice(eduDescription(), new EduBehaviour(), options);
    case 'ivshmem':
      return new VfioPciDevice(ivshmemDescription(), new IvshmemBehaviour(), options);
    case 'nvme':
      // A namespace in memory; `vfio-ts serve --device nvme --disk` builds one on a file.
      return new VfioPciDevice(nvmeDescription(), new NvmeBehaviour(), options);
  }
}
