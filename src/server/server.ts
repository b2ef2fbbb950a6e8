/**
 * A vfio-user server for one device (a DevicePort: VfioPciDevice, src/core/device.ts) (QEMU docs/interop/vfio-user.rst, "Socket
 * Transport"): it listens on a UNIX stream socket and serves one client at a time, client after
 * client, until stopped. While a client is connected the listening socket is not watched, so the
 * next client waits in the listen backlog (libvfio-user also serves a single client).
 *
 * A client that breaks the stream (a framing error) or goes away is closed, everything it held
 * is released (Session.cleanup), the device stays, and the next client is accepted.
 */
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';
import {
  closeFd,
  type FdWatch,
  type PeerCred,
  peerCred,
  unixAccept,
  unixListen,
  watchFd,
} from '../native/index.js';
import type { DmaLayout } from '../wire/vfio-user.js';
import { type CloseReason, SocketChannel } from './channel.js';
import type { DevicePort } from './device-port.js';
import { resolveLimits, type ServerLimits } from './limits.js';
import { type LoopMode, ThreadLoop } from './loop.js';
import { Session } from './session.js';

export interface ServerOptions {
  /** Connect/disconnect lines (and, with `verbose`, one line per message). */
  readonly log?: (line: string) => void;
  readonly verbose?: boolean;
  /** DMA_READ/DMA_WRITE layout; default 'auto' (the spec's, what QEMU 11.1 speaks). */
  readonly dmaLayout?: DmaLayout | 'auto';
  /** Per-client limits (src/server/limits.ts, docs/robustness.md); defaults for what is left out. */
  readonly limits?: Partial<ServerLimits>;
  /**
   * Accept only peers with one of these uids (SO_PEERCRED, read at connect time). Others are
   * closed at once, before any byte is read. Absent: any peer the socket's 0600 mode lets in.
   */
  readonly allowUids?: readonly number[];
  /**
   * How the client's socket is waited for (src/server/loop.ts): 'libuv' (the default: epoll in
   * the event loop, shared with everything else in the thread), or a loop of its own,
   * 'blocking' (sleeping in recvmsg) or 'poll' (spinning on it). The last two hold the thread
   * while a client is connected and turn its event loop only when work is pending: use them in
   * a thread that serves nothing else. In a worker, use ThreadedServer (src/server/thread.ts),
   * which keeps libuv's poll out of it (listen() here watches the socket with it).
   */
  readonly loop?: LoopMode;
  /** 'poll': how long it spins after the last message before it sleeps (DEFAULT_POLL_IDLE_MS). */
  readonly pollIdleMs?: number;
  /** A thread loop's stop flag, set (Atomics) by another thread: the client is disconnected. */
  readonly stopFlag?: Int32Array;
  /** A thread loop's longest sleep before it runs timers and messages (LOOP_TICK_MS). */
  readonly loopTickMs?: number;
  /** Told of every client served, refused, and gone (ThreadedServer relays them). */
  readonly events?: ServerEvents;
}

export interface ServerEvents {
  connected?(id: number, peer: PeerCred | undefined): void;
  refused?(id: number, peer: PeerCred | undefined): void;
  disconnected?(id: number, reason: CloseReason, messages: number): void;
}

export interface ClientInfo {
  readonly id: number;
  readonly peer: PeerCred | undefined;
  readonly session: Session;
}

export class VfioUserServer {
  #listenFd: number | undefined;
  #listenWatch: FdWatch | undefined;
  #client: (ClientInfo & { channel: SocketChannel }) | undefined;
  #nextId = 1;
  #stopped = false;
  #idleWaiters: (() => void)[] = [];
  /** Clients served so far (connected ones included). */
  served = 0;
  /** Connections closed at once because their uid is not allowed. */
  refused = 0;
  /** The limits every client gets. */
  readonly limits: ServerLimits;
  /** How the last client's connection ended. */
  lastClose: CloseReason | undefined;
  /** The thread loop that drives each client's channel, when `loop` is not 'libuv'. */
  readonly #driver: ThreadLoop | undefined;

  constructor(
    readonly device: DevicePort,
    readonly options: ServerOptions = {},
  ) {
    this.limits = resolveLimits(options.limits);
    const mode = options.loop ?? 'libuv';
    this.#driver =
      mode === 'libuv'
        ? undefined
        : new ThreadLoop({
            mode,
            ...(options.pollIdleMs !== undefined ? { pollIdleMs: options.pollIdleMs } : {}),
            ...(options.stopFlag !== undefined ? { stop: options.stopFlag } : {}),
            ...(options.loopTickMs !== undefined ? { tickMs: options.loopTickMs } : {}),
          });
  }

  get client(): ClientInfo | undefined {
    return this.#client;
  }

