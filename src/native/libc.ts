/**
 * The one place that declares libc functions through koffi (x86_64 Linux, glibc >= 2.28).
 *
 * koffi and libc are loaded lazily, once, on the first call of `libc()`; importing this module
 * costs nothing. Every declaration is made once; wrappers in this directory call the typed
 * table below and turn a failure into `VfioError(errno, syscall)` with `failErrno`.
 *
 * Type choices: `intptr_t` for `ssize_t` and for addresses (koffi hands back a JS number, which
 * holds any x86_64 user address exactly; `void *` results would come back as bigint), `int64_t`
 * for `off_t` (a bigint goes through unchanged), `void *` parameters take a Uint8Array (koffi
 * passes a pointer to its bytes, no copy, so the kernel's writes land in it), a bigint address
 * or null.
 */
import { createRequire } from 'node:module';
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';

/** The koffi module as its own declarations describe it. */
export type Koffi = typeof import('koffi').default;

/** A pointer argument: bytes the kernel may read and write in place, a raw address, or NULL. */
export type Ptr = Uint8Array | Int32Array | BigUint64Array | bigint | null;

/** The libc functions vfio-ts uses, with the types the wrappers pass. */
export interface Libc {
  readonly koffi: Koffi;
  open(path: string, flags: number, mode: number): number;
  close(fd: number): number;
  /** fcntl(2) with an int argument (F_DUPFD_CLOEXEC, F_GETFL, F_SETFL). */
  fcntl(fd: number, cmd: number, arg: number): number;
  ioctlPtr(fd: number, request: number, arg: Ptr): number;
  ioctlInt(fd: number, request: number, arg: number): number;
  ioctlStr(fd: number, request: number, arg: string): number;
  read(fd: number, buf: Ptr, count: number): number;
  write(fd: number, buf: Ptr, count: number): number;
  pread(fd: number, buf: Ptr, count: number, offset: bigint): number;
  pwrite(fd: number, buf: Ptr, count: number, offset: bigint): number;
  ftruncate(fd: number, length: bigint): number;
  fallocate(fd: number, mode: number, offset: bigint, length: bigint): number;
  memfd_create(name: string, flags: number): number;
  statx(dirfd: number, path: string, flags: number, mask: number, buf: Ptr): number;
  mmap(addr: number, length: number, prot: number, flags: number, fd: number, offset: bigint): number;
  munmap(addr: number, length: number): number;
  eventfd(initval: number, flags: number): number;
  epoll_create1(flags: number): number;
  epoll_ctl(epfd: number, op: number, fd: number, event: Ptr): number;
  poll(fds: Ptr, nfds: number, timeout: number): number;
  socket(domain: number, type: number, protocol: number): number;
  socketpair(domain: number, type: number, protocol: number, sv: Int32Array): number;
  bind(fd: number, addr: Ptr, addrlen: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, addr: Ptr, addrlen: Ptr, flags: number): number;
  connect(fd: number, addr: Ptr, addrlen: number): number;
  chmod(path: string, mode: number): number;
  unlink(path: string): number;
  sendmsg(fd: number, msg: bigint, flags: number): number;
  recvmsg(fd: number, msg: bigint, flags: number): number;
  getsockopt(fd: number, level: number, name: number, val: Ptr, len: Ptr): number;
  setsockopt(fd: number, level: number, name: number, val: Ptr, len: number): number;
  shutdown(fd: number, how: number): number;
  getuid(): number;
  getpid(): number;
  sysconf(name: number): number;
}

let loaded: Libc | undefined;

/** The libc function table, loading koffi and libc.so.6 on first use. */
export function libc(): Libc {
  return loaded ?? load();
}

