/**
 * The server's message loops off libuv (docs/performance.md): a `ThreadLoop` drives the client's
 * SocketChannel itself instead of waiting in libuv's epoll, for a thread that serves nothing
 * else (a worker: src/server/thread.ts).
 *
 * - 'blocking': the socket is put in blocking mode and the loop sleeps in recvmsg itself, so a
 *   request costs one recvmsg and one sendmsg, and the wake-up is the socket's own (measured
 *   faster than epoll's or poll's, which add a syscall and, across CPUs, a slower wake-up).
 * - 'poll': recvmsg with MSG_DONTWAIT in a busy loop, as SPDK's reactors poll: no sleep and no
 *   wake-up on the server's side, at the cost of a core. After `pollIdleMs` without a message
 *   it sleeps as 'blocking' does until the next one.
 *
 * The rest of JavaScript still runs. A thread sleeping in recvmsg cannot run timers, promise
 * continuations, finished thread-pool requests or messages from its parent, so the loop returns
 * to the event loop (one setImmediate turn, which runs everything due) whenever:
 *   - a promise was created or settled while it handled the messages (v8 promise hooks count
 *     them): a device's DMA continuing after `await`, a DMA_READ reply resolving the session's
 *     request, the session arming a request timer — so device work never waits for the next
 *     message;
 *   - libuv's own epoll fd became readable while it had requests in flight: as long as it has
 *     (a disk read, write or fdatasync in the thread pool; src/native/event-loop.ts), the loop
 *     waits in poll(2) on the socket and that fd together, so a device's I/O continues as soon
 *     as it finishes, never a tick later. A polling loop sleeps there too, leaving its CPU to
 *     the thread pool;
 *   - a sleep ran out (SO_RCVTIMEO: LOOP_TICK_MS): timers (the stall limit, DMA request
 *     timeouts) and the parent's messages are served within a tick;
 *   - TURN_INTERVAL_MS passed while busy (a client that never stops sending cannot starve them).
 * Work scheduled with queueMicrotask, process.nextTick, setImmediate or setTimeout alone, with
 * no promise and no libuv request, waits for the next of these turns (a tick at most): a device
 * defers work with a promise (nvme's doorbell: Promise.resolve().then). Passes do not go through
 * the microtask queue themselves: measured, a queueMicrotask per pass costs 0.4-0.5 µs of CPU
 * per message and a quarter of the posted-write rate.
 *
 * Back-pressure (replies queued because the client does not read) is the slow path: poll(2) on
 * the socket for room (and for requests, unless reading is paused), a tick at most.
 *
 * Stop: another thread sets `stop[0]` (Atomics); the loop sees it within a tick and closes the
 * channel as `close()` would ('local'). A blocking recvmsg cannot also watch an eventfd, and
 * poll(2) before every recvmsg would cost the syscall and the slower wake-up this loop avoids.
 */
import { promiseHooks } from 'node:v8';
import {
  type EventLoopProbe,
  eventLoop,
  POLL_WAKE,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLOUT,
  pollOne,
  setNonBlocking,
  setReceiveTimeout,
} from '../native/index.js';
import type { ChannelDriver, SocketChannel } from './channel.js';

/** How a server waits for its client: libuv's epoll (the default), or a ThreadLoop mode. */
export type LoopMode = 'libuv' | 'blocking' | 'poll';

/** Longest sleep in recvmsg (SO_RCVTIMEO) or poll(2) before the loop turns the event loop. */
export const LOOP_TICK_MS = 10;
/** A loop that never sleeps (busy, or polling) still turns the event loop this often. */
export const TURN_INTERVAL_MS = 10;
/** 'poll' spins this long after the last message before it sleeps like 'blocking'. */
export const DEFAULT_POLL_IDLE_MS = 1000;

export interface ThreadLoopOptions {
  readonly mode: 'blocking' | 'poll';
  /** 'poll': spin this long without a message, then sleep until the next (Infinity: never sleep). */
  readonly pollIdleMs?: number;
  /** Set to non-zero (Atomics.store) by another thread to close the channel ('local'). */
  readonly stop?: Int32Array;
  /** Longest sleep before a turn of the event loop (LOOP_TICK_MS): how late a timer may run. */
  readonly tickMs?: number;
}

