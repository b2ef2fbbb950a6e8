/**
 * QEMU's NVMe controller (`-device nvme`, hw/nvme/ctrl.c) as vfio-pci shows it in a q35 guest
 * (Linux 6.1 and 7.3, QEMU 7.2; test/kernel/differential.test.ts): identity 1b36:0010, class
 * 0x010802 (NVMe I/O controller), one 16 KiB 64-bit BAR0 holding the registers, the MSI-X table
 * (65 vectors at 0x2000) and the PBA (0x3000) — the "MSI-X table inside BAR0" case — PCI
 * Express endpoint with FLR (DEVICE_GET_INFO reports RESET), power management, INTx pin A.
 * A description only: the model answers the vfio uAPI for it; BAR0 is plain memory standing in
 * for the registers, zeroed by a reset.
 */
import { type DeviceDefinition, defineDevice } from '../core/define.js';

export const NVME_MSIX_VECTORS = 65;
/** QEMU's nvme function: Red Hat's 1b36:0010, class NVMe I/O controller. */
export const NVME_IDENTITY = {
  vendorId: 0x1b36,
  deviceId: 0x0010,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  classCode: 0x010802,
  revision: 0x02,
} as const;

export function nvmeModel(): DeviceDefinition {
  return defineDevice({
    name: 'nvme',
    identity: NVME_IDENTITY,
    bars: [{ index: 0, kind: 'mem64', size: 16 << 10, backing: 'memory', reset: 'zero' }],
    msix: { vectors: NVME_MSIX_VECTORS, table: { bar: 0, offset: 0x2000 }, pba: { bar: 0, offset: 0x3000 } },
    intx: true,
    pcie: true,
    pm: true,
    resettable: true,
    capabilityLayout: [
      { cap: 'msix', offset: 0x40 },
      { cap: 'pcie', offset: 0x80, pcieType: 9, pcieStyle: 'qemu' },
      { cap: 'pm', offset: 0x60 },
    ],
  });
}
