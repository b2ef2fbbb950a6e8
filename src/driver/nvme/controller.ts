/**
 * An NVMe controller driven from userspace through VfioDevice, on any backend (in-process core,
 * vfio-user, Linux VFIO). Bring-up follows NVMe 1.4 §7.6.1 "Initialization": reset the
 * controller, configure the admin queue, set CC, enable, wait for CSTS.RDY within CAP.TO,
 * Identify, ask for I/O queues (Number of Queues), and create I/O queue pairs on demand
 * (§5.3, §5.4). Shutdown follows §7.6.2: delete the I/O queues, CC.SHN normal, wait for
 * CSTS.SHST complete, then disable. A controller that sets CSTS.CFS, or whose registers read all
 * ones, fails every command in flight and every later one.
 */
import { Errno } from '../../abi/errno.js';
import { PCI_COMMAND, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY } from '../../abi/pci.js';
import { fail, VfioError } from '../../errors.js';
import type { VfioDevice, WcPath } from '../device.js';
import { type Fence, storeFence } from './barrier.js';
import { type CmbInfo, findCmb, type MappedCmb, mapCmb, unmapCmb } from './cmb.js';
import { type DmaBuffer, DmaPool, PAGE } from './dma.js';
import {
  type ControllerIdentity,
  decodeControllerIdentity,
  decodeNamespaceIdentity,
  decodeNamespaceList,
  IDENTIFY_BYTES,
  type NamespaceIdentity,
} from './identify.js';
import { IoQueuePair } from './io.js';
import { MAX_TRANSFER_BYTES } from './prp.js';
import { type QueueHost, QueuePair, type SqMemory } from './queue.js';
import { ControllerRegisters, type RegisterRoute } from './regs.js';
import {
  ADMIN,
  CAP_CSS_NVM,
  CC_AMS_RR,
  CC_CSS_NVM,
  CC_EN,
  CC_IOCQES,
  CC_IOSQES,
  CC_SHN_MASK,
  CC_SHN_NORMAL,
  CNS,
  CQ_IEN,
  CQ_PC,
  CQE_BYTES,
  CSTS_CFS,
  CSTS_RDY,
  CSTS_SHST_COMPLETE,
  CSTS_SHST_MASK,
  cap,
  cmbsz,
  FEATURE_NUMBER_OF_QUEUES,
  REG,
  SQ_PC,
  SQE,
  SQE_BYTES,
} from './spec.js';
import { MsixVectors } from './vectors.js';

export const ADMIN_QUEUE_DEPTH = 32;
export const DEFAULT_IO_QUEUE_DEPTH = 256;
export const MAX_IO_QUEUE_DEPTH = 4096;
/** drivers/nvme/host/core.c: admin_timeout 60 s, io_timeout 30 s, shutdown_timeout 5 s. */
export const DEFAULT_ADMIN_TIMEOUT_MS = 60_000;
export const DEFAULT_IO_TIMEOUT_MS = 30_000;
export const SHUTDOWN_TIMEOUT_MS = 5_000;
export const DEFAULT_IO_QUEUES = 4;
/** How often CSTS is read while waiting for RDY or SHST. */
const STATUS_POLL_MS = 1;

export interface NvmeOptions {
  /** Where I/O submission queues live: host DMA memory (default) or the CMB, write-combining. */
  readonly sq?: 'host' | 'cmb';
  /** Find completions by polling (default) or from MSI-X eventfds. */
  readonly completions?: 'poll' | 'interrupt';
  /** BAR0 access: an uncached mmap where the backend allows one (default 'auto'), or pwrite. */
  readonly registers?: 'auto' | RegisterRoute;
  readonly adminTimeoutMs?: number;
  readonly ioTimeoutMs?: number;
  /** I/O queue pairs to ask the controller for (Set Features, Number of Queues). */
  readonly ioQueues?: number;
  readonly iovaBase?: bigint;
  /** The store fence before a WC doorbell (default: barrier.ts storeFence). */
  readonly fence?: Fence;
  /** Most CMB bytes to map (default MAX_CMB_MAP_BYTES). */
  readonly cmbMapBytes?: number;
  /** The WC path to map the CMB through (default: the first the backend offers, WC_PATH_ORDER). */
  readonly wcPath?: WcPath;
}

