/**
 * A submission/completion queue pair (NVMe 1.4 §4.1, §7.2 command submission and completion):
 * commands go into the SQ ring at the tail and the tail doorbell announces them; the controller
 * posts 16-byte completions into the CQ ring, and a completion is new while its Phase Tag
 * matches the phase the host expects (it inverts on every wrap, §4.6 "Phase Tag"). The host
 * learns how far the controller has consumed the SQ from each completion's SQ Head Pointer.
 *
 * Completions are found by polling the CQ, or when the queue's MSI-X vector fires its eventfd.
 * A watchdog fails commands that outlive their timeout and asks the controller whether it has
 * failed (CSTS.CFS), as Linux's nvme_timeout does before anything else.
 */
import { Errno } from '../../abi/errno.js';
import { VfioError } from '../../errors.js';
import { eventfdRead, type FdWatch, watchFd } from '../../native/index.js';
import type { ControllerRegisters } from './regs.js';
import { CQE_BYTES, cqe, SCT_GENERIC, SQE, SQE_WORDS, statusName } from './spec.js';

/** Empty polls in a row before the poller lets the event loop run (other backends, timers). */
export const SPINS_BEFORE_YIELD = 64;
/** How often the watchdog looks at deadlines and CSTS while commands are outstanding. */
export const WATCHDOG_MS = 100;

/** Submission ring memory: host DMA memory or the CMB (write-combining). */
export interface SqMemory {
  readonly words: Uint32Array;
  /** The address the controller uses for the queue (an IOVA, or inside the CMB's CBA range). */
  readonly address: bigint;
  readonly wc: boolean;
}

export interface CqMemory {
  readonly words: Uint32Array;
  readonly iova: bigint;
}

/** What the queue needs from its controller: is it alive, and what to do when it is not. */
export interface QueueHost {
  /** Throws (and fails every queue) when the controller reports a fatal status or is gone. */
  checkHealth(): Promise<void>;
}

/** An NVMe command status other than success, as an error (errno per nvme_error_status). */
export class NvmeStatusError extends VfioError {
  constructor(
    op: string,
    readonly sct: number,
    readonly sc: number,
    readonly dnr: boolean,
  ) {
    super(statusErrno(sct, sc), op, statusName(sct, sc));
  }
}

/**
 * drivers/nvme/host/core.c: nvme_error_status: a capacity error is ENOSPC; an invalid opcode,
 * field or namespace is "not supported"; the rest are I/O errors.
 */
function statusErrno(sct: number, sc: number): number {
  if (sct !== SCT_GENERIC) return Errno.EIO;
  if (sc === 0x81) return Errno.ENOSPC;
  if (sc === 0x01 || sc === 0x02 || sc === 0x0b) return Errno.EOPNOTSUPP;
  return Errno.EIO;
}

interface Pending {
  resolve(dw0: number): void;
  reject(e: unknown): void;
  deadline: number;
  op: string;
}

export class QueuePair {
  private sqTail = 0;
  /** How far the controller has consumed the SQ: the latest completion's SQ Head Pointer. */
  sqHead = 0;
  private cqHead = 0;
  private phase = 1;
  /** In flight by command identifier; a timed-out command keeps its CID until it completes. */
  private readonly pending: (Pending | undefined)[];
  private readonly zombies = new Set<number>();
  private readonly freeCids: number[] = [];
  private readonly waiters: (() => void)[] = [];
  private readonly sqe = new Uint32Array(SQE_WORDS);
  private polling = false;
  private watch: FdWatch | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private dead: unknown;
  private reaped = 0;
  private reapedAtLastCheck = 0;

  constructor(
    readonly qid: number,
    readonly depth: number,
    private readonly sq: SqMemory,
    private readonly cq: CqMemory,
    private readonly regs: ControllerRegisters,
    private readonly host: QueueHost,
    private readonly timeoutMs: number,
    /** An eventfd routed to this queue's MSI-X vector: completions are reaped when it fires. */
    private readonly eventfd?: number,
  ) {
    // One slot stays empty: a full SQ has tail + 1 == head (§4.1.2).
    this.pending = new Array<Pending | undefined>(depth - 1).fill(undefined);
    for (let cid = depth - 2; cid >= 0; cid--) this.freeCids.push(cid);
    if (eventfd !== undefined) {
      this.watch = watchFd(eventfd, { readable: true }, () => {
        if (eventfdRead(eventfd) !== null) void this.reap().catch((e: unknown) => this.failAll(e));
      });
      this.watch.unref();
    }
  }

  get wc(): boolean {
    return this.sq.wc;
  }

  get inFlight(): number {
    return this.depth - 1 - this.freeCids.length;
  }

  /**
   * Submits one command: `fill` writes its dwords 1..15 into a zeroed entry (the CID and
   * opcode go in dword 0 here). Resolves with completion dword 0; rejects with NvmeStatusError,
   * ETIMEDOUT, or EIO once the controller has failed.
   */
  async submit(op: string, opcode: number, fill: (sqe: Uint32Array, cid: number) => void): Promise<number> {
    if (this.dead) throw this.dead;
    let cid = this.freeCids.pop();
    while (cid === undefined) {
      await new Promise<void>((r) => this.waiters.push(r));
      if (this.dead) throw this.dead;
      cid = this.freeCids.pop();
    }
    const sqe = this.sqe;
    sqe.fill(0);
    try {
      fill(sqe, cid);
    } catch (e) {
      this.release(cid);
      throw e;
    }
    sqe[SQE.CDW0] = ((cid << 16) | (opcode & 0xff)) >>> 0;
    const done = new Promise<number>((resolve, reject) => {
      this.pending[cid] = { resolve, reject, deadline: Date.now() + this.timeoutMs, op };
    });
    this.putEntry(sqe);
    const rung = this.regs.ringSubmission(this.qid, this.sqTail, this.sq.wc);
    if (rung) {
      try {
        await rung;
      } catch (e) {
        // A doorbell that cannot be written leaves the queue unusable: fail it (`done` too).
        this.failAll(e);
      }
    }
    this.startWatchdog();
    if (this.eventfd === undefined) this.kickPoller();
    return done;
  }

