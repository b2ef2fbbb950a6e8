/**
 * QEMU's `edu` teaching device (QEMU docs/specs/edu.rst, hw/misc/edu.c), emulated on the vfio-ts
 * core: identity 1234:11e8, BAR0 = 1 MiB of registers (trapped), INTx pin A and one 64-bit MSI
 * vector.
 *
 * Registers (edu_mmio_read / edu_mmio_write):
 *   0x00 RO identification 0x010000ed        0x04 RW liveness: a write stores ~value, reads it
 *   0x08 RW factorial: write n, read n!      0x20 RW status: 0x01 computing, 0x80 IRQ on done
 *   0x24 RO interrupt status                 0x60 WO raise interrupt (ORs into status)
 *   0x64 WO acknowledge interrupt            0x80/0x88/0x90 DMA source/destination/count
 *   0x98 RW DMA command: 1 start, 2 direction (1 = EDU to RAM), 4 raise interrupt 0x100 when done
 * Access sizes, as QEMU's memory core and edu_mmio_ops (.valid and .impl min 4, max 8) answer:
 * - 1- and 2-byte accesses are invalid (memory_region_access_valid): reads are 0
 *   (unassigned_mem_read), writes dropped;
 * - below 0x80 only 4 bytes: an 8-byte read is ~0, an 8-byte write is dropped;
 * - from 0x80, 4 or 8 bytes at the register's own offset (0x80, 0x88, 0x90, 0x98): a 4-byte
 *   write stores the value zero-extended, a 4-byte read returns the low half; 0x84 etc. are ~0;
 * - anything else reads ~0 (`val = ~0ULL`) and drops writes.
 * Seen through vfio-pci on Linux 6.1 (4-byte pieces) and 7.3 (8-byte loads): test/kernel.
 * The DMA buffer is at 0x40000 (4 KiB) in the device's own address space; the RAM address of a
 * transfer is clamped to `dma_mask` (28 bits by default, edu_clamp_addr).
 *
 * Differences from QEMU's edu, deliberate:
 * - this model also exposes the DMA buffer through BAR0 at 0x40000..0x40fff (4-byte accesses),
 *   so tests can check a DMA without a second transfer; QEMU's edu reads ~0 there;
 * - a transfer outside the DMA buffer or longer than it is refused (`dmaError`); QEMU logs it
 *   (edu_check_range) and copies anyway;
 * - the factorial is ready at once (QEMU computes it in a thread), and a DMA runs at once
 *   (QEMU: a timer 100 ms later) — both still set and clear their busy bits and interrupt;
 * - `reset()` (VFIO_DEVICE_RESET on a resettable copy, vfio-user reset) clears the registers;
 *   QEMU's edu has no reset handler.
 */
import type { DeviceDescription } from '../core/description.js';
import type { DeviceBehaviour, DeviceContext } from '../core/device.js';

export const EDU_ID = 0x010000ed;
export const EDU_DMA_BUFFER = 0x40000n;
export const EDU_DMA_SIZE = 4096;
/** edu_instance_init: `dma_mask = (1UL << 28) - 1` (the `dma_mask` property). */
export const EDU_DEFAULT_DMA_MASK = (1n << 28n) - 1n;
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
const DMA_START = 1n;
const DMA_TO_RAM = 2n;
const DMA_IRQ = 4n;
const IRQ_FACT = 0x1;
const IRQ_DMA = 0x100;
const ALL_ONES = 0xffff_ffff_ffff_ffffn;

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

export interface EduOptions {
  /** QEMU's `dma_mask` property: RAM addresses of a DMA are ANDed with it (default 28 bits). */
  readonly dmaMask?: bigint;
}

