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
 * - a reset (a vfio-user client leaving, vfio-user DEVICE_RESET) restores the registers and the
 *   DMA buffer to their initial values (its `state`); QEMU's edu has no reset handler.
 */
import { type DeviceContext, type DeviceDefinition, type DeviceModel, defineDevice } from '../core/define.js';

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
const EDU_DMA_BUFFER_NUM = Number(EDU_DMA_BUFFER);

export interface EduOptions {
  /** QEMU's `dma_mask` property: RAM addresses of a DMA are ANDed with it (default 28 bits). */
  readonly dmaMask?: bigint;
}

/** edu's registers (EduState) in their reset values, and the DMA buffer. */
function eduState() {
  return {
    addr4: 0,
    fact: 0,
    status: 0,
    irqStatus: 0,
    dmaSrc: 0n,
    dmaDst: 0n,
    dmaCount: 0n,
    dmaCmd: 0n,
    dmaBuffer: new Uint8Array(EDU_DMA_SIZE),
  };
}
export type EduState = ReturnType<typeof eduState>;

/** What an edu instance exposes besides its registers (tests read it). */
export interface EduModel extends DeviceModel {
  /** The last DMA's error (EFAULT when the driver pointed it at unmapped memory), or undefined. */
  readonly dmaError: unknown;
}

export function eduDevice(options: EduOptions = {}): DeviceDefinition<EduModel, EduState> {
  const dmaMask = options.dmaMask ?? EDU_DEFAULT_DMA_MASK;
  return defineDevice({
    name: 'edu',
    identity: {
      vendorId: 0x1234,
      deviceId: 0x11e8,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x00ff00,
      revision: 0x10,
    },
    bars: [{ index: 0, kind: 'mem32', size: 1 << 20, backing: 'registers' }],
    msi: { vectors: 1 },
    intx: true,
    state: eduState,
    create: (dev) => new Edu(dev, dmaMask),
  });
}

class Edu implements EduModel {
  dmaError: unknown;
  readonly bars = {
    0: {
      read: (offset: number, size: number): bigint => {
        // 1/2 bytes: below .valid.min_access_size; memory_region_dispatch_read gives unassigned 0.
        if (size < 4) return 0n;
        if (inWindow(offset)) return this.window(offset, size);
        return this.read(offset, size);
      },
      write: (offset: number, size: number, value: bigint): void => {
        if (size < 4) return; // invalid size: dropped
        if (inWindow(offset)) {
          const dv = new DataView(this.s.dmaBuffer.buffer);
          if (size === 8) dv.setBigUint64(offset - EDU_DMA_BUFFER_NUM, value, true);
          else dv.setUint32(offset - EDU_DMA_BUFFER_NUM, Number(value), true);
        } else this.write(offset, size, value);
      },
    },
  };

  constructor(
    private readonly dev: DeviceContext<EduState>,
    private readonly dmaMask: bigint,
  ) {}

  private get s(): EduState {
    return this.dev.state;
  }

  private window(offset: number, size: number): bigint {
    const dv = new DataView(this.s.dmaBuffer.buffer);
    const o = offset - EDU_DMA_BUFFER_NUM;
    return size === 8 ? dv.getBigUint64(o, true) : BigInt(dv.getUint32(o, true));
  }

  /** edu_mmio_read; a 4-byte read of an 8-byte register is its low half (the core keeps 4 bytes). */
  private read(addr: number, size: number): bigint {
    const s = this.s;
    if (addr < 0x80 && size !== 4) return ALL_ONES;
    switch (addr) {
      case REG.ID:
        return BigInt(EDU_ID);
      case REG.LIVENESS:
        return BigInt(s.addr4);
      case REG.FACTORIAL:
        return BigInt(s.fact);
      case REG.STATUS:
        return BigInt(s.status);
      case REG.IRQ_STATUS:
        return BigInt(s.irqStatus);
      case REG.DMA_SRC:
        return s.dmaSrc;
      case REG.DMA_DST:
        return s.dmaDst;
      case REG.DMA_COUNT:
        return s.dmaCount;
      case REG.DMA_CMD:
        return s.dmaCmd;
    }
    return ALL_ONES;
  }

