/**
 * SocketChannel: one vfio-user connection's byte transport (named apart from the driver's
 * `Transport`, src/driver/file.ts, which names a backend): a non-blocking UNIX stream socket read with
 * recvmsg (SCM_RIGHTS fds kept with their message by the wire MessageFramer) and written with
 * sendmsg through a queue that survives EAGAIN.
 *
 * Reading: `recvMsgInto` lands in a reused buffer. Frames are handed to `onFrame` synchronously
 * and are views into that buffer, valid only during the call (handlers copy what they keep).
 * A message left incomplete at the end of a read stays in the buffer, and the next read goes
 * after it, so nothing is ever overwritten while the framer still holds it; when the room left
 * is small a fresh buffer is started (the framer keeps the old one until it is consumed).
 *
 * Writing: `sendMessage` puts the 16-byte header before the payload chunks (the one place a
 * message header is built, server or client, reply or command). `send` tries sendmsg at once
 * (the usual case: no copy, no allocation). What the kernel does not take is copied into the
 * queue and written when the socket is writable again (the fd watch is switched to
 * readable|writable until the queue drains). Fds travel with the first byte of their message
 * (spec, "Socket Transport": fds ride on the message's sendmsg).
 *
 * Closing (peer EOF, a framing error, a send error, or `close()`): the watch stops, every fd
 * still held (framer, queue) is closed, then the socket; `onClose` runs once.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_USER_HEADER_SIZE, VfioUserFlags } from '../abi/vfio-user.js';
import { MalformedError, VfioError } from '../errors.js';
import { closeFd, type FdWatch, MAX_FDS_PER_MSG, recvMsgInto, sendMsg, watchFd } from '../native/index.js';
import { type Frame, MessageFramer, type MessageHead, writeHeader } from '../wire/vfio-user.js';
import { SERVER_MAX_PENDING_BYTES, SERVER_MAX_PENDING_REQUESTS, SERVER_MESSAGE_STALL_MS } from './limits.js';

/** Size of each receive buffer; one read takes at most this much. */
export const RECV_BUFFER_BYTES = 256 * 1024;
/** Below this much room left in the receive buffer, the next read starts a fresh buffer. */
const MIN_RECV_ROOM = 16 * 1024;
/** Reads per readable event before yielding to the event loop (level-triggered: it comes back). */
const MAX_READS_PER_EVENT = 64;
/** Bytes allowed to wait in the send queue before the connection is dropped (a peer not reading). */
export const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

export type CloseReason =
  | { readonly kind: 'eof' }
  | { readonly kind: 'framing'; readonly error: MalformedError }
  | { readonly kind: 'error'; readonly error: unknown }
  | { readonly kind: 'local' };

export interface ChannelHandlers {
  /** A complete message. `frame.fds` belong to the callee, which must close or keep them. */
  onFrame(frame: Frame): void;
  onClose(reason: CloseReason): void;
}

interface Outgoing {
  bytes: Uint8Array;
  fds: readonly number[];
  after: (() => void) | undefined;
}

/** A channel's limits (a subset of ServerLimits, src/server/limits.ts); each has a default. */
export interface ChannelLimits {
  /** Largest msg_size accepted (the framer's default otherwise). */
  readonly maxMessageSize?: number;
  /** Queued reply bytes at which reading pauses (SERVER_MAX_PENDING_BYTES). */
  readonly maxPendingBytes?: number;
  /** A half-received message older than this drops the client (SERVER_MESSAGE_STALL_MS). */
  readonly messageStallMs?: number;
  /** Most fds one message may carry (the framer's default otherwise). */
  readonly maxMsgFds?: number;
  /** Queued messages, or fds they hold, at which reading pauses (SERVER_MAX_PENDING_REQUESTS). */
  readonly maxPendingRequests?: number;
}

