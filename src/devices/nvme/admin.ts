/**
 * The Admin Command Set (NVMe 1.4 §5) this controller implements: Create / Delete I/O
 * Submission and Completion Queue, Identify, Get / Set Features, Get Log Page (Error
 * Information, SMART / Health Information, Firmware Slot Information), Asynchronous Event
 * Request and Abort. Other opcodes are Invalid Command Opcode (Identify Controller OACS is 0).
 * Checks follow the order and status codes of each command's section.
 */
import type { NvmeController } from './controller.js';
import { MAX_IO_QUEUES, MAX_QUEUE_ENTRIES } from './controller.js';
import { Features } from './features.js';
import {
  activeNamespaces,
  identifyController,
  identifyNamespace,
  NSID,
  namespaceDescriptors,
  TEMPERATURE_K,
} from './identify.js';
import { copyToHost, prpSegments } from './prp.js';
import { type Command, CompletionQueue, SubmissionQueue } from './queues.js';
import {
  ADMIN,
  AER_TYPE,
  CC,
  CNS,
  CQE_SIZE,
  CQES_LOG2,
  LOG,
  NSID_ALL,
  SC,
  SQE_SIZE,
  SQES_LOG2,
} from './spec.js';
import { type Completion, failCommand, SUCCESS } from './status.js';

/** Firmware revision in Identify Controller FR and the Firmware Slot log. */
export const FIRMWARE = '1.0';
/** Size of the SMART / Health and Firmware Slot log pages. */
const LOG_PAGE_SIZE = 512;
/** SMART / health asynchronous event information: Temperature Threshold (§5.2.1). */
const AER_SMART_TEMPERATURE = 0x01;

export type AdminOutcome = Completion | 'parked';

export class AdminCommands {
  readonly features: Features;
  private readonly started: number;

  constructor(private readonly ctl: NvmeController) {
    this.started = ctl.host.now();
    this.features = new Features({
      vectors: ctl.options.vectors,
      maxIoQueues: MAX_IO_QUEUES,
      hasIoQueues: () => ctl.ioQueueCount > 0,
      temperatureEvent: () => {
        // Asynchronous Event Configuration bit 1 enables temperature events (§5.21.1.11).
        if (this.features.asyncEvents & 0x2)
          ctl.events.raise(AER_TYPE.SMART, AER_SMART_TEMPERATURE, LOG.SMART);
      },
    });
  }

  async execute(cmd: Command): Promise<AdminOutcome> {
    // FUSE: no fused operations (Identify Controller FUSES 0); PSDT: admin commands use PRPs.
    if (cmd.flags & 0xc3) failCommand(SC.INVALID_FIELD, `flags 0x${cmd.flags.toString(16)}`);
    switch (cmd.opcode) {
      case ADMIN.IDENTIFY:
        return this.identify(cmd);
      case ADMIN.CREATE_CQ:
        return this.createCq(cmd);
      case ADMIN.CREATE_SQ:
        return this.createSq(cmd);
      case ADMIN.DELETE_SQ:
        return this.deleteSq(cmd);
      case ADMIN.DELETE_CQ:
        return this.deleteCq(cmd);
      case ADMIN.GET_FEATURES:
        return this.features.get(cmd.cdw10, cmd.cdw11);
      case ADMIN.SET_FEATURES:
        return this.features.set(cmd.cdw10, cmd.cdw11);
      case ADMIN.GET_LOG_PAGE:
        return this.getLogPage(cmd);
      case ADMIN.ASYNC_EVENT_REQUEST:
        this.ctl.events.request(cmd.cid);
        return 'parked';
      case ADMIN.ABORT:
        // §5.1: Dword 0 bit 0 set = "command not aborted", always allowed. A command here is
        // either still in the SQ (and will run) or under way in the namespace, which cannot be
        // called back; the host's timeout handling goes on to a reset.
        return { status: SC.SUCCESS, result: 1 };
    }
    this.ctl.host.log?.(`nvme: admin opcode 0x${cmd.opcode.toString(16)} not supported`);
    return failCommand(SC.INVALID_OPCODE, `admin opcode 0x${cmd.opcode.toString(16)}`);
  }

  /** Copies `data` to the command's PRPs. */
  private async send(cmd: Command, data: Uint8Array): Promise<Completion> {
    const port = this.ctl.port();
    await copyToHost(port, await prpSegments(port, cmd.prp1, cmd.prp2, data.length), data);
    return SUCCESS;
  }

  private identity() {
    const o = this.ctl.options;
    return {
      serial: o.serial ?? 'vfio-ts-nvme',
      model: o.model ?? 'vfio-ts NVMe controller',
      firmware: o.firmware ?? FIRMWARE,
      blockSize: this.ctl.blockSize,
      size: this.ctl.namespace.size,
      mdts: this.ctl.mdts,
    };
  }