/** Promises created or settled in this thread since the hooks went in. */
let activity = 0;
let hooked = false;

function countPromises(): void {
  if (hooked) return;
  hooked = true;
  const bump = () => {
    activity++;
  };
  promiseHooks.onInit(bump);
  promiseHooks.onSettled(bump);
}

export class ThreadLoop implements ChannelDriver {
  /** 0 for 'blocking': it never spins. */
  readonly pollIdleMs: number;
  readonly tickMs: number;
  readonly #stop: Int32Array | undefined;

  constructor(o: ThreadLoopOptions) {
    this.tickMs = o.tickMs ?? LOOP_TICK_MS;
    this.pollIdleMs = o.mode === 'poll' ? (o.pollIdleMs ?? DEFAULT_POLL_IDLE_MS) : 0;
    this.#stop = o.stop;
  }

  /** True once another thread asked the loop to stop. */
  get stopping(): boolean {
    return this.#stop !== undefined && Atomics.load(this.#stop, 0) !== 0;
  }

  attach(ch: SocketChannel): void {
    countPromises();
    let uv: EventLoopProbe;
    try {
      uv = eventLoop();
      setNonBlocking(ch.fd, false);
      setReceiveTimeout(ch.fd, this.tickMs);
    } catch (e) {
      ch.close({ kind: 'error', error: e });
      return;
    }
    this.#run(ch, uv);
  }

  /**
   * The loop: passes that each wait (recvmsg, or poll(2)) and handle what came, until one of
   * the reasons above sends it back to the event loop for a turn, after which it goes on.
   */
  #run(ch: SocketChannel, uv: EventLoopProbe): void {
    const spinMs = this.pollIdleMs;
    const turnMs = Math.min(TURN_INTERVAL_MS, this.tickMs);
    // One clock reading per pass, taken after its wait: when the last message came, when the
    // event loop last turned.
    let now = performance.now();
    let lastData = now;
    let lastTurn = now;
    let seen = activity;
    const passes = () => {
      try {
        for (;;) {
          if (ch.closed) return;
          if (this.stopping) {
            ch.close({ kind: 'local' });
            return;
          }
          // The messages handled made or settled a promise (a device's work continues after
          // an await; a request's timer was armed): the event loop turns before the loop waits.
          if (activity !== seen) break;
          let slept = false;
          let woken = false;
          const busy = uv.activeRequests > 0;
          if (ch.wantsWrite || !ch.wantsRead || busy) {
            // Back-pressure, or libuv has requests in flight: poll(2) on the socket, and on
            // libuv's own fd while requests are in flight, so that one finishing (a disk read
            // or write in the thread pool) turns the event loop at once. A polling loop sleeps
            // here too: the thread pool may need its CPU.
            const want = (ch.wantsRead ? POLLIN : 0) | (ch.wantsWrite ? POLLOUT : 0);
            const ev = pollOne(ch.fd, want, this.tickMs, busy ? uv.fd : -1);
            slept = ev === 0;
            woken = (ev & POLL_WAKE) !== 0;
            // An error or hang-up shows in the sendmsg or recvmsg it makes fail.
            if (ev & (POLLOUT | POLLERR | POLLHUP)) ch.flush();
            const n = ev & (POLLIN | POLLERR | POLLHUP) ? ch.receive(false) : 0;
            now = performance.now();
            if (n > 0) lastData = now;
          } else {
            const spin = spinMs > 0 && now - lastData < spinMs;
            const n = ch.receive(!spin);
            now = performance.now();
            if (n > 0) lastData = now;
            else if (!spin) slept = true;
          }
          if (woken || slept || now - lastTurn >= turnMs) break;
        }
        if (!ch.closed) setImmediate(afterTurn);
      } catch (e) {
        // receive and flush close the channel on their own errors; this is a bug's way out.
        ch.close({ kind: 'error', error: e });
      }
    };
    // One turn of the event loop ran: every queued microtask, due timer, finished request and
    // parent message.
    const afterTurn = () => {
      now = performance.now();
      lastTurn = now;
      seen = activity;
      passes();
    };
    setImmediate(afterTurn); // after the caller's own setup: attach returns at once
  }
}
