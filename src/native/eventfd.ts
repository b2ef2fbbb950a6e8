/**
 * eventfd(2): the kernel's 64-bit counter fds, used for VFIO interrupts (VFIO_DEVICE_SET_IRQS
 * trigger fds) and for waking the event loop.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { failErrno, lastErrno, libc } from './libc.js';

// include/uapi/linux/eventfd.h (values of O_CLOEXEC and O_NONBLOCK)
export const EFD_SEMAPHORE = 0o1;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

/** The largest count the kernel accepts in one write (0xfffffffffffffffe, eventfd(2)). */
export const EVENTFD_MAX = 0xfffffffffffffffen;

// One u64 for every read and write; calls are synchronous, so sharing it is safe.
const counter = new BigUint64Array(new ArrayBuffer(8));

/** eventfd(2) with a zero counter; non-blocking and close-on-exec unless `flags` says otherwise. */
export function eventfdCreate(flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  const fd = libc().eventfd(0, flags);
  if (fd < 0) failErrno('eventfd');
  return fd;
}

/**
 * Adds `n` to the counter (write(2) of a u64). Throws EAGAIN when a non-blocking eventfd would
 * overflow, EINVAL for n outside 1..EVENTFD_MAX.
 */
export function eventfdSignal(fd: number, n = 1n): void {
  if (n < 1n || n > EVENTFD_MAX) fail(Errno.EINVAL, 'eventfd_write', `count ${n}`);
  counter[0] = n;
  const c = libc();
  for (;;) {
    const r = c.write(fd, counter, 8);
    if (r === 8) return;
    if (r >= 0) fail(Errno.EIO, 'write', `short eventfd write (${r})`);
    if (lastErrno() !== Errno.EINTR) failErrno('write');
  }
}

/**
 * Reads and resets the counter (or takes 1 with EFD_SEMAPHORE); null when it is zero on a
 * non-blocking eventfd (EAGAIN).
 */
export function eventfdRead(fd: number): bigint | null {
  const c = libc();
  for (;;) {
    const r = c.read(fd, counter, 8);
    if (r === 8) return counter[0]!;
    if (r >= 0) fail(Errno.EIO, 'read', `short eventfd read (${r})`);
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'read');
  }
}
