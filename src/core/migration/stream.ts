/**
 * The migration stream as bytes (layouts in src/abi/migration.ts, docs/migration.md "Stream
 * format"): SaveStream produces it for a saving session, LoadStream takes it for a resuming one.
 *
 * Saving: memory sections are produced lazily, from the live memory, as the user reads; what
 * was produced is copied into a shadow of the area, so in PRE_COPY a later pass sends only the
 * pages that differ from what the target holds (`refresh`), and STOP_COPY only those again.
 * Every byte before the END section's payload goes into a SHA-256 that END carries.
 *
 * Resuming: the bytes may come in any segmentation ("The user is not required to preserve
 * buffer segmentation when writing the data stream during the RESUMING operation"). The parser
 * checks each part as soon as it is whole — the header against this device, each section
 * header against the order and the limits — and refuses the stream (EINVAL) at the first byte
 * that cannot be right; the digest is checked at END. Memory goes into staging copies of the
 * device's own areas (bounded by their sizes), the state sections into buffers of at most
 * MAX_SECTION_BYTES: nothing a peer sends can make it allocate more. Nothing reaches the device
 * until the whole stream has been taken and checked (snapshot.ts applies it).
 */
import { createHash, type Hash } from 'node:crypto';
import {
  MIG_DIGEST_SIZE,
  MIG_STREAM_MAGIC,
  MIG_STREAM_VERSION,
  MigSection,
  vfio_ts_mig_header,
  vfio_ts_mig_section,
} from '../../abi/migration.js';
import { struct, view } from '../../wire/struct.js';
import { PAGE_SIZE } from '../offsets.js';

const HEADER = struct(vfio_ts_mig_header);
const SECTION = struct(vfio_ts_mig_section);
const PAGE = Number(PAGE_SIZE);
/** A MEMORY section's data starts with the u64 offset of its bytes in the area. */
export const OFFSET_BYTES = 8;

/** Bytes a section adds before its data; a MEMORY section adds its u64 offset too. */
export const SECTION_HEAD_BYTES = SECTION.size;
export const MEMORY_HEAD_BYTES = SECTION.size + OFFSET_BYTES;
/** Bytes of the END section: its header and the digest. */
export const END_BYTES = SECTION.size + MIG_DIGEST_SIZE;

/** Longest device name a header carries. */
export const MAX_NAME_BYTES = 64;
/** Largest PCI, STATE or MODEL section a resuming device takes. */
export const MAX_SECTION_BYTES = 16 << 20;
/** Most memory a saving session keeps shadows of for PRE_COPY; larger areas go at STOP_COPY. */
export const MAX_SHADOW_BYTES = 256 << 20;

/** A block of memory the device owns that the stream carries (a memory BAR, a model's area). */
export interface MemoryArea {
  /** BAR index, or MIG_MODEL_AREA_BASE + n for the model's n-th area. */
  readonly id: number;
  readonly bytes: Uint8Array;
}

/** What identifies a device in a stream header. */
export interface StreamIdentity {
  readonly vendor: number;
  readonly device: number;
  readonly subsystemVendor: number;
  readonly subsystem: number;
  readonly classCode: number;
  readonly revision: number;
  readonly name: string;
  /** Its first 16 bytes go into the header. */
  readonly fingerprint: Uint8Array;
}

export function encodeHeader(id: StreamIdentity): Uint8Array {
  const name = new TextEncoder().encode(id.name).subarray(0, MAX_NAME_BYTES);
  const out = new Uint8Array(HEADER.size + name.length);
  out.set(MIG_STREAM_MAGIC, HEADER.offsetOf('magic'));
  HEADER.write(out, {
    version: MIG_STREAM_VERSION,
    header_len: out.length,
    vendor: id.vendor,
    device: id.device,
    subsystem_vendor: id.subsystemVendor,
    subsystem: id.subsystem,
    class_rev: ((id.classCode << 8) | id.revision) >>> 0,
    name_len: name.length,
    flags: 0,
  });
  out.set(id.fingerprint.subarray(0, 16), HEADER.offsetOf('fingerprint'));
  out.set(name, HEADER.offsetOf('name'));
  return out;
}

function sectionHeader(type: number, id: number, length: number): Uint8Array {
  return SECTION.encode({ type, reserved: 0, id, length: BigInt(length) });
}

/**
 * A piece of the outgoing stream: bytes (hashed as they go out, unless already hashed), a run of
 * a memory area read when it goes out, or END, whose digest exists only once all before it went.
 */
type Chunk =
  | { kind: 'bytes'; data: Uint8Array; at: number; hash: boolean; last?: true }
  | { kind: 'memory'; area: MemoryArea; shadow: Uint8Array | undefined; at: number; to: number }
  | { kind: 'end' };

/** A saving session's stream (see the file's header). */
export class SaveStream {
  readonly #queue: Chunk[] = [];
  readonly #hash: Hash = createHash('sha256');
  /** Area id -> the bytes the target holds of it (areas sent in PRE_COPY). */
  readonly #shadows = new Map<number, Uint8Array>();
  #pending = 0;
  #finished = false;
  #ended = false;
  /** Bytes handed out so far. */
  produced = 0;

