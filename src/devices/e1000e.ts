/**
 * QEMU's Intel 82574L NIC (`-device e1000e`, hw/net/e1000e.c) as vfio-pci shows it in a q35 guest
 * (Linux 6.1 and 7.3, QEMU 7.2; test/kernel/differential.test.ts): identity 8086:10d3, class
 * 0x020000, BAR0 128 KiB MMIO, BAR1 128 KiB flash, BAR2 32 bytes of I/O, BAR3 16 KiB holding the
 * MSI-X table (5 vectors at 0) and PBA (0x2000), a 256 KiB expansion ROM (efi-e1000e.rom), one
 * 64-bit MSI vector, PCI Express endpoint (AER and DSN extended capabilities in QEMU), power
 * management, INTx pin A; vfio-pci reports RESET. A description only, without NIC behaviour:
 * the memory BARs are plain memory (zeroed by a reset), and the I/O window (IOADDR/IODATA) is
 * not decoded: it reads all-ones and drops writes.
 */
import { type DeviceDefinition, defineDevice } from '../core/define.js';

export function e1000eModel(): DeviceDefinition {
  return defineDevice({
    name: 'e1000e',
    identity: {
      vendorId: 0x8086,
      deviceId: 0x10d3,
      subsystemVendorId: 0x8086,
      subsystemId: 0x0000,
      classCode: 0x020000,
      revision: 0x00,
    },
    bars: [
      { index: 0, kind: 'mem32', size: 128 << 10, backing: 'memory', reset: 'zero' },
      { index: 1, kind: 'mem32', size: 128 << 10, backing: 'memory', reset: 'zero' },
      { index: 2, kind: 'io', size: 32, backing: 'registers' },
      { index: 3, kind: 'mem32', size: 16 << 10, backing: 'memory', reset: 'zero' },
    ],
    rom: { size: 256 << 10 },
    msi: { vectors: 1 },
    msix: { vectors: 5, table: { bar: 3, offset: 0 }, pba: { bar: 3, offset: 0x2000 } },
    intx: true,
    pcie: true,
    pm: true,
    resettable: true,
    extendedCapabilities: [
      { id: 0x0001, version: 2, offset: 0x100 }, // AER (pcie_aer_init)
      { id: 0x0003, version: 1, offset: 0x140 }, // Device Serial Number (pcie_dev_ser_num_init)
    ],
    capabilityLayout: [
      { cap: 'pm', offset: 0xc8, pmc: 0x0022, pmNoSoftReset: false },
      { cap: 'msi', offset: 0xd0 },
      { cap: 'pcie', offset: 0xe0, pcieVersion: 1, pcieType: 9, pcieStyle: 'qemu', pcieFlr: false },
      { cap: 'msix', offset: 0xa0 },
    ],
    create: () => ({ bars: { 2: { read: () => -1n, write() {} } } }),
  });
}
