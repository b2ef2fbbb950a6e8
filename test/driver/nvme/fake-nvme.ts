/**
 * A small NVMe controller on the vfio-ts core: a test fixture for what our NVMe device
 * (src/devices/nvme, which the driver is otherwise tested against) never does. BAR0 holds the
 * registers (trapped), BAR2 a 1 MiB prefetchable CMB, BAR4 the MSI-X table.
 *
 * It does what the driver needs, with QEMU's hw/nvme/ctrl.c as the model of behaviour:
 * CC/CSTS (RDY after EN, SHST after SHN), the 1.4 CMB scheme (CMBLOC/CMBSZ read 0 until
 * CMBMSC.CRE; SQs at CBA + n are read from the CMB) or the legacy one (no CAP.CMBS: the BAR's
 * address), Identify, Number of Queues, queue creation and deletion with QEMU's checks,
 * Read/Write/Flush through PRPs and chained PRP lists over a RAM disk, MSI-X per CQ. Faults our
 * device has no way to show: a stalled I/O path, a fatal status (CSTS.CFS), any error status
 * once, a vanished device (registers read all ones), CSTS.RDY late.
 */

import { type DeviceContext, defineDevice } from '../../../src/core/define.js';
import type { VfioPciDevice } from '../../../src/core/device.js';
import { NVME_IDENTITY } from '../../../src/devices/nvme.js';
import { VfioDevice } from '../../../src/driver/device.js';
import { LocalDeviceFile } from '../../../src/driver/local.js';
import { nativeEnvironment } from '../../../src/runtime.js';

const PAGE = 4096;
export const FAKE_CMB_BYTES = 1 << 20;
export const FAKE_VECTORS = 8;
export const FAKE_MAX_QUEUES = 4;
export const FAKE_MQES = 1024;

export interface FakeNvmeOptions {
  readonly blocks?: number;
  /** The CMB in BAR2 under the NVMe 1.4 scheme (CAP.CMBS, default) or not. */
  readonly cmbs?: boolean;
  /** Identify MDTS (default 5: 128 KiB). */
  readonly mdts?: number;
  /** CSTS.RDY follows CC.EN after this long (default at once). */
  readonly readyDelayMs?: number;
}

interface Sq {
  base: bigint;
  depth: number;
  cqid: number;
  head: number;
  tail: number;
  inCmb: boolean;
}
interface Cq {
  base: bigint;
  depth: number;
  tail: number;
  head: number;
  phase: number;
  ien: boolean;
  iv: number;
}

export class FakeNvme {
  readonly disk: Uint8Array;
  readonly blockBytes = 512;
  private cc = 0;
  private csts = 0;
  private aqa = 0;
  private asq = 0n;
  private acq = 0n;
  private cmbmsc = 0n;
  private readonly sqs = new Map<number, Sq>();
  private readonly cqs = new Map<number, Cq>();
  private work: Promise<void> = Promise.resolve();
  /** Fault injection. */
  stallIo = false;
  fatalOnIo = false;
  gone = false;
  statusOnce: { sct: number; sc: number } | undefined;
  readonly commands: { qid: number; opcode: number; fromCmb: boolean }[] = [];
  /** PRP List pages the last command's walk read (2 or more: the list chained). */
  listPagesRead = 0;

  /** BAR0's registers (4-byte accesses: the BAR is declared `maxAccessSize: 4`). */
  readonly bars = {
    0: {
      read: (offset: number, size: number) => BigInt(this.barRead(offset, size)),
      write: (offset: number, size: number, value: bigint) => this.barWrite(offset, size, Number(value)),
    },
  };

  constructor(
    private readonly ctx: DeviceContext,
    readonly options: FakeNvmeOptions = {},
  ) {
    this.disk = new Uint8Array((options.blocks ?? 2048) * this.blockBytes);
  }

  private get cmbs(): boolean {
    return this.options.cmbs ?? true;
  }

  private cap(): bigint {
    // MQES, CQR, TO 1 s, DSTRD 0, CSS NVM, MPSMIN 0, MPSMAX 4, CMBS.
    return (
      BigInt(FAKE_MQES - 1) |
      (1n << 16n) |
      (2n << 24n) |
      (1n << 37n) |
      (4n << 52n) |
      (this.cmbs ? 1n << 57n : 0n)
    );
  }

  /** CMBLOC/CMBSZ read 0 on a 1.4 controller until CMBMSC.CRE (QEMU: nvme_cmb_enable_regs). */
  private cmbRegsOn(): boolean {
    return !this.cmbs || (this.cmbmsc & 1n) === 1n;
  }

