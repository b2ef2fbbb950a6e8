/**
 * The NVMe controller's part in live migration (docs/migration.md, "Device state"): what it
 * keeps outside the device's plain-data `state`, as plain data.
 *
 *   registers   CC, CSTS, AQA, ASQ, ACQ, the interrupt mask; CMBMSC / CMBSTS
 *   features    every Set Features value (features.ts)
 *   events      parked Asynchronous Event Requests (their command ids), events waiting, masked
 *               types, the Error Information log (events.ts)
 *   queues      each SQ (base, size, CQ, CMB offset, head, tail) and CQ (base, size, vector, IEN,
 *               head, tail, phase, completions waiting for room)
 *   I/O counts  what the SMART log reports
 *
 * In-flight work is not carried: migration's stop lets every fetched command finish and post
 * (controller.ts `stop`), so what is left is entries the host submitted and the controller has
 * not fetched — they are still in the SQ, in host memory or the CMB, and the target fetches them
 * when it starts. The namespace is storage, not state: the target serves the same file (shared
 * storage, flushed at stop); a memory namespace travels as model memory (nvme.ts).
 *
 * `load` checks every value against this controller before it changes anything.
 */
import { Errno } from '../../abi/errno.js';
import type { StateValue } from '../../core/state.js';
import { fail } from '../../errors.js';
import { MAX_IO_QUEUES, MAX_QUEUE_ENTRIES, type NvmeController } from './controller.js';
import type { EventsImage } from './events.js';
import { CompletionQueue, type PendingCompletion, SubmissionQueue } from './queues.js';

const OP = 'nvme migration';

/** The controller as plain data. */
export function saveController(c: NvmeController): StateValue {
  const f = c.features;
  return {
    namespace: { size: c.namespace.size, blockSize: c.blockSize },
    registers: { ...c.registers },
    cmb: c.cmb ? { msc: c.cmb.msc, sts: c.cmb.sts } : false,
    features: {
      arbitration: f.arbitration,
      powerState: f.powerState,
      overTemperature: f.overTemperature,
      underTemperature: f.underTemperature,
      errorRecovery: f.errorRecovery,
      writeCache: f.writeCache,
      sqAllocated: f.sqAllocated,
      cqAllocated: f.cqAllocated,
      coalescing: f.coalescing,
      writeAtomicity: f.writeAtomicity,
      asyncEvents: f.asyncEvents,
      coalescingDisabled: [...f.coalescingDisabled],
    },
    events: { ...c.events.save() },
    cqs: c.cqs.flatMap((q) =>
      q
        ? [
            {
              id: q.id,
              base: q.base,
              size: q.size,
              vector: q.vector,
              interrupts: q.interrupts,
              head: q.head,
              tail: q.tail,
              phase: q.phase,
              pending: q.pending.map((p) => [p.cid, p.sqid, p.status, p.result]),
            },
          ]
        : [],
    ),
    sqs: c.sqs.flatMap((q) =>
      q
        ? [
            {
              id: q.id,
              base: q.base,
              size: q.size,
              cqid: q.cq.id,
              cmbOffset: q.cmbOffset ?? -1,
              head: q.head,
              tail: q.tail,
            },
          ]
        : [],
    ),
    intx: c.engine.intxLevel,
    io: { ...c.ioStats },
  };
}

