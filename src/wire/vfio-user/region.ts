/**
 * REGION_READ, REGION_WRITE and REGION_WRITE_MULTI (spec, "Read and Write Operations").
 * Data fields are views into the payload (no copy).
 *
 * Whether `count` respects the negotiated max_data_xfer_size, the region exists and the access is
 * inside it is for the server to decide; the decoders only check that the bytes are consistent and
 * that offset + count does not wrap (libvfio-user is_valid_region_access uses satadd_u64).
 */
import {
  VFIO_USER_MULTI_DATA,
  vfio_user_region_access,
  vfio_user_region_write_multi,
  vfio_user_region_write_one,
} from '../../abi/vfio-user.js';
import { checkRange64, checkU32, checkU64, encodeFail, LE, malformed, needBytes, view } from './bytes.js';

export interface RegionReadRequest {
  readonly offset: bigint;
  readonly region: number;
  readonly count: number;
}

/** REGION_READ reply and REGION_WRITE command: count is `data.byteLength`. */
export interface RegionData {
  readonly offset: bigint;
  readonly region: number;
  readonly data: Uint8Array;
}

/** REGION_WRITE reply. */
export interface RegionWriteReply {
  readonly offset: bigint;
  readonly region: number;
  readonly count: number;
}

export interface RegionWriteMulti {
  /** Each `data` is 0..8 bytes (VFIO_USER_MULTI_DATA). */
  readonly writes: readonly RegionData[];
}

export interface RegionWriteMultiReply {
  /** Spec: "the number of device writes completed" (a u64 on the wire). */
  readonly count: number;
}

function readAccess(what: string, p: Uint8Array): RegionReadRequest {
  const L = vfio_user_region_access;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const r = {
    offset: dv.getBigUint64(L.offset, LE),
    region: dv.getUint32(L.region, LE),
    count: dv.getUint32(L.count, LE),
  };
  checkRange64(what, r.offset, BigInt(r.count), 'offset + count');
  return r;
}

function writeAccess(
  what: string,
  out: Uint8Array,
  at: number,
  offset: bigint,
  region: number,
  count: number,
): void {
  const L = vfio_user_region_access;
  const dv = new DataView(out.buffer, out.byteOffset + at, L.SIZEOF);
  dv.setBigUint64(L.offset, checkU64(what, 'offset', offset), LE);
  dv.setUint32(L.region, checkU32(what, 'region', region), LE);
  dv.setUint32(L.count, checkU32(what, 'count', count), LE);
}

/**
 * REGION_READ command: offset, region, count (16 bytes; QEMU sends exactly that, libvfio-user
 * ignores any more).
 * @throws MalformedError(EINVAL): payload under 16 bytes; offset + count past 2^64.
 */
export function decodeRegionReadRequest(p: Uint8Array): RegionReadRequest {
  return readAccess('VFIO_USER_REGION_READ command', p);
}

export function encodeRegionReadRequest(r: RegionReadRequest): Uint8Array {
  const out = new Uint8Array(vfio_user_region_access.SIZEOF);
  writeAccess('VFIO_USER_REGION_READ', out, 0, r.offset, r.region, r.count);
  return out;
}

function decodeData(what: string, p: Uint8Array): RegionData {
  const r = readAccess(what, p);
  const L = vfio_user_region_access;
  if (p.byteLength - L.SIZEOF !== r.count) {
    throw malformed(what, `count ${r.count} but ${p.byteLength - L.SIZEOF} data bytes`);
  }
  return { offset: r.offset, region: r.region, data: p.subarray(L.data) };
}

function encodeData(what: string, d: RegionData): Uint8Array {
  const L = vfio_user_region_access;
  const out = new Uint8Array(L.SIZEOF + d.data.byteLength);
  writeAccess(what, out, 0, d.offset, d.region, d.data.byteLength);
  out.set(d.data, L.data);
  return out;
}

/**
 * REGION_READ reply: the request's fields, then `count` bytes of data.
 * @throws MalformedError(EINVAL): payload under 16 bytes; data length not equal to count.
 */
export const decodeRegionReadReply = (p: Uint8Array): RegionData =>
  decodeData('VFIO_USER_REGION_READ reply', p);
export const encodeRegionReadReply = (d: RegionData): Uint8Array =>
  encodeData('VFIO_USER_REGION_READ reply', d);

/**
 * REGION_WRITE command: offset, region, count, then exactly `count` bytes (libvfio-user
 * is_valid_region_access: "region write count too small" → EINVAL).
 * @throws MalformedError(EINVAL): payload under 16 bytes; data length not equal to count;
 * offset + count past 2^64.
 */
