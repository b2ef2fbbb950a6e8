/**
 * The server's per-client limits, with safe defaults, each configurable on `vfio-ts serve`.
 * docs/robustness.md lists each one with the errno a breach gets and what the fuzzers check.
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_USER_DEFAULT_MAX_DMA_MAPS,
  VFIO_USER_HEADER_SIZE,
  vfio_user_region_access,
} from '../abi/vfio-user.js';
import { fail } from '../errors.js';

/** Most fds a client may send in one message (QEMU's VFIO_USER_MAX_MAX_FDS). */
export const SERVER_MAX_MSG_FDS = 16;
/** Largest data transfer we accept or send (spec default, libvfio-user SERVER_MAX_DATA_XFER_SIZE). */
export const SERVER_MAX_DATA_XFER_SIZE = 1024 * 1024;
/** Most DMA regions one client may map (the spec's and libvfio-user's default max_dma_maps). */
export const SERVER_MAX_DMA_MAPS = VFIO_USER_DEFAULT_MAX_DMA_MAPS;
/**
 * Reply bytes waiting to be sent above which the server stops reading from the client until
 * they drain (back-pressure: a client that does not read its replies stalls itself, not us).
 */
export const SERVER_MAX_PENDING_BYTES = 4 * 1024 * 1024;
/**
 * Replies waiting to be sent (or fds held by them: each queued DMA_BUF reply holds its dma-buf
 * fd) at which the server stops reading from the client until they drain below half: the
 * request-count side of back-pressure, so a flood of small replies with fds cannot drive the
 * server to EMFILE before the byte limit is reached.
 */
export const SERVER_MAX_PENDING_REQUESTS = 1024;
/**
 * How long a message may stay half-received. The server serves one client at a time, so a client
 * that sends part of a message and stops would otherwise hold the socket for ever; past this it
 * is dropped (ETIMEDOUT in the log) and the next client is served. Not counted while the server
 * itself has paused reading (back-pressure).
 */
export const SERVER_MESSAGE_STALL_MS = 10_000;

export interface ServerLimits {
  /** Largest message, header included; a larger msg_size breaks the stream (connection closed). */
  readonly maxMessageSize: number;
  /** REGION_READ/WRITE count and DMA chunk limit (EINVAL above it); offered in VERSION. */
  readonly maxDataXferSize: number;
  /** fds per message (EINVAL above it); offered in VERSION. */
  readonly maxMsgFds: number;
  /** DMA regions per client (ENOSPC above it); offered in VERSION. */
  readonly maxDmaMaps: number;
  /** Queued reply bytes at which reading from the client pauses until they drain. */
  readonly maxPendingBytes: number;
  /** Queued replies (or fds they hold) at which reading from the client pauses until they drain. */
  readonly maxPendingRequests: number;
  /** Milliseconds a started message may take to arrive in full before the client is dropped. */
  readonly messageStallMs: number;
}

/** The message size that fits the largest transfer: header + region access header + data. */
export function messageSizeFor(maxDataXferSize: number): number {
  return maxDataXferSize + VFIO_USER_HEADER_SIZE + vfio_user_region_access.size;
}

export const DEFAULT_LIMITS: ServerLimits = {
  maxMessageSize: messageSizeFor(SERVER_MAX_DATA_XFER_SIZE),
  maxDataXferSize: SERVER_MAX_DATA_XFER_SIZE,
  maxMsgFds: SERVER_MAX_MSG_FDS,
  maxDmaMaps: SERVER_MAX_DMA_MAPS,
  maxPendingBytes: SERVER_MAX_PENDING_BYTES,
  maxPendingRequests: SERVER_MAX_PENDING_REQUESTS,
  messageStallMs: SERVER_MESSAGE_STALL_MS,
};

/** msg_size is a u32 (spec, "Header"): no message, derived or given, may be larger. */
export const MAX_MESSAGE_SIZE_LIMIT = 0xffff_ffff;

/**
 * Defaults filled in; maxMessageSize follows maxDataXferSize unless given. The limits are
 * checked together: every one a positive safe integer, and the message size (given, or derived
 * from the transfer size) within MAX_MESSAGE_SIZE_LIMIT. EINVAL otherwise, before any client is
 * served (`--max-data-xfer-size 4294967295` derived 2^32+31 and failed on every connection).
 */
export function resolveLimits(l: Partial<ServerLimits> = {}): ServerLimits {
  const maxDataXferSize = l.maxDataXferSize ?? DEFAULT_LIMITS.maxDataXferSize;
  const out: ServerLimits = {
    ...DEFAULT_LIMITS,
    ...l,
    maxDataXferSize,
    maxMessageSize: l.maxMessageSize ?? messageSizeFor(maxDataXferSize),
  };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isSafeInteger(v) || v < 1)
      fail(Errno.EINVAL, 'limits', `${k} ${v} is not a positive integer`);
  }
  if (out.maxMessageSize < VFIO_USER_HEADER_SIZE || out.maxMessageSize > MAX_MESSAGE_SIZE_LIMIT) {
    fail(
      Errno.EINVAL,
      'limits',
      `message size ${out.maxMessageSize}${l.maxMessageSize === undefined ? ` (max data transfer ${maxDataXferSize} + ${messageSizeFor(0)})` : ''} is outside ${VFIO_USER_HEADER_SIZE}..${MAX_MESSAGE_SIZE_LIMIT}`,
    );
  }
  return out;
}
