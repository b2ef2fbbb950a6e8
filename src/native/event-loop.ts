/**
 * This thread's libuv event loop, as a loop that waits outside it needs to see it (the server's
 * thread loop, src/server/loop.ts, sleeps in recvmsg or poll(2) instead of in libuv):
 *
 * - `fd`: the loop's backend fd (uv_backend_fd: the epoll fd libuv waits in). poll(2) finds it
 *   readable when libuv has an event to run: a thread-pool request finished (an fs read, write
 *   or fdatasync posts to the loop's async handle, which epoll watches), a message came from
 *   another thread, an fd it watches is ready. Waiting on it beside a socket wakes for both.
 * - `activeRequests`: libuv requests in flight (fs requests in the thread pool, writes,
 *   connects, DNS lookups): uv_loop_t's public `active_reqs.count`, what uv_loop_alive reads.
 *   Read from the struct in place (no call, nothing allocated).
 *
 * The loop comes from Node itself: napi_get_uv_event_loop on koffi's napi_env, which is this
 * thread's (a worker has its own loop and env), and uv_backend_fd; both are exported by the
 * node executable (koffi.load(null)).
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { libc, viewAt } from './libc.js';

/**
 * offsetof(uv_loop_t, active_reqs.count) on x86_64, from uv.h's struct uv_loop_s: `void *data`
 * (0), `unsigned int active_handles` (8, padded), `struct uv__queue handle_queue` (16: two
 * pointers), then the union `active_reqs` (32). Public fields, stable across libuv 1.x;
 * test/native/event-loop.test.ts checks the count moves with an fs request in flight.
 */
const UV_LOOP_ACTIVE_REQS = 32;

export interface EventLoopProbe {
  /** uv_backend_fd(loop): readable when libuv has an event to run. */
  readonly fd: number;
  /** Requests libuv has in flight (a thread-pool fs request among them). */
  readonly activeRequests: number;
}

class Probe implements EventLoopProbe {
  readonly #reqs: Uint32Array;
  constructor(
    readonly fd: number,
    loop: bigint,
  ) {
    this.#reqs = new Uint32Array(viewAt(loop, UV_LOOP_ACTIVE_REQS + 4), UV_LOOP_ACTIVE_REQS, 1);
  }
  get activeRequests(): number {
    return this.#reqs[0]!;
  }
}

/** One per thread: this module is instantiated once per thread, as the loop is. */
let probe: EventLoopProbe | undefined;

/** This thread's event loop. */
export function eventLoop(): EventLoopProbe {
  if (probe) return probe;
  const k = libc().koffi;
  const self = k.load(null);
  const getLoop = self.func('int napi_get_uv_event_loop(void *env, _Out_ void **loop)');
  const backendFd = self.func('int uv_backend_fd(void *loop)');
  const out: [unknown] = [null];
  const status = getLoop(k.node.env, out) as number;
  const loop = out[0];
  if (status !== 0 || typeof loop !== 'bigint' || loop === 0n)
    fail(Errno.EINVAL, 'napi_get_uv_event_loop', `status ${status}`);
  const fd = backendFd(loop) as number;
  if (fd < 0) fail(Errno.EBADF, 'uv_backend_fd', `fd ${fd}`);
  probe = new Probe(fd, loop);
  return probe;
}