  /** The CMB's controller address, when the controller decodes one. */
  private cmbBase(): bigint | undefined {
    if (!this.cmbs) return this.barAddress();
    return this.cmbmsc & 2n ? this.cmbmsc & ~0xfffn : undefined;
  }

  private barAddress(): bigint {
    return this.ctx.barAddress(2) ?? 0n;
  }

  private barRead(offset: number, size: number): number {
    if (size !== 4) return 0;
    if (this.gone) return 0xffffffff;
    const cap = this.cap();
    switch (offset) {
      case 0x00:
        return Number(cap & 0xffffffffn);
      case 0x04:
        return Number(cap >> 32n);
      case 0x08:
        return 0x10400;
      case 0x14:
        return this.cc;
      case 0x1c:
        return this.csts;
      case 0x24:
        return this.aqa;
      case 0x38:
        return this.cmbRegsOn() ? 0x2 : 0; // BIR 2, OFST 0
      case 0x3c:
        // SQS, LISTS, RDS, WDS; SZU 1 MiB (2); SZ 1.
        return this.cmbRegsOn() ? (1 << 12) | (2 << 8) | 0x1d : 0;
      case 0x50:
        return Number(this.cmbmsc & 0xffffffffn);
      case 0x54:
        return Number(this.cmbmsc >> 32n);
      default:
        return 0;
    }
  }

  private barWrite(offset: number, size: number, value: number): void {
    if (size !== 4) return;
    const v = value >>> 0;
    if (offset >= 0x1000) {
      this.doorbell(offset, v);
      return;
    }
    switch (offset) {
      case 0x14:
        this.writeCc(v);
        return;
      case 0x24:
        this.aqa = v;
        return;
      case 0x28:
      case 0x2c:
        this.asq = setHalf(this.asq, offset === 0x2c, v);
        return;
      case 0x30:
      case 0x34:
        this.acq = setHalf(this.acq, offset === 0x34, v);
        return;
      case 0x50:
      case 0x54:
        if (this.cmbs) this.cmbmsc = setHalf(this.cmbmsc, offset === 0x54, v);
        return;
    }
  }

  private writeCc(v: number): void {
    const wasEn = this.cc & 1;
    this.cc = v;
    if (v & 1 && !wasEn) {
      this.sqs.set(0, {
        base: this.asq,
        depth: (this.aqa & 0xfff) + 1,
        cqid: 0,
        head: 0,
        tail: 0,
        inCmb: false,
      });
      this.cqs.set(0, {
        base: this.acq,
        depth: ((this.aqa >>> 16) & 0xfff) + 1,
        tail: 0,
        head: 0,
        phase: 1,
        ien: false,
        iv: 0,
      });
      const ready = () => {
        if (this.cc & 1) this.csts |= 1;
      };
      if (this.options.readyDelayMs) setTimeout(ready, this.options.readyDelayMs).unref();
      else ready();
    } else if (!(v & 1) && wasEn) {
      // Controller Reset: queues gone, RDY and CFS clear.
      this.sqs.clear();
      this.cqs.clear();
      this.csts = 0;
    }
    if ((v >>> 14) & 3) this.csts = (this.csts & ~0xc) | (2 << 2); // SHN: shutdown complete at once
  }

  private doorbell(offset: number, v: number): void {
    const n = (offset - 0x1000) >> 2;
    const qid = n >> 1;
    const isSq = (n & 1) === 0;
    if (!isSq) {
      const cq = this.cqs.get(qid);
      if (cq) cq.head = v;
      return;
    }
    const sq = this.sqs.get(qid);
    if (!sq || !(this.csts & 1) || this.csts & 2) return;
    sq.tail = v;
    this.work = this.work.then(() => this.drain(qid)).catch(() => {});
  }

  private async drain(qid: number): Promise<void> {
    const sq = this.sqs.get(qid);
    while (sq && sq.head !== sq.tail && !(this.csts & 2) && this.sqs.get(qid) === sq) {
      const at = sq.base + BigInt(sq.head * 64);
      const cmd = sq.inCmb ? this.cmbBytes(at, 64) : await this.ctx.dma.read(at, 64);
      sq.head = (sq.head + 1) % sq.depth;
      const dv = new DataView(cmd.buffer, cmd.byteOffset, 64);
      const opcode = cmd[0]!;
      this.commands.push({ qid, opcode, fromCmb: sq.inCmb });
      if (qid > 0 && this.fatalOnIo) {
        this.csts |= 2; // CFS
        return;
      }
      if (qid > 0 && this.stallIo) continue;
      let status = 0;
      let dw0 = 0;
      try {
        [status, dw0] = qid === 0 ? await this.admin(opcode, dv) : await this.io(opcode, dv);
      } catch {
        status = 0x04; // Data Transfer Error
      }
      if (qid > 0 && this.statusOnce) {
        status = (this.statusOnce.sct << 8) | this.statusOnce.sc;
        this.statusOnce = undefined;
      }
      await this.post(sq.cqid, dw0, sq.head, qid, dv.getUint16(2, true), status);
    }
  }

