/**
 * The resuming side of the migration stream (format: src/abi/migration.ts; why it is checked as
 * it comes: stream.ts). LoadStream takes the bytes a RESUMING device is written, in any
 * segmentation, and refuses the stream with EINVAL at the first part that cannot be right:
 *
 *   header    not ours (magic), another version, another device (identity, fingerprint)
 *   sections  an unknown type, a reserved field set, out of order (MEMORY* PCI STATE MODEL? END),
 *             twice, an unknown memory area or a range past its end, a section over
 *             MAX_SECTION_BYTES, END with another length
 *   END       a digest that is not the SHA-256 of the bytes before it
 *   after END any byte
 * and `finish` refuses a stream that stopped before END (truncated). Once refused, every later
 * write is refused too, with the first reason.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Errno } from '../../abi/errno.js';
import {
  MIG_DIGEST_SIZE,
  MIG_STREAM_MAGIC,
  MIG_STREAM_VERSION,
  MigSection,
  vfio_ts_mig_header,
  vfio_ts_mig_section,
} from '../../abi/migration.js';
import { VfioError } from '../../errors.js';
import { struct, view } from '../../wire/struct.js';
import { MAX_NAME_BYTES, MAX_SECTION_BYTES, type MemoryArea, OFFSET_BYTES } from './stream.js';

const HEADER = struct(vfio_ts_mig_header);
const SECTION = struct(vfio_ts_mig_section);
const OP = 'migration stream';

/** What a complete stream holds: staged memory by area id, and the state sections' bytes. */
export interface LoadedStream {
  /** Copies of the areas the stream wrote into (whole areas: the live bytes where it did not). */
  readonly memory: ReadonlyMap<number, Uint8Array>;
  readonly pci: Uint8Array;
  readonly state: Uint8Array;
  readonly model: Uint8Array | undefined;
}

/** Section order: each type's rank; MEMORY may repeat, the others come once, in this order. */
const RANK: Readonly<Record<number, number>> = {
  [MigSection.MEMORY]: 0,
  [MigSection.PCI]: 1,
  [MigSection.STATE]: 2,
  [MigSection.MODEL]: 3,
  [MigSection.END]: 4,
};
const NAME: Readonly<Record<number, string>> = {
  [MigSection.MEMORY]: 'MEMORY',
  [MigSection.PCI]: 'PCI',
  [MigSection.STATE]: 'STATE',
  [MigSection.MODEL]: 'MODEL',
  [MigSection.END]: 'END',
};

type Phase =
  | { at: 'header'; need: number }
  | { at: 'section' }
  | { at: 'offset'; area: MemoryArea; length: number }
  | { at: 'memory'; stage: Uint8Array; pos: number; end: number }
  | { at: 'state'; type: number; buf: Uint8Array; pos: number }
  | { at: 'digest' }
  | { at: 'done' };

export class LoadStream {
  readonly #hash = createHash('sha256');
  #phase: Phase = { at: 'header', need: HEADER.size };
  /** Small parts collected across writes: the header, a section header, an offset, the digest. */
  #small = new Uint8Array(HEADER.size + MAX_NAME_BYTES);
  #have = 0;
  #rank = 0;
  readonly #sections = new Map<number, Uint8Array>();
  readonly #staged = new Map<number, Uint8Array>();
  #refused: VfioError | undefined;
  /** Bytes taken so far. */
  taken = 0;

  /**
   * `header`: this device's own header (encodeHeader); `areas`: its memory areas; `model`:
   * whether it has a model section (and so requires one).
   */
  constructor(
    private readonly header: Uint8Array,
    private readonly areas: readonly MemoryArea[],
    private readonly model: boolean,
  ) {}