  /** §5.15 Identify. */
  private identify(cmd: Command): Promise<Completion> {
    const cns = cmd.cdw10 & 0xff;
    switch (cns) {
      case CNS.CONTROLLER:
        return this.send(cmd, identifyController(this.identity()));
      case CNS.NAMESPACE:
        // NSID FFFFFFFFh asks for what all namespaces share: without Namespace Management that
        // is Invalid Namespace or Format, like any NSID past NN.
        if (cmd.nsid !== NSID) failCommand(SC.INVALID_NAMESPACE, `NSID 0x${cmd.nsid.toString(16)}`);
        return this.send(cmd, identifyNamespace(this.identity()));
      case CNS.ACTIVE_NS_LIST:
        if (cmd.nsid >= 0xffff_fffe) failCommand(SC.INVALID_NAMESPACE, `NSID 0x${cmd.nsid.toString(16)}`);
        return this.send(cmd, activeNamespaces(cmd.nsid));
      case CNS.NS_DESCRIPTORS:
        if (cmd.nsid !== NSID) failCommand(SC.INVALID_NAMESPACE, `NSID 0x${cmd.nsid.toString(16)}`);
        return this.send(cmd, namespaceDescriptors(this.identity().serial));
    }
    this.ctl.host.log?.(`nvme: Identify CNS 0x${cns.toString(16)} not supported`);
    return failCommand(SC.INVALID_FIELD, `CNS 0x${cns.toString(16)}`);
  }

  /** Queue identifier and size fields shared by both Create commands (Dword 10). */
  private queueFields(cmd: Command, allocated: number, exists: boolean) {
    const qid = cmd.cdw10 & 0xffff;
    const size = (cmd.cdw10 >>> 16) + 1;
    if (qid === 0 || qid > allocated + 1 || exists) failCommand(SC.INVALID_QID, `queue ${qid}`);
    if (size < 2 || size > MAX_QUEUE_ENTRIES) failCommand(SC.INVALID_QSIZE, `${size} entries`);
    // CAP.CQR: queues must be physically contiguous (PC, Dword 11 bit 0).
    if (!(cmd.cdw11 & 1)) failCommand(SC.INVALID_FIELD, 'PC cleared: queues must be contiguous');
    if (cmd.prp1 & BigInt(this.ctl.pageSize - 1))
      failCommand(SC.PRP_OFFSET_INVALID, 'queue base has an offset');
    return { qid, size };
  }

  /** §5.3 Create I/O Completion Queue. */
  private createCq(cmd: Command): Completion {
    const f = this.features;
    const qid = cmd.cdw10 & 0xffff;
    const { size } = this.queueFields(cmd, f.cqAllocated, this.ctl.cqs[qid] !== undefined);
    const ien = (cmd.cdw11 & 2) !== 0;
    const vector = cmd.cdw11 >>> 16;
    if (vector >= this.ctl.options.vectors) failCommand(SC.INVALID_VECTOR, `vector ${vector}`);
    if (((this.ctl.config >>> CC.IOCQES_SHIFT) & 0xf) !== CQES_LOG2)
      failCommand(SC.INVALID_FIELD, 'CC.IOCQES');
    // CMBSZ.CQS is clear: no completion queue in the Controller Memory Buffer.
    if (this.ctl.cmbOffset(cmd.prp1, size * CQE_SIZE) !== undefined)
      failCommand(SC.INVALID_CMB_USE, 'completion queue in the CMB');
    this.ctl.addCq(new CompletionQueue(qid, cmd.prp1, size, vector, ien));
    return SUCCESS;
  }

  /** §5.4 Create I/O Submission Queue. */
  private createSq(cmd: Command): Completion {
    const qid = cmd.cdw10 & 0xffff;
    const cqid = cmd.cdw11 >>> 16;
    const cq = cqid === 0 ? undefined : this.ctl.cqs[cqid];
    if (!cq) failCommand(SC.CQ_INVALID, `CQ ${cqid}`);
    const { size } = this.queueFields(cmd, this.features.sqAllocated, this.ctl.sqs[qid] !== undefined);
    if (((this.ctl.config >>> CC.IOSQES_SHIFT) & 0xf) !== SQES_LOG2)
      failCommand(SC.INVALID_FIELD, 'CC.IOSQES');
    const cmb = this.ctl.cmbOffset(cmd.prp1, size * SQE_SIZE);
    if (cmb === -1) failCommand(SC.INVALID_CMB_USE, 'submission queue straddles the CMB');
    this.ctl.addSq(new SubmissionQueue(qid, cmd.prp1, size, cq, cmb));
    return SUCCESS;
  }