export class SocketChannel {
  readonly framer: MessageFramer;
  #fd: number;
  #watch: FdWatch | undefined;
  #watchWritable = false;
  #buf = new Uint8Array(RECV_BUFFER_BYTES);
  #pos = 0;
  #queue: Outgoing[] = [];
  #queued = 0;
  /** Fds attached to queued messages (ours until sent: a queued DMA_BUF reply holds its fd). */
  #queuedFds = 0;
  #closed = false;
  #handlers: ChannelHandlers;
  /** Header scratch: `send` copies whatever it cannot send at once, so one buffer serves all. */
  readonly #head = new Uint8Array(VFIO_USER_HEADER_SIZE);

  /** Reading is paused (back-pressure) until the send queue drains below half of #pauseAt. */
  #paused = false;
  #watchReadable = true;
  #pauseAt: number;
  #maxRequests: number;
  /** Armed while a message is half-received and reading is not paused by us. */
  #stallTimer: NodeJS.Timeout | undefined;
  #stallMs: number;

  constructor(fd: number, handlers: ChannelHandlers, limits: ChannelLimits = {}) {
    this.#fd = fd;
    this.#handlers = handlers;
    this.#pauseAt = limits.maxPendingBytes ?? SERVER_MAX_PENDING_BYTES;
    this.#maxRequests = limits.maxPendingRequests ?? SERVER_MAX_PENDING_REQUESTS;
    this.#stallMs = limits.messageStallMs ?? SERVER_MESSAGE_STALL_MS;
    this.framer = new MessageFramer({
      ...(limits.maxMessageSize === undefined ? {} : { maxMessageSize: limits.maxMessageSize }),
      ...(limits.maxMsgFds === undefined ? {} : { maxFds: limits.maxMsgFds }),
    });
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Starts reading. */
  start(): void {
    this.#rewatch(false);
  }

  #rewatch(writable: boolean): void {
    if (this.#closed) return;
    const readable = !this.#paused;
    if (this.#watch && this.#watchWritable === writable && this.#watchReadable === readable) return;
    this.#watch?.stop();
    this.#watch = undefined;
    this.#watchWritable = writable;
    this.#watchReadable = readable;
    try {
      this.#watch = watchFd(this.#fd, { readable, writable }, (ev) => this.#onPoll(ev));
    } catch (e) {
      // Could not watch the socket again (uv_poll_init failing, e.g. EMFILE for its epoll):
      // a clean close of this client, never an exception out of the event loop.
      this.close({ kind: 'error', error: e });
    }
  }

  #onPoll(ev: { readable: boolean; writable: boolean; errno: number }): void {
    if (this.#closed) return;
    if (ev.errno !== 0) {
      // libuv stopped the handle (EPOLLERR, or EBADF: the fd is no longer valid): the peer is
      // gone. close() still stop()s the watch, which releases the fd's slot in watchFd's table
      // (else the next socket given the same fd number could not be watched: EBUSY).
      this.close({ kind: 'error', error: new VfioError(ev.errno, 'poll') });
      return;
    }
    try {
      if (ev.writable) this.#flush();
      if (ev.readable && !this.#closed && !this.#paused) this.#read();
    } catch (e) {
      // Handlers never throw (Session.onFrame catches); anything else here is a bug: close this
      // client cleanly instead of letting it escape into libuv's callback.
      this.close({ kind: 'error', error: e });
    }
  }

  /** Over a back-pressure limit: queued bytes, queued messages, or fds held by them. */
  #overLimit(): boolean {
    return (
      this.#queued >= this.#pauseAt ||
      this.#queue.length >= this.#maxRequests ||
      this.#queuedFds >= this.#maxRequests
    );
  }

  /** Drained enough to read again: below half of every limit. */
  #belowResume(): boolean {
    return (
      this.#queued < this.#pauseAt / 2 &&
      this.#queue.length < this.#maxRequests / 2 &&
      this.#queuedFds < this.#maxRequests / 2
    );
  }

  #read(): void {
    for (let i = 0; i < MAX_READS_PER_EVENT && !this.#closed && !this.#paused; i++) {
      if (this.#buf.length - this.#pos < MIN_RECV_ROOM) {
        // The framer may still hold views of the old buffer; it keeps it alive until consumed.
        this.#buf = new Uint8Array(RECV_BUFFER_BYTES);
        this.#pos = 0;
      }
      let r: ReturnType<typeof recvMsgInto>;
      try {
        r = recvMsgInto(this.#fd, this.#buf.subarray(this.#pos), MAX_FDS_PER_MSG);
      } catch (e) {
        this.close({ kind: 'error', error: e });
        return;
      }
      if (r === null) return; // EAGAIN: drained
      if (r.bytes === 0) {
        for (const fd of r.fds) closeFd(fd);
        this.close({ kind: 'eof' });
        return;
      }
      // MSG_CTRUNC (more fds than the kernel's per-message limit): the fds that did arrive go
      // with the message as usual; the handler refuses a message with fds it does not take.
      const chunk = this.#buf.subarray(this.#pos, this.#pos + r.bytes);
      this.framer.push(chunk, r.fds);
      this.#drain();
      // Fds beyond max_msg_fds for the message still arriving: closed now, not held till its end.
      for (const fd of this.framer.takeExcessFds()) closeFd(fd);
      // Keep the unconsumed tail where it is: the next read goes after it.
      const room = this.#buf.length - this.#pos;
      this.#pos = this.framer.buffered === 0 ? 0 : this.#pos + r.bytes;
      this.#armStallTimer();
      // A read that did not fill the room drained the socket: stop here rather than pay one
      // more recvmsg for its EAGAIN (the watch is level-triggered and fires again for more).
      if (r.bytes < room) return;
    }
  }

  /**
   * A half-received message starts the clock (SERVER_MESSAGE_STALL_MS); a complete one, or our
   * own back-pressure pause, stops it. The clock runs from the message's first bytes: a client
   * trickling a byte at a time cannot keep it from expiring.
   */
  #armStallTimer(): void {
    const partial = this.framer.buffered > 0 && !this.#paused && !this.#closed;
    if (!partial) {
      clearTimeout(this.#stallTimer);
      this.#stallTimer = undefined;
    } else if (this.#stallTimer === undefined) {
      this.#stallTimer = setTimeout(() => {
        this.#stallTimer = undefined;
        const err = new VfioError(Errno.ETIMEDOUT, 'recvmsg', `message incomplete after ${this.#stallMs} ms`);
        this.close({ kind: 'error', error: err });
      }, this.#stallMs);
      this.#stallTimer.unref();
    }
  }