  #refuse(why: string): never {
    this.#refused = new VfioError(Errno.EINVAL, OP, `${why} (at byte ${this.taken})`);
    throw this.#refused;
  }

  /** Takes the next bytes of the stream. @throws VfioError(EINVAL) as the file's header lists */
  write(data: Uint8Array): void {
    if (this.#refused) throw new VfioError(Errno.EINVAL, OP, `refused already: ${this.#refused.message}`);
    let i = 0;
    while (i < data.length) {
      const p = this.#phase;
      const rest = data.subarray(i);
      if (p.at === 'done') this.#refuse(`${rest.length} bytes after END`);
      let used: number;
      switch (p.at) {
        case 'header':
        case 'section':
        case 'offset':
        case 'digest':
          used = this.#collect(rest, this.#wanted(p));
          break;
        case 'memory':
          used = Math.min(rest.length, p.end - p.pos);
          p.stage.set(rest.subarray(0, used), p.pos);
          p.pos += used;
          if (p.pos === p.end) this.#phase = { at: 'section' };
          break;
        case 'state':
          used = Math.min(rest.length, p.buf.length - p.pos);
          p.buf.set(rest.subarray(0, used), p.pos);
          p.pos += used;
          if (p.pos === p.buf.length) {
            this.#sections.set(p.type, p.buf);
            this.#phase = { at: 'section' };
          }
          break;
      }
      if (p.at !== 'digest') this.#hash.update(rest.subarray(0, used));
      i += used;
      this.taken += used;
      if (p.at !== 'memory' && p.at !== 'state' && this.#have === this.#wanted(p)) this.#complete(p);
    }
  }

  /** Bytes a part collected in the small buffer has when whole. */
  #wanted(p: Phase): number {
    return p.at === 'header'
      ? p.need
      : p.at === 'section'
        ? SECTION.size
        : p.at === 'offset'
          ? OFFSET_BYTES
          : MIG_DIGEST_SIZE;
  }

  /** Copies up to `want - have` bytes of `rest` into the small buffer; returns how many. */
  #collect(rest: Uint8Array, want: number): number {
    const n = Math.min(rest.length, want - this.#have);
    this.#small.set(rest.subarray(0, n), this.#have);
    this.#have += n;
    return n;
  }

  #complete(p: Phase): void {
    const got = this.#small.subarray(0, this.#have);
    this.#have = 0;
    switch (p.at) {
      case 'header':
        if (p.need === HEADER.size) {
          const len = this.#fixedHeader(got);
          if (len > HEADER.size) {
            // The name follows: keep what we have and collect the rest.
            this.#have = HEADER.size;
            this.#phase = { at: 'header', need: len };
            return;
          }
        }
        this.#identity(got);
        this.#phase = { at: 'section' };
        return;
      case 'section':
        this.#section(got);
        return;
      case 'offset': {
        const offset = view(got).getBigUint64(0, true);
        const size = BigInt(p.area.bytes.length);
        if (offset > size || BigInt(p.length) > size - offset)
          this.#refuse(
            `MEMORY ${p.length} bytes at 0x${offset.toString(16)} past the end of area ${p.area.id}`,
          );
        const stage = this.#stage(p.area);
        this.#phase =
          p.length === 0
            ? { at: 'section' }
            : { at: 'memory', stage, pos: Number(offset), end: Number(offset) + p.length };
        return;
      }
      case 'digest': {
        const want = this.#hash.digest();
        if (!timingSafeEqual(want, got))
          this.#refuse('the digest at END does not match the stream (damaged)');
        this.#phase = { at: 'done' };
        return;
      }
    }
  }

  /** The fixed part of the header: magic, version, a sane length. Returns the header's length. */
  #fixedHeader(b: Uint8Array): number {
    const magic = b.subarray(0, MIG_STREAM_MAGIC.length);
    if (!magic.every((x, i) => x === MIG_STREAM_MAGIC[i]))
      this.#refuse('not a vfio-ts migration stream (magic)');
    const h = HEADER.read(b);
    if (h.version !== MIG_STREAM_VERSION)
      this.#refuse(`stream version ${h.version}; this vfio-ts reads version ${MIG_STREAM_VERSION}`);
    if (h.header_len !== HEADER.size + h.name_len || h.name_len > MAX_NAME_BYTES)
      this.#refuse(`header length ${h.header_len} with a name of ${h.name_len} bytes`);
    return h.header_len;
  }

  /** The whole header against ours: the same PCI identity, name and fingerprint. */
  #identity(b: Uint8Array): void {
    const theirs = HEADER.read(b);
    const ours = HEADER.read(this.header);
    const who = (h: typeof ours, bytes: Uint8Array) =>
      `${hex(h.vendor)}:${hex(h.device)} (${hex(h.subsystem_vendor)}:${hex(h.subsystem)}, class ${hex(h.class_rev >>> 8)} rev ${h.class_rev & 0xff}) '${new TextDecoder().decode(bytes.subarray(HEADER.size))}'`;
    // Byte ranges of the two headers: the identity (vendor to flags), the fingerprint, the name.
    const same = (from: number, to?: number) => {
      const a = b.subarray(from, to);
      const c = this.header.subarray(from, to);
      return a.length === c.length && a.every((x, i) => x === c[i]);
    };
    const fingerprint = HEADER.offsetOf('fingerprint');
    const name = HEADER.offsetOf('name');
    if (!same(HEADER.offsetOf('vendor'), fingerprint) || !same(name))
      this.#refuse(`a stream of ${who(theirs, b)}; this device is ${who(ours, this.header)} (foreign)`);
    if (theirs.flags !== 0) this.#refuse(`header flags 0x${theirs.flags.toString(16)}`);
    if (!same(fingerprint, name))
      this.#refuse(
        `${who(ours, this.header)} configured otherwise (BAR sizes, capabilities or memory differ: foreign)`,
      );
  }

  #section(b: Uint8Array): void {
    const s = SECTION.read(b);
    const name = NAME[s.type];
    if (name === undefined) this.#refuse(`section type 0x${s.type.toString(16)}`);
    if (s.reserved !== 0) this.#refuse(`${name} section with reserved 0x${s.reserved.toString(16)}`);
    const rank = RANK[s.type]!;
    if (rank < this.#rank || (rank === this.#rank && s.type !== MigSection.MEMORY))
      this.#refuse(`${name} section out of order (after ${Object.values(NAME)[this.#rank]})`);
    if (s.type === MigSection.MODEL && !this.model) this.#refuse('a MODEL section for a device without one');
    if (s.type === MigSection.END) {
      for (const t of [MigSection.PCI, MigSection.STATE, ...(this.model ? [MigSection.MODEL] : [])])
        if (!this.#sections.has(t)) this.#refuse(`END before the ${NAME[t]} section`);
    }
    this.#rank = rank;
    switch (s.type) {
      case MigSection.MEMORY: {
        const area =
          this.areas.find((a) => a.id === s.id) ??
          this.#refuse(`MEMORY for area ${s.id}, which this device has not`);
        const offsetBytes = BigInt(OFFSET_BYTES);
        if (s.length < offsetBytes || s.length - offsetBytes > BigInt(area.bytes.length))
          this.#refuse(`MEMORY section of ${s.length} bytes for area ${s.id} of ${area.bytes.length}`);
        this.#phase = { at: 'offset', area, length: Number(s.length) - OFFSET_BYTES };
        return;
      }
      case MigSection.END:
        if (s.length !== BigInt(MIG_DIGEST_SIZE)) this.#refuse(`END of ${s.length} bytes`);
        this.#phase = { at: 'digest' };
        return;
    }
    if (s.id !== 0) this.#refuse(`${name} section with id ${s.id}`);
    if (s.length > BigInt(MAX_SECTION_BYTES))
      this.#refuse(`${name} section of ${s.length} bytes, more than ${MAX_SECTION_BYTES}`);
    const buf = new Uint8Array(Number(s.length));
    if (buf.length === 0) this.#sections.set(s.type, buf);
    else this.#phase = { at: 'state', type: s.type, buf, pos: 0 };
  }

  #stage(area: MemoryArea): Uint8Array {
    let stage = this.#staged.get(area.id);
    if (!stage) {
      stage = area.bytes.slice();
      this.#staged.set(area.id, stage);
    }
    return stage;
  }

  /** The stream, whole and checked. @throws VfioError(EINVAL) when refused or incomplete */
  finish(): LoadedStream {
    if (this.#refused) throw new VfioError(Errno.EINVAL, OP, `refused: ${this.#refused.message}`);
    if (this.#phase.at !== 'done')
      throw new VfioError(
        Errno.EINVAL,
        OP,
        `truncated: ${this.taken} bytes, the stream ended in ${this.#phase.at === 'header' ? 'its header' : this.#phase.at === 'section' ? 'before END' : `a ${this.#phase.at}`}`,
      );
    return {
      memory: this.#staged,
      pci: this.#sections.get(MigSection.PCI)!,
      state: this.#sections.get(MigSection.STATE)!,
      model: this.#sections.get(MigSection.MODEL),
    };
  }
}

const hex = (n: number) => n.toString(16).padStart(4, '0');
