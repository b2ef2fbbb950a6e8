/**
 * A fake PCI host for the NVMe controller's unit tests, and a minimal driver on it.
 *
 * FakeHost: host memory is one array mapped at MEM_BASE (DMA anywhere else fails with EFAULT,
 * like DmaSpace); interrupts are recorded; `remote: true` delays every DMA by a turn of the event
 * loop, the way DMA_READ/DMA_WRITE round trips do.
 *
 * TestDriver: what Linux's nvme driver does, reduced to the steps the tests need: enable the
 * controller with admin queues in host memory, submit a command to any SQ, wait for its
 * completion by the phase tag, ring the CQ head doorbell.
 */
import { Errno } from '../../../src/abi/errno.js';
import { NvmeController, type NvmeControllerOptions } from '../../../src/devices/nvme/controller.js';
import type { NamespaceBackend, NvmeHost } from '../../../src/devices/nvme/host.js';
import { MemoryNamespace } from '../../../src/devices/nvme/namespace.js';
import { VfioError } from '../../../src/errors.js';

export const MEM_BASE = 0x1000_0000n;
export const MEM_SIZE = 8 << 20;
export const PAGE = 4096;

export class FakeHost implements NvmeHost {
  readonly memory = new Uint8Array(MEM_SIZE);
  interruptMode: 'none' | 'intx' | 'msi' | 'msix' = 'msix';
  readonly vectors: number[] = [];
  intx = false;
  intxRaises = 0;
  readonly lines: string[] = [];
  cmbBytes: Uint8Array | undefined;
  dmaCount = 0;
  private clock = 0;

  constructor(readonly remote = false) {}

  private span(addr: bigint, length: number, op: string): number {
    if (addr < MEM_BASE || addr + BigInt(length) > MEM_BASE + BigInt(MEM_SIZE))
      throw new VfioError(Errno.EFAULT, op, `0x${addr.toString(16)}+${length} not mapped`);
    return Number(addr - MEM_BASE);
  }

  async dmaRead(addr: bigint, dst: Uint8Array): Promise<void> {
    this.dmaCount++;
    if (this.remote) await new Promise((r) => setImmediate(r));
    const o = this.span(addr, dst.length, 'DMA read');
    dst.set(this.memory.subarray(o, o + dst.length));
  }

  async dmaWrite(addr: bigint, data: Uint8Array): Promise<void> {
    this.dmaCount++;
    if (this.remote) await new Promise((r) => setImmediate(r));
    const o = this.span(addr, data.length, 'DMA write');
    this.memory.set(data, o);
  }

  raise(vector: number): void {
    if (this.interruptMode === 'intx') {
      this.intx = true;
      this.intxRaises++;
    } else this.vectors.push(vector);
  }

  lower(): void {
    this.intx = false;
  }

  cmb(): Uint8Array | undefined {
    return this.cmbBytes;
  }

  now(): number {
    return this.clock++;
  }

  log(line: string): void {
    this.lines.push(line);
  }

  view(addr: bigint, length: number): DataView {
    const o = Number(addr - MEM_BASE);
    return new DataView(this.memory.buffer, o, length);
  }

  bytes(addr: bigint, length: number): Uint8Array {
    const o = Number(addr - MEM_BASE);
    return this.memory.subarray(o, o + length);
  }
}

/** A command as the tests write it: opcode and the dwords that matter. */
export interface Sqe {
  opcode: number;
  flags?: number;
  cid?: number;
  nsid?: number;
  prp1?: bigint;
  prp2?: bigint;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
}

export interface Cqe {
  result: number;
  sqhd: number;
  sqid: number;
  cid: number;
  phase: number;
  /** (SCT << 8) | SC, without DNR. */
  status: number;
  dnr: boolean;
}

/** §4.2: a 64-byte submission queue entry. */
export function encodeSqe(sqe: Sqe, cid: number): Uint8Array {
  const b = new Uint8Array(64);
  const v = new DataView(b.buffer);
  v.setUint32(0, sqe.opcode | ((sqe.flags ?? 0) << 8) | (cid << 16), true);
  v.setUint32(4, sqe.nsid ?? 0, true);
  v.setBigUint64(24, sqe.prp1 ?? 0n, true);
  v.setBigUint64(32, sqe.prp2 ?? 0n, true);
  v.setUint32(40, sqe.cdw10 ?? 0, true);
  v.setUint32(44, sqe.cdw11 ?? 0, true);
  v.setUint32(48, sqe.cdw12 ?? 0, true);
  v.setUint32(52, sqe.cdw13 ?? 0, true);
  return b;
}

