/**
 * The production CoreEnvironment: BAR and DMA memory in memfds (so a transport can pass them to
 * a peer with SCM_RIGHTS), and real eventfds. Ties src/core (pure) to src/native (syscalls).
 */
import { readlinkSync } from 'node:fs';
import { Errno } from './abi/errno.js';
import type { CoreEnvironment, EventSignal, EventWatch, SharedMemory } from './core/env.js';
import { VfioError } from './errors.js';
import {
  addSeals,
  closeFd,
  dupFd,
  eventfdRead,
  eventfdSignal,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  mmap,
  PROT_READ,
  PROT_WRITE,
  watchFd,
} from './native/index.js';

/**
 * Shared memory in a memfd, mapped once for the process's own use. Sealed against shrinking and
 * growing, so a peer that maps it (a vfio-user server doing DMA) can trust its size, as QEMU's
 * memory-backend-memfd (seal=on) does for guest RAM.
 */
export function allocateShared(name: string, size: number): SharedMemory {
  const fd = memfdCreate(name, size, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  let whole: ReturnType<typeof mmap>;
  try {
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
    whole = mmap(fd, 0n, size, PROT_READ | PROT_WRITE, MAP_SHARED);
  } catch (e) {
    closeFd(fd);
    throw e;
  }
  let open = true;
  return {
    fd,
    size,
    bytes: whole.bytes,
    map(offset, length) {
      const m = mmap(fd, BigInt(offset), length, PROT_READ | PROT_WRITE, MAP_SHARED);
      return { bytes: m.bytes, unmap: () => m.unmap() };
    },
    dup: () => dupFd(fd),
    close() {
      if (!open) return;
      open = false;
      whole.unmap();
      closeFd(fd);
    },
  };
}

/**
 * eventfd_ctx_fdget: EBADF when `fd` is not open, EINVAL when it is not an eventfd. The core keeps
 * its own reference (a dup), so the caller may close its fd at once, as with the kernel.
 */
export function takeEventfd(fd: number): EventSignal {
  const own = refEventfd(fd);
  let open = true;
  return {
    fd: own,
    signal: () => {
      if (open) eventfdSignal(own);
    },
    close: () => {
      if (!open) return;
      open = false;
      closeFd(own);
    },
  };
}

/** eventfd_ctx_fdget's checks, then a reference of our own (a dup). */
function refEventfd(fd: number): number {
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw new VfioError(Errno.EBADF, 'eventfd_ctx_fdget', `fd ${fd}`);
  }
  if (target !== 'anon_inode:[eventfd]')
    throw new VfioError(Errno.EINVAL, 'eventfd_ctx_fdget', `fd ${fd} is ${target}`);
  return dupFd(fd);
}

/**
 * A virqfd (drivers/vfio/virqfd.c): watches our own reference to the eventfd from the event loop
 * and, each time it is readable, reads its counter (virqfd_wakeup: eventfd_ctx_do_read) and calls
 * `onSignal`. libuv's uv_poll_init makes the open file O_NONBLOCK, which the caller's fd shares
 * (QEMU's event notifiers are non-blocking anyway). The watch is unref'd: an armed interrupt
 * never keeps the process alive, the transport's socket does. A count pending when armed fires
 * on the first turn of the loop (vfio_virqfd_enable's vfs_poll check).
 */
export function watchEventfd(fd: number, onSignal: () => void): EventWatch {
  const own = refEventfd(fd);
  let live = true;
  let watch: ReturnType<typeof watchFd>;
  try {
    watch = watchFd(own, { readable: true }, (ev) => {
      if (!live) return;
      if (ev.errno) return; // libuv stopped the handle; stop() still releases it
      if (eventfdRead(own) !== null) onSignal();
    });
  } catch (e) {
    closeFd(own);
    throw e;
  }
  watch.unref();
  return {
    fd: own,
    stop() {
      if (!live) return;
      live = false;
      watch.stop();
      closeFd(own);
    },
  };
}

export function nativeEnvironment(): CoreEnvironment {
  return { allocate: allocateShared, eventfd: takeEventfd, watchEventfd, closeFd };
}