  /** §5.6 Delete I/O Submission Queue. */
  private async deleteSq(cmd: Command): Promise<Completion> {
    const qid = cmd.cdw10 & 0xffff;
    const sq = qid === 0 ? undefined : this.ctl.sqs[qid];
    if (!sq || sq.closing) failCommand(SC.INVALID_QID, `SQ ${qid}`);
    await this.ctl.deleteSq(sq);
    return SUCCESS;
  }

  /** §5.5 Delete I/O Completion Queue: not while an SQ still posts to it. */
  private deleteCq(cmd: Command): Completion {
    const qid = cmd.cdw10 & 0xffff;
    const cq = qid === 0 ? undefined : this.ctl.cqs[qid];
    if (!cq) failCommand(SC.INVALID_QID, `CQ ${qid}`);
    if (cq.sqs.size > 0) failCommand(SC.INVALID_QUEUE_DELETION, `SQs ${[...cq.sqs].join(',')} use CQ ${qid}`);
    this.ctl.deleteCq(cq);
    return SUCCESS;
  }

  /** §5.14 Get Log Page: NUMD (0-based dwords) from the Log Page Offset, zero past the log's end. */
  private async getLogPage(cmd: Command): Promise<Completion> {
    const lid = cmd.cdw10 & 0xff;
    const retain = (cmd.cdw10 & 0x8000) !== 0;
    const numd = ((cmd.cdw10 >>> 16) | ((cmd.cdw11 & 0xffff) << 16)) >>> 0;
    const length = (numd + 1) * 4;
    const offset = BigInt(cmd.cdw12) | (BigInt(cmd.cdw13) << 32n);
    let page: Uint8Array;
    switch (lid) {
      case LOG.ERROR:
        page = this.ctl.events.errorLog();
        break;
      case LOG.SMART:
        if (cmd.nsid !== NSID_ALL && cmd.nsid !== 0 && cmd.nsid !== NSID)
          failCommand(SC.INVALID_NAMESPACE, `NSID 0x${cmd.nsid.toString(16)}`);
        page = this.smartLog();
        break;
      case LOG.FIRMWARE_SLOT:
        page = firmwareSlotLog(this.ctl.options.firmware ?? FIRMWARE);
        break;
      default:
        return failCommand(SC.INVALID_LOG_PAGE, `log 0x${lid.toString(16)}`);
    }
    // The offset must be dword aligned and inside the log (§5.14); the transfer obeys MDTS.
    if (offset % 4n || offset >= BigInt(page.length)) failCommand(SC.INVALID_FIELD, `offset ${offset}`);
    if (length > this.ctl.maxTransfer) failCommand(SC.INVALID_FIELD, `${length} bytes > MDTS`);
    const out = new Uint8Array(length);
    out.set(page.subarray(Number(offset), Number(offset) + length));
    await this.send(cmd, out);
    this.ctl.events.logRead(lid, retain);
    return SUCCESS;
  }

  /** §5.14.1.2 SMART / Health Information, for the controller (the one namespace's counters). */
  private smartLog(): Uint8Array {
    const b = new Uint8Array(LOG_PAGE_SIZE);
    const v = new DataView(b.buffer);
    const s = this.ctl.ioStats;
    b[0] = this.features.temperatureWarning ? 0x02 : 0; // Critical Warning bit 1: temperature
    v.setUint16(1, TEMPERATURE_K, true);
    b[3] = 100; // Available Spare (%)
    b[4] = 10; // Available Spare Threshold
    // Data Units Read / Written: thousands of 512-byte units, rounded up.
    const units = (bytes: number) => BigInt(Math.ceil(bytes / 512 / 1000));
    v.setBigUint64(32, units(s.bytesRead), true);
    v.setBigUint64(48, units(s.bytesWritten), true);
    v.setBigUint64(64, BigInt(s.reads), true);
    v.setBigUint64(80, BigInt(s.writes), true);
    v.setBigUint64(112, 1n, true); // Power Cycles: this process's life is one
    v.setBigUint64(128, BigInt(Math.floor((this.ctl.host.now() - this.started) / 3_600_000)), true);
    v.setBigUint64(160, BigInt(s.mediaErrors), true);
    v.setBigUint64(176, this.ctl.events.errorCount, true);
    return b;
  }
}

/** §5.14.1.3 Firmware Slot Information: slot 1 active, its revision. */
function firmwareSlotLog(firmware: string): Uint8Array {
  const b = new Uint8Array(LOG_PAGE_SIZE);
  b[0] = 1; // AFI: slot 1 active
  for (let i = 0; i < 8; i++) b[8 + i] = i < firmware.length ? firmware.charCodeAt(i) & 0x7f : 0x20;
  return b;
}