  /** edu_mmio_write; `val` is what the access carried (4 bytes: zero-extended). */
  private write(addr: number, size: number, val: bigint): void {
    const s = this.s;
    if (addr < 0x80 && size !== 4) return;
    const v32 = Number(val & 0xffff_ffffn);
    // dma_rw: "if (write && (edu->dma.cmd & EDU_DMA_RUN)) return;" — the DMA registers ignore
    // writes while a transfer is pending.
    const dmaIdle = !(s.dmaCmd & DMA_START);
    switch (addr) {
      case REG.LIVENESS:
        s.addr4 = ~v32 >>> 0;
        break;
      case REG.FACTORIAL:
        if (s.status & STATUS_COMPUTING) break;
        s.fact = factorial(v32);
        // QEMU computes in a thread; the result is ready at once here, the interrupt still fires.
        if (s.status & STATUS_IRQFACT) this.raise(IRQ_FACT);
        break;
      case REG.STATUS:
        s.status = (s.status & STATUS_COMPUTING) | (v32 & STATUS_IRQFACT);
        break;
      case REG.IRQ_RAISE:
        this.raise(v32);
        break;
      case REG.IRQ_ACK:
        this.lower(v32);
        break;
      case REG.DMA_SRC:
        if (dmaIdle) s.dmaSrc = val;
        break;
      case REG.DMA_DST:
        if (dmaIdle) s.dmaDst = val;
        break;
      case REG.DMA_COUNT:
        if (dmaIdle) s.dmaCount = val;
        break;
      case REG.DMA_CMD:
        // "if (!(val & EDU_DMA_RUN)) break;": a command without START is not stored.
        if (!(val & DMA_START) || !dmaIdle) break;
        s.dmaCmd = val;
        void this.dev.work(this.runDma());
        break;
    }
  }

  /**
   * edu_raise_irq: ORs into the interrupt status, then notifies while it is non-zero: an MSI
   * message each time, or INTx asserted (a level; pci_set_irq(1)).
   */
  private raise(bits: number): void {
    const s = this.s;
    s.irqStatus = (s.irqStatus | bits) >>> 0;
    if (s.irqStatus) this.dev.irq.raise(0);
  }

  /** edu_lower_irq: clears status bits; INTx is deasserted once none is left (not with MSI). */
  private lower(bits: number): void {
    const s = this.s;
    s.irqStatus = (s.irqStatus & ~bits) >>> 0;
    if (!s.irqStatus && this.dev.irq.type !== 'msi') this.dev.irq.lower();
  }

  /** edu_dma_timer: copies between guest RAM (IOVA) and the DMA buffer, then maybe interrupts. */
  private async runDma(): Promise<void> {
    const s = this.s;
    const cmd = s.dmaCmd;
    const count = s.dmaCount;
    this.dmaError = undefined;
    try {
      if (count > BigInt(EDU_DMA_SIZE)) throw new RangeError(`DMA count ${count} > ${EDU_DMA_SIZE}`);
      const n = Number(count);
      if (cmd & DMA_TO_RAM) {
        const from = checkBuffer(s.dmaSrc, n);
        // edu_clamp_addr: the RAM side is ANDed with dma_mask.
        await this.dev.dma.write(s.dmaDst & this.dmaMask, s.dmaBuffer.slice(from, from + n));
      } else {
        const to = checkBuffer(s.dmaDst, n);
        // Straight into the DMA buffer: no copy allocated per transfer (readInto).
        await this.dev.dma.readInto(s.dmaSrc & this.dmaMask, s.dmaBuffer.subarray(to, to + n));
      }
    } catch (e) {
      // QEMU's edu logs a bad range and copies anyway; a server must not die (or scribble) for it.
      this.dmaError = e;
    } finally {
      s.dmaCmd &= ~DMA_START;
      if (cmd & DMA_IRQ) this.raise(IRQ_DMA);
    }
  }
}

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
