/**
 * UNIX stream sockets that pass fds (SCM_RIGHTS), which Node's net module cannot do: the
 * vfio-user transport (QEMU docs/interop/vfio-user.rst, "Socket Transport").
 *
 * All sockets made here are non-blocking and close-on-exec. sendMsg/recvMsg build their struct
 * msghdr, iovec array and control buffer in one preallocated off-heap block (calls are
 * synchronous and JS has one thread per isolate, so nothing can interleave), and pass the
 * kernel raw addresses; see cmsg.ts for the layouts.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import {
  CMSGHDR_SIZE,
  IOVEC_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSGHDR_CONTROL,
  MSGHDR_CONTROLLEN,
  MSGHDR_FLAGS,
  MSGHDR_IOVLEN,
  MSGHDR_SIZE,
  parseControl,
  rightsSpace,
  SOL_SOCKET,
  setSize,
  writeIovec,
  writeMsghdr,
  writeRights,
} from './cmsg.js';
import { checkPath, setNonBlocking } from './fd.js';
import { addressOf, failErrno, lastErrno, libc } from './libc.js';

// include/linux/socket.h, include/linux/net.h, asm-generic/socket.h
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SO_SNDTIMEO = 21; // SO_SNDTIMEO_OLD: struct timeval of two longs on x86_64
const SO_PEERCRED = 17;

/** shutdown(2) `how`: stop receiving, stop sending, or both. */
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

/** Most fds one message may carry (SCM_MAX_FD, include/net/scm.h); the kernel says EINVAL past it. */
export const MAX_FDS_PER_MSG = 253;
/** Most chunks one sendMsg takes (UIO_MAXIOV, include/uapi/linux/uio.h). */
export const MAX_IOV = 1024;
/** sun_path holds 108 bytes including the terminating NUL (include/uapi/linux/un.h). */
export const MAX_SOCKET_PATH_BYTES = 107;
/** recvMsg up to this many bytes lands in a reused buffer and is copied out at its real size. */
export const RECV_SCRATCH_BYTES = 64 * 1024;
/** How long unixConnect may wait for room in a full listen backlog. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
/** listen(2) backlog of unixListen unless told otherwise. */
export const DEFAULT_BACKLOG = 64;

const CONTROL_BYTES = rightsSpace(MAX_FDS_PER_MSG);

// Offsets in the scratch block; each part 16-byte aligned.
const align16 = (n: number): number => (n + 15) & ~15;
const SEND_MSG = 0;
const SEND_IOV = SEND_MSG + align16(MSGHDR_SIZE);
const SEND_CTL = SEND_IOV + MAX_IOV * IOVEC_SIZE;
const RECV_MSG = SEND_CTL + align16(CONTROL_BYTES);
const RECV_IOV = RECV_MSG + align16(MSGHDR_SIZE);
const RECV_CTL = RECV_IOV + IOVEC_SIZE;
const SCRATCH_BYTES = RECV_CTL + CONTROL_BYTES;

interface Scratch {
  view: DataView;
  sendMsgAddr: bigint;
  sendCtlAddr: bigint;
  recvMsgAddr: bigint;
  recvCtlAddr: bigint;
  recvData: Uint8Array;
  recvDataAddr: bigint;
}

let scratch: Scratch | undefined;

// ArrayBuffer backing stores live outside the V8 heap and never move, so their addresses may be
// stored inside the msghdr for later calls. The fields that never change (no msg_name, where the
// iovec array is) are written once here; each call fills in the rest.
function getScratch(): Scratch {
  if (!scratch) {
    const block = new Uint8Array(new ArrayBuffer(SCRATCH_BYTES));
    const view = new DataView(block.buffer);
    const base = addressOf(block);
    const recvData = new Uint8Array(new ArrayBuffer(RECV_SCRATCH_BYTES));
    const at = (off: number): bigint => base + BigInt(off);
    const empty = { name: 0n, namelen: 0, iovlen: 0, control: 0n, controllen: 0, flags: 0 };
    writeMsghdr(view, SEND_MSG, { ...empty, iov: at(SEND_IOV) });
    writeMsghdr(view, RECV_MSG, { ...empty, iov: at(RECV_IOV), iovlen: 1 });
    scratch = {
      view,
      sendMsgAddr: at(SEND_MSG),
      sendCtlAddr: at(SEND_CTL),
      recvMsgAddr: at(RECV_MSG),
      recvCtlAddr: at(RECV_CTL),
      recvData,
      recvDataAddr: addressOf(recvData),
    };
  }
  return scratch;
}

