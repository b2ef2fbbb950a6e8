/**
 * The client end of one vfio-user connection: request/reply matching by msg_id with a timeout
 * per request, and the server's own requests (DMA_READ / DMA_WRITE) answered through a handler.
 *
 * Bytes and fds travel through the same SocketChannel as the server's (src/server/channel.ts:
 * non-blocking recvmsg/sendmsg, SCM_RIGHTS fds kept with their message by the MessageFramer, a
 * send queue that survives EAGAIN). Frames it hands over are views into its receive buffer, so
 * every payload kept here is copied.
 *
 * Message ids: the spec ("Header") says only that the reply echoes the command's msg_id; ids are
 * the sender's business. Ours count up from 1 (mod 2^16), skipping ids still waiting for a reply.
 *
 * A broken connection (EOF, a framing error, a send error) rejects every pending request with
 * VfioError(ECONNRESET), closes every fd still held (framer, queue) and the socket, and makes
 * every later request fail the same way.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_USER_MAX_ERRNO, VfioUserFlags, vfioUserCommandName } from '../abi/vfio-user.js';
import { MalformedError, VfioError } from '../errors.js';
import { closeFd } from '../native/index.js';
import { type CloseReason, SocketChannel } from '../server/channel.js';
import { checkHeader, type Frame, isErrorReply, isNoReply, isReply, replyErrno } from '../wire/vfio-user.js';

/** Default time a request may wait for its reply. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** msg_id is a u16 (spec, "Header"); at most this many requests may be outstanding at once. */
export const MAX_PENDING_REQUESTS = 0xffff;

export interface Reply {
  /** The reply's payload (a copy, owned by the caller). */
  readonly payload: Uint8Array;
  /** Fds that came with the reply; the caller owns and closes them. */
  readonly fds: number[];
}

/** Answers a server-to-client command: the reply payload, or throw VfioError for an error reply. */
export type CommandHandler = (command: number, payload: Uint8Array) => Promise<Uint8Array> | Uint8Array;

export interface ConnectionOptions {
  /** Per-request timeout in ms (default DEFAULT_REQUEST_TIMEOUT_MS). */
  readonly timeoutMs?: number;
  /** Called once when the connection ends, whatever the cause. */
  readonly onClose?: (reason: CloseReason) => void;
}

interface Pending {
  readonly command: number;
  readonly resolve: (r: Reply) => void;
  readonly reject: (e: unknown) => void;
  readonly timer: NodeJS.Timeout;
}

export class Connection {
  readonly channel: SocketChannel;
  readonly timeoutMs: number;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closeReason: CloseReason | undefined;
  #handler: CommandHandler | undefined;
  #onClose: ((reason: CloseReason) => void) | undefined;
  /** Replies that arrived for no pending request (timed out, or a confused peer). */
  strayReplies = 0;

  /** Takes ownership of the connected socket `fd`. */
  constructor(fd: number, opts: ConnectionOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#onClose = opts.onClose;
    this.channel = new SocketChannel(fd, {
      onFrame: (f) => this.#onFrame(f),
      onClose: (reason) => this.#closed(reason),
    });
    this.channel.start();
  }

  get closed(): boolean {
    return this.#closeReason !== undefined;
  }

  get closeReason(): CloseReason | undefined {
    return this.#closeReason;
  }

  /** Requests still waiting for their reply. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Sets the handler of server-to-client commands (DMA_READ, DMA_WRITE). */
  onCommand(handler: CommandHandler): void {
    this.#handler = handler;
  }

  /**
   * Sends a command and waits for its reply. `fds` stay the caller's (they have been handed to
   * the kernel when the promise settles). Rejects with VfioError(errno) for an error reply,
   * ETIMEDOUT after the timeout, ECONNRESET when the connection is or goes down.
   */
  request(
    command: number,
    payload: readonly Uint8Array[] = [],
    fds: readonly number[] = [],
    timeoutMs = this.timeoutMs,
  ): Promise<Reply> {
    const op = vfioUserCommandName(command);
    if (this.closed) return Promise.reject(this.#resetError(op));
    if (this.#pending.size >= MAX_PENDING_REQUESTS)
      return Promise.reject(new VfioError(Errno.EAGAIN, op, 'every msg_id is in use'));
    let id = this.#nextId;
    while (this.#pending.has(id) || id === 0) id = (id + 1) & 0xffff;
    this.#nextId = (id + 1) & 0xffff;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#pending.get(id)?.timer !== timer) return;
        this.#pending.delete(id);
        reject(new VfioError(Errno.ETIMEDOUT, op, `no reply in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      this.channel.sendMessage({ msgId: id, command }, payload, fds);
    });
  }

  /** Closes the connection (pending requests reject with ECONNRESET). */
  close(): void {
    this.channel.close({ kind: 'local' });
  }

  #resetError(op: string): VfioError {
    const r = this.#closeReason;
    const why =
      r === undefined || r.kind === 'local'
        ? 'connection closed'
        : r.kind === 'eof'
          ? 'server closed the connection'
          : r.kind === 'framing'
            ? `stream broken: ${r.error.message}`
            : `connection failed: ${r.error instanceof Error ? r.error.message : String(r.error)}`;
    return new VfioError(Errno.ECONNRESET, op, why);
  }

  #onFrame(f: Frame): void {
    const h = f.header;
    try {
      checkHeader(h);
    } catch (e) {
      // A header we cannot act on: nobody can be answered reliably; drop the connection.
      closeFds(f.fds);
      this.channel.close({ kind: 'error', error: e });
      return;
    }
    if (isReply(h)) {
      const p = this.#pending.get(h.msgId);
      if (!p || p.command !== h.command) {
        this.strayReplies++;
        closeFds(f.fds);
        return;
      }
      this.#pending.delete(h.msgId);
      clearTimeout(p.timer);
      if (isErrorReply(h)) {
        closeFds(f.fds);
        p.reject(
          new VfioError(replyErrno(h), vfioUserCommandName(h.command), 'server replied with an error'),
        );
        return;
      }
      p.resolve({ payload: f.payload.slice(), fds: f.fds });
      return;
    }
    closeFds(f.fds); // no server-to-client command carries fds
    const payload = f.payload.slice();
    void this.#answer(h.msgId, h.command, payload, isNoReply(h));
  }

  async #answer(msgId: number, command: number, payload: Uint8Array, noReply: boolean): Promise<void> {
    let body: Uint8Array | undefined;
    let error = 0;
    try {
      if (!this.#handler)
        throw new VfioError(Errno.EINVAL, vfioUserCommandName(command), 'not a server command');
      body = await this.#handler(command, payload);
    } catch (e) {
      const errno = e instanceof VfioError ? e.errno : Errno.EINVAL;
      error = errno >= 1 && errno <= VFIO_USER_MAX_ERRNO ? errno : Errno.EINVAL;
    }
    if (noReply || this.closed) return;
    // An error reply is the header alone (spec, "Header").
    const flags = VfioUserFlags.TYPE_REPLY | (error ? VfioUserFlags.ERROR : 0);
    this.channel.sendMessage({ msgId, command, flags, error }, body ? [body] : []);
  }

  #closed(reason: CloseReason): void {
    this.#closeReason = reason;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(this.#resetError(vfioUserCommandName(p.command)));
    }
    this.#onClose?.(reason);
  }
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already gone
    }
  }
}

/** A reply we cannot decode is the server breaking the protocol: EPROTO. */
export function decodeOrProto<T>(op: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof MalformedError) throw new VfioError(Errno.EPROTO, op, e.message);
    throw e;
  }
}