  #drain(): void {
    while (!this.#closed) {
      if (this.#overLimit()) {
        // Back-pressure: the client is not reading its replies. Stop taking its requests (the
        // rest stay in the framer, its socket buffer fills, its sends block) until they drain.
        this.#paused = true;
        this.#rewatch(true);
        this.#armStallTimer();
        return;
      }
      let f: ReturnType<MessageFramer['next']>;
      try {
        f = this.framer.next();
      } catch (e) {
        if (e instanceof MalformedError) {
          this.#answerRejected(e);
          this.close({ kind: 'framing', error: e });
        } else this.close({ kind: 'error', error: e });
        return;
      }
      if ('need' in f) return;
      this.#handlers.onFrame(f);
    }
  }

  /**
   * A msg_size below 16 or above the limit: libvfio-user (lib/libvfio-user.c get_request,
   * is_valid_header) answers the command with EINVAL. We do too, then close: the body was never
   * read and the stream cannot be resynchronized. Best effort (dropped if replies are queued).
   */
  #answerRejected(e: MalformedError): void {
    const h = this.framer.rejectedHeader;
    if (!h || (h.flags & VfioUserFlags.TYPE_MASK) !== VfioUserFlags.TYPE_COMMAND) return;
    if (h.flags & VfioUserFlags.NO_REPLY || this.#queue.length > 0) return;
    const flags = VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR;
    try {
      sendMsg(this.#fd, [this.#header({ msgId: h.msgId, command: h.command, flags, error: e.errno }, 0)], []);
    } catch {
      // the peer is gone; close() follows
    }
  }

  /**
   * Sends one message: its header (msg_size counted from `chunks`; type command unless
   * `head.flags` says otherwise) and then `chunks`, gathered into one sendmsg. Fds and `after` as
   * for `send`. Replies, error replies (the header alone, spec "Header") and commands, of the
   * server and of the client, all go out through here.
   */
  sendMessage(
    head: MessageHead,
    chunks: readonly Uint8Array[] = [],
    fds: readonly number[] = [],
    after?: () => void,
  ): void {
    let payload = 0;
    for (const c of chunks) payload += c.length;
    this.send([this.#header(head, payload), ...chunks], fds, after);
  }

  /** The header of a message with `payload` bytes after it, in the scratch buffer (writeHeader checks each field). */
  #header(head: MessageHead, payload: number): Uint8Array {
    writeHeader(this.#head, 0, {
      msgId: head.msgId,
      command: head.command,
      msgSize: VFIO_USER_HEADER_SIZE + payload,
      flags: head.flags ?? VfioUserFlags.TYPE_COMMAND,
      error: head.error ?? 0,
    });
    return this.#head;
  }

  /**
   * Sends one message gathered from `chunks` with `fds` attached; `after` runs once it has been
   * handed to the kernel in full (or dropped because the connection closed). The caller keeps
   * ownership of `fds` (close them in `after`). Chunks may be reused by the caller right after
   * the call returns: what is not sent at once is copied.
   */
  send(chunks: readonly Uint8Array[], fds: readonly number[] = [], after?: () => void): void {
    if (this.#closed) {
      after?.();
      return;
    }
    let sent = 0;
    let total = 0;
    for (const c of chunks) total += c.length;
    if (this.#queue.length === 0) {
      let n: number | null;
      try {
        n = sendMsg(this.#fd, chunks, fds);
      } catch (e) {
        after?.();
        this.close({ kind: 'error', error: e });
        return;
      }
      if (n === total) {
        after?.();
        return;
      }
      sent = n ?? 0;
    }
    // Copy what is left (the caller's chunks may be scratch buffers).
    const rest = new Uint8Array(total - sent);
    let at = 0;
    let skip = sent;
    for (const c of chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      rest.set(c.subarray(skip), at);
      at += c.length - skip;
      skip = 0;
    }
    const held = sent === 0 ? fds : [];
    this.#queue.push({ bytes: rest, fds: held, after });
    this.#queued += rest.length;
    this.#queuedFds += held.length;
    if (this.#queued > MAX_QUEUED_BYTES) {
      this.close({ kind: 'error', error: new VfioError(Errno.ENOMEM, 'send', 'peer is not reading') });
      return;
    }
    this.#rewatch(true);
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const o = this.#queue[0]!;
      let n: number | null;
      try {
        n = sendMsg(this.#fd, [o.bytes], o.fds);
      } catch (e) {
        this.close({ kind: 'error', error: e });
        return;
      }
      if (n === null) break;
      this.#queued -= n;
      this.#queuedFds -= o.fds.length; // sent with the first byte
      if (n < o.bytes.length) {
        o.bytes = o.bytes.subarray(n);
        o.fds = [];
        break;
      }
      this.#queue.shift();
      o.after?.();
    }
    if (this.#closed) return;
    if (this.#paused && this.#belowResume()) {
      this.#paused = false;
      this.#rewatch(this.#queue.length > 0);
      this.#drain(); // the requests left in the framer; may pause again
      this.#armStallTimer();
      return;
    }
    if (this.#queue.length === 0) this.#rewatch(false);
  }

  /** True while reading is paused for back-pressure. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Messages waiting in the send queue. */
  get queuedMessages(): number {
    return this.#queue.length;
  }

  /** Fds held by messages waiting in the send queue. */
  get queuedFds(): number {
    return this.#queuedFds;
  }

  /** Bytes waiting in the send queue. */
  get queuedBytes(): number {
    return this.#queued;
  }

  close(reason: CloseReason = { kind: 'local' }): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#stallTimer);
    this.#watch?.stop();
    this.#watch = undefined;
    for (const fd of this.framer.takeFds()) closeFd(fd);
    const queue = this.#queue;
    this.#queue = [];
    this.#queued = 0;
    this.#queuedFds = 0;
    for (const o of queue) o.after?.();
    closeFd(this.#fd);
    this.#handlers.onClose(reason);
  }
}
