/**
 * QEMU's `ivshmem-plain` (QEMU docs/specs/ivshmem-spec.rst): identity 1af4:1110, class 0x0500.
 * BAR0: 256 bytes of registers (IntrMask 0x0, IntrStatus 0x4, IVPosition 0x8, Doorbell 0xc);
 * BAR2: 64-bit prefetchable shared memory — the BAR the write-combining paths map.
 * The plain variant has no interrupts (no pin, no MSI-X), exactly like QEMU's.
 *
 * BAR0's registers follow hw/misc/ivshmem-pci.c (ivshmem_io_read / ivshmem_io_write,
 * `.impl.min_access_size = max_access_size = 4`, little endian), reached through region
 * reads and writes (pread/pwrite, vfio_pci_bar_rw's 4/2/1-byte pieces):
 * - read: `switch (addr)` on the exact address — IntrMask 0x0, IntrStatus 0x4 (ivshmem_IntrStatus_read:
 *   "reading ISR clears all interrupts"), IVPosition 0x8 (s->vm_id: 0 without an ivshmem server,
 *   which ivshmem-plain never has); any other address, unaligned ones included, reads 0. A 1- or
 *   2-byte read is a 4-byte read whose low bytes are returned (memory.c access_with_adjusted_size).
 * - write: `addr &= 0xfc` first, so any byte of a register writes the whole register with the
 *   (zero-extended) value; IntrMask and IntrStatus take the value, IVPosition is read-only,
 *   Doorbell is write-only and rings nothing (`dest >= s->nb_peers`: no peers), the rest ignored.
 * - reset (ivshmem_reset): IntrStatus and IntrMask 0.
 *
 * REGION_INFO keeps what the kernel reports for ivshmem-plain's BAR0 ([READ WRITE MMAP]: in the
 * guest it is real MMIO, mappable even though smaller than a page). An mmap of it succeeds with
 * the kernel's rules and maps one page of plain memory, zero when the device is opened, that is
 * NOT the registers: the model cannot trap loads and stores in a mapping, so neither side sees the
 * other (what a vfio-user client that maps BAR0 gets, too). Use pread/pwrite for the registers.
 */
import type { DeviceDescription } from '../core/description.js';
import type { DeviceBehaviour } from '../core/device.js';

/** ivshmem-pci.c `enum ivshmem_registers`. */
export const IVSHMEM_REG = { INTRMASK: 0x0, INTRSTATUS: 0x4, IVPOSITION: 0x8, DOORBELL: 0xc } as const;

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
      // Registers (trapped), but mappable as the kernel reports it: see the header.
      { size: 256, kind: 'mem32', backing: 'trapped', mmappable: true },
      undefined,
      { size: shmSize, kind: 'mem64', prefetchable: true, backing: 'memory' },
      undefined,
    ],
    resettable: false,
  };
}

/** BAR0's registers (see the header); BAR2 is plain memory. */
export class IvshmemBehaviour implements DeviceBehaviour {
  intrMask = 0;
  intrStatus = 0;
  /** s->vm_id: set only by an ivshmem server's setup message, which ivshmem-plain has not. */
  readonly ivPosition = 0;

  barRead(bar: number, offset: number, size: 1 | 2 | 4): number {
    if (bar !== 0) return 0xffffffff;
    let v = 0;
    switch (offset) {
      case IVSHMEM_REG.INTRMASK:
        v = this.intrMask;
        break;
      case IVSHMEM_REG.INTRSTATUS:
        v = this.intrStatus;
        this.intrStatus = 0; // "reading ISR clears all interrupts"
        break;
      case IVSHMEM_REG.IVPOSITION:
        v = this.ivPosition;
        break;
    }
    return size === 4 ? v >>> 0 : v & (size === 2 ? 0xffff : 0xff);
  }

  barWrite(bar: number, offset: number, _size: 1 | 2 | 4, value: number): void {
    if (bar !== 0) return;
    switch (offset & 0xfc) {
      case IVSHMEM_REG.INTRMASK:
        this.intrMask = value >>> 0;
        break;
      case IVSHMEM_REG.INTRSTATUS:
        this.intrStatus = value >>> 0;
        break;
      // IVPOSITION is read-only; DOORBELL targets peer `value >> 16`, and there are none.
    }
  }

  reset(): void {
    this.intrMask = 0;
    this.intrStatus = 0;
  }
}
