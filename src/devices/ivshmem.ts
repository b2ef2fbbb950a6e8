/**
 * QEMU's `ivshmem-plain` (QEMU docs/specs/ivshmem-spec.rst): identity 1af4:1110, class 0x0500.
 * BAR0: 256 bytes of registers (IntrMask 0x0, IntrStatus 0x4, IVPosition 0x8, Doorbell 0xc);
 * BAR2: 64-bit prefetchable shared memory — the BAR the write-combining paths map.
 * The plain variant has no interrupts (no pin, no MSI-X), exactly like QEMU's.
 */
import type { DeviceDescription } from '../core/description.js';
import type { DeviceBehaviour } from '../core/device.js';

export const IVSHMEM_DEFAULT_SIZE = 4 << 20;

export function ivshmemDescription(shmSize = IVSHMEM_DEFAULT_SIZE): DeviceDescription {
  return {
    name: 'ivshmem',
    identity: {
      vendorId: 0x1af4,
      deviceId: 0x1110,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x050000,
      revision: 1,
      interruptPin: 0,
    },
    bars: [
      { size: 256, kind: 'mem32', backing: 'memory' },
      undefined,
      { size: shmSize, kind: 'mem64', prefetchable: true, backing: 'memory' },
      undefined,
    ],
    resettable: false,
  };
}

/** Register semantics are memory-like in ivshmem-plain (no peers, no doorbell targets). */
export class IvshmemBehaviour implements DeviceBehaviour {}
