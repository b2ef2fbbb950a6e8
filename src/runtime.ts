/**
 * The production CoreEnvironment: BAR and DMA memory in memfds (so a transport can pass them to
 * a peer with SCM_RIGHTS), and real eventfds. Ties src/core (pure) to src/native (syscalls).
 */
import { readlinkSync } from 'node:fs';
import { Errno } from './abi/errno.js';
import type { CoreEnvironment, EventSignal, SharedMemory } from './core/env.js';
import { VfioError } from './errors.js';
import {
  addSeals,
  closeFd,
  dupFd,
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
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw new VfioError(Errno.EBADF, 'eventfd_ctx_fdget', `fd ${fd}`);
  }
  if (target !== 'anon_inode:[eventfd]')
    throw new VfioError(Errno.EINVAL, 'eventfd_ctx_fdget', `fd ${fd} is ${target}`);
  const own = dupFd(fd);
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

export function nativeEnvironment(): CoreEnvironment {
  return { allocate: allocateShared, eventfd: takeEventfd, closeFd };
}
