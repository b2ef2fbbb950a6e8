/**
 * One vfio-user client of a device (a DevicePort, src/server/device-port.ts): the request pipeline
 *   header validation (type, flags, per-command minimum and maximum payload, fds allowed)
 *   -> the command table (src/server/dispatch.ts; handlers in src/server/commands/)
 *   -> one reply path (a success reply, or the header alone with the errno),
 * the server-to-client requests (DMA_READ / DMA_WRITE for memory mapped without an fd) with
 * their own message ids, and the cleanup when the client goes: its DMA mappings, interrupts
 * and mmap cookies are released and the device is reset for the next client.
 *
 * Authority: QEMU docs/interop/vfio-user.rst ("the spec"). Where the spec leaves an errno open,
 * the choice follows libvfio-user (lib/libvfio-user.c) and is named in docs/vfio-user-server.md.
 */
import { Errno, errnoName } from '../abi/errno.js';
import {
  VfioUserCommand as C,
  VFIO_USER_MAX_ERRNO,
  VfioUserFlags,
  vfioUserCommandName,
} from '../abi/vfio-user.js';
import { MalformedError, VfioError } from '../errors.js';
import { closeFd } from '../native/index.js';
import {
  checkHeader,
  type DmaLayout,
  decodeDmaReadReply,
  decodeDmaWriteReply,
  encodeDmaReadRequest,
  encodeDmaWriteRequest,
  type Frame,
  type Header,
  isReply,
  readHeader,
  replyErrno,
} from '../wire/vfio-user.js';
import type { CloseReason, SocketChannel } from './channel.js';
import type { ClientContext, Negotiated, Reply } from './context.js';
import { ClientCookies } from './cookies.js';
import type { DevicePort } from './device-port.js';
import { HANDLERS } from './dispatch.js';
import { DMA_CHUNK, DMA_REPLY_OVERHEAD, RequestWindow } from './dma-window.js';
import { FastPath, type FastPathOwner } from './fast-path.js';
import { DEFAULT_LIMITS, type ServerLimits } from './limits.js';

/** How long a server-to-client request (DMA_READ/DMA_WRITE) may wait for its reply. */
export const DMA_REQUEST_TIMEOUT_MS = 10_000;

export interface SessionOptions {
  /** DMA_READ/DMA_WRITE layout: 'auto' = the spec's, which QEMU 11.1 speaks too. */
  readonly dmaLayout?: DmaLayout | 'auto';
  /** One line per message. */
  readonly trace?: (line: string) => void;
  /** Lines that are always worth a log entry (a handler bug answered with EINVAL). */
  readonly log?: (line: string) => void;
  /** Per-client limits (src/server/limits.ts); defaults when absent. */
  readonly limits?: ServerLimits;
}

interface Pending {
  readonly command: number;
  resolve(payload: Uint8Array): void;
  reject(e: unknown): void;
  readonly timer: NodeJS.Timeout;
}

export class Session implements ClientContext, FastPathOwner {
  negotiated: Negotiated | undefined;
  /** mmap cookies this client holds (released when it goes). */
  readonly cookies = new ClientCookies();
  #pending = new Map<number, Pending>();
  /** DMA_READ / DMA_WRITE outstanding with the client (dma-window.ts: why QEMU needs it). */
  readonly dmaWindow = new RequestWindow();
  #nextId = 0;
  #closed = false;
  /** REGION_READ/WRITE answered in place; none while tracing (every message gets its line). */
  readonly #fast: FastPath | undefined;
  messages = 0;

  constructor(
    readonly device: DevicePort,
    readonly channel: SocketChannel,
    readonly options: SessionOptions = {},
  ) {
    this.#fast = options.trace ? undefined : new FastPath(this, channel);
  }

  get limits(): ServerLimits {
    return this.options.limits ?? DEFAULT_LIMITS;
  }

  // -------------------------------------------------------------------------------------------
  // Incoming
  // -------------------------------------------------------------------------------------------
  /**
   * A whole message in the receive buffer, offered before framing (SocketChannel's `onBytes`):
   * true when the fast path answered it, false for `onFrame`. Never throws.
   */
  onBytes(bytes: Uint8Array, view: DataView, at: number, size: number): boolean {
    return this.#fast !== undefined && !this.#closed && this.#fast.handle(bytes, view, at, size);
  }

  /** The error reply to the message at `at` in `bytes` (the fast path's device errors). */
  failAt(bytes: Uint8Array, at: number, e: unknown): void {
    this.#fail(readHeader(bytes, at), e);
  }