function load(): Libc {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    fail(
      Errno.ENOSYS,
      'libc',
      `vfio-ts native layer supports x86_64 Linux only, not ${process.platform}/${process.arch}`,
    );
  }
  const koffi = createRequire(import.meta.url)('koffi') as Koffi;
  const lib = koffi.load('libc.so.6');
  // open, fcntl and ioctl are variadic in C; koffi takes a type name before each extra argument
  // and sets up the call the way the SysV x86_64 ABI wants for a variadic callee (%al).
  const open = lib.func('int open(const char *path, int flags, ...)');
  const fcntl = lib.func('int fcntl(int fd, int cmd, ...)');
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, ...)');
  loaded = {
    koffi,
    open: (path, flags, mode) => open(path, flags, 'uint32_t', mode),
    close: lib.func('int close(int fd)'),
    fcntl: (fd, cmd, arg) => fcntl(fd, cmd, 'int', arg),
    ioctlPtr: (fd, request, arg) => ioctl(fd, request, 'void *', arg),
    ioctlInt: (fd, request, arg) => ioctl(fd, request, 'long', arg),
    ioctlStr: (fd, request, arg) => ioctl(fd, request, 'const char *', arg),
    read: lib.func('intptr_t read(int fd, void *buf, size_t count)'),
    write: lib.func('intptr_t write(int fd, const void *buf, size_t count)'),
    pread: lib.func('intptr_t pread64(int fd, void *buf, size_t count, int64_t offset)'),
    pwrite: lib.func('intptr_t pwrite64(int fd, const void *buf, size_t count, int64_t offset)'),
    ftruncate: lib.func('int ftruncate64(int fd, int64_t length)'),
    fallocate: lib.func('int fallocate64(int fd, int mode, int64_t offset, int64_t len)'),
    memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
    statx: lib.func('int statx(int dirfd, const char *path, int flags, unsigned int mask, void *buf)'),
    mmap: lib.func(
      'intptr_t mmap64(intptr_t addr, size_t length, int prot, int flags, int fd, int64_t offset)',
    ),
    munmap: lib.func('int munmap(intptr_t addr, size_t length)'),
    eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
    epoll_create1: lib.func('int epoll_create1(int flags)'),
    epoll_ctl: lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
    poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, int *sv)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)'),
    listen: lib.func('int listen(int fd, int backlog)'),
    accept4: lib.func('int accept4(int fd, void *addr, void *addrlen, int flags)'),
    connect: lib.func('int connect(int fd, const void *addr, uint32_t addrlen)'),
    chmod: lib.func('int chmod(const char *path, uint32_t mode)'),
    unlink: lib.func('int unlink(const char *path)'),
    sendmsg: lib.func('intptr_t sendmsg(int fd, const void *msg, int flags)'),
    recvmsg: lib.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
    getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *val, void *len)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
    shutdown: lib.func('int shutdown(int fd, int how)'),
    getuid: lib.func('uint32_t getuid()'),
    getpid: lib.func('int getpid()'),
    sysconf: lib.func('long sysconf(int name)'),
  };
  return loaded;
}

/**
 * The errno of the libc call that just failed. koffi.errno() reads the thread's errno as it is
 * now, so call this right after the failing call, before any other native call. A failure that
 * left errno at 0 (should not happen) is reported as EIO rather than as "success".
 */
export function lastErrno(): number {
  const e = libc().koffi.errno();
  return e > 0 ? e : Errno.EIO;
}

/** Throws `VfioError(errno, op)` with the errno of the call that just failed. */
export function failErrno(op: string, detail?: string): never {
  fail(lastErrno(), op, detail);
}

/** The address of the first byte a typed array sees (koffi moves a small on-heap array off-heap first). */
export function addressOf(bytes: Uint8Array | Int32Array | BigUint64Array): bigint {
  return libc().koffi.address(bytes);
}

/** A view of `length` bytes of native memory at `address`, without copy (koffi.view). */
export function viewAt(address: bigint | number, length: number): ArrayBuffer {
  return libc().koffi.view(address, length);
}

/** koffi's libuv poll handle type (undocumented API in koffi 3.x, see node_modules/koffi/src/koffi/src/uv.cc). */
export type PollHandle = InstanceType<Koffi['node']['PollHandle']>;
