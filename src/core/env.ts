/**
 * What the device core needs from the outside world, as interfaces: shared memory for BAR
 * backing (memfd in production, so transports can hand it out) and eventfds for interrupts.
 * The core never touches native code itself; `src/runtime.ts` supplies the native
 * implementations and `heapEnvironment()` below is a pure in-memory one for tests and fuzzing.
 */
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';

/** A block of shared memory: BAR backing, or client memory for DMA. */
export interface SharedMemory {
  /** An fd a transport can pass to a peer (memfd), or undefined for heap memory. */
  readonly fd: number | undefined;
  readonly size: number;
  /** The whole block, mapped once for the core's own reads and writes. */
  readonly bytes: Uint8Array;
  /** A further mapping of [offset, offset+length) — a real mmap for memfd, a subarray on the heap. */
  map(offset: number, length: number): MemoryMapping;
  /** A new fd naming the same memory (dup), for handing out; undefined on the heap. */
  dup(): number | undefined;
  close(): void;
}

export interface MemoryMapping {
  readonly bytes: Uint8Array;
  unmap(): void;
}

/** Something an interrupt can be signalled through (an eventfd the core took a reference to). */
export interface EventSignal {
  readonly fd: number;
  signal(): void;
  close(): void;
}

/** A watch on an eventfd (the core's side of a virqfd): stop() drops it and its reference. */
export interface EventWatch {
  readonly fd: number;
  stop(): void;
}

export interface CoreEnvironment {
  allocate(name: string, size: number): SharedMemory;
  /**
   * Takes a reference to the eventfd `fd` (the kernel's eventfd_ctx_fdget): EBADF when `fd` is
   * not open, EINVAL when it is not an eventfd.
   */
  eventfd(fd: number): EventSignal;
  /**
   * Takes a reference to the eventfd `fd` (same errors as `eventfd`) and calls `onSignal` each
   * time it is signalled, consuming its counter, as drivers/vfio/virqfd.c does: vfio_virqfd_enable
   * polls the eventfd (a count already pending fires at once) and virqfd_wakeup reads the counter
   * (eventfd_ctx_do_read) before calling the handler. Heap: synchronously from the signal; native:
   * from the event loop.
   */
  watchEventfd(fd: number, onSignal: () => void): EventWatch;
  /** Closes an fd the core handed out (a dma-buf fd). */
  closeFd(fd: number): void;
}

/** A test eventfd: counts signals; a watched one is drained by its watcher on each signal. */
export class HeapEventfd {
  count = 0n;
  /** The watchers (virqfds) on this eventfd. */
  readonly watchers = new Set<() => void>();
  constructor(readonly fd: number) {}
  /** What a write(2) of 1 does: bump the counter, then wake every watcher. */
  signal(): void {
    this.count++;
    this.wake();
  }
  wake(): void {
    if (this.count === 0n || this.watchers.size === 0) return;
    this.count = 0n;
    for (const w of [...this.watchers]) w();
  }
}

/**
 * Pure in-memory environment: memory is ArrayBuffers, "eventfds" are registered numbers.
 * Same semantics as the native one for everything the core can observe.
 */
export function heapEnvironment(): CoreEnvironment & {
  createEventfd(): HeapEventfd;
  openFds(): number;
  /** Watches (virqfds) the core holds. */
  watchCount(): number;
} {
  const eventfds = new Map<number, HeapEventfd>();
  const handedOut = new Set<number>();
  let nextFd = 1000;
  let watches = 0;
  return {
    allocate(_name, size) {
      const bytes = new Uint8Array(size);
      return {
        fd: undefined,
        size,
        bytes,
        map: (offset, length) => ({ bytes: bytes.subarray(offset, offset + length), unmap() {} }),
        dup: () => {
          const fd = nextFd++;
          handedOut.add(fd);
          return fd;
        },
        close() {},
      };
    },
    eventfd(fd) {
      const e = eventfds.get(fd);
      if (!e) throw new VfioError(Errno.EBADF, 'eventfd_ctx_fdget', `fd ${fd}`);
      return {
        fd,
        signal: () => e.signal(),
        close() {},
      };
    },
    watchEventfd(fd, onSignal) {
      const e = eventfds.get(fd);
      if (!e) throw new VfioError(Errno.EBADF, 'eventfd_ctx_fdget', `fd ${fd}`);
      const cb = () => onSignal();
      e.watchers.add(cb);
      watches++;
      let live = true;
      // vfio_virqfd_enable: "Check if there was an event already pending on the eventfd before
      // we registered and trigger it as if we didn't miss it."
      e.wake();
      return {
        fd,
        stop() {
          if (!live) return;
          live = false;
          e.watchers.delete(cb);
          watches--;
        },
      };
    },
    closeFd(fd) {
      handedOut.delete(fd);
    },
    createEventfd() {
      const e = new HeapEventfd(nextFd++);
      eventfds.set(e.fd, e);
      return e;
    },
    openFds: () => handedOut.size,
    watchCount: () => watches,
  };
}
