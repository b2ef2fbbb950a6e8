/**
 * SocketChannel: one vfio-user connection's byte transport (named apart from the driver's
 * `Transport`, src/driver/file.ts, which names a backend): a UNIX stream socket read with
 * recvmsg (SCM_RIGHTS fds kept with their message by the wire MessageFramer) and written with
 * sendmsg through a queue that survives EAGAIN (src/server/outbox.ts).
 *
 * Waiting: by default libuv's poll watches the socket (readable, and writable while replies
 * wait) and the channel reads with MSG_DONTWAIT. A `ChannelDriver` (the server's thread loops,
 * src/server/loop.ts) takes the waiting over instead: it calls `receive` (which may sleep in
 * recvmsg itself) and `flush`, as `wantsRead` and `wantsWrite` say.
 *
 * Reading: one recvmsg lands in a reused buffer (SocketIo: no allocation). A message that came
 * whole, without fds, while nothing was buffered, is first offered to `onBytes` (the session's
 * fast path: decoded in place, answered from `replyBuffer`); the rest goes through the framer as
 * Frames, views into that buffer valid only during `onFrame` (handlers copy what they keep). A
 * message left incomplete stays in the buffer and the next read goes after it, so nothing the
 * framer holds is overwritten; when the room left is small a fresh buffer is started (the
 * framer keeps the old one until it is consumed).
 *
 * Writing: `sendMessage` puts the 16-byte header before the payload chunks (where every message
 * header is built, server or client, reply or command, but one: `sendReplyBuffer` writes the
 * header of a success reply whose payload the fast path wrote into `replyBuffer`). Both try sendmsg at once (the usual case: no
 * copy, no allocation); what the kernel does not take is copied into the outbox and written when
 * the socket is writable again. Fds travel with the first byte of their message (spec, "Socket
 * Transport": fds ride on the message's sendmsg).
 *
 * Closing (peer EOF, a framing error, a send error, or `close()`): the watch stops, every fd
 * still held (framer, queue) is closed, then the socket; `onClose` runs once.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_USER_HEADER_SIZE, VfioUserFlags } from '../abi/vfio-user.js';
import { MalformedError, VfioError } from '../errors.js';
import {
  addressNumber,
  closeFd,
  type FdWatch,
  MAX_FDS_PER_MSG,
  SocketIo,
  sendMsg,
  watchFd,
} from '../native/index.js';
import {
  type Frame,
  headerFields as HF,
  MessageFramer,
  type MessageHead,
  writeHeader,
} from '../wire/vfio-user.js';
import { SERVER_MAX_PENDING_BYTES, SERVER_MAX_PENDING_REQUESTS, SERVER_MESSAGE_STALL_MS } from './limits.js';
import { Outbox } from './outbox.js';

/** Size of each receive buffer; one read takes at most this much. */
export const RECV_BUFFER_BYTES = 256 * 1024;
/** Below this much room left in the receive buffer, the next read starts a fresh buffer. */
const MIN_RECV_ROOM = 16 * 1024;
/** Reads per readable event before yielding to the event loop (level-triggered: it comes back). */
const MAX_READS_PER_EVENT = 64;
/** Bytes allowed to wait in the send queue before the connection is dropped (a peer not reading). */
export const MAX_QUEUED_BYTES = 64 * 1024 * 1024;
/** Size of `replyBuffer`: a header, a region access header and this much data minus 32. */
export const REPLY_BUFFER_BYTES = 4096 + 32;

export type CloseReason =
  | { readonly kind: 'eof' }
  | { readonly kind: 'framing'; readonly error: MalformedError }
  | { readonly kind: 'error'; readonly error: unknown }
  | { readonly kind: 'local' };

export interface ChannelHandlers {
  /** A complete message. `frame.fds` belong to the callee, which must close or keep them. */
  onFrame(frame: Frame): void;
  onClose(reason: CloseReason): void;
  /**
   * The fast path, if any: a whole message of `size` bytes at `at` in `bytes` (`view` over the
   * same buffer; msg_size already within the limit), which came without fds. Return true once
   * it is handled (answered, or posted), false to have it framed and given to `onFrame`
   * instead, with nothing done. Must not throw.
   */
  onBytes?(bytes: Uint8Array, view: DataView, at: number, size: number): boolean;
}

/** Takes over the waiting for a channel's socket (src/server/loop.ts); libuv's poll otherwise. */
export interface ChannelDriver {
  /** Called once by `start()`: from then on the driver calls `receive` and `flush`. */
  attach(channel: SocketChannel): void;
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
  #io: SocketIo;
  readonly #replyView: DataView;
  #driver: ChannelDriver | undefined;
  #watch: FdWatch | undefined;
  #watchWritable = false;
  #buf = new Uint8Array(RECV_BUFFER_BYTES);
  #bufAddress = addressNumber(this.#buf);
  #view = new DataView(this.#buf.buffer);
  #pos = 0;
  /** The last receive filled all the room it had (more may be waiting). */
  #filled = false;
  #out = new Outbox();
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