/** §4.6: a 16-byte completion queue entry. */
export function decodeCqe(v: DataView): Cqe {
  const dw3 = v.getUint32(12, true);
  const sf = dw3 >>> 17;
  return {
    result: v.getUint32(0, true),
    sqhd: v.getUint16(8, true),
    sqid: v.getUint16(10, true),
    cid: dw3 & 0xffff,
    phase: (dw3 >>> 16) & 1,
    status: sf & 0x7ff,
    dnr: (sf & 0x4000) !== 0,
  };
}

interface Queue {
  sqBase: bigint;
  cqBase: bigint;
  /** CQ entries (and SQ entries unless sqSize says otherwise). */
  size: number;
  sqSize?: number;
  sqTail: number;
  cqHead: number;
  phase: number;
  /** SQ entries written into this array (the CMB) instead of host memory. */
  sqBytes?: Uint8Array;
  sqOffset?: number;
}

/** Where the test driver puts its structures in host memory. */
export const LAYOUT = {
  ASQ: MEM_BASE,
  ACQ: MEM_BASE + 0x1_0000n,
  IOSQ: MEM_BASE + 0x2_0000n,
  IOCQ: MEM_BASE + 0x4_0000n,
  /** Data buffers from here on. */
  DATA: MEM_BASE + 0x10_0000n,
} as const;

export class TestDriver {
  private readonly queues = new Map<number, Queue>();
  private nextCid = 1;

  constructor(
    readonly ctl: NvmeController,
    readonly host: FakeHost,
  ) {}

  /** §7.6.1: AQA/ASQ/ACQ, then CC (EN, IOSQES 6, IOCQES 4); waits for CSTS.RDY. */
  async enable(adminSize = 16, cc = 0x0046_0001): Promise<number> {
    this.host.bytes(LAYOUT.ACQ, adminSize * 16).fill(0); // as nvme_init_queue clears a CQ
    this.ctl.write(0x24, 4, ((adminSize - 1) << 16) | (adminSize - 1));
    this.ctl.write(0x28, 4, Number(LAYOUT.ASQ & 0xffff_ffffn));
    this.ctl.write(0x2c, 4, Number(LAYOUT.ASQ >> 32n));
    this.ctl.write(0x30, 4, Number(LAYOUT.ACQ & 0xffff_ffffn));
    this.ctl.write(0x34, 4, Number(LAYOUT.ACQ >> 32n));
    this.ctl.write(0x14, 4, cc);
    this.queues.set(0, {
      sqBase: LAYOUT.ASQ,
      cqBase: LAYOUT.ACQ,
      size: adminSize,
      sqTail: 0,
      cqHead: 0,
      phase: 1,
    });
    return this.ctl.read(0x1c, 4);
  }

  /** CC.EN 1 → 0; waits for CSTS.RDY to clear. */
  async disable(): Promise<void> {
    this.ctl.write(0x14, 4, this.ctl.read(0x14, 4) & ~1);
    for (let i = 0; i < 1000 && this.ctl.read(0x1c, 4) & 1; i++) await turn();
    this.queues.clear();
  }

  /** Registers an I/O queue pair the test created (or is about to create) with admin commands. */
  track(qid: number, q: Omit<Queue, 'sqTail' | 'cqHead' | 'phase'>): void {
    this.queues.set(qid, { ...q, sqTail: 0, cqHead: 0, phase: 1 });
  }

  /** Creates I/O CQ and SQ `qid` (size entries, vector `qid`) in host memory; returns both statuses. */
  async createIoQueues(qid: number, size = 32, sqBase = LAYOUT.IOSQ, vector = qid): Promise<[Cqe, Cqe]> {
    const cqBase = LAYOUT.IOCQ + BigInt(qid) * 0x1_0000n;
    this.host.bytes(cqBase, size * 16).fill(0);
    const cq = await this.admin({
      opcode: 0x05,
      prp1: cqBase,
      cdw10: ((size - 1) << 16) | qid,
      cdw11: (vector << 16) | 3,
    });
    const sq = await this.admin({
      opcode: 0x01,
      prp1: sqBase,
      cdw10: ((size - 1) << 16) | qid,
      cdw11: (qid << 16) | 1,
    });
    this.track(qid, { sqBase, cqBase, size });
    return [cq, sq];
  }

