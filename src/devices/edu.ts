/**
 * QEMU's `edu` teaching device (QEMU docs/specs/edu.rst), emulated on the vfio-ts core:
 * identity 1234:11e8, BAR0 = 1 MiB of registers (trapped), INTx pin A and one 64-bit MSI vector.
 *
 * Registers (all 4 bytes wide below 0x80; 4 or 8 bytes from 0x80):
 *   0x00 RO identification 0x010000ed        0x04 RW liveness: reads back ~value
 *   0x08 RW factorial: write n, read n!      0x20 RW status: 0x01 computing, 0x80 IRQ on done
 *   0x24 RO interrupt status                 0x60 WO raise interrupt (ORs into status)
 *   0x64 WO acknowledge interrupt            0x80/0x88/0x90 DMA source/destination/count
 *   0x98 RW DMA command: 1 start, 2 direction (1 = EDU to RAM), 4 raise interrupt 0x100 when done
 * The DMA buffer is at 0x40000 (4 KiB) in the device's own address space.
 *
 * One deliberate difference from QEMU's edu: this model also exposes the DMA buffer through BAR0
 * at 0x40000..0x40fff (4-byte reads and writes), so tests can check a DMA without a second
 * transfer. QEMU's edu has no such window (reads there return all ones; the kernel differential
 * test records BAR contents as information, not as differences).
 */
import type { DeviceDescription } from '../core/description.js';
import type { DeviceBehaviour, DeviceContext } from '../core/device.js';

export const EDU_ID = 0x010000ed;
export const EDU_DMA_BUFFER = 0x40000n;
export const EDU_DMA_SIZE = 4096;
const REG = {
  ID: 0x00,
  LIVENESS: 0x04,
  FACTORIAL: 0x08,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_COUNT: 0x90,
  DMA_CMD: 0x98,
} as const;
const STATUS_COMPUTING = 0x01;
const STATUS_IRQFACT = 0x80;
const DMA_START = 1;
const DMA_TO_RAM = 2;
const DMA_IRQ = 4;
const IRQ_FACT = 0x1;
const IRQ_DMA = 0x100;

export function eduDescription(): DeviceDescription {
  return {
    name: 'edu',
    identity: {
      vendorId: 0x1234,
      deviceId: 0x11e8,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x00ff00,
      revision: 0x10,
      interruptPin: 1,
    },
    bars: [{ size: 1 << 20, kind: 'mem32', backing: 'trapped' }],
    msi: { vectors: 1, addr64: true, perVectorMask: false },
    resettable: false,
  };
}

export class EduBehaviour implements DeviceBehaviour {
  private ctx!: DeviceContext;
  private liveness = 0;
  private fact = 0;
  private status = 0;
  private irqStatus = 0;
  private dmaSrc = 0n;
  private dmaDst = 0n;
  private dmaCount = 0n;
  private dmaCmd = 0;
  readonly dmaBuffer = new Uint8Array(EDU_DMA_SIZE);
  /** Resolves when the DMA in flight finishes (tests and the demo wait on it). */
  dmaDone: Promise<void> = Promise.resolve();
  /** The last DMA error (EFAULT when the driver pointed it at unmapped memory). */
  dmaError: unknown;

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  barRead(bar: number, offset: number, size: 1 | 2 | 4): number {
    if (bar !== 0 || size !== 4) return 0xffffffff;
    if (offset >= EDU_DMA_BUFFER_NUM && offset < EDU_DMA_BUFFER_NUM + EDU_DMA_SIZE) {
      const o = offset - EDU_DMA_BUFFER_NUM;
      return new DataView(this.dmaBuffer.buffer).getUint32(o, true);
    }
    switch (offset) {
      case REG.ID:
        return EDU_ID;
      case REG.LIVENESS:
        return ~this.liveness >>> 0;
      case REG.FACTORIAL:
        return this.fact >>> 0;
      case REG.STATUS:
        return this.status;
      case REG.IRQ_STATUS:
        return this.irqStatus;
      case REG.DMA_SRC:
        return Number(this.dmaSrc & 0xffffffffn);
      case REG.DMA_SRC + 4:
        return Number(this.dmaSrc >> 32n);
      case REG.DMA_DST:
        return Number(this.dmaDst & 0xffffffffn);
      case REG.DMA_DST + 4:
        return Number(this.dmaDst >> 32n);
      case REG.DMA_COUNT:
        return Number(this.dmaCount & 0xffffffffn);
      case REG.DMA_CMD:
        return this.dmaCmd;
    }
    return 0xffffffff;
  }