  constructor(fd: number, handlers: ChannelHandlers, limits: ChannelLimits = {}, driver?: ChannelDriver) {
    this.#fd = fd;
    this.#handlers = handlers;
    this.#driver = driver;
    this.#pauseAt = limits.maxPendingBytes ?? SERVER_MAX_PENDING_BYTES;
    this.#maxRequests = limits.maxPendingRequests ?? SERVER_MAX_PENDING_REQUESTS;
    this.#stallMs = limits.messageStallMs ?? SERVER_MESSAGE_STALL_MS;
    this.framer = new MessageFramer({
      ...(limits.maxMessageSize === undefined ? {} : { maxMessageSize: limits.maxMessageSize }),
      ...(limits.maxMsgFds === undefined ? {} : { maxFds: limits.maxMsgFds }),
    });
    this.#io = new SocketIo(fd, REPLY_BUFFER_BYTES, MAX_FDS_PER_MSG);
    this.#replyView = new DataView(this.#io.out.buffer);
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Where a fast-path reply's payload is written (from byte 16) before `sendReplyBuffer`. */
  get replyBuffer(): Uint8Array {
    return this.#io.out;
  }

  /** Starts reading: libuv's poll watches the socket, or the driver takes over. */
  start(): void {
    if (this.#driver) this.#driver.attach(this);
    else this.#rewatch(false);
  }

  /** A driver should wait for requests (not closed, not paused by back-pressure). */
  get wantsRead(): boolean {
    return !this.#closed && !this.#paused;
  }

  /** A driver should wait for room to send: replies are queued. */
  get wantsWrite(): boolean {
    return !this.#closed && this.#out.length > 0;
  }

  #rewatch(writable: boolean): void {
    if (this.#closed || this.#driver) return;
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
      if (ev.writable) this.flush();
      if (ev.readable) this.#read();
    } catch (e) {
      // Handlers never throw (Session.onFrame catches); anything else here is a bug: close this
      // client cleanly instead of letting it escape into libuv's callback.
      this.close({ kind: 'error', error: e });
    }
  }

  /** Over a back-pressure limit: queued bytes, queued messages, or fds held by them. */
  #overLimit(): boolean {
    return (
      this.#out.bytes >= this.#pauseAt ||
      this.#out.length >= this.#maxRequests ||
      this.#out.fds >= this.#maxRequests
    );
  }

