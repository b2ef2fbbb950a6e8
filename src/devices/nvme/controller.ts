/**
 * An NVMe controller (NVM Express Base Specification 1.4) on the PCI Express transport: the
 * registers of BAR0 (§3.1), the enable / reset / shutdown handshakes (§7.3, §7.6), the doorbells,
 * the queues they drive (§4.1), interrupts (§7.5) and the Controller Memory Buffer (§4.7).
 * Fetching, completions and interrupts are in engine.ts, admin commands in admin.ts, NVM
 * commands in io.ts, PRPs in prp.ts, the CMB in cmb.ts. Everything it needs from outside is the
 * NvmeHost (host.ts) and a NamespaceBackend.
 *
 * Resets: an epoch number is bumped by every reset; work of an older epoch performs no DMA and
 * posts nothing. CC.EN 1 → 0 lets DMA already under way finish before CSTS.RDY clears, so no
 * transfer lands in host memory after the host saw the reset complete.
 */
import { Errno } from '../../abi/errno.js';
import { fail } from '../../errors.js';
import { AdminCommands } from './admin.js';
import { ControllerMemoryBuffer } from './cmb.js';
import { QueueEngine } from './engine.js';
import { AsyncEvents } from './events.js';
import type { Features } from './features.js';
import type { NamespaceBackend, NvmeHost } from './host.js';
import { MAX_MDTS, MDTS, maxTransfer } from './identify.js';
import { IoCommands, type IoStats } from './io.js';
import type { DataPort } from './prp.js';
import { CompletionQueue, SubmissionQueue } from './queues.js';
import {
  AER_ERROR,
  AER_TYPE,
  CC,
  CQE_SIZE,
  CQES_LOG2,
  CSTS,
  LOG,
  REG,
  SC,
  SQE_SIZE,
  SQES_LOG2,
} from './spec.js';
import { CommandFailed } from './status.js';

/** CAP.MQES + 1: the most entries a queue may have. */
export const MAX_QUEUE_ENTRIES = 1024;
/** I/O queue pairs the controller offers (Number of Queues feature). */
export const MAX_IO_QUEUES = 64;
/** CAP.TO: worst case time to ready, in 500 ms units (a reset waits for DMA in flight). */
export const CAP_TIMEOUT = 30;
/** CAP.MPSMAX: 4 KiB << 4 = 64 KiB memory pages. */
const MPS_MAX = 4;
/** BAR0 offset where the doorbell area ends unless the options say otherwise. */
const DEFAULT_DOORBELLS_END = 0x2000;
/** How often a shutdown looks whether the commands in flight have finished. */
const SHUTDOWN_POLL_MS = 5;
/** VS: 1.4.0 (§3.1.2). */
export const NVME_VERSION = 0x0001_0400;

export interface NvmeControllerOptions {
  /** MSI-X table size: Create I/O CQ checks the vector against it. */
  readonly vectors: number;
  readonly serial?: string;
  readonly model?: string;
  readonly firmware?: string;
  /** Logical block size (LBA data size): 512 or 4096. */
  readonly blockSize?: 512 | 4096;
  /** Identify Controller MDTS, 1..MAX_MDTS (default MDTS: 512 KiB per command). */
  readonly mdts?: number;
  /** The Controller Memory Buffer: in BAR `bar` at offset 0, `size` bytes (a multiple of 4 KiB). */
  readonly cmb?: { readonly bar: number; readonly size: number };
  /**
   * Where the doorbells end in BAR0: whatever the function puts after them (the MSI-X table and
   * PBA at 0x2000 in QEMU's layout) is not a doorbell. Default 0x2000.
   */
  readonly doorbellsEnd?: number;
}

export interface NvmeStats {
  /** Doorbell writes (SQ tail and CQ head), valid or not. */
  doorbells: number;
  commands: number;
  sqesFromCmb: number;
  completions: number;
  interrupts: number;
  invalidDoorbells: number;
  fatal: string | undefined;
}

export class NvmeController {
  readonly cap: bigint;
  readonly blockSize: 512 | 4096;
  /** Identify Controller MDTS, and the bytes one command may move under it. */
  readonly mdts: number;
  readonly maxTransfer: number;
  readonly stats: NvmeStats = {
    doorbells: 0,
    commands: 0,
    sqesFromCmb: 0,
    completions: 0,
    interrupts: 0,
    invalidDoorbells: 0,
    fatal: undefined,
  };
  readonly events: AsyncEvents;
  private readonly admin: AdminCommands;
  private readonly io: IoCommands;
  private cc = 0;
  private csts = 0;
  private aqa = 0;
  private asq = 0n;
  private acq = 0n;
  private intms = 0;
  /** The Controller Memory Buffer, when the options give one. */
  readonly cmb: ControllerMemoryBuffer | undefined;
  readonly engine: QueueEngine;
  /** A CC.EN 1 → 0 waits for DMA in flight before CSTS.RDY clears. */
  private resetting = false;
  private generation = 0;
  private dmaInFlight = 0;
  readonly sqs: (SubmissionQueue | undefined)[] = [];
  readonly cqs: (CompletionQueue | undefined)[] = [];

