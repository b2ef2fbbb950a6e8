/**
 * The client end of one vfio-user connection: request/reply matching by msg_id with a timeout
 * per request, and the server's own requests (DMA_READ / DMA_WRITE) answered through a handler.
 *
 * Bytes and fds travel through the same SocketChannel as the server's (src/server/channel.ts:
 * non-blocking recvmsg/sendmsg, SCM_RIGHTS fds kept with their message by the MessageFramer, a
 * send queue that survives EAGAIN). Frames it hands over are views into its receive buffer, so
 * every payload kept here is copied.
 *
 * Every reply is hostile input (docs/robustness.md, "The client"). The framer takes messages up
 * to `maxMessageSize` and holds at most `maxMsgFds` fds for a message still arriving (fds
 * beyond it are closed as they are read, as the server's own channel does). A reply must name
 * the command it answers, bring no more fds than its request allows (QEMU hw/vfio-user/proxy.c
 * vfio_user_recv_one: "unexpected FDs") and no more bytes than it may hold ("reply larger than
 * recv buffer"): else the request fails EPROTO and every fd that came with it is closed.
 *
 * Message ids: the spec ("Header") says only that the reply echoes the command's msg_id; ids are
 * the sender's business. Ours count up from 1 (mod 2^16), skipping ids still waiting for a reply.
 *
 * A request without a reply in `timeoutMs` fails ETIMEDOUT and takes the connection down with
 * it: a late reply must never be matched to a later request that reuses its msg_id, and a
 * server that stopped answering one request is not trusted with the next.
 *
 * A broken connection (EOF, a framing error, a send error, a timeout) rejects every pending
 * request with VfioError(ECONNRESET) naming its command and the cause, closes every fd still
 * held (framer, queue) and the socket, and makes every later request fail the same way.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_USER_MAX_ERRNO, VfioUserFlags, vfioUserCommandName } from '../abi/vfio-user.js';
import { MalformedError, VfioError } from '../errors.js';
import { closeFd } from '../native/index.js';
import { type CloseReason, SocketChannel } from '../server/channel.js';
import { checkHeader, type Frame, isErrorReply, isNoReply, isReply, replyErrno } from '../wire/vfio-user.js';
import {
  CLIENT_MAX_DATA_XFER_SIZE,
  CLIENT_MAX_MSG_FDS,
  CLIENT_REQUEST_TIMEOUT_MS,
  clientMessageSize,
  MAX_FIXED_REPLY,
} from './limits.js';

/** Default time a request may wait for its reply. */
export const DEFAULT_REQUEST_TIMEOUT_MS = CLIENT_REQUEST_TIMEOUT_MS;
/** msg_id is a u16 (spec, "Header"); at most this many requests may be outstanding at once. */
export const MAX_PENDING_REQUESTS = 0xffff;

export interface Reply {
  /** The reply's payload (a copy, owned by the caller). */
  readonly payload: Uint8Array;
  /** Fds that came with the reply (no more than the request allowed); the caller closes them. */
  readonly fds: number[];
}

/** What a request allows its reply to carry. */
export interface RequestOptions {
  /** Most fds the reply may bring (default 0: a reply with any fd is EPROTO). */
  readonly replyFds?: number;
  /** Largest reply payload in bytes (default MAX_FIXED_REPLY). */
  readonly maxReply?: number;
  /** This request's timeout, when it may take longer than others (MIG_DEVICE_STATE SET). */
  readonly timeoutMs?: number;
}

/** Answers a server-to-client command: the reply payload, or throw VfioError for an error reply. */
export type CommandHandler = (command: number, payload: Uint8Array) => Promise<Uint8Array> | Uint8Array;

export interface ConnectionOptions {
  /** Per-request timeout in ms (default CLIENT_REQUEST_TIMEOUT_MS). */
  readonly timeoutMs?: number;
  /** Called once when the connection ends, whatever the cause. */
  readonly onClose?: (reason: CloseReason) => void;
  /** Largest message taken from the server (default clientMessageSize(1 MiB)). */
  readonly maxMessageSize?: number;
  /** Most fds held for one message (default CLIENT_MAX_MSG_FDS). */
  readonly maxMsgFds?: number;
}

interface Pending {
  readonly command: number;
  readonly replyFds: number;
  readonly maxReply: number;
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
  /** Replies that arrived for no pending request (a confused or hostile peer). */
  strayReplies = 0;