  /** Listens at `path` (mode 0600). The caller makes sure no live socket is there. */
  listen(path: string): void {
    if (this.#listenFd !== undefined) throw new VfioError(Errno.EBUSY, 'listen', 'already listening');
    this.#listenFd = unixListen(path, { mode: 0o600 });
    this.#watchListen();
  }

  #watchListen(): void {
    if (this.#listenFd === undefined || this.#listenWatch || this.#client || this.#stopped) return;
    if (this.#driver?.stopping) return;
    this.#listenWatch = watchFd(this.#listenFd, { readable: true }, () => this.#accept());
  }

  #accept(): void {
    if (this.#listenFd === undefined || this.#client) return;
    let fd: number | null;
    try {
      fd = unixAccept(this.#listenFd);
    } catch (e) {
      this.#log(`accept failed: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (fd === null) return;
    this.#listenWatch?.stop();
    this.#listenWatch = undefined;
    try {
      this.adopt(fd);
    } catch (e) {
      // adopt released the connection; keep accepting.
      this.#log(`serving a client failed: ${e instanceof Error ? e.message : String(e)}`);
      this.#watchListen();
    }
  }

  /**
   * Serves an already connected socket (a socketpair end in tests). The server owns `fd` from
   * now on. EBUSY while another client is being served.
   */
  adopt(fd: number): ClientInfo {
    if (this.#client || this.#stopped) {
      closeFd(fd);
      throw new VfioError(Errno.EBUSY, 'adopt', this.#stopped ? 'server stopped' : 'a client is connected');
    }
    const id = this.#nextId++;
    let peer: PeerCred | undefined;
    try {
      peer = peerCred(fd);
    } catch {
      peer = undefined;
    }
    const allow = this.options.allowUids;
    if (allow !== undefined && (peer === undefined || !allow.includes(peer.uid))) {
      closeFd(fd);
      this.refused++;
      this.options.events?.refused?.(id, peer);
      this.#log(`client ${id} refused: uid ${peer?.uid ?? 'unknown'} is not in --allow-uid`);
      throw new VfioError(Errno.EACCES, 'adopt', `uid ${peer?.uid ?? 'unknown'} not allowed`);
    }
    const verbose = this.options.verbose && this.options.log;
    let session: Session | undefined;
    let channel: SocketChannel;
    try {
      channel = new SocketChannel(
        fd,
        {
          onFrame: (f) => session!.onFrame(f),
          onClose: (reason) => this.#closed(id, reason),
          onBytes: (b, v, at, size) => session!.onBytes(b, v, at, size),
        },
        this.limits,
        this.#driver,
      );
    } catch (e) {
      // We own `fd` from the moment adopt is called: a failure before the channel owns it
      // closes it here (it leaked one fd per connection).
      closeFd(fd);
      throw e;
    }
    try {
      session = new Session(this.device, channel, {
        limits: this.limits,
        ...(this.options.dmaLayout !== undefined ? { dmaLayout: this.options.dmaLayout } : {}),
        log: (l: string) => this.#log(`client ${id}: ${l}`),
        ...(verbose ? { trace: (l: string) => this.#log(`client ${id}: ${l}`) } : {}),
      });
    } catch (e) {
      channel.close({ kind: 'error', error: e }); // closes the fd; #closed sees no client
      throw e;
    }
    const info = { id, peer, session, channel };
    this.#client = info;
    this.served++;
    this.#log(`client ${id} connected${peer ? ` (pid ${peer.pid}, uid ${peer.uid})` : ''}`);
    this.options.events?.connected?.(id, peer);
    try {
      channel.start();
    } catch (e) {
      channel.close({ kind: 'error', error: e }); // runs #closed: the server is free again
      throw e;
    }
    return info;
  }

  #closed(id: number, reason: CloseReason): void {
    const c = this.#client;
    if (!c || c.id !== id) return;
    this.#client = undefined;
    this.lastClose = reason;
    try {
      c.session.cleanup(reason);
    } catch (e) {
      this.#log(`client ${id} cleanup failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    const why =
      reason.kind === 'eof'
        ? 'closed the connection'
        : reason.kind === 'framing'
          ? `broke the stream (${reason.error.message})`
          : reason.kind === 'local'
            ? 'disconnected by the server'
            : `connection failed (${reason.error instanceof Error ? reason.error.message : String(reason.error)})`;
    this.#log(`client ${id} disconnected: ${why}; ${c.session.messages} messages`);
    this.options.events?.disconnected?.(id, reason, c.session.messages);
    for (const w of this.#idleWaiters.splice(0)) w();
    this.#watchListen();
  }

  /** Resolves when no client is connected. */
  idle(): Promise<void> {
    if (!this.#client) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Disconnects the client (if any) and stops listening. The device stays open. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#client?.channel.close({ kind: 'local' });
    this.#listenWatch?.stop();
    this.#listenWatch = undefined;
    if (this.#listenFd !== undefined) closeFd(this.#listenFd);
    this.#listenFd = undefined;
  }

  #log(line: string): void {
    this.options.log?.(line);
  }
}
