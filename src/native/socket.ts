/**
 * UNIX stream sockets that pass fds (SCM_RIGHTS), which Node's net module cannot do: the
 * vfio-user transport (QEMU docs/interop/vfio-user.rst, "Socket Transport").
 *
 * All sockets made here are non-blocking and close-on-exec. sendMsg builds its struct msghdr,
 * iovec array and control buffer in one preallocated off-heap block, recvMsg uses one
 * `MsgReceiver` (which SocketIo, socket-io.ts, uses too); calls are synchronous and JS has one
 * thread per isolate, so nothing can interleave. The kernel gets raw addresses; see cmsg.ts for
 * the layouts.
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
/** SO_RCVTIMEO_OLD: struct timeval of two longs on x86_64. */
export const SO_RCVTIMEO = 20;
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
const SCRATCH_BYTES = SEND_CTL + CONTROL_BYTES;

interface Scratch {
  view: DataView;
  sendMsgAddr: bigint;
  sendCtlAddr: bigint;
  receiver: MsgReceiver;
  recvData: Uint8Array;
  recvDataAddr: number;
}

let scratch: Scratch | undefined;

const EMPTY_MSGHDR = { name: 0n, namelen: 0, iov: 0n, iovlen: 0, control: 0n, controllen: 0, flags: 0 };

// The receiving msghdr's block: msghdr, its one iovec, the control buffer (16-byte aligned).
const RX_MSG = 0;
const RX_IOV = align16(MSGHDR_SIZE);
const RX_CTL = RX_IOV + IOVEC_SIZE;

/**
 * A struct msghdr for recvmsg(2) with one iovec and room for MAX_FDS_PER_MSG SCM_RIGHTS fds, in
 * one off-heap block written once and reused by every call: recvMsg's, and SocketIo's on the
 * server's hot path (socket-io.ts). A call rewrites only the fields that change, with numbers,
 * and allocates nothing unless fds arrive.
 */
export class MsgReceiver implements ReceivedFds {
  /** Fds that came with the last `recv` (emptied by each call); the caller owns and closes them. */
  readonly fds: number[] = [];
  /** The last `recv` lost fds: MSG_CTRUNC, more than maxFds, or a malformed control message. */
  ctrunc = false;
  readonly #view: DataView;
  readonly #msg: bigint;
  readonly #ctl: bigint;

