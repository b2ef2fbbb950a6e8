/**
 * Cuts a vfio-user byte stream into messages and keeps SCM_RIGHTS fds with the message they came
 * with. No sockets here: a transport pushes what recvmsg returned and pulls frames.
 *
 * The fd rule. A sender passes fds with the sendmsg that carries a message; on a Linux
 * SOCK_STREAM unix socket they ride on the first skb of that sendmsg, and a recvmsg returns them
 * with data that ends inside (or at the end of) that sendmsg's bytes: unix_stream_read_generic
 * stops right after the skb carrying fds. So the fds of a pushed chunk belong to **the message
 * that contains the chunk's last byte** — the last message starting in the chunk, or, when none
 * starts in it, the message the chunk continues. (An empty chunk's fds go to the message holding
 * the next byte.) This is exact for peers that send one message per sendmsg, as QEMU
 * (proxy.c: vfio_user_send_qio) and libvfio-user (tran_sock_send_iovec) do; a peer that packed
 * two messages into one sendmsg with fds would have them given to the second.
 *
 * Cost: O(total bytes). A message inside one chunk is a view of it (no copy); one spanning chunks
 * is copied once into its own buffer. Pushed chunks are kept by reference until consumed, so the
 * transport must hand over a buffer it no longer writes into.
 */

import { Errno } from '../../abi/errno.js';
import { VFIO_USER_DEFAULT_MAX_MSG_SIZE, VFIO_USER_HEADER_SIZE } from '../../abi/vfio-user.js';
import { fail, type MalformedError } from '../../errors.js';
import { malformed } from './bytes.js';
import { type Header, readHeader } from './header.js';

export interface Frame {
  /**
   * Header fields as read. Only msg_size has been checked; call `checkHeader` before acting on
   * the type and flags, so that a bad one can be answered with an error reply.
   */
  readonly header: Header;
  /** The whole message, header included. */
  readonly bytes: Uint8Array;
  /** `bytes` after the header. */
  readonly payload: Uint8Array;
  /** Fds that arrived with this message, in arrival order; the caller owns (and closes) them. */
  readonly fds: number[];
  /**
   * Fds that came for this message beyond `maxFds` while it was still arriving: they were handed
   * out by `takeExcessFds()` to be closed at once, and the message must be refused.
   */
  readonly droppedFds: number;
}

export interface Need {
  /** Bytes still missing before `next()` can return the next frame (at least 1). */
  readonly need: number;
}

export interface FramerOptions {
  /** Largest msg_size accepted, header included. Default VFIO_USER_DEFAULT_MAX_MSG_SIZE. */
  readonly maxMessageSize?: number;
  /**
   * Most fds held for the one message still arriving (the server's max_msg_fds). Beyond it, fds
   * go to `takeExcessFds()` as soon as `next()` sees them and the frame reports `droppedFds`:
   * a client trickling a huge message a byte at a time with 253 fds per sendmsg cannot make us
   * hold more than this. Default: no limit.
   */
  readonly maxFds?: number;
}

interface FdBatch {
  /** Stream offset of the byte whose message gets these fds. */
  readonly at: number;
  readonly fds: number[];
}

const EMPTY = new Uint8Array(0);
/** What takeExcessFds returns when nothing was dropped (frozen: it is shared). */
const NO_FDS: readonly number[] = Object.freeze([]);

export class MessageFramer {
  readonly maxMessageSize: number;
  readonly maxFds: number;
  #excess: number[] = [];
  #dropped = 0; // fds dropped for the message in flight
  #chunks: Uint8Array[] = [];
  #head = 0; // index of the first live chunk
  #headOff = 0; // bytes of #chunks[#head] already consumed
  #buffered = 0;
  #consumed = 0; // stream offset of the first unconsumed byte
  #received = 0; // stream offset just past the last pushed byte
  #fdq: FdBatch[] = [];
  #fdHead = 0;
  #header: Header | undefined;
  #error: MalformedError | undefined;
  #rejected: Header | undefined;
  #scratch = new Uint8Array(VFIO_USER_HEADER_SIZE);

  constructor(opts: FramerOptions = {}) {
    const max = opts.maxMessageSize ?? VFIO_USER_DEFAULT_MAX_MSG_SIZE;
    if (!Number.isInteger(max) || max < VFIO_USER_HEADER_SIZE || max > 0xffff_ffff) {
      fail(Errno.EINVAL, 'MessageFramer', `maxMessageSize ${max} is not in 16..2^32-1`);
    }
    this.maxMessageSize = max;
    this.maxFds = opts.maxFds ?? Number.POSITIVE_INFINITY;
  }

  /** Bytes pushed and not yet returned in a frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /** The header whose msg_size stopped the stream (to answer it before closing), if any. */
  get rejectedHeader(): Header | undefined {
    return this.#rejected;
  }

  /** The error that stopped the stream, if any. */
  get error(): MalformedError | undefined {
    return this.#error;
  }

