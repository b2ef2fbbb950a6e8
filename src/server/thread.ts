/**
 * ThreadedServer: a VfioUserServer in a worker thread, with a message loop of its own there
 * (src/server/loop.ts: 'blocking' by default, or 'poll'), while this thread keeps the command
 * line, logging and signals. docs/performance.md says why: the client's requests then cost one
 * recvmsg and one sendmsg and the socket's own wake-up, not a turn of libuv's event loop.
 *
 * The device lives in the worker (a device is JavaScript objects: it cannot be shared across
 * threads), so it is named by a module and one of its exports (a DeviceModule,
 * src/server/device-module.ts): the worker imports the module and builds the device there, from a
 * definition (`device` options) or by calling a function with `arg` (copied by structured clone).
 * When the server stops the device is closed and its work (a disk's flush) settles before
 * `stop()` resolves. Everything else is the VfioUserServer's own: limits, allowed uids, DMA layout, logging.
 * Fds cross freely (one process, one fd table): `adopt` hands the worker an fd, the interrupt
 * eventfds, DMA memfds and BAR fds of its clients are the process's.
 *
 * This side listens and accepts (one client at a time: while one is served the listening socket
 * is not watched, as VfioUserServer does) and hands each connection to the worker, which checks
 * the peer's uid and serves it; the worker reports every client that connects, is refused or
 * goes (`served`, `refused`, `client`, `lastClose`, `idle()`). The worker never waits in libuv's
 * poll: koffi 3.3.4 crashes the process (SIGSEGV) when it exits with a uv_poll handle open in a
 * worker, so the worker only ever blocks in its own loop (src/server/loop.ts), and only the
 * thread loops are offered here. `stop()` sets a shared flag the worker's loop sees within a
 * tick (LOOP_TICK_MS), then asks it to close the device and exit. An error the worker cannot
 * handle, or its exiting on its own, goes to `onError` once: by default this thread's uncaught
 * error. A server whose worker died stops listening and removes its socket (while the path still
 * holds it), refuses `listen` and `adopt` (EIO), closes the connections the worker held or never
 * took, and is idle; `stop()` still resolves.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';
import { closeFd, type FdWatch, type PeerCred, unixAccept, unixListen, watchFd } from '../native/index.js';
import type { CloseReason } from './channel.js';
import { type DeviceModule, moduleLocation, type PlainDeviceOptions } from './device-module.js';
import { resolveLimits, type ServerLimits } from './limits.js';
import type { LoopMode } from './loop.js';
import type { ServerOptions } from './server.js';

/** The loops a worker can run (not libuv's: see above). */
export type ThreadLoopMode = Exclude<LoopMode, 'libuv'>;

export interface ThreadedServerOptions
  extends Pick<
    ServerOptions,
    'log' | 'verbose' | 'dmaLayout' | 'limits' | 'allowUids' | 'pollIdleMs' | 'loopTickMs'
  > {
  /** The worker's loop: 'blocking' (default) or 'poll'. */
  readonly loop?: ThreadLoopMode;
  /** How the worker builds a definition the module exports (profile, cookies, ...). */
  readonly device?: PlainDeviceOptions;
  /**
   * The worker failed (an uncaught error there, or it exited on its own): the server is gone.
   * Default: the error is thrown as this thread's uncaught error (exit status 1), as it would
   * have been with the server in this thread.
   */
  readonly onError?: (e: Error) => void;
}

/** How a client's connection ended, as the worker reports it. */
export interface CloseSummary {
  readonly kind: CloseReason['kind'];
  /** The error's message, for 'framing' and 'error'. */
  readonly error?: string;
}

/** @internal The worker's start data. */
export interface ThreadWorkerData {
  readonly vfioTsServer: true;
  readonly device: { module: string; export: string; arg: unknown };
  readonly deviceOptions: PlainDeviceOptions;
  readonly options: Pick<
    ServerOptions,
    'verbose' | 'dmaLayout' | 'limits' | 'allowUids' | 'pollIdleMs' | 'loopTickMs'
  >;
  readonly loop: ThreadLoopMode;
  readonly stop: SharedArrayBuffer;
}

/** @internal Requests to the worker, each answered by a 'done' event with its seq. */
export type ThreadRequest = RequestBody & { readonly seq: number };
type RequestBody = { readonly op: 'adopt'; readonly fd: number } | { readonly op: 'stop' };

type WireError = { errno: number; op: string; message: string };