  /**
   * The one place entries enter the SQ: 16 aligned 32-bit stores at the tail (never wider: a
   * controller may take CMB writes of at most 8 bytes, as QEMU's does — SPDK's
   * NVME_QUIRK_MAXIMUM_PCI_ACCESS_WIDTH), then the tail moves. Only ringSubmission publishes it.
   */
  private putEntry(sqe: Uint32Array): void {
    const base = this.sqTail * SQE_WORDS;
    const w = this.sq.words;
    for (let i = 0; i < SQE_WORDS; i++) w[base + i] = sqe[i]!;
    this.sqTail = this.sqTail + 1 === this.depth ? 0 : this.sqTail + 1;
  }

  /** Consumes every new completion, then rings the CQ head doorbell once. Returns how many. */
  async reap(): Promise<number> {
    const w = this.cq.words;
    let n = 0;
    for (;;) {
      const at = this.cqHead * (CQE_BYTES / 4);
      const dw3 = w[at + 3]!;
      if (cqe.phase(dw3) !== this.phase) break;
      const dw0 = w[at]!;
      this.sqHead = cqe.sqhd(w[at + 2]!);
      this.cqHead++;
      if (this.cqHead === this.depth) {
        this.cqHead = 0;
        this.phase ^= 1;
      }
      n++;
      this.complete(cqe.cid(dw3), dw0, dw3);
    }
    if (n) {
      this.reaped += n;
      const rung = this.regs.ringCompletion(this.qid, this.cqHead);
      if (rung) await rung;
    }
    return n;
  }

  private complete(cid: number, dw0: number, dw3: number): void {
    const p = this.pending[cid];
    if (p === undefined) {
      // A late completion of a timed-out command frees its CID; anything else is a controller bug.
      if (this.zombies.delete(cid)) this.release(cid);
      return;
    }
    this.pending[cid] = undefined;
    this.release(cid);
    const sc = cqe.sc(dw3);
    const sct = cqe.sct(dw3);
    if (sc === 0 && sct === SCT_GENERIC) p.resolve(dw0);
    else p.reject(new NvmeStatusError(p.op, sct, sc, cqe.dnr(dw3) === 1));
  }

  private release(cid: number): void {
    this.freeCids.push(cid);
    this.waiters.shift()?.();
  }

  /** Polls until nothing is in flight, yielding to the event loop between bursts of empty polls. */
  private kickPoller(): void {
    if (this.polling) return;
    this.polling = true;
    void (async () => {
      try {
        let idle = 0;
        while (this.inFlight > this.zombies.size && !this.dead) {
          if (await this.reap()) idle = 0;
          else if (++idle >= SPINS_BEFORE_YIELD) {
            idle = 0;
            await new Promise<void>((r) => setImmediate(r));
          }
        }
      } catch (e) {
        this.failAll(e);
      } finally {
        this.polling = false;
      }
    })();
  }

  private startWatchdog(): void {
    if (this.watchdog) return;
    this.reapedAtLastCheck = this.reaped;
    this.watchdog = setInterval(() => void this.onWatchdog(), Math.min(WATCHDOG_MS, this.timeoutMs));
  }

  /**
   * Deadlines first; and when nothing completed since the last look, CSTS (a failed controller
   * completes nothing, and CSTS.CFS is how it says so, NVMe 1.4 §3.1.6).
   */
  private async onWatchdog(): Promise<void> {
    if (this.inFlight <= this.zombies.size) {
      clearInterval(this.watchdog);
      this.watchdog = undefined;
      return;
    }
    try {
      if (this.eventfd !== undefined) await this.reap(); // an interrupt may have been lost
      if (this.reaped === this.reapedAtLastCheck) await this.host.checkHealth();
      this.reapedAtLastCheck = this.reaped;
    } catch (e) {
      this.failAll(e);
      return;
    }
    const now = Date.now();
    this.pending.forEach((p, cid) => {
      if (p === undefined || p.deadline > now) return;
      this.pending[cid] = undefined;
      this.zombies.add(cid);
      p.reject(
        new VfioError(
          Errno.ETIMEDOUT,
          p.op,
          `no completion in ${this.timeoutMs} ms (queue ${this.qid}, CID ${cid})`,
        ),
      );
    });
  }

  /** Fails every command in flight and every later submission with `e` (the controller failed). */
  failAll(e: unknown): void {
    if (!this.dead) this.dead = e instanceof VfioError ? e : new VfioError(Errno.EIO, 'nvme', String(e));
    this.pending.forEach((p, cid) => {
      if (p === undefined) return;
      this.pending[cid] = undefined;
      p.reject(this.dead);
    });
    for (const w of this.waiters.splice(0)) w();
    this.stopTimers();
  }

  private stopTimers(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  /** Fails what is left and stops watching the eventfd (the controller owns and closes it). */
  close(): void {
    this.failAll(new VfioError(Errno.EIO, 'nvme', `queue ${this.qid} deleted`));
    this.watch?.stop();
    this.watch = undefined;
  }
}