export class NvmeController implements QueueHost {
  cap = 0n;
  version = 0;
  identity!: ControllerIdentity;
  readonly namespaces = new Map<number, NamespaceIdentity>();
  /** The CMB the controller reports (CMBLOC/CMBSZ), mapped or not. */
  cmbInfo: CmbInfo | undefined;
  /** The CMB as mapped for submission queues (sq: 'cmb'). */
  cmb: MappedCmb | undefined;
  /** I/O queue pairs the controller granted (Number of Queues, §5.21.1.7). */
  ioQueuesGranted = 0;
  private admin!: QueuePair;
  private readonly queues = new Map<number, IoQueuePair>();
  private cmbUsed = 0;
  private identifyBuf: DmaBuffer | undefined;
  private failed: VfioError | undefined;
  private readonly vectors: MsixVectors;
  private closed = false;

  private constructor(
    readonly dev: VfioDevice,
    readonly regs: ControllerRegisters,
    readonly pool: DmaPool,
    readonly options: NvmeOptions,
  ) {
    this.vectors = new MsixVectors(dev);
  }

  /** Brings the controller up (NVMe 1.4 §7.6.1). On failure everything acquired is released. */
  static async open(dev: VfioDevice, options: NvmeOptions = {}): Promise<NvmeController> {
    const regs = await ControllerRegisters.open(
      dev,
      options.registers ?? 'auto',
      options.fence ?? storeFence,
    );
    const c = new NvmeController(
      dev,
      regs,
      new DmaPool(dev, options.iovaBase === undefined ? {} : { iovaBase: options.iovaBase }),
      options,
    );
    try {
      await c.init();
      return c;
    } catch (e) {
      // Leave the controller disabled (it may have been enabled before the failure).
      if (c.cap) await c.disable().catch(() => {});
      await c.release().catch(() => {});
      throw e;
    }
  }

  get sqPlacement(): 'host' | 'cmb' {
    return this.cmb ? 'cmb' : 'host';
  }