/** @internal What the worker reports. */
export type WorkerEvent =
  | { readonly ev: 'ready'; readonly name: string }
  | { readonly ev: 'failed'; readonly error: WireError }
  | { readonly ev: 'done'; readonly seq: number; readonly error?: WireError }
  /** An adopt request reached the worker, which owns its fd from now on. */
  | { readonly ev: 'taken'; readonly seq: number }
  | { readonly ev: 'log'; readonly line: string }
  | { readonly ev: 'connected'; readonly id: number; readonly peer?: PeerCred }
  | { readonly ev: 'refused'; readonly id: number }
  | { readonly ev: 'closed'; readonly id: number; readonly reason: CloseSummary; readonly messages: number };

/** How long a stopped worker may take to exit on its own before it is terminated. */
export const STOP_GRACE_MS = 2000;

const asError = (e: WireError) => {
  const err = new VfioError(e.errno, e.op);
  err.message = e.message;
  return err;
};

export class ThreadedServer {
  /** The device's name (its definition's; 'device' for a module function that built it). */
  readonly deviceName: string;
  readonly limits: ServerLimits;
  readonly loop: ThreadLoopMode;
  /** Clients served so far (connected ones included). */
  served = 0;
  /** Connections closed at once because their uid is not allowed. */
  refused = 0;
  /** How the last client's connection ended. */
  lastClose: CloseSummary | undefined;
  /** The client being served, if any. */
  client: { readonly id: number; readonly peer: PeerCred | undefined } | undefined;

  readonly #worker: Worker;
  readonly #stop: Int32Array;
  readonly #exited: Promise<void>;
  #seq = 0;
  #pending = new Map<number, { resolve(): void; reject(e: Error): void }>();
  /** adopt requests not answered yet: the server is not idle while one is on its way. */
  #adopting = 0;
  #idleWaiters: (() => void)[] = [];
  #stopping: Promise<void> | undefined;
  #listenFd: number | undefined;
  #listenWatch: FdWatch | undefined;
  /** The worker has exited. */
  #gone = false;
  /** The connected client's socket, which the worker owns (closed here if the worker dies). */
  #clientFd: number | undefined;
  /** adopt requests posted and not yet taken by the worker (seq to fd): ours to close if it dies. */
  readonly #untaken = new Map<number, number>();
  /** The fd of the adopt the worker took and has not answered yet. */
  #taking: number | undefined;
  /** Why the worker failed, once it has (its death has then been reported). */
  #failure: Error | undefined;
  /** The socket listen() created: its path, device and inode (removed only while it is ours). */
  #listenPath: { path: string; dev: number; ino: number } | undefined;
  readonly #log: ((line: string) => void) | undefined;