  /** Takes ownership of the connected socket `fd` (closed here if the channel cannot be made). */
  constructor(fd: number, opts: ConnectionOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? CLIENT_REQUEST_TIMEOUT_MS;
    this.#onClose = opts.onClose;
    try {
      this.channel = new SocketChannel(
        fd,
        { onFrame: (f) => this.#onFrame(f), onClose: (reason) => this.#closed(reason) },
        {
          maxMessageSize: opts.maxMessageSize ?? clientMessageSize(CLIENT_MAX_DATA_XFER_SIZE),
          maxMsgFds: opts.maxMsgFds ?? CLIENT_MAX_MSG_FDS,
          // A server-to-client message stalled half-way is dropped after the request timeout.
          messageStallMs: this.timeoutMs,
        },
      );
    } catch (e) {
      closeFd(fd);
      throw e;
    }
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
   * EPROTO for a reply that breaks `opts` or names another command, ETIMEDOUT after the timeout
   * (the connection is then dropped), ECONNRESET when the connection is or goes down.
   */
  request(
    command: number,
    payload: readonly Uint8Array[] = [],
    fds: readonly number[] = [],
    opts: RequestOptions = {},
  ): Promise<Reply> {
    const op = vfioUserCommandName(command);
    if (this.closed) return Promise.reject(this.#resetError(op));
    if (this.#pending.size >= MAX_PENDING_REQUESTS)
      return Promise.reject(new VfioError(Errno.EAGAIN, op, 'every msg_id is in use'));
    let id = this.#nextId;
    while (this.#pending.has(id) || id === 0) id = (id + 1) & 0xffff;
    this.#nextId = (id + 1) & 0xffff;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#pending.get(id)?.timer !== timer) return;
        this.#pending.delete(id);
        const e = new VfioError(Errno.ETIMEDOUT, op, `no reply in ${timeoutMs} ms`);
        reject(e);
        this.channel.close({ kind: 'error', error: e });
      }, timeoutMs);
      this.#pending.set(id, {
        command,
        replyFds: opts.replyFds ?? 0,
        maxReply: opts.maxReply ?? MAX_FIXED_REPLY,
        resolve,
        reject,
        timer,
      });
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
            : `connection dropped: ${r.error instanceof Error ? r.error.message : String(r.error)}`;
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
      this.#onReply(f);
      return;
    }
    // No server-to-client command carries fds (spec: DMA_READ, DMA_WRITE): EINVAL, as the
    // server answers a command with fds it does not take.
    const fdsCame = f.fds.length + f.droppedFds;
    closeFds(f.fds);
    const payload = f.payload.slice();
    void this.#answer(h.msgId, h.command, payload, isNoReply(h), fdsCame);
  }

  #onReply(f: Frame): void {
    const h = f.header;
    const p = this.#pending.get(h.msgId);
    if (!p) {
      this.strayReplies++;
      closeFds(f.fds);
      return;
    }
    this.#pending.delete(h.msgId);
    clearTimeout(p.timer);
    const op = vfioUserCommandName(p.command);
    if (isErrorReply(h) && h.command === p.command) {
      closeFds(f.fds);
      p.reject(new VfioError(replyErrno(h), op, 'server replied with an error'));
      return;
    }
    const problem = replyProblem(f, p);
    if (problem !== undefined) {
      closeFds(f.fds);
      p.reject(new VfioError(Errno.EPROTO, op, problem));
      return;
    }
    p.resolve({ payload: f.payload.slice(), fds: f.fds });
  }

  async #answer(
    msgId: number,
    command: number,
    payload: Uint8Array,
    noReply: boolean,
    fdsCame: number,
  ): Promise<void> {
    const op = vfioUserCommandName(command);
    let body: Uint8Array | undefined;
    let error = 0;
    try {
      if (fdsCame > 0) throw new VfioError(Errno.EINVAL, op, `${fdsCame} fds on a command that takes none`);
      if (!this.#handler) throw new VfioError(Errno.EINVAL, op, 'not a server command');
      body = await this.#handler(command, payload);
    } catch (e) {
      const errno = e instanceof VfioError ? e.errno : Errno.EINVAL;
      error = errno >= 1 && errno <= VFIO_USER_MAX_ERRNO ? errno : Errno.EINVAL;
    }
    if (noReply || this.closed) return;
    // An error reply is the header alone (spec, "Header").
    const flags = VfioUserFlags.TYPE_REPLY | (error ? VfioUserFlags.ERROR : 0);
    try {
      this.channel.sendMessage({ msgId, command, flags, error }, body && !error ? [body] : []);
    } catch (e) {
      // A reply we cannot even frame is our bug, never the server's: drop the connection.
      this.channel.close({ kind: 'error', error: e });
    }
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

/** What makes `f` no answer to `p`: another command, fds it does not take, too many bytes. */
function replyProblem(f: Frame, p: Pending): string | undefined {
  const h = f.header;
  if (h.command !== p.command)
    return `the reply to msg_id ${h.msgId} names ${vfioUserCommandName(h.command)}`;
  const nfds = f.fds.length + f.droppedFds;
  if (nfds > p.replyFds)
    return `${nfds} fds on the reply; it takes ${p.replyFds === 0 ? 'none' : `at most ${p.replyFds}`}`;
  if (f.payload.length > p.maxReply)
    return `reply of ${f.payload.length} bytes; at most ${p.maxReply} expected`;
  return undefined;
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