  private async init(): Promise<void> {
    // pci_enable_device_mem + pci_set_master: memory decoding and bus mastering (DMA) on.
    const cmd = await this.dev.readConfig(PCI_COMMAND, 2);
    const want = (cmd[0]! | (cmd[1]! << 8) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) & 0xffff;
    await this.dev.writeConfig(PCI_COMMAND, new Uint8Array([want & 0xff, want >> 8]));

    this.cap = await this.regs.read64(REG.CAP);
    if (this.cap === 0xffff_ffff_ffff_ffffn) fail(Errno.ENODEV, 'nvme', 'CAP reads all ones: no controller');
    this.regs.dstrd = cap.dstrd(this.cap);
    this.version = await this.regs.read32(REG.VS);
    if (!(cap.css(this.cap) & CAP_CSS_NVM))
      fail(Errno.EOPNOTSUPP, 'nvme', 'the controller does not support the NVM command set (CAP.CSS bit 0)');
    if (cap.mpsmin(this.cap) > 0)
      fail(
        Errno.EOPNOTSUPP,
        'nvme',
        `the controller's smallest page is ${4096 << cap.mpsmin(this.cap)} bytes; the driver uses 4 KiB`,
      );

    await this.disable();
    // Linux looks for a CMB on every controller (nvme_map_cmb); only sq: 'cmb' maps it.
    this.cmbInfo = await findCmb(this.dev, this.regs, this.cap);
    if (this.options.sq === 'cmb') await this.setUpCmb(this.cmbInfo);

    // §7.6.1 steps 2-4: admin queue attributes and addresses, then CC, then CC.EN.
    const asq = await this.pool.alloc(ADMIN_QUEUE_DEPTH * SQE_BYTES);
    const acq = await this.pool.alloc(ADMIN_QUEUE_DEPTH * CQE_BYTES);
    await this.regs.write32(REG.AQA, ((ADMIN_QUEUE_DEPTH - 1) << 16) | (ADMIN_QUEUE_DEPTH - 1));
    await this.regs.write64(REG.ASQ, asq.iova);
    await this.regs.write64(REG.ACQ, acq.iova);
    const cc = CC_CSS_NVM | CC_AMS_RR | CC_IOSQES | CC_IOCQES; // CC.MPS 0: 4 KiB pages
    await this.regs.write32(REG.CC, cc);
    await this.regs.write32(REG.CC, cc | CC_EN);
    await this.waitStatus(CSTS_RDY, CSTS_RDY, cap.toMs(this.cap), 'CSTS.RDY to become 1 after CC.EN = 1');
    this.admin = new QueuePair(
      0,
      ADMIN_QUEUE_DEPTH,
      hostSq(asq),
      { words: words(acq), iova: acq.iova },
      this.regs,
      this,
      this.options.adminTimeoutMs ?? DEFAULT_ADMIN_TIMEOUT_MS,
    );

    const id = await this.identify(CNS.CONTROLLER, 0);
    this.identity = decodeControllerIdentity(id);
    // §5.15.2.1: SQES/CQES bits 3:0 are the required (smallest) sizes; we use 64 and 16 bytes.
    if ((this.identity.sqes & 0xf) > 6 || this.identity.sqes >> 4 < 6 || (this.identity.cqes & 0xf) > 4)
      fail(
        Errno.EOPNOTSUPP,
        'nvme',
        `entry sizes SQES 0x${this.identity.sqes.toString(16)} CQES 0x${this.identity.cqes.toString(16)} exclude 64/16 bytes`,
      );
    await this.requestQueues(this.options.ioQueues ?? DEFAULT_IO_QUEUES);
    for (const nsid of decodeNamespaceList(await this.identify(CNS.ACTIVE_NSIDS, 0))) {
      const ns = decodeNamespaceIdentity(nsid, await this.identify(CNS.NAMESPACE, nsid));
      if (ns.nsze > 0n) this.namespaces.set(nsid, ns);
    }
  }

  /** CMBMSC, a WC mapping, and the CMB's addresses kept out of the DMA pool. */
  private async setUpCmb(found: CmbInfo | undefined): Promise<void> {
    if (!found)
      fail(Errno.EOPNOTSUPP, 'nvme CMB', 'the controller has no Controller Memory Buffer (CMBSZ is 0)');
    if (!cmbsz.sqs(found.cmbsz))
      fail(Errno.EOPNOTSUPP, 'nvme CMB', 'the CMB does not support submission queues (CMBSZ.SQS is 0)');
    this.cmb = await mapCmb(this.dev, this.regs, this.cap, found, {
      ...(this.options.cmbMapBytes === undefined ? {} : { maxBytes: this.options.cmbMapBytes }),
      ...(this.options.wcPath === undefined ? {} : { path: this.options.wcPath }),
    });
    this.pool.reserve({ start: found.controllerAddress, end: found.controllerAddress + found.size });
  }

  /** Identify (§5.15) into the controller's identify page; returns a copy of the 4 KiB data. */
  async identify(cns: number, nsid: number): Promise<Uint8Array> {
    this.identifyBuf ??= await this.pool.alloc(IDENTIFY_BYTES);
    const buf = this.identifyBuf;
    await this.admin.submit(`Identify CNS ${cns}`, ADMIN.IDENTIFY, (sqe) => {
      sqe[SQE.NSID] = nsid;
      setAddress(sqe, SQE.PRP1, buf.iova);
      sqe[SQE.CDW10] = cns;
    });
    return buf.bytes.slice();
  }

