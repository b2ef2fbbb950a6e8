/**
 * recvmsg(2) and sendmsg(2) for one socket with nothing allocated per call: the vfio-user
 * server's hot path (src/server/channel.ts). A `SocketIo` owns one off-heap block holding its
 * struct msghdr pair, their iovecs and the SCM_RIGHTS control buffer, plus an output buffer
 * whose address is taken once; a call only rewrites the few fields that change, with numbers
 * (no BigInt), and returns a number.
 *
 * `recv` can wait: on a socket in blocking mode (`setNonBlocking(fd, false)`) a recvmsg without
 * MSG_DONTWAIT sleeps in the kernel until data comes, bounded by SO_RCVTIMEO
 * (`setReceiveTimeout`), which is what the server's thread loop does instead of a poll(2) first
 * (docs/performance.md: the wake-up of a recvmsg that sleeps costs less than poll's). `send`
 * never waits (MSG_DONTWAIT): a full socket returns -1 and the caller queues the rest.
 *
 * Layouts as in cmsg.ts (x86_64): msghdr 56 bytes, iovec 16, cmsghdr 16.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import {
  CMSGHDR_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSGHDR_CONTROL,
  MSGHDR_CONTROLLEN,
  MSGHDR_FLAGS,
  parseControl,
  rightsSpace,
  SOL_SOCKET,
  setSize,
  writeMsghdr,
} from './cmsg.js';
import { addressOf, failErrno, lastErrno, libc } from './libc.js';
import { MAX_FDS_PER_MSG } from './socket.js';

const SO_RCVTIMEO = 20; // SO_RCVTIMEO_OLD: struct timeval of two longs on x86_64

const RECV_MSG = 0;
const RECV_IOV = 64;
const SEND_MSG = 80;
const SEND_IOV = 144;
const RECV_CTL = 160;

/** Largest output buffer a SocketIo takes (its replies are small; big ones go through sendMsg). */
export const MAX_SOCKET_IO_OUT = 1 << 20;

/** The address of a buffer's first byte as a number (x86_64 user addresses are below 2^47: exact). */
export function addressNumber(bytes: Uint8Array): number {
  return Number(addressOf(bytes));
}

/** Writes a 64-bit address or size held in a number (below 2^53) without going through BigInt. */
const setU64 = setSize;

export class SocketIo {
  /** Fds that came with the last `recv` (emptied by each call); the caller owns and closes them. */
  readonly fds: number[] = [];
  /** The last `recv` lost fds: MSG_CTRUNC, more than maxFds, or a malformed control message. */
  ctrunc = false;
  /** What `sendOut` sends from: fill it, then send a prefix. */
  readonly out: Uint8Array;
  readonly #fd: number;
  readonly #maxFds: number;
  readonly #controllen: number;
  readonly #view: DataView;
  readonly #recvMsg: bigint;
  readonly #sendMsg: bigint;
  readonly #recvCtl: bigint;