  constructor() {
    const block = new Uint8Array(new ArrayBuffer(RX_CTL + CONTROL_BYTES));
    this.#view = new DataView(block.buffer);
    const base = addressOf(block);
    this.#msg = base + BigInt(RX_MSG);
    this.#ctl = base + BigInt(RX_CTL);
    writeMsghdr(this.#view, RX_MSG, { ...EMPTY_MSGHDR, iov: base + BigInt(RX_IOV), iovlen: 1 });
  }

  /**
   * One recvmsg of up to `length` bytes at `address` (a number: socket-io.ts addressNumber) and
   * up to `maxFds` fds, with MSG_CMSG_CLOEXEC and `flags` (MSG_DONTWAIT, or 0 to sleep on a
   * blocking socket). Returns the bytes received, 0 at end of stream, or -1 when nothing came
   * (EAGAIN: nothing waiting, or a blocking socket's SO_RCVTIMEO ran out). Every fd that came is
   * in `fds`, even when `ctrunc`: none is ever leaked.
   */
  recv(fd: number, address: number, length: number, maxFds: number, flags: number): number {
    const v = this.#view;
    setSize(v, RX_IOV, address);
    setSize(v, RX_IOV + 8, length);
    // Room for exactly maxFds fds (CMSG_SPACE may round up by one more; those are returned too).
    const controllen = rightsSpace(maxFds);
    const c = libc();
    let n: number;
    for (;;) {
      // The kernel rewrites msg_controllen and msg_flags, so both are reset before each try.
      v.setBigUint64(RX_MSG + MSGHDR_CONTROL, controllen === 0 ? 0n : this.#ctl, true);
      setSize(v, RX_MSG + MSGHDR_CONTROLLEN, controllen);
      v.setInt32(RX_MSG + MSGHDR_FLAGS, 0, true);
      n = c.recvmsg(fd, this.#msg, flags | MSG_CMSG_CLOEXEC);
      if (n >= 0) break;
      const e = lastErrno();
      if (e === Errno.EAGAIN) return -1;
      if (e !== Errno.EINTR) fail(e, 'recvmsg');
    }
    if (this.fds.length > 0) this.fds.length = 0;
    // The kernel rewrote msg_controllen (bytes of control data) and msg_flags.
    const got = Math.min(v.getUint32(RX_MSG + MSGHDR_CONTROLLEN, true), controllen);
    this.ctrunc = (v.getInt32(RX_MSG + MSGHDR_FLAGS, true) & MSG_CTRUNC) !== 0;
    if (got >= CMSGHDR_SIZE) {
      const parsed = parseControl(v, RX_CTL, got);
      for (const fd of parsed.fds) this.fds.push(fd);
      if (parsed.malformed || parsed.fds.length > maxFds) this.ctrunc = true;
    }
    return n;
  }
}

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
    writeMsghdr(view, SEND_MSG, { ...EMPTY_MSGHDR, iov: at(SEND_IOV) });
    scratch = {
      view,
      sendMsgAddr: at(SEND_MSG),
      sendCtlAddr: at(SEND_CTL),
      receiver: new MsgReceiver(),
      recvData,
      recvDataAddr: Number(addressOf(recvData)),
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
    setSocketTimeout(fd, SO_SNDTIMEO, Math.max(1, Math.floor(timeoutMs)));
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

const timeval = new BigInt64Array(2);
const timevalBytes = new Uint8Array(timeval.buffer);

/**
 * setsockopt(SO_SNDTIMEO or SO_RCVTIMEO, the _OLD ones: a struct timeval of two longs on x86_64)
 * to `ms` milliseconds; 0 waits for ever (socket(7)).
 */
export function setSocketTimeout(fd: number, option: number, ms: number): void {
  timeval[0] = BigInt(Math.floor(ms / 1000));
  timeval[1] = BigInt((ms % 1000) * 1000);
  if (libc().setsockopt(fd, SOL_SOCKET, option, timevalBytes, 16) < 0) failErrno('setsockopt');
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
  const n = sendmsgAt(fd, s.sendMsgAddr);
  return n < 0 ? null : n;
}

/**
 * sendmsg(2) of the struct msghdr at `msg` with MSG_DONTWAIT|MSG_NOSIGNAL (a closed peer gives
 * EPIPE, never SIGPIPE), retried on EINTR: the bytes sent, or -1 when the socket is full (EAGAIN).
 */
export function sendmsgAt(fd: number, msg: bigint): number {
  const c = libc();
  for (;;) {
    const n = c.sendmsg(fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    const e = lastErrno();
    if (e === Errno.EAGAIN) return -1;
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

/** recvmsg(2) into [addr, addr + len) with MSG_DONTWAIT; null on EAGAIN. */
function recvCore(fd: number, addr: number, len: number, maxFds: number): ReceivedInto | null {
  const rx = getScratch().receiver;
  const n = rx.recv(fd, addr, len, maxFds, MSG_DONTWAIT);
  if (n < 0) return null;
  return { bytes: n, fds: rx.fds.slice(), ctrunc: rx.ctrunc };
}

/**
 * recvmsg(2) of up to `maxBytes` bytes and up to `maxFds` fds (MSG_DONTWAIT|MSG_CMSG_CLOEXEC).
 * Null when nothing is waiting (EAGAIN). Never leaks an fd: whatever arrived is in `fds`.
 */
export function recvMsg(fd: number, maxBytes: number, maxFds: number): Received | null {
  checkRecv(maxBytes, maxFds);
  if (maxBytes <= RECV_SCRATCH_BYTES) {
    const s = getScratch();
    const r = recvCore(fd, s.recvDataAddr, maxBytes, maxFds);
    if (r === null) return null;
    return { data: s.recvData.slice(0, r.bytes), fds: r.fds, ctrunc: r.ctrunc };
  }
  const buf = new Uint8Array(maxBytes);
  const r = recvCore(fd, Number(addressOf(buf)), maxBytes, maxFds);
  if (r === null) return null;
  return { data: r.bytes === maxBytes ? buf : buf.subarray(0, r.bytes), fds: r.fds, ctrunc: r.ctrunc };
}

/** recvMsg into the caller's `buf` (no allocation for the data); same rules as recvMsg. */
export function recvMsgInto(fd: number, buf: Uint8Array, maxFds: number): ReceivedInto | null {
  checkRecv(buf.length, maxFds);
  return recvCore(fd, Number(addressOf(buf)), buf.length, maxFds);
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
