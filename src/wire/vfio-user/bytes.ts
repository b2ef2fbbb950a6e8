/**
 * Small helpers shared by the vfio-user codecs: little-endian views, range-checked writers, and
 * the two error shapes (MalformedError for bytes we cannot decode, VfioError(EINVAL) for values an
 * encoder cannot represent).
 */
import { Errno } from '../../abi/errno.js';
import { MalformedError, VfioError } from '../../errors.js';

/** vfio-user integers are host order; vfio-ts hosts are little endian (src/abi/vfio-user.ts). */
export const LE = true;

export const U32_MAX = 0xffff_ffff;
export const U64_LIMIT = 1n << 64n;
export const U64_MAX = U64_LIMIT - 1n;

export { view } from '../struct.js';

export function malformed(what: string, detail: string, errno: number = Errno.EINVAL): MalformedError {
  return new MalformedError(what, detail, errno);
}

/** Throws MalformedError(EINVAL) unless `bytes` holds at least `min` bytes. */
export function needBytes(what: string, bytes: Uint8Array, min: number, field = 'payload'): void {
  if (bytes.byteLength < min) {
    throw malformed(what, `${field} is ${bytes.byteLength} bytes, need at least ${min}`);
  }
}

/**
 * `start + length` must not pass 2^64 (the end may equal 2^64: the last byte is 2^64 - 1).
 * Bigint arithmetic is exact, so this is the saturating check libvfio-user does with satadd_u64.
 */
export function checkRange64(what: string, start: bigint, length: bigint, names: string): void {
  if (start + length > U64_LIMIT) {
    throw malformed(what, `${names} 0x${start.toString(16)} + 0x${length.toString(16)} wraps past 2^64`);
  }
}

function encodeError(what: string, detail: string): VfioError {
  return new VfioError(Errno.EINVAL, `encode ${what}`, detail);
}

export function checkU16(what: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw encodeError(what, `${name} ${v} is not a u16`);
  return v;
}

export function checkU32(what: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > U32_MAX) throw encodeError(what, `${name} ${v} is not a u32`);
  return v;
}

export function checkU64(what: string, name: string, v: bigint): bigint {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX)
    throw encodeError(what, `${name} ${String(v)} is not a u64`);
  return v;
}

export function encodeFail(what: string, detail: string): never {
  throw encodeError(what, detail);
}

/** Lowercase hex of `bytes` (tests and diagnostics). */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Bytes of a hex string; whitespace is ignored. */
export function fromHex(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, '');
  if (clean.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(clean)) {
    throw malformed('hex string', `"${clean.slice(0, 16)}..." is not an even run of hex digits`);
  }
  return new Uint8Array(Buffer.from(clean, 'hex'));
}