  private cmbBytes(addr: bigint, n: number): Uint8Array {
    const off = Number(addr - this.cmbBase()!);
    return this.ctx.memory(2).slice(off, off + n);
  }

  /** Posts a completion (§4.6) with the queue's phase, then the MSI-X vector if enabled. */
  private async post(cqid: number, dw0: number, sqhd: number, sqid: number, cid: number, status: number) {
    const cq = this.cqs.get(cqid);
    if (!cq) return;
    const e = new Uint8Array(16);
    const dv = new DataView(e.buffer);
    dv.setUint32(0, dw0, true);
    dv.setUint32(8, (sqid << 16) | sqhd, true);
    dv.setUint32(12, ((((status & 0x7ff) << 1) | cq.phase) << 16) | cid, true);
    await this.ctx.dma.write(cq.base + BigInt(cq.tail * 16), e);
    cq.tail++;
    if (cq.tail === cq.depth) {
      cq.tail = 0;
      cq.phase ^= 1;
    }
    if (cq.ien) this.ctx.irq.raise(cq.iv);
  }

  private async admin(opcode: number, dv: DataView): Promise<[number, number]> {
    const cdw10 = dv.getUint32(40, true);
    const cdw11 = dv.getUint32(44, true);
    const prp1 = dv.getBigUint64(24, true);
    const qid = cdw10 & 0xffff;
    const qsize = (cdw10 >>> 16) + 1;
    switch (opcode) {
      case 0x06:
        return this.identify(cdw10 & 0xff, dv.getUint32(4, true), prp1);
      case 0x09: {
        if ((cdw10 & 0xff) !== 7) return [0x02, 0];
        return [0, ((FAKE_MAX_QUEUES - 1) << 16) | (FAKE_MAX_QUEUES - 1)];
      }
      case 0x05: // Create I/O CQ (nvme_create_cq's checks)
        if (!qid || qid > FAKE_MAX_QUEUES || this.cqs.has(qid)) return [0x101, 0];
        if (qsize < 2 || qsize > FAKE_MQES) return [0x102, 0];
        if (cdw11 & 2 && cdw11 >>> 16 >= FAKE_VECTORS) return [0x108, 0];
        this.cqs.set(qid, {
          base: prp1,
          depth: qsize,
          tail: 0,
          head: 0,
          phase: 1,
          ien: (cdw11 & 2) !== 0,
          iv: cdw11 >>> 16,
        });
        return [0, 0];
      case 0x01: {
        if (!qid || qid > FAKE_MAX_QUEUES || this.sqs.has(qid)) return [0x101, 0];
        if (qsize < 2 || qsize > FAKE_MQES) return [0x102, 0];
        if (!this.cqs.has(cdw11 >>> 16)) return [0x100, 0];
        const base = this.cmbBase();
        const inCmb =
          base !== undefined && prp1 >= base && prp1 + BigInt(qsize * 64) <= base + BigInt(FAKE_CMB_BYTES);
        this.sqs.set(qid, { base: prp1, depth: qsize, cqid: cdw11 >>> 16, head: 0, tail: 0, inCmb });
        return [0, 0];
      }
      case 0x00:
        return this.sqs.delete(qid) ? [0, 0] : [0x101, 0];
      case 0x04:
        if ([...this.sqs.values()].some((s) => s.cqid === qid)) return [0x10c, 0];
        return this.cqs.delete(qid) ? [0, 0] : [0x101, 0];
      default:
        return [0x01, 0];
    }
  }

