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
import { struct } from '../struct.js';
import { checkRange64, encodeFail, malformed, needBytes } from './bytes.js';

const ACCESS = struct(vfio_user_region_access);
const MULTI = struct(vfio_user_region_write_multi);
const ONE = struct(vfio_user_region_write_one);
/** Where an access's data starts (16: right after offset, region, count). */
const DATA = ACCESS.offsetOf('data');

/**
 * struct vfio_user_region_access's fields as accessors on a DataView, for the server's hot path
 * (src/server/fast-path.ts): nothing allocated, the offset as a number (-1 from 2^53 up).
 */
export const regionAccessFields = {
  offset: ACCESS.u64AsNumber('offset'),
  region: ACCESS.accessor('region'),
  count: ACCESS.accessor('count'),
  /** Where the data starts: the struct's size. */
  data: DATA,
} as const;

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
  needBytes(what, p, ACCESS.size);
  const { offset, region, count } = ACCESS.read(p);
  checkRange64(what, offset, BigInt(count), 'offset + count');
  return { offset, region, count };
}

function writeAccess(
  what: string,
  out: Uint8Array,
  at: number,
  offset: bigint,
  region: number,
  count: number,
): void {
  ACCESS.writeChecked(out, { offset, region, count }, what, at);
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
  const out = new Uint8Array(ACCESS.size);
  writeAccess('VFIO_USER_REGION_READ', out, 0, r.offset, r.region, r.count);
  return out;
}

function decodeData(what: string, p: Uint8Array): RegionData {
  const r = readAccess(what, p);
  if (p.byteLength - DATA !== r.count) {
    throw malformed(what, `count ${r.count} but ${p.byteLength - DATA} data bytes`);
  }
  return { offset: r.offset, region: r.region, data: p.subarray(DATA) };
}

function encodeData(what: string, d: RegionData): Uint8Array {
  const out = new Uint8Array(DATA + d.data.byteLength);
  writeAccess(what, out, 0, d.offset, d.region, d.data.byteLength);
  out.set(d.data, DATA);
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
  const out = new Uint8Array(ACCESS.size);
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
  needBytes(what, p, MULTI.size);
  const wrCnt = MULTI.get(p, 'wr_cnt');
  const room = BigInt(Math.floor((p.byteLength - MULTI.size) / ONE.size));
  if (wrCnt > room) throw malformed(what, `wr_cnt ${wrCnt} but room for ${room} entries`);
  const writes: RegionData[] = [];
  const data = ONE.offsetOf('data');
  for (let i = 0, at = MULTI.offsetOf('wrs'); i < Number(wrCnt); i++, at += ONE.size) {
    const { offset, region, count } = ONE.read(p, at);
    if (count > VFIO_USER_MULTI_DATA)
      throw malformed(what, `write ${i}: count ${count} > ${VFIO_USER_MULTI_DATA}`);
    checkRange64(what, offset, BigInt(count), `write ${i}: offset + count`);
    writes.push({ offset, region, data: p.subarray(at + data, at + data + count) });
  }
  return { writes };
}

export function encodeRegionWriteMulti(m: RegionWriteMulti): Uint8Array {
  const what = 'VFIO_USER_REGION_WRITE_MULTI';
  const out = new Uint8Array(MULTI.size + m.writes.length * ONE.size);
  MULTI.set(out, 'wr_cnt', BigInt(m.writes.length));
  m.writes.forEach((w, i) => {
    if (w.data.byteLength > VFIO_USER_MULTI_DATA)
      encodeFail(what, `write ${i} carries ${w.data.byteLength} > 8 bytes`);
    const at = MULTI.offsetOf('wrs') + i * ONE.size;
    ONE.writeChecked(out, { offset: w.offset, region: w.region, count: w.data.byteLength }, what, at);
    out.set(w.data, at + ONE.offsetOf('data')); // the rest of the 8-byte slot stays zero, as QEMU sends it
  });
  return out;
}

/** @throws MalformedError(EINVAL): payload under 8 bytes; a count past 2^53. */
export function decodeRegionWriteMultiReply(p: Uint8Array): RegionWriteMultiReply {
  const what = 'VFIO_USER_REGION_WRITE_MULTI reply';
  needBytes(what, p, MULTI.size);
  const n = MULTI.get(p, 'wr_cnt');
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed(what, `wr_cnt ${n} is implausible`);
  return { count: Number(n) };
}

export function encodeRegionWriteMultiReply(r: RegionWriteMultiReply): Uint8Array {
  if (!Number.isSafeInteger(r.count) || r.count < 0)
    encodeFail('VFIO_USER_REGION_WRITE_MULTI reply', `count ${r.count}`);
  return MULTI.encode({ wr_cnt: BigInt(r.count) });
}
