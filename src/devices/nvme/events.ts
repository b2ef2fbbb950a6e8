/**
 * Asynchronous events and the log pages behind them (NVMe 1.4 §5.2 Asynchronous Event Request,
 * §5.14.1.1 Error Information, §5.14.1.2 SMART / Health Information).
 *
 * The host parks up to AERL + 1 Asynchronous Event Request commands; each completes when an
 * event happens, its Dword 0 naming the event type, the information code and the log page to
 * read. Until the host reads that log page (without Retain Asynchronous Event), further events
 * of the same type are masked (§5.2: "... the controller shall not send further events of that
 * type"). Events that happen with no request outstanding wait, one per (type, info) pair, so the
 * queue is bounded by the set of events the controller can raise.
 */
import { AER_TYPE, LOG, SC } from './spec.js';
import { failCommand } from './status.js';

/** Identify Controller AERL is 0-based: this many requests may be outstanding. */
export const MAX_OUTSTANDING_AERS = 4;
/** Identify Controller ELPE is 0-based: the Error Information log keeps this many entries. */
export const ERROR_LOG_ENTRIES = 16;
/** Bytes of one Error Information log entry (§5.14.1.1). */
export const ERROR_ENTRY_SIZE = 64;

interface Event {
  readonly type: number;
  readonly info: number;
  readonly lid: number;
}

interface ErrorEntry {
  readonly count: bigint;
  readonly sqid: number;
  readonly cid: number;
  readonly status: number;
  readonly nsid: number;
}

export class AsyncEvents {
  /** Command ids of the parked Asynchronous Event Requests (admin queue), oldest first. */
  private readonly outstanding: number[] = [];
  private readonly waiting: Event[] = [];
  /** Event types masked until their log page is read. */
  private readonly masked = new Set<number>();
  private readonly errors: ErrorEntry[] = [];
  /** Error Count of the newest entry: a 64-bit counter that never repeats (§5.14.1.1). */
  errorCount = 0n;

  /** `complete(cid, dw0)` posts a parked request's completion on the admin completion queue. */
  constructor(private readonly complete: (cid: number, dw0: number) => void) {}

  /** Parks a request. @throws CommandFailed Asynchronous Event Request Limit Exceeded past AERL. */
  request(cid: number): void {
    if (this.outstanding.length >= MAX_OUTSTANDING_AERS)
      failCommand(SC.AER_LIMIT_EXCEEDED, `${MAX_OUTSTANDING_AERS} requests outstanding`);
    this.outstanding.push(cid);
    this.deliver();
  }

  /** An event happened (§5.2.1). Dropped while an identical one waits. */
  raise(type: number, info: number, lid: number): void {
    if (this.waiting.some((e) => e.type === type && e.info === info)) return;
    this.waiting.push({ type, info, lid });
    this.deliver();
  }

  private deliver(): void {
    for (let i = 0; i < this.waiting.length && this.outstanding.length > 0; ) {
      const e = this.waiting[i]!;
      if (this.masked.has(e.type)) {
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.masked.add(e.type);
      // §5.2.1 Figure "Asynchronous Event Request - Completion Queue Entry Dword 0".
      this.complete(this.outstanding.shift()!, e.type | (e.info << 8) | (e.lid << 16));
    }
  }

  /** The host read log page `lid`; without RAE that unmasks the event type it reports. */
  logRead(lid: number, retain: boolean): void {
    if (retain) return;
    const type = lid === LOG.ERROR ? AER_TYPE.ERROR : lid === LOG.SMART ? AER_TYPE.SMART : undefined;
    if (type === undefined || !this.masked.delete(type)) return;
    this.deliver();
  }

  /** A command completed with an error: an Error Information log entry (newest first). */
  recordError(sqid: number, cid: number, status: number, nsid: number): void {
    this.errorCount++;
    this.errors.unshift({ count: this.errorCount, sqid, cid, status, nsid });
    if (this.errors.length > ERROR_LOG_ENTRIES) this.errors.pop();
  }

  /** The Error Information log page (§5.14.1.1): ERROR_LOG_ENTRIES entries, unused ones zero. */
  errorLog(): Uint8Array {
    const b = new Uint8Array(ERROR_LOG_ENTRIES * ERROR_ENTRY_SIZE);
    const v = new DataView(b.buffer);
    this.errors.forEach((e, i) => {
      const o = i * ERROR_ENTRY_SIZE;
      v.setBigUint64(o, e.count, true);
      v.setUint16(o + 8, e.sqid, true);
      v.setUint16(o + 10, e.cid, true);
      v.setUint16(o + 12, e.status << 1, true); // Status Field as in the CQE, phase bit 0
      v.setUint16(o + 14, 0xffff, true); // Parameter Error Location: not reported
      v.setUint32(o + 24, e.nsid, true);
    });
    return b;
  }

  /** Controller Level Reset: parked requests are gone (their commands are aborted with the queue). */
  reset(): void {
    this.outstanding.length = 0;
    this.waiting.length = 0;
    this.masked.clear();
  }

  get parked(): number {
    return this.outstanding.length;
  }

  /** What migration carries (src/devices/nvme/migration.ts): requests, events, masks, the log. */
  save(): EventsImage {
    return {
      outstanding: [...this.outstanding],
      waiting: this.waiting.map((e) => [e.type, e.info, e.lid]),
      masked: [...this.masked],
      errors: this.errors.map((e) => [e.count, e.sqid, e.cid, e.status, e.nsid]),
      errorCount: this.errorCount,
    };
  }

  /** Takes back what `save` gave (checked by the caller). */
  load(v: EventsImage): void {
    this.outstanding.splice(0, Infinity, ...v.outstanding);
    this.waiting.splice(0, Infinity, ...v.waiting.map(([type, info, lid]) => ({ type, info, lid })));
    this.masked.clear();
    for (const t of v.masked) this.masked.add(t);
    this.errors.splice(
      0,
      Infinity,
      ...v.errors.map(([count, sqid, cid, status, nsid]) => ({ count, sqid, cid, status, nsid })),
    );
    this.errorCount = v.errorCount;
  }
}

/** AsyncEvents as plain data (state.ts). */
export interface EventsImage {
  readonly outstanding: number[];
  readonly waiting: [number, number, number][];
  readonly masked: number[];
  readonly errors: [bigint, number, number, number, number][];
  readonly errorCount: bigint;
}