/** Reads a plain-data record field by field, every value checked; EINVAL names the field. */
class Reader {
  constructor(
    private readonly v: StateValue,
    private readonly at: string,
  ) {
    if (typeof v !== 'object' || v instanceof Uint8Array || Array.isArray(v)) this.bad('not a record');
  }
  bad(why: string): never {
    return fail(Errno.EINVAL, OP, `${this.at}: ${why}`);
  }
  #get(k: string): StateValue {
    const r = this.v as Record<string, StateValue>;
    if (!Object.hasOwn(r, k)) this.bad(`no ${k}`);
    return r[k]!;
  }
  int(k: string, max: number, min = 0): number {
    const x = this.#get(k);
    if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max)
      this.bad(`${k} ${String(x)} outside ${min}..${max}`);
    return x as number;
  }
  big(k: string): bigint {
    const x = this.#get(k);
    if (typeof x !== 'bigint' || x < 0n || x >= 1n << 64n) this.bad(`${k} is not a u64`);
    return x as bigint;
  }
  bool(k: string): boolean {
    const x = this.#get(k);
    if (typeof x !== 'boolean') this.bad(`${k} is not a boolean`);
    return x as boolean;
  }
  rec(k: string): Reader {
    return new Reader(this.#get(k), `${this.at}.${k}`);
  }
  list(k: string, max: number): StateValue[] {
    const x = this.#get(k);
    if (!Array.isArray(x) || x.length > max) this.bad(`${k} is not a list of at most ${max}`);
    return x as StateValue[];
  }
  /** A list of at most `max` integers in 0..`top`. */
  ints(k: string, max: number, top: number): number[] {
    return this.list(k, max).map((x, i) =>
      typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= top
        ? x
        : this.bad(`${k}[${i}] ${String(x)}`),
    );
  }
  /** A list of tuples of numbers (and bigints where `big` says), each `n` long. */
  tuples(k: string, max: number, n: number, big: readonly number[] = []): (number | bigint)[][] {
    return this.list(k, max).map((t, i) => {
      if (!Array.isArray(t) || t.length !== n) this.bad(`${k}[${i}] is not ${n} values`);
      return (t as StateValue[]).map((x, j) => {
        const ok = big.includes(j)
          ? typeof x === 'bigint' && x >= 0n
          : typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xffff_ffff;
        if (!ok) this.bad(`${k}[${i}][${j}]`);
        return x as number | bigint;
      });
    });
  }
}

const U32 = 0xffff_ffff;