  /** Drained enough to read again: below half of every limit. */
  #belowResume(): boolean {
    return (
      this.#out.bytes < this.#pauseAt / 2 &&
      this.#out.length < this.#maxRequests / 2 &&
      this.#out.fds < this.#maxRequests / 2
    );
  }

  #read(): void {
    for (let i = 0; i < MAX_READS_PER_EVENT; i++) {
      // A read that did not fill the room drained the socket: stop there rather than pay one
      // more recvmsg for its EAGAIN (the watch is level-triggered and fires again for more).
      if (this.receive(false) <= 0 || !this.#filled) return;
    }
  }

  /**
   * One recvmsg and every message it completes handled. `wait`: sleep in recvmsg until data
   * comes (a driver's blocking socket; its SO_RCVTIMEO bounds the sleep), else MSG_DONTWAIT.
   * Returns the bytes received, 0 when the channel is closed (now or before), -1 when nothing
   * came or reading is paused.
   */
  receive(wait: boolean): number {
    if (this.#closed) return 0;
    if (this.#paused) return -1;
    if (this.#buf.length - this.#pos < MIN_RECV_ROOM) {
      // The framer may still hold views of the old buffer; it keeps it alive until consumed.
      this.#buf = new Uint8Array(RECV_BUFFER_BYTES);
      this.#view = new DataView(this.#buf.buffer);
      this.#bufAddress = addressNumber(this.#buf);
      this.#pos = 0;
    }
    const room = this.#buf.length - this.#pos;
    const io = this.#io;
    let n: number;
    try {
      // At position 0 (the usual case) the stored address itself: no number boxed per call.
      n = io.recv(this.#pos === 0 ? this.#bufAddress : this.#bufAddress + this.#pos, room, wait);
    } catch (e) {
      this.close({ kind: 'error', error: e });
      return 0;
    }
    if (n < 0) return -1;
    if (n === 0) {
      for (const fd of io.fds) closeFd(fd);
      this.close({ kind: 'eof' });
      return 0;
    }
    this.#filled = n === room;
    const at = this.#pos;
    if (io.fds.length === 0 && this.framer.buffered === 0 && this.#handlers.onBytes) {
      this.#fast(at, at + n);
    } else {
      // MSG_CTRUNC (more fds than the kernel's per-message limit): the fds that did arrive go
      // with the message as usual; the handler refuses a message with fds it does not take.
      this.framer.push(this.#buf.subarray(at, at + n), io.fds);
      this.#drain();
    }
    if (this.#closed) return 0;
    // Fds beyond max_msg_fds for the message still arriving: closed now, not held till its end.
    for (const fd of this.framer.takeExcessFds()) closeFd(fd);
    // Keep the unconsumed tail where it is: the next read goes after it.
    this.#pos = this.framer.buffered === 0 ? 0 : at + n;
    if (this.#stallTimer !== undefined || this.framer.buffered > 0) this.#armStallTimer();
    return n;
  }

  /**
   * Whole messages in buf[at..end) go to the fast path one by one; one it declines is framed and
   * handled alone, in its turn. A partial message at the end, or back-pressure, sends the rest to
   * the framer as usual.
   */
  #fast(at: number, end: number): void {
    const onBytes = this.#handlers.onBytes!;
    const max = this.framer.maxMessageSize;
    const v = this.#view;
    while (end - at >= VFIO_USER_HEADER_SIZE && !this.#closed && !this.#overLimit()) {
      const size = HF.msgSize.get(v, at);
      if (size < VFIO_USER_HEADER_SIZE || size > max || size > end - at) break;
      if (!onBytes(this.#buf, v, at, size)) {
        // This one message through the framer (it is whole: the framer hands it out and is
        // empty again), then on with the fast path.
        this.framer.push(this.#buf.subarray(at, at + size));
        this.#drain();
        if (this.framer.buffered > 0) return; // paused, with the message still held
      }
      at += size;
    }
    if (this.#closed || at === end) return;
    this.framer.push(this.#buf.subarray(at, end));
    this.#drain();
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
    if (h.flags & VfioUserFlags.NO_REPLY || this.#out.length > 0) return;
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
   * Sends a success reply whose payload the caller wrote into `replyBuffer` after the 16-byte
   * header (from byte 16, `payload` bytes): the header is written here, the one other place
   * besides `sendMessage` where one is built. The fast path's replies; nothing allocated unless
   * the socket does not take it all (the rest is queued).
   */
  sendReplyBuffer(msgId: number, command: number, payload: number): void {
    if (this.#closed) return;
    const length = VFIO_USER_HEADER_SIZE + payload;
    const h = this.#replyView;
    HF.msgId.set(h, 0, msgId);
    HF.command.set(h, 0, command);
    HF.msgSize.set(h, 0, length);
    HF.flags.set(h, 0, VfioUserFlags.TYPE_REPLY);
    HF.error.set(h, 0, 0);
    let sent = 0;
    if (this.#out.length === 0) {
      try {
        sent = this.#io.sendOut(length);
      } catch (e) {
        this.close({ kind: 'error', error: e });
        return;
      }
      if (sent === length) return;
    }
    this.#queue([this.#io.out.subarray(0, length)], Math.max(sent, 0), []);
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
    if (this.#out.length === 0) {
      let n: number | null;
      try {
        n = sendMsg(this.#fd, chunks, fds);
      } catch (e) {
        after?.();
        this.close({ kind: 'error', error: e });
        return;
      }
      let total = 0;
      for (const c of chunks) total += c.length;
      if (n === total) {
        after?.();
        return;
      }
      sent = n ?? 0;
    }
    this.#queue(chunks, sent, fds, after);
  }

  #queue(chunks: readonly Uint8Array[], sent: number, fds: readonly number[], after?: () => void): void {
    this.#out.push(chunks, sent, fds, after);
    if (this.#out.bytes > MAX_QUEUED_BYTES) {
      this.close({ kind: 'error', error: new VfioError(Errno.ENOMEM, 'send', 'peer is not reading') });
      return;
    }
    this.#rewatch(true);
  }

  /** Writes queued messages while the socket takes them; resumes reading once below the limits. */
  flush(): void {
    if (this.#closed) return;
    try {
      this.#out.flush(this.#fd);
    } catch (e) {
      this.close({ kind: 'error', error: e });
      return;
    }
    if (this.#closed) return; // an `after` hook may have closed it
    if (this.#paused && this.#belowResume()) {
      this.#paused = false;
      this.#rewatch(this.#out.length > 0);
      this.#drain(); // the requests left in the framer; may pause again
      this.#armStallTimer();
      return;
    }
    if (this.#out.length === 0) this.#rewatch(false);
  }

  /** True while reading is paused for back-pressure. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Messages waiting in the send queue. */
  get queuedMessages(): number {
    return this.#out.length;
  }

  /** Fds held by messages waiting in the send queue. */
  get queuedFds(): number {
    return this.#out.fds;
  }

  /** Bytes waiting in the send queue. */
  get queuedBytes(): number {
    return this.#out.bytes;
  }

  close(reason: CloseReason = { kind: 'local' }): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#stallTimer);
    this.#watch?.stop();
    this.#watch = undefined;
    for (const fd of this.framer.takeFds()) closeFd(fd);
    this.#out.drop();
    closeFd(this.#fd);
    this.#handlers.onClose(reason);
  }
}