  /** Set Features, Number of Queues (§5.21.1.7): 0's based counts in, granted counts out. */
  private async requestQueues(n: number): Promise<void> {
    if (!Number.isInteger(n) || n < 1 || n > 0xfffe) fail(Errno.EINVAL, 'nvme', `ioQueues ${n}`);
    const dw0 = await this.admin.submit('Set Features (Number of Queues)', ADMIN.SET_FEATURES, (sqe) => {
      sqe[SQE.CDW10] = FEATURE_NUMBER_OF_QUEUES;
      sqe[SQE.CDW11] = (((n - 1) << 16) | (n - 1)) >>> 0;
    });
    this.ioQueuesGranted = Math.min(n, (dw0 & 0xffff) + 1, (dw0 >>> 16) + 1);
  }

  /** A DMA buffer the controller can read and write (page aligned, zeroed). */
  alloc(bytes: number): Promise<DmaBuffer> {
    return this.pool.alloc(bytes);
  }

  namespace(nsid: number): NamespaceIdentity {
    const ns = this.namespaces.get(nsid);
    if (!ns)
      fail(
        Errno.ENODEV,
        'nvme',
        `no active namespace ${nsid} (active: ${[...this.namespaces.keys()].join(', ') || 'none'})`,
      );
    return ns;
  }

  /**
   * Largest transfer of one command: 2^MDTS units of CAP.MPSMIN (§5.15.2.1; the driver runs with
   * 4 KiB pages only), MDTS 0 meaning no limit of the controller's own; at most the driver's.
   */
  get maxTransferBytes(): number {
    const mdts = this.identity.mdts;
    return mdts === 0 ? MAX_TRANSFER_BYTES : Math.min(PAGE * 2 ** mdts, MAX_TRANSFER_BYTES);
  }

  /** Creates I/O CQ then SQ (§5.3, §5.4) with the next free queue identifier. */
  async createQueuePair(opts: { depth?: number; sq?: 'host' | 'cmb' } = {}): Promise<IoQueuePair> {
    this.check();
    const depth = opts.depth ?? DEFAULT_IO_QUEUE_DEPTH;
    // A controller opened with sq: 'cmb' may still put a queue in host memory (side by side
    // comparisons); the reverse needs the CMB mapped at open.
    const inCmb = (opts.sq ?? this.sqPlacement) === 'cmb';
    if (inCmb && !this.cmb)
      fail(Errno.EINVAL, 'nvme', "a submission queue in the CMB needs the controller opened with sq: 'cmb'");
    const most = Math.min(MAX_IO_QUEUE_DEPTH, cap.mqes(this.cap));
    if (!Number.isInteger(depth) || depth < 2 || depth > most)
      fail(Errno.EINVAL, 'nvme', `queue depth ${depth}: the controller takes 2..${most} entries (CAP.MQES)`);
    let qid = 1;
    while (this.queues.has(qid)) qid++;
    if (qid > this.ioQueuesGranted)
      fail(
        Errno.ENOSPC,
        'nvme',
        `all ${this.ioQueuesGranted} I/O queue pairs the controller granted are in use`,
      );
    const cq = await this.pool.alloc(depth * CQE_BYTES);
    const sq: SqMemory = inCmb
      ? this.carveCmb(depth * SQE_BYTES)
      : hostSq(await this.pool.alloc(depth * SQE_BYTES));
    const eventfd = this.options.completions === 'interrupt' ? await this.vectors.route(qid) : undefined;
    try {
      await this.admin.submit(`Create I/O CQ ${qid}`, ADMIN.CREATE_IO_CQ, (sqe) => {
        setAddress(sqe, SQE.PRP1, cq.iova);
        sqe[SQE.CDW10] = (((depth - 1) << 16) | qid) >>> 0;
        sqe[SQE.CDW11] =
          (((eventfd === undefined ? 0 : qid) << 16) | (eventfd === undefined ? 0 : CQ_IEN) | CQ_PC) >>> 0;
      });
      try {
        await this.admin.submit(`Create I/O SQ ${qid}`, ADMIN.CREATE_IO_SQ, (sqe) => {
          setAddress(sqe, SQE.PRP1, sq.address);
          sqe[SQE.CDW10] = (((depth - 1) << 16) | qid) >>> 0;
          sqe[SQE.CDW11] = ((qid << 16) | SQ_PC) >>> 0;
        });
      } catch (e) {
        await this.deleteQueue(ADMIN.DELETE_IO_CQ, qid).catch(() => {});
        throw e;
      }
    } catch (e) {
      await this.vectors.unroute(qid).catch(() => {});
      throw e;
    }
    const qp = new QueuePair(
      qid,
      depth,
      sq,
      { words: words(cq), iova: cq.iova },
      this.regs,
      this,
      this.options.ioTimeoutMs ?? DEFAULT_IO_TIMEOUT_MS,
      eventfd,
    );
    const io = await IoQueuePair.create(this, qp);
    this.queues.set(qid, io);
    return io;
  }