  constructor(fd: number, outBytes: number, maxFds = MAX_FDS_PER_MSG) {
    if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > MAX_FDS_PER_MSG)
      fail(Errno.EINVAL, 'SocketIo', `maxFds ${maxFds} outside 0..${MAX_FDS_PER_MSG}`);
    if (!Number.isInteger(outBytes) || outBytes < 1 || outBytes > MAX_SOCKET_IO_OUT)
      fail(Errno.EINVAL, 'SocketIo', `output buffer of ${outBytes} bytes`);
    this.#fd = fd;
    this.#maxFds = maxFds;
    this.#controllen = rightsSpace(maxFds);
    const block = new Uint8Array(new ArrayBuffer(RECV_CTL + this.#controllen));
    this.#view = new DataView(block.buffer);
    const base = addressOf(block);
    this.out = new Uint8Array(new ArrayBuffer(outBytes));
    this.#recvMsg = base + BigInt(RECV_MSG);
    this.#sendMsg = base + BigInt(SEND_MSG);
    this.#recvCtl = base + BigInt(RECV_CTL);
    const empty = { name: 0n, namelen: 0, control: 0n, controllen: 0, flags: 0 };
    writeMsghdr(this.#view, RECV_MSG, { ...empty, iov: base + BigInt(RECV_IOV), iovlen: 1 });
    writeMsghdr(this.#view, SEND_MSG, { ...empty, iov: base + BigInt(SEND_IOV), iovlen: 1 });
    this.#view.setBigUint64(SEND_IOV, addressOf(this.out), true);
  }

  /**
   * One recvmsg into `length` bytes at `address` (from `addressNumber`, plus an offset), with
   * up to maxFds fds (MSG_CMSG_CLOEXEC). `wait`: sleep until data comes (the socket must be in
   * blocking mode; SO_RCVTIMEO bounds the sleep), else MSG_DONTWAIT. Returns the bytes received,
   * 0 at end of stream, or -1 when nothing came (EAGAIN: nothing waiting, or the receive timeout
   * expired). Fds that came are in `fds` (even when `ctrunc`); never leaks one.
   */
  recv(address: number, length: number, wait: boolean): number {
    const v = this.#view;
    setU64(v, RECV_IOV, address);
    setU64(v, RECV_IOV + 8, length);
    const flags = MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT);
    const c = libc();
    let n: number;
    for (;;) {
      // The kernel rewrites msg_controllen and msg_flags: both are reset before every try.
      v.setBigUint64(RECV_MSG + MSGHDR_CONTROL, this.#controllen === 0 ? 0n : this.#recvCtl, true);
      setSize(v, RECV_MSG + MSGHDR_CONTROLLEN, this.#controllen);
      v.setInt32(RECV_MSG + MSGHDR_FLAGS, 0, true);
      n = c.recvmsg(this.#fd, this.#recvMsg, flags);
      if (n >= 0) break;
      const e = lastErrno();
      if (e === Errno.EAGAIN) return -1;
      if (e !== Errno.EINTR) fail(e, 'recvmsg');
    }
    if (this.fds.length > 0) this.fds.length = 0;
    const got = Math.min(v.getUint32(RECV_MSG + MSGHDR_CONTROLLEN, true), this.#controllen);
    const msgFlags = v.getInt32(RECV_MSG + MSGHDR_FLAGS, true);
    this.ctrunc = (msgFlags & MSG_CTRUNC) !== 0;
    if (got >= CMSGHDR_SIZE) {
      const parsed = parseControl(v, RECV_CTL, got);
      for (const fd of parsed.fds) this.fds.push(fd);
      if (parsed.malformed || parsed.fds.length > this.#maxFds) this.ctrunc = true;
    }
    return n;
  }

  /**
   * sendmsg of out[0..length) (MSG_DONTWAIT|MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE).
   * Returns the bytes sent (possibly fewer), or -1 when the socket is full (EAGAIN).
   */
  sendOut(length: number): number {
    if (length > this.out.length)
      fail(Errno.EINVAL, 'sendmsg', `${length} bytes from a ${this.out.length}-byte buffer`);
    setU64(this.#view, SEND_IOV + 8, length);
    const c = libc();
    for (;;) {
      const n = c.sendmsg(this.#fd, this.#sendMsg, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) return n;
      const e = lastErrno();
      if (e === Errno.EAGAIN) return -1;
      if (e !== Errno.EINTR) fail(e, 'sendmsg');
    }
  }
}

const timeval = new BigInt64Array(2);
const timevalBytes = new Uint8Array(timeval.buffer);

/**
 * SO_RCVTIMEO: a recvmsg that waits on a blocking socket returns EAGAIN after `ms` milliseconds
 * without data (socket(7)); 0 waits for ever.
 */
export function setReceiveTimeout(fd: number, ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 0) fail(Errno.EINVAL, 'setsockopt', `timeout ${ms} ms`);
  timeval[0] = BigInt(Math.floor(ms / 1000));
  timeval[1] = BigInt((ms % 1000) * 1000);
  if (libc().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timevalBytes, 16) < 0) failErrno('setsockopt');
}

// struct pollfd { int fd; short events; short revents; } (include/uapi/asm-generic/poll.h)
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;
/** pollOne's result bit for its `wakeFd` being readable (above every revents bit). */
export const POLL_WAKE = 0x10000;
const pollfd = new Uint8Array(new ArrayBuffer(16));
const pollView = new DataView(pollfd.buffer);

/**
 * poll(2) of one fd for `events` (POLLIN, POLLOUT), up to `timeoutMs` (-1: for ever). Returns
 * the revents (0 when the time ran out; POLLERR, POLLHUP or POLLNVAL may come unasked), plus
 * POLL_WAKE when `wakeFd` (watched for POLLIN beside it, if given) is readable or in error.
 */
export function pollOne(fd: number, events: number, timeoutMs: number, wakeFd = -1): number {
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, events, true);
  pollView.setInt32(8, wakeFd, true);
  pollView.setInt16(12, POLLIN, true);
  const nfds = wakeFd >= 0 ? 2 : 1;
  const c = libc();
  for (;;) {
    pollView.setInt16(6, 0, true);
    pollView.setInt16(14, 0, true);
    const r = c.poll(pollfd, nfds, timeoutMs);
    if (r === 0) return 0;
    if (r > 0) return pollView.getUint16(6, true) | (pollView.getUint16(14, true) !== 0 ? POLL_WAKE : 0);
    const e = lastErrno();
    if (e !== Errno.EINTR) fail(e, 'poll');
  }
}