/** Restores what saveController gave, after checking all of it. @throws VfioError(EINVAL) */
export function loadController(c: NvmeController, v: StateValue): void {
  const r = new Reader(v, 'nvme');
  const ns = r.rec('namespace');
  if (
    ns.int('size', Number.MAX_SAFE_INTEGER) !== c.namespace.size ||
    ns.int('blockSize', 4096) !== c.blockSize
  )
    r.bad(
      `namespace of another size or block size than this controller's ${c.namespace.size} / ${c.blockSize}`,
    );
  const reg = r.rec('registers');
  const registers = {
    cc: reg.int('cc', U32),
    csts: reg.int('csts', U32),
    aqa: reg.int('aqa', U32),
    asq: reg.big('asq'),
    acq: reg.big('acq'),
    intms: reg.int('intms', U32),
  };
  const cmbV = (v as Record<string, StateValue>).cmb;
  if ((cmbV === false) !== (c.cmb === undefined))
    r.bad('a CMB where this controller has none, or none where it has one');
  const cmb = c.cmb ? r.rec('cmb') : undefined;
  const cmbRegs = cmb ? { msc: cmb.big('msc'), sts: cmb.int('sts', U32) } : undefined;
  const f = r.rec('features');
  const vectors = c.options.vectors;
  const features = {
    arbitration: f.int('arbitration', U32),
    powerState: f.int('powerState', 0xff),
    overTemperature: f.int('overTemperature', 0xffff),
    underTemperature: f.int('underTemperature', 0xffff),
    errorRecovery: f.int('errorRecovery', 0xffff),
    writeCache: f.bool('writeCache'),
    sqAllocated: f.int('sqAllocated', MAX_IO_QUEUES - 1),
    cqAllocated: f.int('cqAllocated', MAX_IO_QUEUES - 1),
    coalescing: f.int('coalescing', 0xffff),
    writeAtomicity: f.int('writeAtomicity', 1),
    asyncEvents: f.int('asyncEvents', 0xff),
    coalescingDisabled: f.ints('coalescingDisabled', vectors, vectors - 1),
  };
  const e = r.rec('events');
  const events: EventsImage = {
    outstanding: e.ints('outstanding', 4, 0xffff),
    waiting: e.tuples('waiting', 64, 3) as [number, number, number][],
    masked: e.ints('masked', 8, 7),
    errors: e.tuples('errors', 16, 5, [0]) as [bigint, number, number, number, number][],
    errorCount: e.big('errorCount'),
  };
  const cqs = r.list('cqs', MAX_IO_QUEUES + 1).map((x, i) => {
    const q = new Reader(x, `nvme.cqs[${i}]`);
    const size = q.int('size', MAX_QUEUE_ENTRIES, 2);
    return {
      id: q.int('id', MAX_IO_QUEUES),
      base: q.big('base'),
      size,
      vector: q.int('vector', vectors - 1),
      interrupts: q.bool('interrupts'),
      head: q.int('head', size - 1),
      tail: q.int('tail', size - 1),
      phase: q.int('phase', 1),
      pending: q.tuples('pending', MAX_QUEUE_ENTRIES * (MAX_IO_QUEUES + 1), 4) as number[][],
    };
  });
  const sqs = r.list('sqs', MAX_IO_QUEUES + 1).map((x, i) => {
    const q = new Reader(x, `nvme.sqs[${i}]`);
    const size = q.int('size', MAX_QUEUE_ENTRIES, 2);
    return {
      id: q.int('id', MAX_IO_QUEUES),
      base: q.big('base'),
      size,
      cqid: q.int('cqid', MAX_IO_QUEUES),
      cmbOffset: q.int('cmbOffset', c.cmb?.size ?? 0, -1),
      head: q.int('head', size - 1),
      tail: q.int('tail', size - 1),
    };
  });
  const ids = (qs: { id: number }[], what: string) => {
    if (new Set(qs.map((q) => q.id)).size !== qs.length) r.bad(`two ${what} with one id`);
  };
  ids(cqs, 'CQs');
  ids(sqs, 'SQs');
  for (const sq of sqs)
    if (!cqs.some((q) => q.id === sq.cqid)) r.bad(`SQ ${sq.id} posts to CQ ${sq.cqid}, which is not there`);
  for (const cq of cqs)
    for (const [, sqid] of cq.pending)
      if (!sqs.some((q) => q.id === sqid)) r.bad(`CQ ${cq.id} holds a completion of SQ ${sqid}`);
  const io = r.rec('io');
  const stats = {
    reads: io.int('reads', Number.MAX_SAFE_INTEGER),
    writes: io.int('writes', Number.MAX_SAFE_INTEGER),
    bytesRead: io.int('bytesRead', Number.MAX_SAFE_INTEGER),
    bytesWritten: io.int('bytesWritten', Number.MAX_SAFE_INTEGER),
    mediaErrors: io.int('mediaErrors', Number.MAX_SAFE_INTEGER),
  };
  const intx = r.bool('intx');

  // Everything checked: apply.
  c.setRegisters(registers);
  if (c.cmb && cmbRegs) ({ msc: c.cmb.msc, sts: c.cmb.sts } = cmbRegs);
  const { coalescingDisabled, ...values } = features;
  Object.assign(c.features, values);
  c.features.coalescingDisabled.clear();
  for (const iv of coalescingDisabled) c.features.coalescingDisabled.add(iv);
  c.events.load(events);
  c.cqs.length = 0;
  c.sqs.length = 0;
  for (const q of cqs) {
    const cq = new CompletionQueue(q.id, q.base, q.size, q.vector, q.interrupts);
    Object.assign(cq, { head: q.head, tail: q.tail, phase: q.phase });
    c.cqs[q.id] = cq;
  }
  for (const q of sqs) {
    const cq = c.cqs[q.cqid]!;
    const sq = new SubmissionQueue(q.id, q.base, q.size, cq, q.cmbOffset < 0 ? undefined : q.cmbOffset);
    Object.assign(sq, { head: q.head, tail: q.tail });
    c.sqs[q.id] = sq;
    cq.sqs.add(q.id);
  }
  for (const q of cqs) {
    const cq = c.cqs[q.id]!;
    cq.pending.length = 0;
    for (const [cid, sqid, status, result] of q.pending) {
      const p: PendingCompletion = {
        cid: cid!,
        sqid: sqid!,
        status: status!,
        result: result!,
        sq: c.sqs[sqid!]!,
      };
      cq.pending.push(p);
    }
  }
  Object.assign(c.ioStats, stats);
  c.engine.intxLevel = intx;
}
