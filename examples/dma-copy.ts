/**
 * A device with a memory BAR and DMA: it copies between host memory and its own 64 KiB buffer
 * (BAR2, which a driver can also map), and says so with MSI-X vector 0.
 *
 *   BAR0  0x00 ID RO   0x08 SRC RW 64   0x10 DST RW 64   0x18 LEN RW   0x1c CMD WO   0x20 STATUS RO
 *   CMD 1: host SRC -> buffer offset DST;  CMD 2: buffer offset SRC -> host DST  (LEN bytes)
 *   STATUS: 1 busy, 2 done, 4 error (an address not mapped, a range outside the buffer)
 *
 *   vfio-ts serve --module dist/examples/dma-copy.js --socket /tmp/dma-copy.sock
 */
import { defineDevice, registerRead, registerWrite } from 'vfio-ts';

export const DMA_COPY_ID = 0xd3a0c0b1n;
export const BUFFER_BYTES = 64 << 10;
export const REG = { ID: 0x00, SRC: 0x08, DST: 0x10, LEN: 0x18, CMD: 0x1c, STATUS: 0x20 } as const;
export const CMD = { TO_BUFFER: 1n, TO_HOST: 2n } as const;
export const STATUS = { BUSY: 1n, DONE: 2n, ERROR: 4n } as const;

export default defineDevice({
  name: 'dma-copy',
  identity: { vendorId: 0x1b36, deviceId: 0x00d1, classCode: 0xff0000 },
  bars: [
    { index: 0, kind: 'mem32', size: 4096, backing: 'registers' },
    { index: 2, kind: 'mem64', size: BUFFER_BYTES, prefetchable: true, backing: 'memory', reset: 'zero' },
  ],
  msix: { vectors: 1, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0xc00 } },
  state: () => ({ src: 0n, dst: 0n, len: 0n, status: 0n }),
  create: (dev) => {
    const { state } = dev;
    const buffer = dev.memory(2);
    /** The buffer's bytes [offset, offset + len), or a RangeError. */
    const slice = (offset: bigint, len: number) => {
      if (offset + BigInt(len) > BigInt(BUFFER_BYTES))
        throw new RangeError(`0x${offset.toString(16)}+${len}`);
      return buffer.subarray(Number(offset), Number(offset) + len);
    };
    const copy = async (cmd: bigint) => {
      const len = Number(state.len);
      try {
        if (cmd === CMD.TO_BUFFER) await dev.dma.readInto(state.src, slice(state.dst, len));
        else if (cmd === CMD.TO_HOST) await dev.dma.write(state.dst, slice(state.src, len));
        else throw new RangeError(`command ${cmd}`);
        state.status = STATUS.DONE;
      } catch (e) {
        state.status = STATUS.DONE | STATUS.ERROR;
        dev.log(`copy failed: ${e instanceof Error ? e.message : String(e)}`);
      }
      dev.irq.raise(0);
    };
    const wide = { [REG.SRC]: 'src', [REG.DST]: 'dst' } as const;
    const wideAt = (offset: number) => wide[(offset & ~7) as keyof typeof wide];
    return {
      bars: {
        0: {
          read(offset) {
            const reg = wideAt(offset);
            if (reg) return registerRead(state[reg], offset & 7);
            if (offset === REG.ID) return DMA_COPY_ID;
            if (offset === REG.LEN) return state.len;
            return offset === REG.STATUS ? state.status : 0n;
          },
          write(offset, size, value) {
            const reg = wideAt(offset);
            if (reg) state[reg] = registerWrite(state[reg], offset & 7, size, value);
            else if (offset === REG.LEN) state.len = value & 0xffff_ffffn;
            else if (offset === REG.CMD && !(state.status & STATUS.BUSY)) {
              state.status = STATUS.BUSY;
              void dev.work(copy(value));
            }
          },
        },
      },
    };
  },
});