  private constructor(
    worker: Worker,
    deviceName: string,
    exited: Promise<number>,
    stop: Int32Array,
    limits: ServerLimits,
    loop: ThreadLoopMode,
    options: ThreadedServerOptions,
  ) {
    this.#log = options.log;
    this.#worker = worker;
    this.deviceName = deviceName;
    this.#stop = stop;
    this.limits = limits;
    this.loop = loop;
    // The worker's death, reported once: it stops listening at once (no client is accepted
    // only to be closed), the rest waits for its exit.
    const fail = (e: Error) => {
      if (this.#failure) return;
      this.#failure = e;
      this.#closeListen(true);
      if (options.onError) options.onError(e);
      else
        queueMicrotask(() => {
          throw e;
        });
    };
    this.#exited = exited.then((code) => {
      this.#gone = true;
      // Fds are the process's, not the thread's: what the dead worker held is closed here.
      // Node emits 'exit' only after every message the worker posted (lib/internal/worker.js,
      // Worker [kOnExit]: drainMessagePort(kPublicPort) first, Node 20), so whatever has not
      // been said 'taken' by now never was; 'error' comes through another port (kPort) with
      // no order against these messages, which is why this waits for 'exit'.
      // A client connected: closed, so it sees the end of the stream instead of waiting for ever.
      if (this.#clientFd !== undefined) closeFd(this.#clientFd);
      this.#clientFd = undefined;
      this.client = undefined;
      // Connections handed over that the worker never took.
      for (const fd of this.#untaken.values()) closeFd(fd);
      this.#untaken.clear();
      // One it took and died handling, not connected: its fate is unknown (it may be closed and
      // its number reused), so it is left alone. Only a worker terminated mid-adopt leaves one.
      if (this.#taking !== undefined)
        this.#log?.(`the worker died handling connection fd ${this.#taking}; left as it is`);
      this.#taking = undefined;
      // A request the worker did not answer never will.
      const gone = new VfioError(Errno.EIO, 'ThreadedServer', `the server's worker exited (code ${code})`);
      for (const p of this.#pending.values()) p.reject(this.#failure ?? gone);
      this.#pending.clear();
      if (!this.#stopping) fail(gone); // closes and removes the listening socket
      this.#maybeIdle();
    });
    worker.on('message', (m: WorkerEvent) => this.#event(m, options));
    worker.on('error', fail);
  }

  /** Starts the worker and makes the device there; resolves once it is ready to serve. */
  static async start(device: DeviceModule, options: ThreadedServerOptions = {}): Promise<ThreadedServer> {
    const limits = resolveLimits(options.limits); // refused here, before any thread starts
    const loop = options.loop ?? 'blocking';
    if ((loop as LoopMode) === 'libuv')
      throw new VfioError(Errno.EINVAL, 'ThreadedServer', 'a worker runs a thread loop, not libuv');
    const stop = new SharedArrayBuffer(4);
    const data: ThreadWorkerData = {
      vfioTsServer: true,
      device: { module: moduleLocation(device).url, export: device.export ?? 'default', arg: device.arg },
      deviceOptions: options.device ?? {},
      options: {
        ...(options.verbose !== undefined ? { verbose: options.verbose } : {}),
        ...(options.dmaLayout !== undefined ? { dmaLayout: options.dmaLayout } : {}),
        ...(options.limits !== undefined ? { limits: options.limits } : {}),
        ...(options.allowUids !== undefined ? { allowUids: options.allowUids } : {}),
        ...(options.pollIdleMs !== undefined ? { pollIdleMs: options.pollIdleMs } : {}),
        ...(options.loopTickMs !== undefined ? { loopTickMs: options.loopTickMs } : {}),
      },
      loop,
      stop,
    };
    let worker: Worker;
    try {
      worker = new Worker(new URL('./thread-worker.js', import.meta.url), { workerData: data });
    } catch (e) {
      // structuredClone's DataCloneError: a function (or the like) in `arg` or `device`.
      throw new VfioError(
        Errno.EINVAL,
        'ThreadedServer',
        `the device's arg and options must be plain data to reach the worker: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    // Listened for from the start: a worker that dies before the server object exists is seen.
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    const ready = new Promise<string>((resolve, reject) => {
      const onMessage = (m: WorkerEvent) => {
        if (m.ev === 'log') options.log?.(m.line);
        if (m.ev !== 'ready' && m.ev !== 'failed') return;
        worker.off('message', onMessage);
        worker.off('error', reject);
        if (m.ev === 'ready') resolve(m.name);
        else reject(asError(m.error));
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
    let name: string;
    try {
      name = await ready;
    } catch (e) {
      await worker.terminate();
      throw e;
    }
    return new ThreadedServer(worker, name, exited, new Int32Array(stop), limits, loop, options);
  }

  #event(m: WorkerEvent, options: ThreadedServerOptions): void {
    switch (m.ev) {
      case 'log':
        options.log?.(m.line);
        return;
      case 'taken':
        this.#taking = this.#untaken.get(m.seq);
        this.#untaken.delete(m.seq);
        return;
      case 'connected':
        // Its socket is the one the worker is taking (adopts are handled one at a time, in order).
        this.#clientFd = this.#taking;
        this.client = { id: m.id, peer: m.peer };
        this.served++;
        return;
      case 'refused':
        this.refused++;
        return;
      case 'closed':
        if (this.client?.id === m.id) {
          this.client = undefined;
          this.#clientFd = undefined;
        }
        this.lastClose = m.reason;
        this.#maybeIdle();
        return;
      case 'done': {
        this.#taking = undefined;
        const p = this.#pending.get(m.seq);
        this.#pending.delete(m.seq);
        if (m.error) p?.reject(asError(m.error));
        else p?.resolve();
        return;
      }
      default:
        return;
    }
  }

  #request(r: RequestBody): Promise<void> {
    if (this.#gone)
      return Promise.reject(new VfioError(Errno.EIO, 'ThreadedServer', "the server's worker is gone"));
    const seq = ++this.#seq;
    if (r.op === 'adopt') this.#untaken.set(seq, r.fd);
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject });
      this.#worker.postMessage({ ...r, seq });
    });
  }

  /** Listens at `path` (mode 0600) and hands each client to the worker in turn. The caller makes sure no live socket is there. */
  listen(path: string): void {
    if (this.#failure || this.#gone) throw new VfioError(Errno.EIO, 'listen', "the server's worker is gone");
    if (this.#listenFd !== undefined || this.#stopping)
      throw new VfioError(Errno.EBUSY, 'listen', this.#stopping ? 'server stopped' : 'already listening');
    this.#listenFd = unixListen(path, { mode: 0o600 });
    try {
      const st = lstatSync(path);
      this.#listenPath = { path, dev: st.dev, ino: st.ino };
    } catch {
      // Removed already by someone else: nothing of ours to remove later.
    }
    this.#watchListen();
  }

  /**
   * Stops listening; with `unlink` (the worker died) the socket is removed too, while the path
   * still holds ours (serveDevice's check): nobody would accept there again.
   */
  #closeListen(unlink: boolean): void {
    this.#listenWatch?.stop();
    this.#listenWatch = undefined;
    if (this.#listenFd !== undefined) closeFd(this.#listenFd);
    this.#listenFd = undefined;
    const ours = this.#listenPath;
    this.#listenPath = undefined;
    if (!unlink || !ours) return;
    try {
      const st = lstatSync(ours.path);
      if (st.isSocket() && st.dev === ours.dev && st.ino === ours.ino) unlinkSync(ours.path);
    } catch {
      // already gone
    }
  }

  #watchListen(): void {
    if (this.#listenFd === undefined || this.#listenWatch || !this.#idle || this.#stopping) return;
    this.#listenWatch = watchFd(this.#listenFd, { readable: true }, () => this.#accept());
  }

  #accept(): void {
    if (this.#listenFd === undefined || !this.#idle) return;
    let fd: number | null;
    try {
      fd = unixAccept(this.#listenFd);
    } catch (e) {
      this.#log?.(`accept failed: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    if (fd === null) return;
    this.#listenWatch?.stop();
    this.#listenWatch = undefined;
    // A refused or failed hand-over is logged by the worker; the next client is then accepted.
    this.adopt(fd).catch(() => {});
  }

  /**
   * Serves an already connected socket; the worker owns `fd` from now on. Resolves once it
   * is served (or rejects: EBUSY with a client connected, EACCES for a uid not allowed).
   */
  adopt(fd: number): Promise<void> {
    if (this.#stopping) {
      closeFd(fd);
      return Promise.reject(new VfioError(Errno.EBUSY, 'adopt', 'server stopped'));
    }
    if (this.#gone || this.#failure) {
      // Nobody is left to take it (the worker failed or exited on its own).
      closeFd(fd);
      return Promise.reject(new VfioError(Errno.EIO, 'adopt', "the server's worker is gone"));
    }
    this.#adopting++;
    const done = () => {
      this.#adopting--;
      this.#maybeIdle();
    };
    const p = this.#request({ op: 'adopt', fd });
    p.then(done, done);
    return p;
  }

  get #idle(): boolean {
    return this.#gone || (this.client === undefined && this.#adopting === 0);
  }

  #maybeIdle(): void {
    if (!this.#idle) return;
    for (const w of this.#idleWaiters.splice(0)) w();
    this.#watchListen();
  }

  /**
   * Resolves when no client is connected (nor being handed over by `adopt`); also once the worker
   * is gone (its death goes to `onError`): no client can be connected then, and a caller waiting
   * for its client to go must not wait for ever. It never rejects.
   */
  idle(): Promise<void> {
    if (this.#idle) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Disconnects the client, stops listening, closes the device; resolves once the worker is gone. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      Atomics.store(this.#stop, 0, 1);
      this.#closeListen(false);
      try {
        // A worker gone (it failed, or exited as it answered) has nothing left to stop.
        if (!this.#gone)
          await this.#request({ op: 'stop' }).catch((e: unknown) => {
            if (!this.#gone) throw e;
          });
      } finally {
        // The worker ends once its event loop is empty; a handle left open must not hold us.
        const grace = setTimeout(() => void this.#worker.terminate(), STOP_GRACE_MS);
        await this.#exited;
        clearTimeout(grace);
        this.client = undefined;
        this.#maybeIdle();
      }
    })();
    return this.#stopping;
  }
}