/** struct sockaddr_un for `path`, and the address length to pass with it. */
function sockaddrUn(path: string, op: string): { addr: Uint8Array; len: number } {
  checkPath(path, op);
  const bytes = new TextEncoder().encode(path);
  if (bytes.length > MAX_SOCKET_PATH_BYTES) {
    fail(Errno.EINVAL, op, `socket path is ${bytes.length} bytes, more than ${MAX_SOCKET_PATH_BYTES}`);
  }
  const addr = new Uint8Array(2 + MAX_SOCKET_PATH_BYTES + 1);
  addr[0] = AF_UNIX; // sa_family_t, little-endian u16
  addr.set(bytes, 2);
  return { addr, len: 2 + bytes.length + 1 };
}

function newSocket(flags: number): number {
  const fd = libc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
  if (fd < 0) failErrno('socket');
  return fd;
}

/** Closes `fd` ignoring errors, keeping the errno of the failure being reported. */
function closeQuietly(fd: number): void {
  libc().close(fd);
}

export interface ListenOptions {
  /** Permission bits of the socket file; connect(2) needs write permission (unix(7)). */
  mode?: number;
  backlog?: number;
}

/**
 * A listening, non-blocking UNIX stream socket bound at `path`. The file gets `mode` (0o600 by
 * default) with chmod after bind and before listen: until listen nobody can connect, so no
 * client ever meets looser permissions. On failure after bind the file is removed again.
 */
export function unixListen(path: string, opts: ListenOptions = {}): number {
  const { addr, len } = sockaddrUn(path, 'bind');
  const c = libc();
  const fd = newSocket(SOCK_NONBLOCK);
  if (c.bind(fd, addr, len) < 0) {
    const e = lastErrno();
    closeQuietly(fd);
    fail(e, 'bind', path);
  }
  let op = 'chmod';
  let ok = c.chmod(path, opts.mode ?? 0o600) === 0;
  if (ok) {
    op = 'listen';
    ok = c.listen(fd, opts.backlog ?? DEFAULT_BACKLOG) === 0;
  }
  if (!ok) {
    const e = lastErrno();
    c.unlink(path);
    closeQuietly(fd);
    fail(e, op, path);
  }
  return fd;
}

/**
 * accept4(2) with SOCK_NONBLOCK|SOCK_CLOEXEC: the next connection's fd, or null when none is
 * waiting (EAGAIN).
 */
export function unixAccept(listenFd: number): number | null {
  const c = libc();
  for (;;) {
    const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'accept4');
  }
}

/**
 * Connects to the UNIX stream socket at `path`; returns a non-blocking fd. connect(2) on a UNIX
 * socket completes at once unless the listener's backlog is full; then it waits up to
 * `timeoutMs` (SO_SNDTIMEO, net/unix/af_unix.c unix_stream_connect) and fails with EAGAIN.
 */
export function unixConnect(path: string, timeoutMs = DEFAULT_CONNECT_TIMEOUT_MS): number {
  const { addr, len } = sockaddrUn(path, 'connect');
  const c = libc();
  const fd = newSocket(0);
  try {
    const tv = new BigInt64Array(2);
    const ms = Math.max(1, Math.floor(timeoutMs));
    tv[0] = BigInt(Math.floor(ms / 1000));
    tv[1] = BigInt((ms % 1000) * 1000);
    if (c.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, new Uint8Array(tv.buffer), 16) < 0) failErrno('setsockopt');
    for (;;) {
      if (c.connect(fd, addr, len) === 0) break;
      const e = lastErrno();
      if (e !== Errno.EINTR) fail(e, 'connect', path);
    }
    setNonBlocking(fd, true);
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
  return fd;
}

