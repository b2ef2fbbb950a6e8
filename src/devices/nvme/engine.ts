/**
 * The queue engine: fetches submission queue entries, runs the commands, writes completions
 * and sends interrupts (NVMe 1.4 §4.1, §4.6, §7.5).
 *
 * A tail doorbell schedules a fetch pass on its SQ (a microtask, so the doorbells of one burst
 * of messages are taken together; made by a promise, which the server's thread loop sees). A pass fetches what the host submitted, in batches, while
 * the SQ and the controller have room for more commands in flight (MAX_INFLIGHT_PER_SQ,
 * MAX_INFLIGHT): nothing queues without bound; the rest waits in the SQ where the host put it.
 * Admin commands run one at a time in submission order; I/O commands run concurrently and
 * complete in the order they finish. Completions are written to their CQ in batches with the
 * current phase tag, then the CQ's interrupt is sent; a full CQ holds them until the host moves
 * its head.
 */
import type { NvmeController } from './controller.js';
import { type Command, type CompletionQueue, decodeCommand, type SubmissionQueue } from './queues.js';
import { CQE_SIZE, SC, SQE_SIZE, STATUS_DNR } from './spec.js';
import { CommandFailed, type Completion } from './status.js';

/** Commands in flight per SQ and in all: the fetch stops there until some complete. */
export const MAX_INFLIGHT_PER_SQ = 64;
export const MAX_INFLIGHT = 128;
/** SQ entries read per DMA (4 KiB). */
export const FETCH_BATCH = 64;

/** A command's runner: admin or NVM; 'parked' for an Asynchronous Event Request. */
export type Executor = (cmd: Command) => Promise<Completion | 'parked'>;

export class QueueEngine {
  /** Commands fetched and not completed, all SQs together. */
  inflight = 0;
  private intxAsserted = false;

  constructor(
    private readonly ctl: NvmeController,
    private readonly admin: Executor,
    private readonly io: Executor,
  ) {}

  /** Whether INTx is asserted for a CQ's entries (migration carries it). */
  get intxLevel(): boolean {
    return this.intxAsserted;
  }

  set intxLevel(v: boolean) {
    this.intxAsserted = v;
  }

  /** A reset dropped every queue: nothing is in flight any more for the new epoch. */
  reset(): void {
    this.inflight = 0;
  }

  schedule(sq: SubmissionQueue): void {
    if (sq.scheduled) return;
    sq.scheduled = true;
    // A microtask made by a promise, not queueMicrotask: the server's thread loop turns its
    // event loop when a promise is made (src/server/loop.ts), so the fetch runs before it
    // sleeps in recvmsg again instead of a tick later.
    void Promise.resolve().then(() => {
      sq.scheduled = false;
      void this.fetch(sq);
    });
  }

  /** How many more commands `sq` may start now. */
  private room(sq: SubmissionQueue): number {
    if (!this.ctl.ready || sq.closing || this.ctl.shuttingDown || this.ctl.halting) return 0;
    // Admin commands run one at a time, in order (Asynchronous Event Requests park at once).
    const perSq = sq.id === 0 ? 1 : MAX_INFLIGHT_PER_SQ;
    return Math.max(0, Math.min(sq.available, perSq - sq.inflight, MAX_INFLIGHT - this.inflight));
  }

  private async fetch(sq: SubmissionQueue): Promise<void> {
    if (sq.fetching) return;
    sq.fetching = true;
    const epoch = this.ctl.epoch;
    try {
      for (let n = this.room(sq); n > 0; n = this.room(sq)) {
        n = Math.min(n, FETCH_BATCH, sq.size - sq.head);
        const bytes = await this.readEntries(sq, sq.head, n, epoch);
        if (!bytes || epoch !== this.ctl.epoch || sq.closing) return;
        for (let i = 0; i < n; i++) {
          sq.head = (sq.head + 1) % sq.size;
          this.dispatch(sq, decodeCommand(bytes, i * SQE_SIZE));
        }
      }
    } finally {
      sq.fetching = false;
    }
  }

  /**
   * `n` entries from slot `first` (not wrapping): from the Controller Memory Buffer's bytes when
   * the queue lives there, else by DMA. A failed fetch cannot be reported in any CQ: CSTS.CFS
   * (§3.1.6; QEMU's nvme_process_sq does the same). Undefined then.
   */
  private async readEntries(sq: SubmissionQueue, first: number, n: number, epoch: number) {
    const bytes = new Uint8Array(n * SQE_SIZE);
    if (sq.cmbOffset !== undefined) {
      const cmb = this.ctl.host.cmb();
      const o = sq.cmbOffset + first * SQE_SIZE;
      if (!cmb || o + bytes.length > cmb.length) {
        this.ctl.fatal(`SQ ${sq.id}: the CMB is not there`);
        return undefined;
      }
      bytes.set(cmb.subarray(o, o + bytes.length));
      sq.fetchedFromCmb += n;
      this.ctl.stats.sqesFromCmb += n;
      return bytes;
    }
    const at = sq.base + BigInt(first * SQE_SIZE);
    try {
      await this.ctl.dma(epoch, () => this.ctl.host.dmaRead(at, bytes));
      return bytes;
    } catch (e) {
      if (epoch === this.ctl.epoch) this.ctl.fatal(`SQ ${sq.id} fetch at 0x${at.toString(16)}: ${e}`);
      return undefined;
    }
  }

