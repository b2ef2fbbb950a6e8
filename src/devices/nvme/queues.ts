/**
 * Submission and completion queues (NVMe 1.4 §4.1): circular arrays of fixed-size entries with
 * a head and a tail. The host produces SQ entries and rings the SQ tail doorbell; the controller
 * consumes them. The controller produces CQ entries, each carrying the Phase Tag (§4.6, CQE
 * Dword 3 bit 16) that inverts on every pass through the queue, so the host finds new entries
 * without reading a register; the host frees them with the CQ head doorbell. A queue is full
 * when the tail is one behind the head (§4.1.2), so it holds size - 1 entries.
 */
import { CQE_SIZE, SQE_SIZE } from './spec.js';

/** §4.2 Figure "Command Dword 0" and the common command format, decoded. */
export interface Command {
  readonly opcode: number;
  /** Command Dword 0 bits 15:8: FUSE (1:0) and PSDT (7:6). */
  readonly flags: number;
  readonly cid: number;
  readonly nsid: number;
  readonly prp1: bigint;
  readonly prp2: bigint;
  readonly cdw10: number;
  readonly cdw11: number;
  readonly cdw12: number;
  readonly cdw13: number;
  readonly cdw14: number;
  readonly cdw15: number;
}

/** Decodes the 64-byte entry at `at` of `b` (little endian, §1.5 conventions). */
export function decodeCommand(b: Uint8Array, at: number): Command {
  const v = new DataView(b.buffer, b.byteOffset + at, SQE_SIZE);
  const dw0 = v.getUint32(0, true);
  return {
    opcode: dw0 & 0xff,
    flags: (dw0 >>> 8) & 0xff,
    cid: dw0 >>> 16,
    nsid: v.getUint32(4, true),
    prp1: v.getBigUint64(24, true),
    prp2: v.getBigUint64(32, true),
    cdw10: v.getUint32(40, true),
    cdw11: v.getUint32(44, true),
    cdw12: v.getUint32(48, true),
    cdw13: v.getUint32(52, true),
    cdw14: v.getUint32(56, true),
    cdw15: v.getUint32(60, true),
  };
}

/** One completion waiting for its slot in a completion queue. */
export interface PendingCompletion {
  readonly cid: number;
  readonly sqid: number;
  readonly status: number;
  readonly result: number;
  /** The SQ, whose head the entry reports when it is written. */
  readonly sq: SubmissionQueue;
}

export class SubmissionQueue {
  /** Entries consumed by the controller (the SQ head it reports in completions). */
  head = 0;
  /** The last tail the host wrote to the doorbell. */
  tail = 0;
  /** Commands fetched and not yet completed. */
  inflight = 0;
  /** Entries fetched from the Controller Memory Buffer (statistics). */
  fetchedFromCmb = 0;
  /** Being deleted or gone: nothing more is fetched. */
  closing = false;
  /** A fetch loop is running / another pass was asked for while it ran. */
  fetching = false;
  scheduled = false;
  /** Called when `inflight` drops to 0 (Delete I/O SQ waits on it). */
  onIdle: (() => void) | undefined;

  constructor(
    readonly id: number,
    /** Host address (PRP1 of Create I/O SQ, or ASQ). */
    readonly base: bigint,
    /** Entries (the 0-based QSIZE plus one). */
    readonly size: number,
    readonly cq: CompletionQueue,
    /** Offset into the Controller Memory Buffer when the queue lives there (§4.7). */
    readonly cmbOffset: number | undefined,
  ) {}

  /** Entries the host has submitted that the controller has not fetched. */
  get available(): number {
    return (this.tail - this.head + this.size) % this.size;
  }
}

export class CompletionQueue {
  /** Next slot the controller writes. */
  tail = 0;
  /** The host's last head doorbell value. */
  head = 0;
  /** Phase Tag of the entries being written now: 1 on the first pass (§4.6). */
  phase = 1;
  /** Completions waiting for room (bounded by the commands in flight on its SQs). */
  readonly pending: PendingCompletion[] = [];
  /** SQ ids that post here (Delete I/O CQ refuses while any is left). */
  readonly sqs = new Set<number>();
  /** A write of entries is under way. */
  writing = false;
  closed = false;

  constructor(
    readonly id: number,
    readonly base: bigint,
    readonly size: number,
    /** Interrupt vector (MSI-X table entry) and whether interrupts are enabled (IEN). */
    readonly vector: number,
    readonly interrupts: boolean,
  ) {}

  /** Entries written and not yet consumed by the host. */
  get used(): number {
    return (this.tail - this.head + this.size) % this.size;
  }

  /** Slots free for new entries (one slot always stays empty, §4.1.2). */
  get free(): number {
    return this.size - 1 - this.used;
  }

  /**
   * Takes up to `n` pending completions that fit before the queue is full or wraps, encodes
   * them at the current tail with the current phase, and advances the tail (inverting the
   * phase on wrap). Returns where they go and the bytes, or undefined when nothing fits.
   * The batch is written with one copy in ascending address order, and the phase tag is in each
   * entry's last dword: on x86 (stores seen in program order) a host that sees an entry's new
   * phase sees the rest of the entry, as with one entry per write in QEMU's nvme_post_cqes.
   */
  takeBatch(n: number): { addr: bigint; bytes: Uint8Array } | undefined {
    const count = Math.min(this.pending.length, this.free, this.size - this.tail, n);
    if (count <= 0) return undefined;
    const bytes = new Uint8Array(count * CQE_SIZE);
    const v = new DataView(bytes.buffer);
    for (let i = 0; i < count; i++) {
      const c = this.pending.shift()!;
      const o = i * CQE_SIZE;
      // §4.6 Figure "Completion Queue Entry": DW0 result, DW1 reserved, DW2 SQ head | SQ id,
      // DW3 command id | phase tag | status field.
      v.setUint32(o, c.result >>> 0, true);
      v.setUint32(o + 8, (c.sq.head & 0xffff) | (c.sqid << 16), true);
      v.setUint32(o + 12, (c.cid & 0xffff) | ((this.phase | (c.status << 1)) << 16), true);
    }
    const addr = this.base + BigInt(this.tail * CQE_SIZE);
    this.tail += count;
    if (this.tail === this.size) {
      this.tail = 0;
      this.phase ^= 1;
    }
    return { addr, bytes };
  }
}
