/**
 * Plain file descriptors: open, close, dup, ioctl, pread/pwrite at 64-bit offsets, memfd, and a
 * few process facts (uid, pid, page size, open fd count). Every failure throws
 * `VfioError(errno, syscall)`.
 */
import { readdirSync } from 'node:fs';
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { failErrno, lastErrno, libc } from './libc.js';

// asm-generic/fcntl.h (x86_64 uses the generic values).
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECTORY = 0o200000;
export const O_CLOEXEC = 0o2000000;

const F_DUPFD_CLOEXEC = 1030;
const F_GETFL = 3;
const F_SETFL = 4;

// include/uapi/linux/memfd.h
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;

/** off_t is signed 64-bit: offsets run from 0 to 2^63 - 1. */
export const MAX_OFFSET = (1n << 63n) - 1n;

const AT_EMPTY_PATH = 0x1000;
const STATX_SIZE = 0x200;
/** sizeof(struct statx); stx_size is the u64 at byte 40 (include/uapi/linux/stat.h). */
const STATX_BYTES = 256;
const STATX_SIZE_OFFSET = 40;
const _SC_PAGESIZE = 30;

/** Throws EINVAL unless `offset` is a valid off_t for `op`. */
export function checkOffset(offset: bigint, op: string): void {
  if (offset < 0n || offset > MAX_OFFSET) fail(Errno.EINVAL, op, `offset ${offset} outside 0..2^63-1`);
}

function checkLength(length: number, op: string): void {
  if (!Number.isSafeInteger(length) || length < 0) fail(Errno.EINVAL, op, `length ${length}`);
}

/** Strings with a NUL would reach the kernel cut short; refuse them. */
export function checkPath(path: string, op: string): void {
  if (path.length === 0 || path.includes('\0')) fail(Errno.EINVAL, op, 'empty path or path with NUL');
}

/** open(2). `flags` from the O_* constants (add O_CLOEXEC yourself); `mode` applies with O_CREAT. */
export function openPath(path: string, flags: number, mode = 0o600): number {
  checkPath(path, 'open');
  const c = libc();
  for (;;) {
    const fd = c.open(path, flags, mode);
    if (fd >= 0) return fd;
    if (lastErrno() !== Errno.EINTR) failErrno('open', path);
  }
}

/**
 * close(2). EINTR is not an error here: Linux releases the descriptor before it can be
 * interrupted, so a retry could close someone else's fd (close(2), "Dealing with error returns").
 */
export function closeFd(fd: number): void {
  if (libc().close(fd) < 0 && lastErrno() !== Errno.EINTR) failErrno('close');
}

/** fcntl(F_DUPFD_CLOEXEC): a new close-on-exec descriptor for the same open file. */
export function dupFd(fd: number): number {
  const r = libc().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) failErrno('fcntl');
  return r;
}

/** Sets or clears O_NONBLOCK on the open file (shared with every dup of it). */
export function setNonBlocking(fd: number, on = true): void {
  const c = libc();
  const fl = c.fcntl(fd, F_GETFL, 0);
  if (fl < 0) failErrno('fcntl');
  const want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  if (want !== fl && c.fcntl(fd, F_SETFL, want) < 0) failErrno('fcntl');
}

/** fcntl.h (linux): file sealing on memfds (memfd_create(2), "File sealing"). */
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;

/** fcntl(F_GET_SEALS): the seals of a memfd; EINVAL for files that do not support sealing. */
export function getSeals(fd: number): number {
  const r = libc().fcntl(fd, F_GET_SEALS, 0);
  if (r < 0) failErrno('fcntl(F_GET_SEALS)');
  return r;
}

/** fcntl(F_ADD_SEALS): needs a memfd created with MFD_ALLOW_SEALING (else EPERM). */
export function addSeals(fd: number, seals: number): void {
  if (libc().fcntl(fd, F_ADD_SEALS, seals) < 0) failErrno('fcntl(F_ADD_SEALS)');
}

const statxBuf = new Uint8Array(new ArrayBuffer(STATX_BYTES));
const statxView = new DataView(statxBuf.buffer);

const STATX_INO = 0x100;
/** stx_ino (u64 at 32), stx_dev_major and stx_dev_minor (u32 at 136 and 140). */
const STATX_INO_OFFSET = 32;
const STATX_DEV_MAJOR_OFFSET = 136;

/** Which file `fd` refers to, as "dev_major:dev_minor:ino" (statx): equal for dups of one file. */
export function fstatIdentity(fd: number): string {
  if (libc().statx(fd, '', AT_EMPTY_PATH, STATX_INO, statxBuf) < 0) failErrno('statx');
  const ino = statxView.getBigUint64(STATX_INO_OFFSET, true);
  const major = statxView.getUint32(STATX_DEV_MAJOR_OFFSET, true);
  const minor = statxView.getUint32(STATX_DEV_MAJOR_OFFSET + 4, true);
  return `${major}:${minor}:${ino}`;
}

/** The file size (st_size) of what `fd` refers to, via statx(AT_EMPTY_PATH). */
export function fstatSize(fd: number): bigint {
  if (libc().statx(fd, '', AT_EMPTY_PATH, STATX_SIZE, statxBuf) < 0) failErrno('statx');
  return statxView.getBigUint64(STATX_SIZE_OFFSET, true);
}