  /** One complete message from the client; never throws. */
  onFrame(f: Frame): void {
    this.messages++;
    const h = f.header;
    try {
      checkHeader(h);
    } catch (e) {
      this.#closeFds(f.fds);
      this.#fail(h, e);
      return;
    }
    if (isReply(h)) {
      this.#closeFds(f.fds); // no reply to a DMA_READ/DMA_WRITE carries fds
      this.#onReply(f);
      return;
    }
    const entry = HANDLERS[h.command];
    let reply: Reply | Promise<Reply>;
    try {
      if (!entry) throw new VfioError(Errno.EINVAL, vfioUserCommandName(h.command), 'not a client command');
      const len = f.payload.length;
      if (len < entry.minPayload || len > entry.maxPayload(this)) {
        throw new VfioError(
          Errno.EINVAL,
          vfioUserCommandName(h.command),
          `payload of ${len} bytes outside ${entry.minPayload}..${entry.maxPayload(this)}`,
        );
      }
      if (f.droppedFds > 0) {
        // More fds than max_msg_fds arrived while the message was still coming in: the excess
        // was closed at once (the channel), so the message cannot be acted on. libvfio-user takes
        // fds with the header only; the kernel discards any that ride on its body reads.
        throw new VfioError(
          Errno.EINVAL,
          vfioUserCommandName(h.command),
          `${f.fds.length + f.droppedFds} fds, at most ${this.limits.maxMsgFds}`,
        );
      }
      if (f.fds.length > entry.maxFds(this)) {
        throw new VfioError(
          Errno.EINVAL,
          vfioUserCommandName(h.command),
          `${f.fds.length} fds, at most ${entry.maxFds(this)}`,
        );
      }
      if (this.negotiated === undefined && h.command !== C.VERSION) {
        // Spec, "Version": the version must be negotiated before any other message.
        throw new VfioError(Errno.EINVAL, vfioUserCommandName(h.command), 'before VERSION');
      }
      reply = entry.handle(this, f);
    } catch (e) {
      this.#closeFds(f.fds);
      this.#fail(h, e);
      return;
    }
    // No handler keeps a received fd (mappings and the core's dups outlive them). They are
    // closed before the reply goes out: a send that fails closes the connection, and a client's
    // fds must be gone by the time the server says it has.
    this.#closeFds(f.fds);
    if (reply instanceof Promise) {
      // A command that waits (commands/migration.ts): its reply goes when it is ready; the
      // header is copied, the frame's view being the receive buffer's.
      const head = { ...h };
      reply.then(
        (r) => this.#answer(head, r),
        (e: unknown) => {
          if (!this.#closed) this.#fail(head, e);
        },
      );
      return;
    }
    this.#answer(h, reply);
  }

  #answer(h: Header, reply: Reply): void {
    if (this.#closed) {
      reply.after?.();
      return;
    }
    this.#trace(h, reply.fds.length > 0 ? `ok +${reply.fds.length} fd` : 'ok');
    if (h.flags & VfioUserFlags.NO_REPLY) {
      reply.after?.();
      return;
    }
    this.#send(h.msgId, h.command, VfioUserFlags.TYPE_REPLY, 0, reply);
  }

