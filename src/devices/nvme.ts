/**
 * QEMU's NVMe controller (`-device nvme`, hw/nvme/ctrl.c) as vfio-pci shows it in a q35 guest
 * (Linux 6.1 and 7.3, QEMU 7.2; test/kernel/differential.test.ts): identity 1b36:0010, class
 * 0x010802 (NVMe I/O controller), one 16 KiB 64-bit BAR0 holding the registers, the MSI-X table
 * (65 vectors at 0x2000) and the PBA (0x3000) — the "MSI-X table inside BAR0" case — PCI
 * Express endpoint with FLR (DEVICE_GET_INFO reports RESET), power management, INTx pin A.
 * A description only: the model answers the vfio uAPI for it; BAR contents are plain memory.
 */
import type { DeviceDescription } from '../core/description.js';
import type { DeviceBehaviour } from '../core/device.js';

export const NVME_MSIX_VECTORS = 65;

export function nvmeDescription(): DeviceDescription {
  return {
    name: 'nvme',
    identity: {
      vendorId: 0x1b36,
      deviceId: 0x0010,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x010802,
      revision: 0x02,
      interruptPin: 1,
    },
    bars: [{ size: 16 << 10, kind: 'mem64', backing: 'memory' }, undefined],
    msix: { tableSize: NVME_MSIX_VECTORS, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000 },
    pcie: true,
    pm: true,
    resettable: true,
    capabilityLayout: [
      { cap: 'msix', offset: 0x40 },
      { cap: 'pcie', offset: 0x80, pcieType: 9, pcieStyle: 'qemu' },
      { cap: 'pm', offset: 0x60 },
    ],
  };
}

/** No register behaviour: the differential needs the uAPI answers, not an NVMe controller. */
export class NvmeBehaviour implements DeviceBehaviour {}