/**
 * ioctl(2). `arg` is a buffer the kernel reads and writes in place (the Uint8Array sees the
 * kernel's writes: koffi passes a pointer to its bytes), an integer, a string passed as a
 * NUL-terminated `char *` (VFIO_GROUP_GET_DEVICE_FD), or null for none (0 is passed).
 * Returns the non-negative result. EINTR is reported, not retried: not every ioctl may be redone.
 */
export function ioctl(fd: number, request: number, arg: Uint8Array | number | string | null): number {
  const c = libc();
  let r: number;
  if (arg === null || arg instanceof Uint8Array) r = c.ioctlPtr(fd, request, arg);
  else if (typeof arg === 'number') r = c.ioctlInt(fd, request, arg);
  else {
    if (arg.includes('\0')) fail(Errno.EINVAL, 'ioctl', 'string argument with NUL');
    r = c.ioctlStr(fd, request, arg);
  }
  if (r < 0) failErrno('ioctl', `request 0x${(request >>> 0).toString(16)}`);
  return r;
}

/**
 * pread(2) of up to `length` bytes at `offset` into a new array. The result is shorter than
 * `length` only when the file ends first (or the driver returns less).
 */
export function pread(fd: number, length: number, offset: bigint): Uint8Array {
  checkLength(length, 'pread');
  const buf = new Uint8Array(length);
  const n = preadInto(fd, buf, offset);
  return n === length ? buf : buf.subarray(0, n);
}

/** pread(2) into `buf` (no allocation); returns the byte count. Retries EINTR. */
export function preadInto(fd: number, buf: Uint8Array, offset: bigint): number {
  checkOffset(offset, 'pread');
  const c = libc();
  for (;;) {
    const n = c.pread(fd, buf, buf.length, offset);
    if (n >= 0) return n;
    if (lastErrno() !== Errno.EINTR) failErrno('pread');
  }
}

/** pwrite(2) of `data` at `offset`; returns the bytes written (may be short). Retries EINTR. */
export function pwrite(fd: number, data: Uint8Array, offset: bigint): number {
  checkOffset(offset, 'pwrite');
  const c = libc();
  for (;;) {
    const n = c.pwrite(fd, data, data.length, offset);
    if (n >= 0) return n;
    if (lastErrno() !== Errno.EINTR) failErrno('pwrite');
  }
}

/** read(2) into `buf`; returns the byte count (0 = end of file), or null on EAGAIN. */
export function readInto(fd: number, buf: Uint8Array): number | null {
  const c = libc();
  for (;;) {
    const n = c.read(fd, buf, buf.length);
    if (n >= 0) return n;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'read');
  }
}

/** write(2) of `data`; returns the bytes written, or null on EAGAIN. */
export function writeFd(fd: number, data: Uint8Array): number | null {
  const c = libc();
  for (;;) {
    const n = c.write(fd, data, data.length);
    if (n >= 0) return n;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'write');
  }
}

/** ftruncate(2) to `length` bytes. */
export function ftruncate(fd: number, length: number | bigint): void {
  const len = BigInt(length);
  checkOffset(len, 'ftruncate');
  if (libc().ftruncate(fd, len) < 0) failErrno('ftruncate');
}

/** <linux/falloc.h>: keep the file size; deallocate the range (reads back zeroes). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

/**
 * fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: [offset, offset + length) reads
 * back as zeroes and its blocks are released. EOPNOTSUPP where the filesystem cannot.
 */
export function punchHole(fd: number, offset: bigint, length: bigint): void {
  checkOffset(offset, 'fallocate');
  if (libc().fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) < 0)
    failErrno('fallocate');
}

/**
 * memfd_create(2) then ftruncate to `size`: anonymous shared memory with an fd, the stand-in
 * for guest RAM and for region backing files. The fd is closed again if ftruncate fails.
 */
export function memfdCreate(name: string, size: number | bigint, flags = MFD_CLOEXEC): number {
  if (name.includes('\0')) fail(Errno.EINVAL, 'memfd_create', 'name with NUL');
  const fd = libc().memfd_create(name, flags);
  if (fd < 0) failErrno('memfd_create');
  try {
    ftruncate(fd, size);
  } catch (err) {
    libc().close(fd);
    throw err;
  }
  return fd;
}

/** getuid(2). */
export function getuid(): number {
  return libc().getuid();
}

/** getpid(2). */
export function getpid(): number {
  return libc().getpid();
}

let pageBytes = 0;

/** sysconf(_SC_PAGESIZE), read once. */
export function pageSize(): number {
  if (pageBytes === 0) {
    const n = libc().sysconf(_SC_PAGESIZE);
    if (n <= 0) failErrno('sysconf');
    pageBytes = n;
  }
  return pageBytes;
}

/**
 * How many descriptors this process has open (entries of /proc/self/fd, less the one the
 * listing itself opens). For leak tests: compare before and after.
 */
export function openFdCount(): number {
  try {
    return readdirSync('/proc/self/fd').length - 1;
  } catch (err) {
    const e = (err as { errno?: number }).errno;
    fail(typeof e === 'number' ? Math.abs(e) : Errno.EIO, 'openFdCount');
  }
}