  private async identify(cns: number, nsid: number, prp1: bigint): Promise<[number, number]> {
    const b = new Uint8Array(PAGE);
    const dv = new DataView(b.buffer);
    if (cns === 1) {
      dv.setUint16(0, 0x1b36, true);
      b.set(ascii('FAKE0001', 20), 4);
      b.set(ascii('vfio-ts fake nvme', 40), 24);
      b.set(ascii('1.0', 8), 64);
      b[77] = this.options.mdts ?? 5;
      dv.setUint16(78, 1, true);
      dv.setUint32(80, 0x10400, true);
      b[512] = 0x66;
      b[513] = 0x44;
      dv.setUint32(516, 1, true);
      b[525] = 1;
    } else if (cns === 0) {
      if (nsid !== 1) return [0x0b, 0];
      const n = BigInt(this.disk.length / this.blockBytes);
      for (const o of [0, 8, 16]) dv.setBigUint64(o, n, true);
      dv.setUint32(128, Math.log2(this.blockBytes) << 16, true);
    } else if (cns === 2) {
      dv.setUint32(0, 1, true);
    } else return [0x02, 0];
    await this.ctx.dma.write(prp1, b);
    return [0, 0];
  }

  private async io(opcode: number, dv: DataView): Promise<[number, number]> {
    if (dv.getUint32(4, true) !== 1) return [0x0b, 0];
    if (opcode === 0x00) return [0, 0];
    if (opcode !== 0x01 && opcode !== 0x02) return [0x01, 0];
    const slba = dv.getBigUint64(40, true);
    const nlb = (dv.getUint32(48, true) & 0xffff) + 1;
    const total = BigInt(this.disk.length / this.blockBytes);
    if (slba + BigInt(nlb) > total) return [0x80, 0];
    const bytes = nlb * this.blockBytes;
    let diskAt = Number(slba) * this.blockBytes;
    for (const [addr, len] of await this.prps(dv.getBigUint64(24, true), dv.getBigUint64(32, true), bytes)) {
      const window = this.disk.subarray(diskAt, diskAt + len);
      if (opcode === 0x01) await this.ctx.dma.readInto(addr, window);
      else await this.ctx.dma.write(addr, window);
      diskAt += len;
    }
    return [0, 0];
  }

  /**
   * PRP1 (with its offset), then PRP2 as a page or as a PRP List whose full pages end in a
   * pointer to the next (nvme_map_prp).
   */
  private async prps(prp1: bigint, prp2: bigint, bytes: number): Promise<[bigint, number][]> {
    const first = Math.min(bytes, PAGE - Number(prp1 % BigInt(PAGE)));
    const out: [bigint, number][] = [[prp1, first]];
    let left = bytes - first;
    if (left === 0) return out;
    if (left <= PAGE) return [...out, [prp2, left]];
    let list = prp2;
    this.listPagesRead = 0;
    for (let n = Math.ceil(left / PAGE); n > 0; ) {
      const slots = (PAGE - Number(list % BigInt(PAGE))) / 8;
      const entries = await this.ctx.dma.read(list, Math.min(n, slots) * 8);
      const lv = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
      this.listPagesRead++;
      const data = n <= slots ? n : slots - 1;
      for (let i = 0; i < data; i++, left -= PAGE)
        out.push([lv.getBigUint64(i * 8, true), Math.min(PAGE, left)]);
      n -= data;
      if (n > 0) list = lv.getBigUint64(data * 8, true);
    }
    return out;
  }
}

function setHalf(reg: bigint, high: boolean, v: number): bigint {
  return high ? (reg & 0xffffffffn) | (BigInt(v) << 32n) : (reg & ~0xffffffffn) | BigInt(v);
}

function ascii(s: string, width: number): Uint8Array {
  return new TextEncoder().encode(s.padEnd(width, ' '));
}

/** The fake in the core, behind a VfioDevice (in-process). */
export function fakeNvmeDevice(options: FakeNvmeOptions = {}): {
  fake: FakeNvme;
  core: VfioPciDevice;
  dev: VfioDevice;
} {
  const definition = defineDevice({
    name: 'fake-nvme',
    identity: NVME_IDENTITY, // QEMU's nvme
    bars: [
      { index: 0, kind: 'mem64', size: 16 << 10, backing: 'registers', maxAccessSize: 4 },
      { index: 2, kind: 'mem64', size: FAKE_CMB_BYTES, prefetchable: true, backing: 'memory', reset: 'zero' },
      { index: 4, kind: 'mem32', size: PAGE, backing: 'memory', reset: 'zero' },
    ],
    msix: { vectors: FAKE_VECTORS, table: { bar: 4, offset: 0 }, pba: { bar: 4, offset: 2048 } },
    intx: true,
    pcie: true,
    resettable: true,
    create: (ctx) => new FakeNvme(ctx, options),
  });
  const { device: core, model: fake } = definition.instantiate({ env: nativeEnvironment() });
  return { fake, core, dev: new VfioDevice(new LocalDeviceFile(core)) };
}