  /** `precopy`: the memory areas go out first, shadowed; else everything comes at `finish`. */
  constructor(
    header: Uint8Array,
    readonly areas: readonly MemoryArea[],
    precopy: boolean,
  ) {
    this.#bytes(header);
    if (!precopy) return;
    let budget = MAX_SHADOW_BYTES;
    for (const a of areas) {
      if (a.bytes.length > budget) continue;
      budget -= a.bytes.length;
      const shadow = new Uint8Array(a.bytes.length);
      this.#shadows.set(a.id, shadow);
      this.#memory(a, 0, a.bytes.length, shadow);
    }
  }

  /** Bytes queued and not read yet. */
  get pending(): number {
    return this.#pending;
  }

  /** STOP_COPY has been reached and everything up to END read: the permanent end of stream. */
  get ended(): boolean {
    return this.#ended;
  }

  #bytes(data: Uint8Array): void {
    this.#queue.push({ kind: 'bytes', data, at: 0, hash: true });
    this.#pending += data.length;
  }

  #memory(area: MemoryArea, from: number, to: number, shadow: Uint8Array | undefined): void {
    const head = new Uint8Array(MEMORY_HEAD_BYTES);
    SECTION.write(head, {
      type: MigSection.MEMORY,
      reserved: 0,
      id: area.id,
      length: BigInt(OFFSET_BYTES + to - from),
    });
    view(head).setBigUint64(SECTION.size, BigInt(from), true);
    this.#bytes(head);
    this.#queue.push({ kind: 'memory', area, shadow, at: from, to });
    this.#pending += to - from;
  }

  /** Bytes of the shadowed areas that differ from what was sent (whole pages). */
  dirtyBytes(): number {
    let n = 0;
    for (const [from, to] of this.#runs()) n += to[1] - from;
    return n;
  }

  /** Runs of pages that differ from their shadow: [start, [area, end]]. */
  *#runs(): Generator<[number, [MemoryArea, number]]> {
    for (const a of this.areas) {
      const shadow = this.#shadows.get(a.id);
      if (!shadow) continue;
      const live = Buffer.from(a.bytes.buffer, a.bytes.byteOffset, a.bytes.length);
      let start = -1;
      for (let p = 0; p <= a.bytes.length; p += PAGE) {
        const end = Math.min(p + PAGE, a.bytes.length);
        const differs = p < a.bytes.length && live.compare(shadow, p, end, p, end) !== 0;
        if (differs && start < 0) start = p;
        if (!differs && start >= 0) {
          yield [start, [a, p]];
          start = -1;
        }
      }
    }
  }

  /** PRE_COPY: queues the pages changed since they were sent. Returns the bytes queued. */
  refresh(): number {
    if (this.#finished) return 0;
    const before = this.#pending;
    for (const [from, [a, to]] of [...this.#runs()]) this.#memory(a, from, to, this.#shadows.get(a.id));
    return this.#pending - before;
  }

  /**
   * The device stopped (STOP_COPY): the changed pages of the shadowed areas, the other areas
   * whole, then `sections` (PCI, STATE, MODEL: [type, bytes]) and END.
   */
  finish(sections: readonly (readonly [number, Uint8Array])[]): void {
    if (this.#finished) return;
    this.refresh();
    this.#finished = true;
    for (const a of this.areas) if (!this.#shadows.has(a.id)) this.#memory(a, 0, a.bytes.length, undefined);
    for (const [type, data] of sections) {
      this.#bytes(sectionHeader(type, 0, data.length));
      this.#bytes(data);
    }
    this.#queue.push({ kind: 'end' });
    this.#pending += END_BYTES;
  }

  /** Up to `max` bytes of the stream; fewer (none) when nothing more is there now. */
  read(max: number): Uint8Array {
    const out = new Uint8Array(Math.min(max, this.#pending));
    let n = 0;
    while (n < out.length) {
      const c = this.#queue[0]!;
      if (c.kind === 'end') {
        // Every byte before the digest is hashed, END's own header included.
        const head = sectionHeader(MigSection.END, 0, MIG_DIGEST_SIZE);
        this.#hash.update(head);
        const digest = this.#hash.digest();
        this.#queue.splice(0, 1, { kind: 'bytes', data: head, at: 0, hash: false });
        this.#queue.splice(1, 0, { kind: 'bytes', data: digest, at: 0, hash: false, last: true });
        continue;
      }
      const src = c.kind === 'bytes' ? c.data : c.area.bytes;
      const end = c.kind === 'bytes' ? c.data.length : c.to;
      const take = Math.min(end - c.at, out.length - n);
      const part = src.subarray(c.at, c.at + take);
      out.set(part, n);
      if (c.kind === 'memory') c.shadow?.set(part, c.at);
      if (c.kind === 'memory' || c.hash) this.#hash.update(part);
      c.at += take;
      n += take;
      if (c.at === end) {
        this.#queue.shift();
        if (c.kind === 'bytes' && c.last) this.#ended = true;
      }
    }
    this.#pending -= n;
    this.produced += n;
    return out;
  }
}
