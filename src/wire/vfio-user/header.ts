/**
 * The 16-byte vfio-user header (spec, "Header") and whole-message helpers.
 *
 * `readHeader` only reads the five fields; `checkHeader` applies the rules; `decodeHeader` does
 * both. The framer uses `readHeader` plus a size check so that a message with bad flags is still
 * delimited and can be answered with an error reply instead of killing the stream.
 */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_USER_HEADER_SIZE,
  VFIO_USER_MAX_ERRNO,
  VfioUserFlags,
  vfio_user_header,
  vfioUserCommandName,
} from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { encodeFail, malformed } from './bytes.js';

const HEADER = struct(vfio_user_header);

/**
 * The header's fields as accessors on a DataView, for the server's hot path (its channel and
 * fast path): nothing allocated per message. Unchecked: the caller knows 16 bytes are there.
 */
export const headerFields = {
  msgId: HEADER.accessor('msg_id'),
  command: HEADER.accessor('command'),
  msgSize: HEADER.accessor('msg_size'),
  flags: HEADER.accessor('flags'),
  error: HEADER.accessor('error'),
} as const;

export interface Header {
  /** Chosen by the sender, echoed in the reply; not unique (spec). */
  readonly msgId: number;
  readonly command: number;
  /** Whole message, header included. */
  readonly msgSize: number;
  readonly flags: number;
  /** errno of an error reply; reserved (sent as 0) in commands. */
  readonly error: number;
}

export type MessageType = 'command' | 'reply';

const WHAT = 'vfio-user header';

/** The five header fields at `offset`, unchecked. `bytes` must hold 16 bytes from `offset`. */
export function readHeader(bytes: Uint8Array, offset = 0): Header {
  const h = HEADER.read(bytes, offset);
  return { msgId: h.msg_id, command: h.command, msgSize: h.msg_size, flags: h.flags, error: h.error };
}

/**
 * Applies the spec's header rules: type 0 (command) or 1 (reply), no flag bits above bit 5,
 * msg_size at least 16. NO_REPLY on a reply and ERROR on a command carry no meaning and are
 * accepted (libvfio-user and QEMU ignore them too).
 * @throws MalformedError(EINVAL)
 */
export function checkHeader(h: Header): void {
  const type = h.flags & VfioUserFlags.TYPE_MASK;
  if (type !== VfioUserFlags.TYPE_COMMAND && type !== VfioUserFlags.TYPE_REPLY) {
    throw malformed(WHAT, `message type ${type} is neither command (0) nor reply (1)`);
  }
  if ((h.flags & VfioUserFlags.RESERVED_MASK) >>> 0 !== 0) {
    throw malformed(WHAT, `reserved flag bits set: flags 0x${h.flags.toString(16)}`);
  }
  if (h.msgSize < VFIO_USER_HEADER_SIZE) {
    throw malformed(WHAT, `msg_size ${h.msgSize} is smaller than the 16-byte header`);
  }
}

/**
 * Reads and checks the header at `offset`.
 * @throws MalformedError(EINVAL) for fewer than 16 bytes or a header `checkHeader` refuses.
 */
export function decodeHeader(bytes: Uint8Array, offset = 0): Header {
  if (bytes.byteLength - offset < VFIO_USER_HEADER_SIZE) {
    throw malformed(WHAT, `${Math.max(0, bytes.byteLength - offset)} bytes, need 16`);
  }
  const h = readHeader(bytes, offset);
  checkHeader(h);
  return h;
}

/** Writes a header into `target` at `offset` after range-checking every field. */
export function writeHeader(target: Uint8Array, offset: number, h: Header): void {
  const fields = { msg_id: h.msgId, command: h.command, msg_size: h.msgSize, flags: h.flags, error: h.error };
  // Range first (every field fits its width), then the spec's rules, then the bytes.
  HEADER.check(fields, WHAT);
  if (h.msgSize < VFIO_USER_HEADER_SIZE) encodeFail(WHAT, `msg_size ${h.msgSize} < 16`);
  const type = h.flags & VfioUserFlags.TYPE_MASK;
  if (type > VfioUserFlags.TYPE_REPLY || (h.flags & VfioUserFlags.RESERVED_MASK) >>> 0 !== 0) {
    encodeFail(WHAT, `flags 0x${h.flags.toString(16)} are not a valid type and flag set`);
  }
  HEADER.write(target, fields, offset);
}

/** The 16 header bytes. @throws VfioError(EINVAL) for a field out of range. */
export function encodeHeader(h: Header): Uint8Array {
  const out = new Uint8Array(VFIO_USER_HEADER_SIZE);
  writeHeader(out, 0, h);
  return out;
}

export function messageType(h: Header): MessageType {
  return (h.flags & VfioUserFlags.TYPE_MASK) === VfioUserFlags.TYPE_REPLY ? 'reply' : 'command';
}

export function isReply(h: Header): boolean {
  return (h.flags & VfioUserFlags.TYPE_MASK) === VfioUserFlags.TYPE_REPLY;
}

export function isNoReply(h: Header): boolean {
  return (h.flags & VfioUserFlags.NO_REPLY) !== 0;
}

export function isErrorReply(h: Header): boolean {
  return isReply(h) && (h.flags & VfioUserFlags.ERROR) !== 0;
}

/**
 * The errno an error reply reports. The spec allows 0 ("may be zero even if the Error bit is
 * set"); like libvfio-user (lib/tran_sock.c) 0 and anything above 4096 read as EINVAL.
 */
export function replyErrno(h: Header): number {
  return h.error === 0 || h.error > VFIO_USER_MAX_ERRNO ? Errno.EINVAL : h.error;
}

export interface MessageHead {
  readonly msgId: number;
  readonly command: number;
  /** Defaults to a plain command (0). */
  readonly flags?: number;
  /** Defaults to 0. */
  readonly error?: number;
}

/** Header + payload in one buffer; msg_size is computed. */
export function encodeMessage(head: MessageHead, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(VFIO_USER_HEADER_SIZE + payload.byteLength);
  writeHeader(out, 0, {
    msgId: head.msgId,
    command: head.command,
    msgSize: out.byteLength,
    flags: head.flags ?? VfioUserFlags.TYPE_COMMAND,
    error: head.error ?? 0,
  });
  out.set(payload, VFIO_USER_HEADER_SIZE);
  return out;
}

/** A command message; `noReply` sets the NO_REPLY flag. */
export function encodeCommand(
  msgId: number,
  command: number,
  payload?: Uint8Array,
  opts: { readonly noReply?: boolean } = {},
): Uint8Array {
  const flags = VfioUserFlags.TYPE_COMMAND | (opts.noReply ? VfioUserFlags.NO_REPLY : 0);
  return encodeMessage({ msgId, command, flags }, payload);
}

/** A successful reply: the command's msg_id and command, type reply. */
export function encodeReply(msgId: number, command: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage({ msgId, command, flags: VfioUserFlags.TYPE_REPLY }, payload);
}

/**
 * An error reply: the header alone, flags reply|error, the errno in the error field (spec: "If
 * an error occurs, the reply message must only include the reply header").
 * @throws VfioError(EINVAL) unless 1 <= errno <= 4096 (a peer would read anything else as EINVAL).
 */
export function encodeErrorReply(msgId: number, command: number, errno: number): Uint8Array {
  if (!Number.isInteger(errno) || errno < 1 || errno > VFIO_USER_MAX_ERRNO) {
    encodeFail(`${vfioUserCommandName(command)} error reply`, `errno ${errno} is not in 1..4096`);
  }
  return encodeMessage({
    msgId,
    command,
    flags: VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR,
    error: errno,
  });
}