  constructor(
    readonly host: NvmeHost,
    readonly namespace: NamespaceBackend,
    readonly options: NvmeControllerOptions,
  ) {
    this.blockSize = options.blockSize ?? 512;
    this.mdts = options.mdts ?? MDTS;
    if (!Number.isInteger(this.mdts) || this.mdts < 1 || this.mdts > MAX_MDTS)
      fail(Errno.EINVAL, 'nvme', `MDTS ${options.mdts}: 1..${MAX_MDTS}`);
    this.maxTransfer = maxTransfer(this.mdts);
    // §3.1.1 CAP: MQES, CQR (contiguous queues required), TO, DSTRD 0, CSS bit 0 (NVM command
    // set), MPSMIN 0 (4 KiB), MPSMAX, CMBS (CMBMSC present).
    this.cap =
      BigInt(MAX_QUEUE_ENTRIES - 1) |
      (1n << 16n) |
      (BigInt(CAP_TIMEOUT) << 24n) |
      (1n << 37n) |
      (BigInt(MPS_MAX) << 52n) |
      (options.cmb ? 1n << 57n : 0n);
    this.cmb = options.cmb ? new ControllerMemoryBuffer(options.cmb.bar, options.cmb.size) : undefined;
    this.events = new AsyncEvents((cid, dw0) => {
      // A parked Asynchronous Event Request completes on the admin queue.
      const sq = this.sqs[0];
      if (sq) this.engine.complete(sq, { cid, nsid: 0 }, { status: SC.SUCCESS, result: dw0 });
    });
    this.admin = new AdminCommands(this);
    this.io = new IoCommands(this);
    this.engine = new QueueEngine(
      this,
      (cmd) => this.admin.execute(cmd),
      (cmd) => this.io.execute(cmd),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Registers (§3.1)
  // -------------------------------------------------------------------------------------------
  /** A naturally aligned 1, 2 or 4 byte read of BAR0. */
  read(offset: number, size: 1 | 2 | 4): number {
    const v = this.read32(offset & ~3);
    const shift = (offset & 3) * 8;
    return size === 4 ? v : (v >>> shift) & (size === 2 ? 0xffff : 0xff);
  }

  read64(offset: number): bigint {
    return BigInt(this.read32(offset)) | (BigInt(this.read32(offset + 4)) << 32n);
  }

  private read32(o: number): number {
    const lo = (v: bigint) => Number(v & 0xffff_ffffn);
    const hi = (v: bigint) => Number(v >> 32n);
    switch (o) {
      case REG.CAP:
        return lo(this.cap);
      case REG.CAP + 4:
        return hi(this.cap);
      case REG.VS:
        return NVME_VERSION;
      case REG.INTMS:
      case REG.INTMC:
        return this.intms;
      case REG.CC:
        return this.cc;
      case REG.CSTS:
        return this.csts;
      case REG.AQA:
        return this.aqa;
      case REG.ASQ:
        return lo(this.asq);
      case REG.ASQ + 4:
        return hi(this.asq);
      case REG.ACQ:
        return lo(this.acq);
      case REG.ACQ + 4:
        return hi(this.acq);
      // §3.1.16: CMBLOC and CMBSZ read 0 until the host sets CMBMSC.CRE.
      case REG.CMBLOC:
        return this.cmb?.loc ?? 0;
      case REG.CMBSZ:
        return this.cmb?.sz ?? 0;
      case REG.CMBMSC:
        return lo(this.cmb?.msc ?? 0n);
      case REG.CMBMSC + 4:
        return hi(this.cmb?.msc ?? 0n);
      case REG.CMBSTS:
        return this.cmb?.sts ?? 0;
    }
    return 0; // reserved registers and doorbells read 0
  }

  /**
   * A write of BAR0. Registers take dword writes (a qword write arrives as two, low first);
   * smaller writes are dropped, as QEMU's nvme_mmio_write drops them.
   */
  write(offset: number, size: 1 | 2 | 4, value: number): void {
    if (size !== 4 || offset & 3) {
      this.host.log?.(`nvme: ${size}-byte register write at 0x${offset.toString(16)} ignored`);
      return;
    }
    value >>>= 0;
    if (offset >= REG.DOORBELLS) {
      if (offset < (this.options.doorbellsEnd ?? DEFAULT_DOORBELLS_END)) this.doorbell(offset, value);
      return;
    }
    switch (offset) {
      // §3.1.3/§3.1.4: writing 1s sets / clears mask bits (pin-based and MSI only).
      case REG.INTMS:
        this.intms = (this.intms | value) >>> 0;
        this.engine.updateIntx();
        break;
      case REG.INTMC:
        this.intms = (this.intms & ~value) >>> 0;
        this.engine.updateIntx();
        break;
      case REG.CC:
        this.writeCc(value);
        break;
      case REG.AQA:
        this.aqa = value & 0x0fff_0fff;
        break;
      case REG.ASQ:
        this.asq = (this.asq & ~0xffff_ffffn) | BigInt(value & ~0xfff);
        break;
      case REG.ASQ + 4:
        this.asq = (this.asq & 0xffff_ffffn) | (BigInt(value) << 32n);
        break;
      case REG.ACQ:
        this.acq = (this.acq & ~0xffff_ffffn) | BigInt(value & ~0xfff);
        break;
      case REG.ACQ + 4:
        this.acq = (this.acq & 0xffff_ffffn) | (BigInt(value) << 32n);
        break;
      case REG.CMBMSC:
        this.cmb?.write((this.cmb.msc & ~0xffff_ffffn) | BigInt(value));
        break;
      case REG.CMBMSC + 4:
        this.cmb?.write((this.cmb.msc & 0xffff_ffffn) | (BigInt(value) << 32n));
        break;
      // CAP, VS, CSTS, NSSR (CAP.NSSRS is 0), CMBLOC, CMBSZ, CMBSTS: read-only.
    }
  }

  // -------------------------------------------------------------------------------------------
  // CC / CSTS: enable, reset, shutdown (§3.1.5, §3.1.6, §7.3.2, §7.6)
  // -------------------------------------------------------------------------------------------
  private writeCc(value: number): void {
    const was = this.cc;
    this.cc = value;
    const en = value & CC.EN;
    if (en && !(was & CC.EN) && !(this.csts & CSTS.RDY) && !this.resetting) this.enable();
    else if (!en && was & CC.EN) this.controllerReset();
    const shn = (value >>> CC.SHN_SHIFT) & 3;
    if (shn && !((was >>> CC.SHN_SHIFT) & 3)) void this.shutdown();
  }

  /** Memory page size from CC.MPS. */
  get pageSize(): number {
    return 4096 << ((this.cc >>> CC.MPS_SHIFT) & 0xf);
  }

  /**
   * CC.EN 0 → 1 (§7.6.1): checks the configuration, creates the admin queues from AQA/ASQ/ACQ
   * and sets CSTS.RDY. A configuration the controller cannot run (page size, command set,
   * arbitration, entry sizes, admin queue sizes, an admin CQ in the CMB) sets CSTS.CFS instead,
   * as QEMU's nvme_start_ctrl does: the host sees a failed controller rather than a timeout.
   */
  private enable(): void {
    const mps = (this.cc >>> CC.MPS_SHIFT) & 0xf;
    const css = (this.cc >>> CC.CSS_SHIFT) & 7;
    const ams = (this.cc >>> CC.AMS_SHIFT) & 7;
    const iosqes = (this.cc >>> CC.IOSQES_SHIFT) & 0xf;
    const iocqes = (this.cc >>> CC.IOCQES_SHIFT) & 0xf;
    const sqSize = (this.aqa & 0xfff) + 1;
    const cqSize = ((this.aqa >>> 16) & 0xfff) + 1;
    const why =
      mps > MPS_MAX
        ? `CC.MPS ${mps}`
        : css !== 0
          ? `CC.CSS ${css}`
          : ams !== 0
            ? `CC.AMS ${ams}`
            : (iosqes && iosqes !== SQES_LOG2) || (iocqes && iocqes !== CQES_LOG2)
              ? `CC.IOSQES ${iosqes} / IOCQES ${iocqes}`
              : sqSize < 2 || cqSize < 2
                ? `AQA 0x${this.aqa.toString(16)}`
                : this.cmbOffset(this.acq, cqSize * CQE_SIZE) !== undefined
                  ? 'admin CQ in the CMB'
                  : undefined;
    if (why) {
      this.fatal(`enable refused: ${why}`);
      return;
    }
    const sqCmb = this.cmbOffset(this.asq, sqSize * SQE_SIZE);
    if (sqCmb === -1) {
      this.fatal('admin SQ straddles the CMB');
      return;
    }
    const cq = new CompletionQueue(0, this.acq, cqSize, 0, true);
    this.cqs[0] = cq;
    this.sqs[0] = new SubmissionQueue(0, this.asq, sqSize, cq, sqCmb);
    cq.sqs.add(0);
    this.csts = CSTS.RDY;
  }

  /**
   * CC.EN 1 → 0, a Controller Level Reset (§7.3.2): queues deleted, commands abandoned, AERs
   * dropped, CSTS cleared; RDY clears once DMA already issued has finished. Registers other than
   * CC/CSTS and the features keep their values (QEMU's nvme_ctrl_reset keeps them too; Linux
   * programs CMBMSC once per probe, nvme_map_cmb).
   */
  private controllerReset(): void {
    this.dropState();
    this.csts &= CSTS.RDY; // CFS and SHST clear with the reset
    this.resetting = true;
    this.finishReset();
  }

  private finishReset(): void {
    if (!this.resetting || this.dmaInFlight > 0) return;
    this.resetting = false;
    this.csts &= ~CSTS.RDY;
    // The host set CC.EN again before RDY had cleared: honour it now.
    if (this.cc & CC.EN) this.enable();
  }

  /** The state every reset throws away. */
  private dropState(): void {
    this.generation++;
    for (const sq of this.sqs) {
      if (!sq) continue;
      sq.closing = true;
      // A Delete I/O SQ waiting for this queue's commands goes on (and finds the epoch changed).
      sq.onIdle?.();
    }
    for (const cq of this.cqs) if (cq) cq.closed = true;
    this.sqs.length = 0;
    this.cqs.length = 0;
    this.events.reset();
    this.engine.reset();
    this.engine.updateIntx();
  }

  /**
   * CC.SHN 00 → 01/10 (§7.6.2): CSTS.SHST 01 while the commands in flight finish and the
   * namespace is flushed (nothing acknowledged stays volatile), then 10. Fetching stops.
   */
  private async shutdown(): Promise<void> {
    const epoch = this.epoch;
    this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_OCCURRING << CSTS.SHST_SHIFT);
    while (this.engine.inflight > 0 && epoch === this.epoch)
      await new Promise((r) => setTimeout(r, SHUTDOWN_POLL_MS));
    try {
      await this.namespace.flush();
    } catch (e) {
      this.host.log?.(`nvme: flush at shutdown failed: ${e}`);
    }
    if (epoch !== this.epoch) return;
    // What the session did, once per shutdown (a host shuts the controller down once per boot):
    // cumulative counts, so a supervisor can tell where I/O submission queues lived.
    const s = this.stats;
    const io = this.io.stats;
    this.host.log?.(
      `nvme: shutdown complete: ${s.commands} commands (${s.sqesFromCmb} fetched from the CMB), ${io.reads} reads, ${io.writes} writes, ${s.interrupts} interrupts`,
    );
    this.csts = (this.csts & ~(3 << CSTS.SHST_SHIFT)) | (CSTS.SHST_COMPLETE << CSTS.SHST_SHIFT);
  }

  /** Function Level Reset / VFIO device reset: everything to its power-on value, at once. */
  reset(): void {
    this.dropState();
    this.resetting = false;
    this.cc = this.csts = this.aqa = this.intms = 0;
    this.asq = this.acq = 0n;
    this.cmb?.reset();
    this.admin.features.reset();
  }

  /** CSTS.CFS (§3.1.6): an error the controller cannot report in a CQ. Processing stops. */
  fatal(why: string): void {
    this.stats.fatal = why;
    this.host.log?.(`nvme: controller fatal status: ${why}`);
    this.csts |= CSTS.CFS;
  }

  /** CC as the host last wrote it. */
  get config(): number {
    return this.cc;
  }

  get features(): Features {
    return this.admin.features;
  }

  get ioStats(): IoStats {
    return this.io.stats;
  }

  /** INTMS bit 0: pin-based / MSI vector 0 masked (§3.1.3). */
  get intxMasked(): boolean {
    return (this.intms & 1) === 1;
  }

  /**
   * Where [addr, addr + length) falls in the CMB: see ControllerMemoryBuffer.offset (undefined:
   * host memory).
   */
  cmbOffset(addr: bigint, length: number): number | undefined {
    return this.cmb?.offset(addr, length);
  }

  get ready(): boolean {
    return (this.csts & (CSTS.RDY | CSTS.CFS)) === CSTS.RDY && !this.resetting;
  }

  get shuttingDown(): boolean {
    return ((this.csts >>> CSTS.SHST_SHIFT) & 3) !== 0;
  }

  // -------------------------------------------------------------------------------------------
  // DMA, bounded by the epoch
  // -------------------------------------------------------------------------------------------
  /** A DataPort for work of the current epoch: it refuses to touch host memory after a reset. */
  port(): DataPort {
    const epoch = this.epoch;
    return {
      pageSize: this.pageSize,
      read: (addr, dst) => this.dma(epoch, () => this.host.dmaRead(addr, dst)),
      write: (addr, src) => this.dma(epoch, () => this.host.dmaWrite(addr, src)),
      inCmb: (addr, length) => this.cmbOffset(addr, length) !== undefined,
    };
  }

  /** The current epoch: bumped by every reset. */
  get epoch(): number {
    return this.generation;
  }

  /** Runs a DMA for work of `epoch`, refused once a reset made it stale; a reset waits for it. */
  async dma(epoch: number, f: () => Promise<void>): Promise<void> {
    if (epoch !== this.epoch) throw new CommandFailed(SC.INTERNAL_ERROR, 'controller reset');
    this.dmaInFlight++;
    try {
      await f();
    } finally {
      this.dmaInFlight--;
      if (this.dmaInFlight === 0) this.finishReset();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Doorbells (§3.1 SQyTDBL, CQyHDBL; invalid writes: §5.2.1 Error events)
  // -------------------------------------------------------------------------------------------
  private doorbell(offset: number, value: number): void {
    if (!this.ready) return; // §7.6.1: doorbells mean nothing before CSTS.RDY
    this.stats.doorbells++;
    const index = (offset - REG.DOORBELLS) >>> 2; // CAP.DSTRD = 0: 4-byte stride
    const qid = index >>> 1;
    const isCq = (index & 1) === 1;
    const q = isCq ? this.cqs[qid] : this.sqs[qid];
    if (!q || (!isCq && (q as SubmissionQueue).closing)) {
      this.invalidDoorbell(AER_ERROR.INVALID_DOORBELL_REGISTER, offset, value);
      return;
    }
    if (value >= q.size) {
      this.invalidDoorbell(AER_ERROR.INVALID_DOORBELL_VALUE, offset, value);
      return;
    }
    if (q instanceof CompletionQueue) {
      // The new head may move over entries the controller wrote, not past the tail.
      if ((value - q.head + q.size) % q.size > q.used) {
        this.invalidDoorbell(AER_ERROR.INVALID_DOORBELL_VALUE, offset, value);
        return;
      }
      q.head = value;
      this.engine.updateIntx();
      if (q.pending.length) void this.engine.pump(q);
      return;
    }
    const sq = q as SubmissionQueue;
    sq.tail = value;
    this.engine.schedule(sq);
  }

  private invalidDoorbell(info: number, offset: number, value: number): void {
    this.stats.invalidDoorbells++;
    this.host.log?.(`nvme: invalid doorbell write 0x${value.toString(16)} at 0x${offset.toString(16)}`);
    this.events.raise(AER_TYPE.ERROR, info, LOG.ERROR);
  }

  // -------------------------------------------------------------------------------------------
  // Queue creation and deletion (used by admin.ts)
  // -------------------------------------------------------------------------------------------
  get ioQueueCount(): number {
    return this.sqs.filter((q, i) => q && i > 0).length + this.cqs.filter((q, i) => q && i > 0).length;
  }

  addCq(cq: CompletionQueue): void {
    this.cqs[cq.id] = cq;
  }

  addSq(sq: SubmissionQueue): void {
    this.sqs[sq.id] = sq;
    sq.cq.sqs.add(sq.id);
  }

  /** Delete I/O SQ (§5.6): see QueueEngine.drainForDeletion; then the queue is gone. */
  async deleteSq(sq: SubmissionQueue): Promise<void> {
    const epoch = this.epoch;
    await this.engine.drainForDeletion(sq);
    if (epoch !== this.epoch) return;
    this.sqs[sq.id] = undefined;
    sq.cq.sqs.delete(sq.id);
  }

  deleteCq(cq: CompletionQueue): void {
    cq.closed = true;
    this.cqs[cq.id] = undefined;
    this.engine.updateIntx();
  }

  /** The device is closing: what was written is flushed, then the namespace closed. */
  async close(): Promise<void> {
    this.dropState();
    try {
      await this.namespace.flush();
    } finally {
      await this.namespace.close();
    }
  }
}