export class EduBehaviour implements DeviceBehaviour {
  private ctx!: DeviceContext;
  private addr4 = 0;
  private fact = 0;
  private status = 0;
  private irqStatus = 0;
  private dmaSrc = 0n;
  private dmaDst = 0n;
  private dmaCount = 0n;
  private dmaCmd = 0n;
  readonly dmaMask: bigint;
  readonly dmaBuffer = new Uint8Array(EDU_DMA_SIZE);
  /** Resolves when the DMA in flight finishes (tests and the demo wait on it). */
  dmaDone: Promise<void> = Promise.resolve();
  /** The last DMA error (EFAULT when the driver pointed it at unmapped memory). */
  dmaError: unknown;

  constructor(options: EduOptions = {}) {
    this.dmaMask = options.dmaMask ?? EDU_DEFAULT_DMA_MASK;
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  barRead(bar: number, offset: number, size: 1 | 2 | 4): number {
    // 1/2 bytes: below .valid.min_access_size; memory_region_dispatch_read gives unassigned 0.
    if (bar !== 0 || size !== 4) return 0;
    if (inWindow(offset)) {
      const o = offset - EDU_DMA_BUFFER_NUM;
      return new DataView(this.dmaBuffer.buffer).getUint32(o, true);
    }
    return Number(this.read(offset, 4) & 0xffff_ffffn);
  }

  barRead64(bar: number, offset: number): bigint {
    if (bar !== 0) return 0n;
    if (inWindow(offset))
      return new DataView(this.dmaBuffer.buffer).getBigUint64(offset - EDU_DMA_BUFFER_NUM, true);
    return this.read(offset, 8);
  }

  barWrite(bar: number, offset: number, size: 1 | 2 | 4, value: number): void {
    if (bar !== 0 || size !== 4) return; // invalid size: dropped
    if (inWindow(offset)) {
      new DataView(this.dmaBuffer.buffer).setUint32(offset - EDU_DMA_BUFFER_NUM, value, true);
      return;
    }
    this.write(offset, 4, BigInt(value >>> 0));
  }

  barWrite64(bar: number, offset: number, value: bigint): void {
    if (bar !== 0) return;
    if (inWindow(offset))
      new DataView(this.dmaBuffer.buffer).setBigUint64(offset - EDU_DMA_BUFFER_NUM, value, true);
    else this.write(offset, 8, value);
  }

  /** edu_mmio_read */
  private read(addr: number, size: 4 | 8): bigint {
    if (addr < 0x80 && size !== 4) return ALL_ONES;
    switch (addr) {
      case REG.ID:
        return BigInt(EDU_ID);
      case REG.LIVENESS:
        return BigInt(this.addr4);
      case REG.FACTORIAL:
        return BigInt(this.fact);
      case REG.STATUS:
        return BigInt(this.status);
      case REG.IRQ_STATUS:
        return BigInt(this.irqStatus);
      case REG.DMA_SRC:
        return this.dmaSrc;
      case REG.DMA_DST:
        return this.dmaDst;
      case REG.DMA_COUNT:
        return this.dmaCount;
      case REG.DMA_CMD:
        return this.dmaCmd;
    }
    return ALL_ONES;
  }

  /** edu_mmio_write; `val` is what the access carried (4 bytes: zero-extended). */
  private write(addr: number, size: 4 | 8, val: bigint): void {
    if (addr < 0x80 && size !== 4) return;
    const v32 = Number(val & 0xffff_ffffn);
    // dma_rw: "if (write && (edu->dma.cmd & EDU_DMA_RUN)) return;" — the DMA registers ignore
    // writes while a transfer is pending.
    const dmaIdle = !(this.dmaCmd & DMA_START);
    switch (addr) {
      case REG.LIVENESS:
        this.addr4 = ~v32 >>> 0;
        break;
      case REG.FACTORIAL:
        if (this.status & STATUS_COMPUTING) break;
        this.fact = factorial(v32);
        // QEMU computes in a thread; the result is ready at once here, the interrupt still fires.
        if (this.status & STATUS_IRQFACT) this.raise(IRQ_FACT);
        break;
      case REG.STATUS:
        this.status = (this.status & STATUS_COMPUTING) | (v32 & STATUS_IRQFACT);
        break;
      case REG.IRQ_RAISE:
        this.raise(v32);
        break;
      case REG.IRQ_ACK:
        this.lower(v32);
        break;
      case REG.DMA_SRC:
        if (dmaIdle) this.dmaSrc = val;
        break;
      case REG.DMA_DST:
        if (dmaIdle) this.dmaDst = val;
        break;
      case REG.DMA_COUNT:
        if (dmaIdle) this.dmaCount = val;
        break;
      case REG.DMA_CMD:
        // "if (!(val & EDU_DMA_RUN)) break;": a command without START is not stored.
        if (!(val & DMA_START) || !dmaIdle) break;
        this.dmaCmd = val;
        this.dmaDone = this.runDma();
        break;
    }
  }

  /**
   * edu_raise_irq: ORs into the interrupt status, then notifies while it is non-zero: an MSI
   * message each time, or INTx asserted (a level; pci_set_irq(1)).
   */
  private raise(bits: number): void {
    this.irqStatus = (this.irqStatus | bits) >>> 0;
    if (this.irqStatus) this.ctx.raise(0);
  }

  /** edu_lower_irq: clears status bits; INTx is deasserted once none is left (not with MSI). */
  private lower(bits: number): void {
    this.irqStatus = (this.irqStatus & ~bits) >>> 0;
    if (!this.irqStatus && this.ctx.irqType !== 'msi') this.ctx.lower();
  }

  /** edu_dma_timer: copies between guest RAM (IOVA) and the DMA buffer, then maybe interrupts. */
  private async runDma(): Promise<void> {
    const cmd = this.dmaCmd;
    const count = this.dmaCount;
    this.dmaError = undefined;
    try {
      if (count > BigInt(EDU_DMA_SIZE)) throw new RangeError(`DMA count ${count} > ${EDU_DMA_SIZE}`);
      const n = Number(count);
      if (cmd & DMA_TO_RAM) {
        const from = checkBuffer(this.dmaSrc, n);
        // edu_clamp_addr: the RAM side is ANDed with dma_mask.
        await this.ctx.dma.write(this.dmaDst & this.dmaMask, this.dmaBuffer.slice(from, from + n));
      } else {
        const to = checkBuffer(this.dmaDst, n);
        // Straight into the DMA buffer: no copy allocated per transfer (DmaSpace.readInto).
        await this.ctx.dma.readInto(this.dmaSrc & this.dmaMask, this.dmaBuffer.subarray(to, to + n));
      }
    } catch (e) {
      // QEMU's edu logs a bad range and copies anyway; a server must not die (or scribble) for it.
      this.dmaError = e;
    } finally {
      this.dmaCmd &= ~DMA_START;
      if (cmd & DMA_IRQ) this.raise(IRQ_DMA);
    }
  }

  reset(): void {
    this.addr4 = this.fact = this.status = this.irqStatus = 0;
    this.dmaCmd = 0n;
    this.dmaSrc = this.dmaDst = this.dmaCount = 0n;
    this.dmaBuffer.fill(0);
  }
}

const EDU_DMA_BUFFER_NUM = Number(EDU_DMA_BUFFER);

/** The model's window onto the DMA buffer (not in QEMU's edu; see the header). */
function inWindow(offset: number): boolean {
  return offset >= EDU_DMA_BUFFER_NUM && offset < EDU_DMA_BUFFER_NUM + EDU_DMA_SIZE;
}

/** edu_check_range on the buffer side: [addr, addr + count) inside the DMA buffer; its offset. */
function checkBuffer(addr: bigint, count: number): number {
  const off = addr - EDU_DMA_BUFFER;
  if (off < 0n || off + BigInt(count) > BigInt(EDU_DMA_SIZE))
    throw new RangeError(`DMA buffer address 0x${addr.toString(16)}+${count} out of range`);
  return Number(off);
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
