/**
 * recvmsg(2) and sendmsg(2) for one socket with nothing allocated per call: the vfio-user
 * server's hot path (src/server/channel.ts). A `SocketIo` owns its struct msghdrs (the
 * receiving one is socket.ts's `MsgReceiver`, as recvMsg's is; the sending one has one iovec over
 * `out`, an output buffer whose address is taken once): a call only rewrites the few fields that
 * change, with numbers (no BigInt), and returns a number.
 *
 * `recv` can wait: on a socket in blocking mode (`setNonBlocking(fd, false)`) a recvmsg without
 * MSG_DONTWAIT sleeps in the kernel until data comes, bounded by SO_RCVTIMEO
 * (`setReceiveTimeout`), which is what the server's thread loop does instead of a poll(2) first
 * (docs/performance.md: the wake-up of a recvmsg that sleeps costs less than poll's). `sendOut`
 * never waits (MSG_DONTWAIT): a full socket returns -1 and the caller queues the rest.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { MSG_DONTWAIT, setSize, writeMsghdr } from './cmsg.js';
import { addressOf, lastErrno, libc } from './libc.js';
import { MAX_FDS_PER_MSG, MsgReceiver, SO_RCVTIMEO, sendmsgAt, setSocketTimeout } from './socket.js';

const SEND_IOV = 64; // after the 56-byte msghdr, 16-byte aligned

/** Largest output buffer a SocketIo takes (its replies are small; big ones go through sendMsg). */
export const MAX_SOCKET_IO_OUT = 1 << 20;

/** The address of a buffer's first byte as a number (x86_64 user addresses are below 2^47: exact). */
export function addressNumber(bytes: Uint8Array): number {
  return Number(addressOf(bytes));
}

export class SocketIo {
  /** Fds that came with the last `recv` (emptied by each call); the caller owns and closes them. */
  readonly fds: number[];
  /** What `sendOut` sends from: fill it, then send a prefix. */
  readonly out: Uint8Array;
  readonly #fd: number;
  readonly #maxFds: number;
  readonly #rx = new MsgReceiver();
  readonly #sendView: DataView;
  readonly #sendMsg: bigint;

  constructor(fd: number, outBytes: number, maxFds = MAX_FDS_PER_MSG) {
    if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > MAX_FDS_PER_MSG)
      fail(Errno.EINVAL, 'SocketIo', `maxFds ${maxFds} outside 0..${MAX_FDS_PER_MSG}`);
    if (!Number.isInteger(outBytes) || outBytes < 1 || outBytes > MAX_SOCKET_IO_OUT)
      fail(Errno.EINVAL, 'SocketIo', `output buffer of ${outBytes} bytes`);
    this.#fd = fd;
    this.#maxFds = maxFds;
    this.fds = this.#rx.fds;
    const block = new Uint8Array(new ArrayBuffer(SEND_IOV + 16));
    this.#sendView = new DataView(block.buffer);
    this.#sendMsg = addressOf(block);
    this.out = new Uint8Array(new ArrayBuffer(outBytes));
    const empty = { name: 0n, namelen: 0, control: 0n, controllen: 0, flags: 0 };
    writeMsghdr(this.#sendView, 0, { ...empty, iov: this.#sendMsg + BigInt(SEND_IOV), iovlen: 1 });
    this.#sendView.setBigUint64(SEND_IOV, addressOf(this.out), true);
  }

  /** The last `recv` lost fds: MSG_CTRUNC, more than maxFds, or a malformed control message. */
  get ctrunc(): boolean {
    return this.#rx.ctrunc;
  }

  /**
   * One recvmsg into `length` bytes at `address` (from `addressNumber`, plus an offset), with
   * up to maxFds fds (MSG_CMSG_CLOEXEC). `wait`: sleep until data comes (the socket must be in
   * blocking mode; SO_RCVTIMEO bounds the sleep), else MSG_DONTWAIT. Returns the bytes received,
   * 0 at end of stream, or -1 when nothing came (EAGAIN: nothing waiting, or the receive timeout
   * expired). Fds that came are in `fds` (even when `ctrunc`); never leaks one.
   */
  recv(address: number, length: number, wait: boolean): number {
    return this.#rx.recv(this.#fd, address, length, this.#maxFds, wait ? 0 : MSG_DONTWAIT);
  }

  /**
   * sendmsg of out[0..length) (MSG_DONTWAIT|MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE).
   * Returns the bytes sent (possibly fewer), or -1 when the socket is full (EAGAIN).
   */
  sendOut(length: number): number {
    if (length > this.out.length)
      fail(Errno.EINVAL, 'sendmsg', `${length} bytes from a ${this.out.length}-byte buffer`);
    setSize(this.#sendView, SEND_IOV + 8, length);
    return sendmsgAt(this.#fd, this.#sendMsg);
  }
}

/**
 * SO_RCVTIMEO: a recvmsg that waits on a blocking socket returns EAGAIN after `ms` milliseconds
 * without data (socket(7)); 0 waits for ever.
 */
export function setReceiveTimeout(fd: number, ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 0) fail(Errno.EINVAL, 'setsockopt', `timeout ${ms} ms`);
  setSocketTimeout(fd, SO_RCVTIMEO, ms);
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