  /** Writes `sqe` at the SQ tail (without ringing); returns its command id. */
  place(qid: number, sqe: Sqe): number {
    const q = this.queues.get(qid)!;
    const cid = sqe.cid ?? this.nextCid++ & 0xffff;
    const b = encodeSqe(sqe, cid);
    if (q.sqBytes) q.sqBytes.set(b, q.sqOffset! + q.sqTail * 64);
    else this.host.memory.set(b, Number(q.sqBase - MEM_BASE) + q.sqTail * 64);
    q.sqTail = (q.sqTail + 1) % (q.sqSize ?? q.size);
    return cid;
  }

  /** Rings SQ `qid`'s tail doorbell with the driver's tail. */
  ring(qid: number): void {
    this.ctl.write(0x1000 + qid * 8, 4, this.queues.get(qid)!.sqTail);
  }

  /** The next CQ entry of queue `qid` if its phase says it is new (does not consume it). */
  peek(qid: number): Cqe | undefined {
    const q = this.queues.get(qid);
    if (!q) return undefined;
    const c = decodeCqe(this.host.view(q.cqBase + BigInt(q.cqHead * 16), 16));
    return c.phase === q.phase ? c : undefined;
  }

  /** The next new CQ entry of `qid`, consumed (head moved, rung unless `ringHead` is false). */
  consume(qid: number, ringHead = true): Cqe | undefined {
    const c = this.peek(qid);
    if (!c) return undefined;
    const q = this.queues.get(qid)!;
    q.cqHead = (q.cqHead + 1) % q.size;
    if (q.cqHead === 0) q.phase ^= 1;
    if (ringHead) this.ringHead(qid);
    return c;
  }

  /** Waits for the next CQ entry of `qid` and consumes it (see consume). */
  async reap(qid: number, ringHead = true): Promise<Cqe> {
    for (let i = 0; i < 2000; i++) {
      const c = this.consume(qid, ringHead);
      if (c) return c;
      await turn();
    }
    throw new Error(`no completion on CQ ${qid}; ${this.host.lines.join('\n')}`);
  }

  ringHead(qid: number): void {
    this.ctl.write(0x1000 + qid * 8 + 4, 4, this.queues.get(qid)!.cqHead);
  }

  /** The next `n` completions of `qid`, by command id (an event's may come before its cause's). */
  async collect(qid: number, n: number): Promise<Map<number, Cqe>> {
    const out = new Map<number, Cqe>();
    for (let i = 0; i < n; i++) {
      const c = await this.reap(qid);
      out.set(c.cid, c);
    }
    return out;
  }

  /** Submits one command on `qid` and waits for its completion. */
  async submit(qid: number, sqe: Sqe): Promise<Cqe> {
    this.place(qid, sqe);
    this.ring(qid);
    return this.reap(qid);
  }

  admin(sqe: Sqe): Promise<Cqe> {
    return this.submit(0, sqe);
  }
}

/** One turn of the event loop (microtasks and a setImmediate). */
export function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export interface Rig {
  ctl: NvmeController;
  host: FakeHost;
  driver: TestDriver;
  ns: NamespaceBackend;
}

/** A controller on a FakeHost with a memory namespace (1 MiB unless said otherwise). */
export function rig(
  opts: { remote?: boolean; ns?: NamespaceBackend; controller?: Partial<NvmeControllerOptions> } = {},
): Rig {
  const host = new FakeHost(opts.remote ?? false);
  const ns = opts.ns ?? new MemoryNamespace(1 << 20);
  const ctl = new NvmeController(host, ns, { vectors: 65, serial: 'TESTSERIAL', ...opts.controller });
  return { ctl, host, driver: new TestDriver(ctl, host), ns };
}

/** A rig with the controller enabled and I/O queue pair 1 created. */
export async function ready(opts: Parameters<typeof rig>[0] = {}): Promise<Rig> {
  const r = rig(opts);
  await r.driver.enable();
  await r.driver.createIoQueues(1);
  return r;
}

/** A namespace whose reads wait until released: commands stay in flight as long as a test wants. */
export class GatedNamespace extends MemoryNamespace {
  private gates: (() => void)[] = [];
  flushes = 0;
  override async read(offset: number, dst: Uint8Array): Promise<void> {
    await new Promise<void>((r) => this.gates.push(r));
    return super.read(offset, dst);
  }
  override async flush(): Promise<void> {
    this.flushes++;
  }
  release(): void {
    for (const g of this.gates.splice(0)) g();
  }
  get waiting(): number {
    return this.gates.length;
  }
}