export const decodeRegionWriteRequest = (p: Uint8Array): RegionData =>
  decodeData('VFIO_USER_REGION_WRITE command', p);
export const encodeRegionWriteRequest = (d: RegionData): Uint8Array =>
  encodeData('VFIO_USER_REGION_WRITE command', d);

/** REGION_WRITE reply: offset, region, count, no data. @throws MalformedError(EINVAL) under 16 bytes. */
export function decodeRegionWriteReply(p: Uint8Array): RegionWriteReply {
  return readAccess('VFIO_USER_REGION_WRITE reply', p);
}

export function encodeRegionWriteReply(r: RegionWriteReply): Uint8Array {
  const out = new Uint8Array(vfio_user_region_access.SIZEOF);
  writeAccess('VFIO_USER_REGION_WRITE reply', out, 0, r.offset, r.region, r.count);
  return out;
}

/**
 * REGION_WRITE_MULTI command: wr_cnt u64, then wr_cnt 24-byte entries whose data is an 8-byte
 * slot of which `count` bytes count (QEMU: VFIOUserWROne; QEMU sends it with NO_REPLY and only to
 * a server that advertised write_multiple).
 * @throws MalformedError(EINVAL): payload under 8 bytes; fewer than wr_cnt entries; an entry
 * count above 8; an entry's offset + count past 2^64.
 */
export function decodeRegionWriteMulti(p: Uint8Array): RegionWriteMulti {
  const what = 'VFIO_USER_REGION_WRITE_MULTI command';
  const M = vfio_user_region_write_multi;
  const E = vfio_user_region_write_one;
  needBytes(what, p, M.SIZEOF);
  const dv = view(p);
  const wrCnt = dv.getBigUint64(M.wr_cnt, LE);
  const room = BigInt(Math.floor((p.byteLength - M.SIZEOF) / E.SIZEOF));
  if (wrCnt > room) throw malformed(what, `wr_cnt ${wrCnt} but room for ${room} entries`);
  const writes: RegionData[] = [];
  for (let i = 0, at = M.wrs; i < Number(wrCnt); i++, at += E.SIZEOF) {
    const offset = dv.getBigUint64(at + E.offset, LE);
    const region = dv.getUint32(at + E.region, LE);
    const count = dv.getUint32(at + E.count, LE);
    if (count > VFIO_USER_MULTI_DATA)
      throw malformed(what, `write ${i}: count ${count} > ${VFIO_USER_MULTI_DATA}`);
    checkRange64(what, offset, BigInt(count), `write ${i}: offset + count`);
    writes.push({ offset, region, data: p.subarray(at + E.data, at + E.data + count) });
  }
  return { writes };
}

export function encodeRegionWriteMulti(m: RegionWriteMulti): Uint8Array {
  const what = 'VFIO_USER_REGION_WRITE_MULTI';
  const M = vfio_user_region_write_multi;
  const E = vfio_user_region_write_one;
  const out = new Uint8Array(M.SIZEOF + m.writes.length * E.SIZEOF);
  view(out).setBigUint64(M.wr_cnt, BigInt(m.writes.length), LE);
  m.writes.forEach((w, i) => {
    if (w.data.byteLength > VFIO_USER_MULTI_DATA)
      encodeFail(what, `write ${i} carries ${w.data.byteLength} > 8 bytes`);
    const at = M.wrs + i * E.SIZEOF;
    writeAccess(what, out, at, w.offset, w.region, w.data.byteLength);
    out.set(w.data, at + E.data); // the rest of the 8-byte slot stays zero, as QEMU sends it
  });
  return out;
}

/** @throws MalformedError(EINVAL): payload under 8 bytes; a count past 2^53. */
export function decodeRegionWriteMultiReply(p: Uint8Array): RegionWriteMultiReply {
  const what = 'VFIO_USER_REGION_WRITE_MULTI reply';
  needBytes(what, p, 8);
  const n = view(p).getBigUint64(0, LE);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(what, `wr_cnt ${n} is implausible`);
  return { count: Number(n) };
}

export function encodeRegionWriteMultiReply(r: RegionWriteMultiReply): Uint8Array {
  const out = new Uint8Array(8);
  if (!Number.isSafeInteger(r.count) || r.count < 0)
    encodeFail('VFIO_USER_REGION_WRITE_MULTI reply', `count ${r.count}`);
  view(out).setBigUint64(0, BigInt(r.count), LE);
  return out;
}
