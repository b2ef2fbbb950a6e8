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
 * - reset (ivshmem_reset): IntrStatus and IntrMask 0. BAR2 keeps its bytes: QEMU's ivshmem
 *   memory is a host memory backend (`-object memory-backend-*`), untouched by a device reset,
 *   by the guest that wrote it leaving, and here by one vfio-user client leaving and the next
 *   one arriving (the server resets the device between clients).
 *
 * REGION_INFO keeps what the kernel reports for ivshmem-plain's BAR0 ([READ WRITE MMAP]: in the
 * guest it is real MMIO, mappable even though smaller than a page). An mmap of it succeeds with
 * the kernel's rules and maps one page of plain memory, zero when the device is opened, that is
 * NOT the registers: the model cannot trap loads and stores in a mapping, so neither side sees the
 * other (what a vfio-user client that maps BAR0 gets, too). Use pread/pwrite for the registers.
 */
import { type DeviceDefinition, type DeviceModel, defineDevice } from '../core/define.js';

/** ivshmem-pci.c `enum ivshmem_registers`. */
export const IVSHMEM_REG = { INTRMASK: 0x0, INTRSTATUS: 0x4, IVPOSITION: 0x8, DOORBELL: 0xc } as const;

export const IVSHMEM_DEFAULT_SIZE = 4 << 20;
/** The shared memory's BAR. */
export const IVSHMEM_SHM_BAR = 2;

function ivshmemState() {
  return { intrMask: 0, intrStatus: 0 };
}
export type IvshmemState = ReturnType<typeof ivshmemState>;

/** BAR0's registers (see the header); BAR2 is the shared memory, kept across resets. */
export function ivshmemDevice(shmSize = IVSHMEM_DEFAULT_SIZE): DeviceDefinition<DeviceModel, IvshmemState> {
  return defineDevice({
    name: 'ivshmem',
    identity: {
      vendorId: 0x1af4,
      deviceId: 0x1110,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x050000,
      revision: 1,
    },
    bars: [
      // Registers, but mappable as the kernel reports it (see the header); `.impl` 4 bytes.
      { index: 0, kind: 'mem32', size: 256, backing: 'registers', mmappable: true, maxAccessSize: 4 },
      {
        index: IVSHMEM_SHM_BAR,
        kind: 'mem64',
        size: shmSize,
        prefetchable: true,
        backing: 'memory',
        reset: 'keep',
      },
    ],
    state: ivshmemState,
    create: ({ state }) => ({
      bars: {
        0: {
          read(offset) {
            switch (offset) {
              case IVSHMEM_REG.INTRMASK:
                return BigInt(state.intrMask);
              case IVSHMEM_REG.INTRSTATUS: {
                const v = state.intrStatus;
                state.intrStatus = 0; // "reading ISR clears all interrupts"
                return BigInt(v);
              }
            }
            // IVPOSITION is s->vm_id, set only by an ivshmem server's setup message, which
            // ivshmem-plain has not: 0, like every other address.
            return 0n;
          },
          write(offset, _size, value) {
            switch (offset & 0xfc) {
              case IVSHMEM_REG.INTRMASK:
                state.intrMask = Number(value);
                break;
              case IVSHMEM_REG.INTRSTATUS:
                state.intrStatus = Number(value);
                break;
              // IVPOSITION is read-only; DOORBELL targets peer `value >> 16`, and there are none.
            }
          },
        },
      },
    }),
  });
}
