/**
 * Waiting on raw fds from Node's event loop, through koffi.node.poll (a libuv uv_poll_t; koffi
 * documents it as unstable, see node_modules/koffi/src/koffi/src/uv.cc).
 *
 * koffi 3.3.4 aborts the whole process (napi fatal error, no exception) whenever libuv refuses
 * a poll handle: a bad fd, a regular file, a second handle on a watched fd. `watchFd` therefore
 * checks all of these itself first and throws VfioError instead.
 *
 * libuv rules that apply (uv_poll_t docs, src/unix/poll.c):
 * - uv_poll_init switches the fd to O_NONBLOCK.
 * - One active poll handle per fd: `watchFd` refuses a second one with EBUSY.
 * - Stop the watcher before closing the fd: epoll watches the open file, not the number.
 * - Regular files and directories cannot be watched (epoll says EPERM).
 * - On EPOLLERR libuv stops the handle and reports EBADF; the callback then sees `errno` set
 *   and gets no more events.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { failErrno, lastErrno, libc, type PollHandle } from './libc.js';

/** What to wait for; `readable` alone when nothing is given. */
export interface WatchOptions {
  readable?: boolean;
  writable?: boolean;
  /** Peer closed its writing side (EPOLLRDHUP). */
  disconnect?: boolean;
}

/** What happened; `errno` is 0, or the error libuv reported (the watcher has then stopped). */
export interface FdEvents {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
  errno: number;
}

export interface FdWatch {
  /** Stops watching and releases the libuv handle; idempotent. Call it before closing the fd. */
  stop(): void;
  /** Lets the process exit while this watcher is active (uv_unref). */
  unref(): void;
  /** Undoes `unref()`. */
  ref(): void;
}

// include/uapi/linux/eventpoll.h
const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLLIN = 0x1;
/** struct epoll_event is packed on x86_64: u32 events, u64 data. */
const EPOLL_EVENT_BYTES = 12;

/**
 * Every active watcher, by fd. koffi's PollHandle is only weakly held by its native side: once
 * JS drops it, the garbage collector closes it and events silently stop. Holding each FdWatch
 * (which holds its handle) here until stop() keeps a watcher alive however the caller stores it.
 */
const active = new Map<number, FdWatch>();
const probeEvent = new Uint8Array(new ArrayBuffer(EPOLL_EVENT_BYTES));
new DataView(probeEvent.buffer).setUint32(0, EPOLLIN, true);

/**
 * Asks epoll whether it can watch `fd`, on a throwaway epoll instance: the check libuv's
 * uv_poll_init makes (uv__io_check_fd), done first so that koffi never meets the failure.
 * Throws EBADF for a closed fd, EPERM for one epoll cannot watch (regular files, directories:
 * fs/eventpoll.c ep_insert needs file_can_poll).
 */
function checkPollable(fd: number): void {
  const c = libc();
  const ep = c.epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) failErrno('epoll_create1');
  const r = c.epoll_ctl(ep, EPOLL_CTL_ADD, fd, probeEvent);
  const e = r < 0 ? lastErrno() : 0;
  c.close(ep);
  if (e !== 0) fail(e, 'epoll_ctl', `fd ${fd}`);
}

/**
 * Calls `cb` from the event loop each time `fd` is ready (level-triggered: it fires again until
 * the condition is consumed).
 */
export function watchFd(fd: number, opts: WatchOptions, cb: (ev: FdEvents) => void): FdWatch {
  if (active.has(fd)) fail(Errno.EBUSY, 'watchFd', `fd ${fd} is already watched`);
  checkPollable(fd);
  const c = libc();
  const events = {
    readable: opts.readable ?? !(opts.writable || opts.disconnect),
    writable: opts.writable ?? false,
    disconnect: opts.disconnect ?? false,
  };
  let handle: PollHandle | null;
  // koffi calls back with (status, events), although its index.d.ts declares only (events).
  const onPoll = (status: number, ev: { readable: boolean; writable: boolean; disconnect: boolean }) => {
    cb({
      readable: ev.readable,
      writable: ev.writable,
      disconnect: ev.disconnect,
      errno: status < 0 ? -status : 0,
    });
  };
  try {
    handle = c.koffi.node.poll(fd, events, onPoll as unknown as (ev: unknown) => void);
  } catch (err) {
    fail(Errno.EINVAL, 'uv_poll', err instanceof Error ? err.message : String(err));
  }
  if (!handle) fail(Errno.EINVAL, 'uv_poll', `fd ${fd}`);
  let h: PollHandle | null = handle;
  const watch: FdWatch = {
    stop() {
      if (!h) return;
      h.close();
      h = null;
      active.delete(fd);
    },
    unref() {
      h?.unref();
    },
    ref() {
      h?.ref();
    },
  };
  active.set(fd, watch);
  return watch;
}

/** How many watchers are active (for leak checks in tests). */
export function activeWatchCount(): number {
  return active.size;
}

/**
 * Resolves true once `fd` is readable (or reports an error or hang-up, which a read will then
 * show), false after `timeoutMs` (a negative or infinite timeout waits for ever).
 */
export function waitReadable(fd: number, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const w = watchFd(fd, { readable: true }, () => {
      w.stop();
      if (timer) clearTimeout(timer);
      resolve(true);
    });
    if (timeoutMs >= 0 && Number.isFinite(timeoutMs)) {
      timer = setTimeout(() => {
        w.stop();
        resolve(false);
      }, timeoutMs);
    }
  });
}