  /**
   * Deletes the I/O SQ, then its CQ (§5.6 before §5.5: a CQ outlives its SQs). Between the two
   * the CQ is reaped once more: Delete I/O SQ completes after the commands it had fetched, and
   * posts the ones it had not as Command Aborted due to SQ Deletion (§5.6), so every command
   * still out has its completion there, as Linux reaps them before letting go of a queue
   * (drivers/nvme/host/pci.c: nvme_reap_pending_cqes in nvme_dev_disable).
   */
  async deleteQueuePair(io: IoQueuePair): Promise<void> {
    if (this.queues.get(io.qid) !== io) return;
    this.queues.delete(io.qid);
    try {
      if (!this.failed) {
        await this.deleteQueue(ADMIN.DELETE_IO_SQ, io.qid);
        await io.queue.reap();
        await this.deleteQueue(ADMIN.DELETE_IO_CQ, io.qid);
      }
    } finally {
      io.queue.close();
      await this.vectors.unroute(io.qid);
    }
  }

  private async deleteQueue(opcode: number, qid: number): Promise<void> {
    await this.admin.submit(
      `Delete I/O ${opcode === ADMIN.DELETE_IO_SQ ? 'SQ' : 'CQ'} ${qid}`,
      opcode,
      (sqe) => {
        sqe[SQE.CDW10] = qid;
      },
    );
  }

  /** Submission queue memory in the CMB: page aligned, bump allocated, never reused. */
  private carveCmb(bytes: number): SqMemory {
    const cmb = this.cmb!;
    const at = Math.ceil(this.cmbUsed / PAGE) * PAGE;
    if (at + bytes > cmb.mappedBytes)
      fail(
        Errno.ENOSPC,
        'nvme CMB',
        `no room for ${bytes} more bytes of submission queue in the ${cmb.mappedBytes}-byte CMB mapping`,
      );
    this.cmbUsed = at + bytes;
    const b = cmb.mapping.bytes;
    return {
      words: new Uint32Array(b.buffer, b.byteOffset + at, bytes / 4),
      address: cmb.controllerAddress + BigInt(at),
      wc: true,
    };
  }

  /** QueueHost: CSTS all ones (gone) or CFS (fatal) fails the whole controller. */
  async checkHealth(): Promise<void> {
    if (this.failed) throw this.failed;
    let csts: number;
    try {
      csts = await this.regs.status(REG.CSTS);
    } catch (e) {
      throw this.markFailed(e instanceof VfioError ? e : new VfioError(Errno.EIO, 'nvme', String(e)));
    }
    if (csts & CSTS_CFS)
      throw this.markFailed(
        new VfioError(
          Errno.EIO,
          'nvme',
          'controller fatal status (CSTS.CFS): the controller has failed and needs a reset',
        ),
      );
  }

