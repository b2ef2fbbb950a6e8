/**
 * Linux errno values used by vfio-ts (asm-generic/errno-base.h, asm-generic/errno.h).
 * Only numbers: the kernel, libvfio-user and the vfio-user wire all carry these.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  EPIPE: 32,
  ENOSYS: 38,
  ENOMSG: 42,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  /** Kernel-internal (include/linux/errno.h), returned by vfio-user servers for "not supported". */
  ENOTSUPP: 524,
} as const;

export type ErrnoName = keyof typeof Errno;

const byNumber = new Map<number, ErrnoName>(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([name, value]) => [value, name]),
);

/** `EINVAL` for 22; `errno 4242` for a number this table does not name. */
export function errnoName(errno: number): string {
  return byNumber.get(errno) ?? `errno ${errno}`;
}