  private dispatch(sq: SubmissionQueue, cmd: Command): void {
    this.ctl.stats.commands++;
    const epoch = this.ctl.epoch;
    sq.inflight++;
    this.inflight++;
    (sq.id === 0 ? this.admin : this.io)(cmd)
      .catch((e: unknown): Completion => {
        if (e instanceof CommandFailed) return { status: e.status };
        this.ctl.host.log?.(`nvme: internal error in opcode 0x${cmd.opcode.toString(16)}: ${e}`);
        return { status: SC.INTERNAL_ERROR };
      })
      .then((c) => {
        if (epoch !== this.ctl.epoch) return;
        this.inflight--;
        sq.inflight--;
        if (c !== 'parked') this.complete(sq, cmd, c);
        if (sq.inflight === 0) sq.onIdle?.();
        this.schedule(sq);
        // Other SQs may have waited for room under MAX_INFLIGHT.
        if (this.inflight === MAX_INFLIGHT - 1)
          for (const q of this.ctl.sqs) if (q && q !== sq) this.schedule(q);
      });
  }

  /** Posts the completion of `cmd` fetched from `sq`; errors also go to the Error log. */
  complete(sq: SubmissionQueue, cmd: Pick<Command, 'cid' | 'nsid'>, c: Completion): void {
    let status = c.status;
    if (status !== SC.SUCCESS) {
      // Do Not Retry: none of these errors goes away by itself, except a deleted SQ's commands.
      if (status !== SC.ABORTED_SQ_DELETION) status |= STATUS_DNR;
      this.ctl.events.recordError(sq.id, cmd.cid, status, cmd.nsid);
    }
    sq.cq.pending.push({ cid: cmd.cid, sqid: sq.id, status, result: c.result ?? 0, sq });
    void this.pump(sq.cq);
  }

  /** Writes what fits of `cq`'s pending completions, a batch per DMA, interrupting after each. */
  async pump(cq: CompletionQueue): Promise<void> {
    if (cq.writing || !this.ctl.posting) return;
    cq.writing = true;
    const epoch = this.ctl.epoch;
    try {
      for (let b = cq.takeBatch(MAX_INFLIGHT); b; b = cq.takeBatch(MAX_INFLIGHT)) {
        const { addr, bytes } = b;
        try {
          await this.ctl.dma(epoch, () => this.ctl.host.dmaWrite(addr, bytes));
        } catch (e) {
          // §3.1.6 CFS: a completion that cannot be written cannot be reported either.
          if (epoch === this.ctl.epoch) this.ctl.fatal(`CQ ${cq.id} write at 0x${addr.toString(16)}: ${e}`);
          return;
        }
        if (epoch !== this.ctl.epoch || cq.closed) return;
        this.ctl.stats.completions += bytes.length / CQE_SIZE;
        this.interrupt(cq);
      }
    } finally {
      cq.writing = false;
    }
  }

  /** §7.5: MSI-X sends the CQ's vector (MSI the only one); pin-based interrupts are a level. */
  private interrupt(cq: CompletionQueue): void {
    if (!cq.interrupts) return;
    const mode = this.ctl.host.interruptMode;
    if (mode === 'msix' || mode === 'msi') {
      this.ctl.stats.interrupts++;
      this.ctl.host.raise(mode === 'msix' ? cq.vector : 0);
    } else this.updateIntx();
  }

  /**
   * §7.5.1 pin-based interrupts: INTx is asserted while any CQ with interrupts enabled holds
   * entries the host has not consumed and INTMS bit 0 does not mask it; lowered when neither.
   */
  updateIntx(): void {
    const want =
      this.ctl.host.interruptMode === 'intx' &&
      !this.ctl.intxMasked &&
      this.ctl.cqs.some((cq) => cq?.interrupts && cq.used > 0);
    if (want === this.intxAsserted) return;
    this.intxAsserted = want;
    if (want) {
      this.ctl.stats.interrupts++;
      this.ctl.host.raise(0);
    } else this.ctl.host.lower();
  }

  /**
   * Delete I/O SQ (§5.6): fetching stops, the commands in flight finish and post, the entries
   * the host submitted but the controller never fetched complete with Command Aborted due to SQ
   * Deletion (bounded by the queue's size).
   */
  async drainForDeletion(sq: SubmissionQueue): Promise<void> {
    sq.closing = true;
    if (sq.inflight > 0) await new Promise<void>((r) => (sq.onIdle = r));
    const epoch = this.ctl.epoch;
    const n = sq.available;
    const first = Math.min(n, sq.size - sq.head);
    const parts = [await this.readEntries(sq, sq.head, first, epoch)];
    if (first < n) parts.push(await this.readEntries(sq, 0, n - first, epoch));
    if (epoch !== this.ctl.epoch) return;
    for (const bytes of parts) {
      if (!bytes) return; // the fetch failed: the controller is fatal already
      for (let i = 0; i < bytes.length / SQE_SIZE; i++) {
        sq.head = (sq.head + 1) % sq.size;
        this.complete(sq, decodeCommand(bytes, i * SQE_SIZE), { status: SC.ABORTED_SQ_DELETION });
      }
    }
  }
}
