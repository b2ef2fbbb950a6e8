/**
 * A register device with MSI-X: BAR0 is 4 KiB of registers, the MSI-X table and PBA at its end.
 *
 *   0x00  ID       RO  0x0d00b311
 *   0x08  SCRATCH  RW  64 bits, any access width (a 4-byte access at 0x0c is the high half)
 *   0x10  RING     WO  rings vector `value` (0..3): counts the ring, sends the vector's message
 *   0x18  RINGS    RO  rings so far
 *
 *   vfio-ts serve --module dist/examples/doorbell.js --socket /tmp/doorbell.sock
 */
import { defineDevice, registerRead, registerWrite } from 'vfio-ts';

export const DOORBELL_ID = 0x0d00b311n;
export const DOORBELL_VECTORS = 4;
export const REG = { ID: 0x00, SCRATCH: 0x08, RING: 0x10, RINGS: 0x18 } as const;

const inScratch = (offset: number) => offset >= REG.SCRATCH && offset < REG.SCRATCH + 8;

export default defineDevice({
  name: 'doorbell',
  identity: { vendorId: 0x1b36, deviceId: 0x00d0, classCode: 0xff0000, revision: 1 },
  bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
  msix: {
    vectors: DOORBELL_VECTORS,
    table: { bar: 0, offset: 0x800 },
    pba: { bar: 0, offset: 0xc00 },
  },
  // The registers in their reset values: a reset, and each new client, starts from these.
  state: () => ({ scratch: 0n, rings: 0n }),
  create: ({ state, irq }) => ({
    bars: {
      0: {
        read(offset) {
          if (inScratch(offset)) return registerRead(state.scratch, offset - REG.SCRATCH);
          if (offset === REG.ID) return DOORBELL_ID;
          if (offset === REG.RINGS) return state.rings;
          return 0n;
        },
        write(offset, size, value) {
          if (inScratch(offset)) {
            state.scratch = registerWrite(state.scratch, offset - REG.SCRATCH, size, value);
          } else if (offset === REG.RING && value < BigInt(DOORBELL_VECTORS)) {
            state.rings++;
            irq.raise(Number(value));
          }
        },
      },
    },
  }),
});