/** socketpair(2): two connected non-blocking close-on-exec UNIX stream sockets. */
export function socketPair(): [number, number] {
  const sv = new Int32Array(2);
  if (libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    failErrno('socketpair');
  return [sv[0]!, sv[1]!];
}

/** shutdown(2); `how` is SHUT_RD, SHUT_WR or SHUT_RDWR. */
export function shutdownFd(fd: number, how = SHUT_RDWR): void {
  if (libc().shutdown(fd, how) < 0) failErrno('shutdown');
}

/**
 * sendmsg(2) of `chunks` (gathered, no copy) with `fds` attached as SCM_RIGHTS, with
 * MSG_DONTWAIT|MSG_NOSIGNAL (a closed peer gives EPIPE, never SIGPIPE). Returns the bytes sent,
 * possibly fewer than offered; the fds travel with the first byte, so after a partial send,
 * send the rest without them. Returns null when nothing could be sent (EAGAIN). The caller
 * still owns `fds` and closes them when it likes. fds need at least one data byte to travel.
 */
export function sendMsg(
  fd: number,
  chunks: readonly Uint8Array[],
  fds: readonly number[] = [],
): number | null {
  if (chunks.length > MAX_IOV) fail(Errno.EINVAL, 'sendmsg', `${chunks.length} chunks, more than ${MAX_IOV}`);
  if (fds.length > MAX_FDS_PER_MSG) {
    fail(Errno.EINVAL, 'sendmsg', `${fds.length} fds, more than ${MAX_FDS_PER_MSG}`);
  }
  const s = getScratch();
  const v = s.view;
  let total = 0;
  for (let i = 0; i < chunks.length; i++) {
    const chunk = chunks[i]!;
    writeIovec(v, SEND_IOV, i, chunk.length === 0 ? 0n : addressOf(chunk), chunk.length);
    total += chunk.length;
  }
  if (fds.length > 0 && total === 0) fail(Errno.EINVAL, 'sendmsg', 'fds need at least one byte of data');
  const controllen = writeRights(v, SEND_CTL, fds);
  setSize(v, SEND_MSG + MSGHDR_IOVLEN, chunks.length);
  v.setBigUint64(SEND_MSG + MSGHDR_CONTROL, controllen === 0 ? 0n : s.sendCtlAddr, true);
  setSize(v, SEND_MSG + MSGHDR_CONTROLLEN, controllen);
  const c = libc();
  const msg = s.sendMsgAddr;
  for (;;) {
    const n = c.sendmsg(fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'sendmsg');
  }
}

export interface ReceivedFds {
  /** Every fd that arrived, close-on-exec, now owned by the caller (even when `ctrunc`). */
  fds: number[];
  /**
   * The kernel cut the control data (MSG_CTRUNC: fds beyond the room were discarded by the
   * kernel) or more than `maxFds` fds arrived: the message broke the agreed limits. The caller
   * should close every fd in `fds` and treat the message as an error.
   */
  ctrunc: boolean;
}

export interface Received extends ReceivedFds {
  /** The bytes received; length 0 means the peer closed the connection. */
  data: Uint8Array;
}

export interface ReceivedInto extends ReceivedFds {
  /** Bytes written to the caller's buffer; 0 means the peer closed the connection. */
  bytes: number;
}

function checkRecv(maxBytes: number, maxFds: number): void {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) fail(Errno.EINVAL, 'recvmsg', `maxBytes ${maxBytes}`);
  if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > MAX_FDS_PER_MSG) {
    fail(Errno.EINVAL, 'recvmsg', `maxFds ${maxFds} outside 0..${MAX_FDS_PER_MSG}`);
  }
}