  /** Adds what one recvmsg returned: its bytes and the fds that came with them. */
  push(chunk: Uint8Array, fds: readonly number[] = []): void {
    if (fds.length > 0) {
      const at = chunk.byteLength > 0 ? this.#received + chunk.byteLength - 1 : this.#received;
      this.#fdq.push({ at, fds: [...fds] });
    }
    if (chunk.byteLength === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    this.#received += chunk.byteLength;
  }

  /**
   * The next complete message, or how many more bytes it needs.
   * @throws MalformedError(EINVAL) for msg_size < 16 or above maxMessageSize (libvfio-user
   * tran_sock_recv_fds: EINVAL), and the same error on every later call: the stream is not
   * resynchronized.
   * Fds not yet given out stay available from `takeFds()`.
   */
  next(): Frame | Need {
    if (this.#error !== undefined) throw this.#error;
    if (this.#header === undefined) {
      if (this.#buffered < VFIO_USER_HEADER_SIZE) {
        this.#capHeldFds();
        return { need: VFIO_USER_HEADER_SIZE - this.#buffered };
      }
      const h = readHeader(this.#peekHeader());
      if (h.msgSize < VFIO_USER_HEADER_SIZE || h.msgSize > this.maxMessageSize) this.#rejected = h;
      if (h.msgSize < VFIO_USER_HEADER_SIZE) {
        return this.#fail(
          malformed('vfio-user header', `msg_size ${h.msgSize} is smaller than the 16-byte header`),
        );
      }
      if (h.msgSize > this.maxMessageSize) {
        return this.#fail(
          malformed(
            'vfio-user header',
            `msg_size ${h.msgSize} exceeds the ${this.maxMessageSize}-byte limit`,
          ),
        );
      }
      this.#header = h;
    }
    const header = this.#header;
    if (this.#buffered < header.msgSize) {
      this.#capHeldFds();
      return { need: header.msgSize - this.#buffered };
    }
    const bytes = this.#take(header.msgSize);
    this.#header = undefined;
    const end = this.#consumed;
    let fds: number[] = [];
    while (this.#fdHead < this.#fdq.length) {
      const batch = this.#fdq[this.#fdHead]!;
      if (batch.at >= end) break;
      fds = fds.length === 0 ? batch.fds : fds.concat(batch.fds);
      this.#fdHead++;
    }
    this.#compactFds();
    const droppedFds = this.#dropped;
    this.#dropped = 0;
    return { header, bytes, payload: bytes.subarray(VFIO_USER_HEADER_SIZE), fds, droppedFds };
  }

  /**
   * The message in flight is incomplete, so every fd not yet given out is its own (every byte
   * pushed lies inside it): keep the first maxFds, move the rest to #excess.
   */
  #capHeldFds(): void {
    let held = 0;
    for (let i = this.#fdHead; i < this.#fdq.length; i++) {
      const b = this.#fdq[i]!;
      if (held + b.fds.length > this.maxFds) {
        // From here on every batch is over the cap: hand their fds out and drop the batches, so
        // the queue holds at most maxFds batches (a 1-byte trickle with fds cannot grow it).
        const keep = this.maxFds - held;
        const drop = b.fds.splice(keep);
        for (let j = i + 1; j < this.#fdq.length; j++) drop.push(...this.#fdq[j]!.fds);
        this.#fdq.length = keep > 0 ? i + 1 : i;
        for (const fd of drop) this.#excess.push(fd);
        this.#dropped += drop.length;
        return;
      }
      held += b.fds.length;
    }
  }

  /**
   * Fds dropped by the maxFds cap since the last call: the caller closes them at once. Called
   * after every read (the server's hot path), so none is the one shared empty array.
   */
  takeExcessFds(): readonly number[] {
    if (this.#excess.length === 0) return NO_FDS;
    const out = this.#excess;
    this.#excess = [];
    return out;
  }

  /**
   * Hands over every fd not yet attached to a returned frame (to close them after an error or at
   * end of stream) and forgets them.
   */
  takeFds(): number[] {
    const out = this.takeExcessFds().concat(this.#fdq.slice(this.#fdHead).flatMap((b) => b.fds));
    this.#fdq = [];
    this.#fdHead = 0;
    return out;
  }

  #fail(e: MalformedError): never {
    this.#error = e;
    throw e;
  }

  /** The 16 header bytes at the read position: a view when they sit in one chunk. */
  #peekHeader(): Uint8Array {
    const first = this.#chunks[this.#head]!;
    if (first.byteLength - this.#headOff >= VFIO_USER_HEADER_SIZE) {
      return first.subarray(this.#headOff, this.#headOff + VFIO_USER_HEADER_SIZE);
    }
    let got = 0;
    for (let i = this.#head, off = this.#headOff; got < VFIO_USER_HEADER_SIZE; i++, off = 0) {
      const c = this.#chunks[i]!;
      const n = Math.min(c.byteLength - off, VFIO_USER_HEADER_SIZE - got);
      this.#scratch.set(c.subarray(off, off + n), got);
      got += n;
    }
    return this.#scratch;
  }

  /** Consumes `size` buffered bytes (size <= buffered). */
  #take(size: number): Uint8Array {
    this.#buffered -= size;
    this.#consumed += size;
    if (size === 0) return EMPTY;
    const first = this.#chunks[this.#head]!;
    const avail = first.byteLength - this.#headOff;
    if (avail >= size) {
      const v = first.subarray(this.#headOff, this.#headOff + size);
      this.#advance(size, first);
      return v;
    }
    const out = new Uint8Array(size);
    let got = 0;
    while (got < size) {
      const c = this.#chunks[this.#head]!;
      const n = Math.min(c.byteLength - this.#headOff, size - got);
      out.set(c.subarray(this.#headOff, this.#headOff + n), got);
      got += n;
      this.#advance(n, c);
    }
    return out;
  }

  #advance(n: number, c: Uint8Array): void {
    this.#headOff += n;
    if (this.#headOff < c.byteLength) return;
    this.#headOff = 0;
    this.#chunks[this.#head] = EMPTY; // drop the reference now
    this.#head++;
    // Amortized O(1): cut the consumed prefix once it dominates the array.
    if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }

  #compactFds(): void {
    if (this.#fdHead >= 64 && this.#fdHead * 2 >= this.#fdq.length) {
      this.#fdq = this.#fdq.slice(this.#fdHead);
      this.#fdHead = 0;
    }
  }
}