  barWrite(bar: number, offset: number, size: 1 | 2 | 4, value: number): void {
    if (bar !== 0 || size !== 4) return;
    if (offset >= EDU_DMA_BUFFER_NUM && offset < EDU_DMA_BUFFER_NUM + EDU_DMA_SIZE) {
      new DataView(this.dmaBuffer.buffer).setUint32(offset - EDU_DMA_BUFFER_NUM, value, true);
      return;
    }
    switch (offset) {
      case REG.LIVENESS:
        this.liveness = value;
        break;
      case REG.FACTORIAL:
        if (this.status & STATUS_COMPUTING) break;
        this.fact = factorial(value);
        // QEMU computes in a thread; the result is ready at once here, the interrupt still fires.
        if (this.status & STATUS_IRQFACT) this.raise(IRQ_FACT);
        break;
      case REG.STATUS:
        this.status = (this.status & STATUS_COMPUTING) | (value & STATUS_IRQFACT);
        break;
      case REG.IRQ_RAISE:
        this.raise(value);
        break;
      case REG.IRQ_ACK:
        this.irqStatus &= ~value;
        break;
      case REG.DMA_SRC:
        this.dmaSrc = (this.dmaSrc & ~0xffffffffn) | BigInt(value >>> 0);
        break;
      case REG.DMA_SRC + 4:
        this.dmaSrc = (this.dmaSrc & 0xffffffffn) | (BigInt(value >>> 0) << 32n);
        break;
      case REG.DMA_DST:
        this.dmaDst = (this.dmaDst & ~0xffffffffn) | BigInt(value >>> 0);
        break;
      case REG.DMA_DST + 4:
        this.dmaDst = (this.dmaDst & 0xffffffffn) | (BigInt(value >>> 0) << 32n);
        break;
      case REG.DMA_COUNT:
        this.dmaCount = BigInt(value >>> 0);
        break;
      case REG.DMA_CMD:
        this.dmaCmd = value;
        if (value & DMA_START) this.dmaDone = this.runDma();
        break;
    }
  }

  private raise(bits: number): void {
    this.irqStatus |= bits;
    this.ctx.raise(0);
  }

  /** edu_dma_timer: copies between guest RAM (IOVA) and the DMA buffer, then maybe interrupts. */
  private async runDma(): Promise<void> {
    const cmd = this.dmaCmd;
    const count = Number(this.dmaCount);
    this.dmaError = undefined;
    try {
      if (count > EDU_DMA_SIZE) throw new RangeError(`DMA count ${count} > ${EDU_DMA_SIZE}`);
      if (cmd & DMA_TO_RAM) {
        const from = Number(this.dmaSrc - EDU_DMA_BUFFER);
        checkBuffer(from, count);
        await this.ctx.dma.write(this.dmaDst, this.dmaBuffer.slice(from, from + count));
      } else {
        const to = Number(this.dmaDst - EDU_DMA_BUFFER);
        checkBuffer(to, count);
        this.dmaBuffer.set(await this.ctx.dma.read(this.dmaSrc, count), to);
      }
    } catch (e) {
      // QEMU's edu hw_error()s here; a server must not die for a guest's bad address.
      this.dmaError = e;
    } finally {
      this.dmaCmd &= ~DMA_START;
      if (cmd & DMA_IRQ) this.raise(IRQ_DMA);
    }
  }

  reset(): void {
    this.liveness = this.fact = this.status = this.irqStatus = this.dmaCmd = 0;
    this.dmaSrc = this.dmaDst = this.dmaCount = 0n;
    this.dmaBuffer.fill(0);
  }
}

const EDU_DMA_BUFFER_NUM = Number(EDU_DMA_BUFFER);

function checkBuffer(off: number, count: number): void {
  if (off < 0 || off + count > EDU_DMA_SIZE)
    throw new RangeError(`DMA buffer offset ${off}+${count} out of range`);
}

/**
 * n! mod 2^32, as QEMU's edu computes it in a u32. From 34 on the product holds 2^32 (34! has 32
 * factors of two), so the answer is 0 without looping: a client writing 0xffffffff must not stall
 * the server's event loop for seconds (found by test/fuzz/core.ts).
 */
function factorial(n: number): number {
  if (n >= 34) return 0;
  let r = 1;
  for (let i = 2; i <= n; i++) r = Math.imul(r, i) >>> 0;
  return r;
}
