/**
 * The in-process model of each device the kernel tests probe, configured the way Linux's
 * vfio-pci answers: the matching kernel profile, no vfio-ts extensions, MSI-X pages mappable
 * ('kernel', Linux >= 4.16), and mmap of BARs the model traps (edu's BAR0 is real MMIO, which the
 * kernel lets userspace map).
 */
import type { KernelProfile } from '../../src/core/description.js';
import { NO_EXTENSIONS, VfioPciDevice } from '../../src/core/device.js';
import { E1000eBehaviour, e1000eDescription } from '../../src/devices/e1000e.js';
import { EduBehaviour, eduDescription } from '../../src/devices/edu.js';
import { IvshmemBehaviour, ivshmemDescription } from '../../src/devices/ivshmem.js';
import { NvmeBehaviour, nvmeDescription } from '../../src/devices/nvme.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { nativeEnvironment } from '../../src/runtime.js';
import type { ProbeTarget } from './probe-sequence.js';

export const MODELLED = ['edu', 'ivshmem', 'nvme', 'e1000e'] as const;
export type Modelled = (typeof MODELLED)[number];

/** `opened`: the path the kernel run opened the device through (the model's fd answers alike). */
export function modelDevice(
  name: Modelled,
  profile: KernelProfile,
  opened: 'group' | 'cdev' = 'group',
): VfioPciDevice {
  const options = {
    env: nativeEnvironment(),
    profile,
    opened,
    extensions: NO_EXTENSIONS,
    mmapTrappedBars: true,
    msixMmap: 'kernel' as const,
  };
  switch (name) {
    case 'edu':
      return new VfioPciDevice(eduDescription(), new EduBehaviour(), options);
    case 'ivshmem':
      return new VfioPciDevice(ivshmemDescription(), new IvshmemBehaviour(), options);
    case 'nvme':
      return new VfioPciDevice(nvmeDescription(), new NvmeBehaviour(), options);
    case 'e1000e':
      return new VfioPciDevice(e1000eDescription(), new E1000eBehaviour(), options);
  }
}

/** A probe target over the model: the LocalDeviceFile plus MAP_PRIVATE through the core. */
export function modelTarget(device: VfioPciDevice): ProbeTarget {
  const file = new LocalDeviceFile(device);
  return { file, mmapPrivate: async (offset, length) => device.mmap(offset, length, false) };
}