  private markFailed(e: VfioError): VfioError {
    if (!this.failed) {
      this.failed = e;
      this.admin?.failAll(e);
      for (const q of this.queues.values()) q.queue.failAll(e);
    }
    return this.failed;
  }

  /** Throws if the controller has failed or been closed. */
  check(): void {
    if (this.failed) throw this.failed;
    if (this.closed) fail(Errno.EBADF, 'nvme', 'controller closed');
  }

  /** Waits until (CSTS & mask) === value, failing on CFS or after `ms`. */
  private async waitStatus(mask: number, value: number, ms: number, what: string): Promise<void> {
    const until = Date.now() + Math.max(ms, STATUS_POLL_MS);
    for (;;) {
      const csts = await this.regs.status(REG.CSTS);
      if ((csts & mask) === value) return;
      // Waiting for RDY = 0 is how a failed controller is reset; any other wait ends on CFS.
      if (csts & CSTS_CFS && value !== 0)
        fail(Errno.EIO, 'nvme', `controller fatal status (CSTS.CFS) while waiting for ${what}`);
      if (Date.now() > until)
        fail(Errno.ETIMEDOUT, 'nvme', `timed out after ${ms} ms waiting for ${what} (CAP.TO)`);
      await new Promise((r) => setTimeout(r, STATUS_POLL_MS));
    }
  }

  /** CC.EN = 0 and wait for CSTS.RDY = 0 (a Controller Reset, §7.3.2), unless already idle. */
  private async disable(): Promise<void> {
    const cc = await this.regs.read32(REG.CC);
    const csts = await this.regs.status(REG.CSTS);
    if (!(cc & CC_EN) && !(csts & CSTS_RDY)) return;
    await this.regs.write32(REG.CC, cc & ~CC_EN);
    await this.waitStatus(CSTS_RDY, 0, cap.toMs(this.cap), 'CSTS.RDY to become 0 after CC.EN = 0');
  }

  /**
   * Clean shutdown (§7.6.2): I/O queues deleted, CC.SHN = normal and CSTS.SHST complete, then
   * disabled; MSI-X off, the CMB decoding off, every DMA mapping and eventfd released. A failed
   * controller skips the commands and is only reset. Errors are collected; the first is thrown
   * once everything has been released.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    };
    for (const q of [...this.queues.values()]) await attempt(() => this.deleteQueuePair(q));
    if (!this.failed)
      await attempt(async () => {
        const cc = await this.regs.read32(REG.CC);
        await this.regs.write32(REG.CC, (cc & ~CC_SHN_MASK) | CC_SHN_NORMAL);
        await this.waitStatus(
          CSTS_SHST_MASK,
          CSTS_SHST_COMPLETE,
          SHUTDOWN_TIMEOUT_MS,
          'CSTS.SHST = shutdown complete',
        );
      });
    await attempt(() => this.disable());
    await attempt(() => this.release());
    if (errors.length) throw errors[0];
  }

  /** Everything but the commands: admin queue, MSI-X, CMB, DMA memory, the register mapping. */
  private async release(): Promise<void> {
    this.admin?.close();
    try {
      await this.vectors.close();
      if (this.cmb) await unmapCmb(this.dev, this.regs, this.cap, this.cmb).catch(() => {});
      await this.pool.close();
    } finally {
      this.regs.close();
    }
  }
}

/** A 64-bit address into two SQE dwords (little endian). */
export function setAddress(sqe: Uint32Array, at: number, addr: bigint): void {
  sqe[at] = Number(addr & 0xffff_ffffn);
  sqe[at + 1] = Number(addr >> 32n);
}

function hostSq(b: DmaBuffer): SqMemory {
  return { words: words(b), address: b.iova, wc: false };
}

function words(b: DmaBuffer): Uint32Array {
  return new Uint32Array(b.bytes.buffer, b.bytes.byteOffset, b.bytes.byteLength / 4);
}