  #closeFds(fds: readonly number[]): void {
    for (const fd of fds) closeFd(fd);
  }

  /** The one error path: the header alone with the errno (spec, "Header"). */
  #fail(h: Header, e: unknown): void {
    let errno: number = Errno.EINVAL;
    if (e instanceof VfioError || e instanceof MalformedError) errno = e.errno;
    if (!Number.isInteger(errno) || errno < 1 || errno > VFIO_USER_MAX_ERRNO) errno = Errno.EINVAL;
    const detail = e instanceof Error ? e.message : String(e);
    this.#trace(h, `${errnoName(errno)} (${detail})`);
    if (!(e instanceof VfioError || e instanceof MalformedError)) {
      // A bug, not bad input: say so loudly but keep serving.
      this.options.log?.(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    if (h.flags & VfioUserFlags.NO_REPLY && !isReply(h)) return;
    this.#send(h.msgId & 0xffff, h.command & 0xffff, VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR, errno, {
      chunks: [],
      fds: [],
    });
  }

  #trace(h: Header, outcome: string): void {
    const t = this.options.trace;
    if (!t) return;
    const type = isReply(h) ? 'reply' : 'cmd';
    t(`msg ${h.msgId} ${type} ${vfioUserCommandName(h.command)} ${h.msgSize}B: ${outcome}`);
  }

  #send(msgId: number, command: number, flags: number, error: number, reply: Reply): void {
    this.channel.sendMessage({ msgId, command, flags, error }, reply.chunks, reply.fds, reply.after);
  }

  // -------------------------------------------------------------------------------------------
  // Server-to-client requests
  // -------------------------------------------------------------------------------------------
  #onReply(f: Frame): void {
    const h = f.header;
    const p = this.#pending.get(h.msgId);
    if (!p || p.command !== h.command) {
      // A reply to nothing we asked: refused like any message that is not a command
      // (libvfio-user is_valid_header: "not a command req" -> EINVAL).
      this.#fail(h, new VfioError(Errno.EINVAL, vfioUserCommandName(h.command), 'unexpected reply'));
      return;
    }
    this.#pending.delete(h.msgId);
    clearTimeout(p.timer);
    this.#trace(h, 'reply');
    if (h.flags & VfioUserFlags.ERROR) {
      p.reject(new VfioError(replyErrno(h), vfioUserCommandName(h.command), 'client replied with an error'));
      return;
    }
    p.resolve(f.payload.slice()); // the frame is a view into the receive buffer
  }

  /** Sends a command to the client and resolves with its reply's payload. */
  request(command: number, payload: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new VfioError(Errno.ECONNRESET, vfioUserCommandName(command)));
    let id = this.#nextId;
    for (let i = 0; this.#pending.has(id); i++) {
      if (i > 0xffff) return Promise.reject(new VfioError(Errno.EBUSY, vfioUserCommandName(command)));
      id = (id + 1) & 0xffff;
    }
    this.#nextId = (id + 1) & 0xffff;
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new VfioError(Errno.ETIMEDOUT, vfioUserCommandName(command), 'no reply from the client'));
      }, DMA_REQUEST_TIMEOUT_MS);
      timer.unref();
      this.#pending.set(id, { command, resolve, reject, timer });
      this.#send(id, command, VfioUserFlags.TYPE_COMMAND, 0, { chunks: [payload], fds: [] });
    });
  }

  /** A request inside the DMA window: waits for room, holds `cost` until the reply. */
  async #windowed(command: number, payload: Uint8Array, cost: number): Promise<Uint8Array> {
    await this.dmaWindow.acquire(cost);
    try {
      return await this.request(command, payload);
    } finally {
      this.dmaWindow.release(cost);
    }
  }

  /** The chunk size of DMA requests: DMA_CHUNK, or less if the client negotiated less. */
  get #dmaChunk(): number {
    return Math.min(DMA_CHUNK, this.negotiated?.maxDataXferSize ?? DMA_CHUNK);
  }

  /** DMA_READ of client memory, in chunks; the chunks are outstanding together, in the window. */
  async dmaRead(iova: bigint, length: number): Promise<Uint8Array> {
    const layout = this.negotiated?.dmaLayout ?? 'spec';
    const max = this.#dmaChunk;
    const out = new Uint8Array(length);
    const chunks: Promise<void>[] = [];
    for (let done = 0; done < length; done += max) {
      const at = done;
      const n = Math.min(max, length - at);
      const address = iova + BigInt(at);
      chunks.push(
        this.#windowed(C.DMA_READ, encodeDmaReadRequest({ address, count: n }), n + DMA_REPLY_OVERHEAD).then(
          (reply) => {
            const d = decodeDmaReadReply(reply, layout);
            if (d.address !== address || d.data.length !== n)
              throw new VfioError(Errno.EIO, 'VFIO_USER_DMA_READ', 'reply does not match the request');
            out.set(d.data, at);
          },
        ),
      );
    }
    await settleAll(chunks);
    return out;
  }

  /** DMA_WRITE to client memory, in chunks outstanding together, in the window. */
  async dmaWrite(iova: bigint, data: Uint8Array): Promise<void> {
    const layout = this.negotiated?.dmaLayout ?? 'spec';
    const max = this.#dmaChunk;
    const chunks: Promise<void>[] = [];
    for (let done = 0; done < data.length; done += max) {
      const n = Math.min(max, data.length - done);
      const payload = encodeDmaWriteRequest(
        { address: iova + BigInt(done), data: data.subarray(done, done + n) },
        layout,
      );
      chunks.push(
        this.#windowed(C.DMA_WRITE, payload, DMA_REPLY_OVERHEAD).then((r) => {
          decodeDmaWriteReply(r);
        }),
      );
    }
    await settleAll(chunks);
  }

  // -------------------------------------------------------------------------------------------
  // Teardown
  // -------------------------------------------------------------------------------------------
  /**
   * The client is gone: fail its outstanding requests, drop its DMA mappings (munmap), its
   * interrupts (the core's eventfd references) and its mmap cookies, and reset the device for
   * the next client, as vfio-pci resets a device when its last user closes it
   * (drivers/vfio/pci/vfio_pci_core.c: vfio_pci_core_disable).
   */
  cleanup(reason: CloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.dmaWindow.close();
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new VfioError(Errno.ECONNRESET, vfioUserCommandName(p.command), reason.kind));
    }
    this.#pending.clear();
    const d = this.device;
    // ERR/REQ triggers too, as vfio_pci_core_close_device drops err_trigger and req_trigger:
    // disableAll alone kept the client's eventfds open after it left (found by test/fuzz/server.ts).
    d.irqs.close();
    d.dma.unmapAll();
    this.cookies.releaseAll(d);
    d.reset();
  }

  get closed(): boolean {
    return this.#closed;
  }
}

/** Waits for every chunk (none is left running unobserved), then throws the first failure. */
async function settleAll(chunks: readonly Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(chunks);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