/** recvmsg(2) into [addr, addr + len); returns bytes or null on EAGAIN, fds in `out`. */
function recvCore(fd: number, addr: bigint, len: number, maxFds: number, out: ReceivedFds): number | null {
  const s = getScratch();
  const v = s.view;
  writeIovec(v, RECV_IOV, 0, addr, len);
  // Room for exactly maxFds fds (CMSG_SPACE may round up by one more; those are returned too).
  const controllen = rightsSpace(maxFds);
  const c = libc();
  const control = controllen === 0 ? 0n : s.recvCtlAddr;
  let n: number;
  for (;;) {
    // The kernel rewrites msg_controllen and msg_flags, so both are reset before each try.
    v.setBigUint64(RECV_MSG + MSGHDR_CONTROL, control, true);
    setSize(v, RECV_MSG + MSGHDR_CONTROLLEN, controllen);
    v.setInt32(RECV_MSG + MSGHDR_FLAGS, 0, true);
    n = c.recvmsg(fd, s.recvMsgAddr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return null;
    if (e !== Errno.EINTR) fail(e, 'recvmsg');
  }
  // The kernel rewrote msg_controllen (bytes of control data) and msg_flags.
  const gotControl = Math.min(Number(v.getBigUint64(RECV_MSG + MSGHDR_CONTROLLEN, true)), controllen);
  const flags = v.getInt32(RECV_MSG + MSGHDR_FLAGS, true);
  const parsed =
    gotControl >= CMSGHDR_SIZE ? parseControl(v, RECV_CTL, gotControl) : { fds: [], malformed: false };
  out.fds = parsed.fds;
  out.ctrunc = (flags & MSG_CTRUNC) !== 0 || parsed.fds.length > maxFds || parsed.malformed;
  return n;
}

/**
 * recvmsg(2) of up to `maxBytes` bytes and up to `maxFds` fds (MSG_DONTWAIT|MSG_CMSG_CLOEXEC).
 * Null when nothing is waiting (EAGAIN). Never leaks an fd: whatever arrived is in `fds`.
 */
export function recvMsg(fd: number, maxBytes: number, maxFds: number): Received | null {
  checkRecv(maxBytes, maxFds);
  const out: ReceivedFds = { fds: [], ctrunc: false };
  if (maxBytes <= RECV_SCRATCH_BYTES) {
    const s = getScratch();
    const n = recvCore(fd, s.recvDataAddr, maxBytes, maxFds, out);
    if (n === null) return null;
    return { data: s.recvData.slice(0, n), fds: out.fds, ctrunc: out.ctrunc };
  }
  const buf = new Uint8Array(maxBytes);
  const n = recvCore(fd, addressOf(buf), maxBytes, maxFds, out);
  if (n === null) return null;
  return { data: n === maxBytes ? buf : buf.subarray(0, n), fds: out.fds, ctrunc: out.ctrunc };
}

/** recvMsg into the caller's `buf` (no allocation for the data); same rules as recvMsg. */
export function recvMsgInto(fd: number, buf: Uint8Array, maxFds: number): ReceivedInto | null {
  checkRecv(buf.length, maxFds);
  const out: ReceivedFds = { fds: [], ctrunc: false };
  const n = recvCore(fd, addressOf(buf), buf.length, maxFds, out);
  if (n === null) return null;
  return { bytes: n, fds: out.fds, ctrunc: out.ctrunc };
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

const credBuf = new Uint8Array(new ArrayBuffer(12));
const credView = new DataView(credBuf.buffer);
const credLen = new Int32Array(1);

/** getsockopt(SO_PEERCRED): who was on the other end when the connection was made (unix(7)). */
export function peerCred(fd: number): PeerCred {
  credLen[0] = 12;
  if (libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, credBuf, credLen) < 0) failErrno('getsockopt');
  // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
  return {
    pid: credView.getInt32(0, true),
    uid: credView.getUint32(4, true),
    gid: credView.getUint32(8, true),
  };
}
