/**
 * DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with its capability chain), DEVICE_GET_REGION_IO_FDS
 * and DEVICE_RESET.
 *
 * Request decoders refuse an argsz below the fixed reply size, as the kernel's `minsz` checks and
 * libvfio-user's handlers do (EINVAL). Reply decoders accept an argsz larger than what was sent:
 * that is how a server says "ask again with a bigger buffer" (spec, "Message sizes").
 */
import {
  VFIO_USER_CAP_ALIGN,
  VFIO_USER_MAX_REGION_CAPS,
  VfioUserRegionCapId,
  VfioUserRegionFlags,
  vfio_user_cap_header,
  vfio_user_cap_sparse_mmap,
  vfio_user_cap_type,
  vfio_user_device_info,
  vfio_user_region_info,
  vfio_user_region_io_fds,
  vfio_user_sparse_mmap_area,
  vfio_user_sub_region_io_fd,
  vfio_user_sub_region_ioeventfd,
} from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { checkRange64, encodeFail, malformed, needBytes } from './bytes.js';
import type { MessageType } from './header.js';

const DEVICE_INFO = struct(vfio_user_device_info);
const REGION_INFO = struct(vfio_user_region_info);
const CAP_HEADER = struct(vfio_user_cap_header);
const CAP_SPARSE = struct(vfio_user_cap_sparse_mmap);
const SPARSE_AREA = struct(vfio_user_sparse_mmap_area);
const CAP_TYPE = struct(vfio_user_cap_type);
const IO_FDS = struct(vfio_user_region_io_fds);
/** A sub-region entry: the spec's 40 bytes, or libvfio-user's 48. */
const SUB_SPEC = struct(vfio_user_sub_region_io_fd);
const SUB_WIDE = struct(vfio_user_sub_region_ioeventfd);

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_INFO
// ---------------------------------------------------------------------------------------------
export interface DeviceInfo {
  readonly argsz: number;
  /** VfioUserDeviceFlags: RESET 1, PCI 2. */
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
}

/**
 * Request (spec: argsz, all other fields zero) and reply, both 16 bytes.
 * @throws MalformedError(EINVAL): payload under 16 bytes; in a command, argsz under 16
 * (libvfio-user handle_device_get_info).
 */
export function decodeDeviceInfo(p: Uint8Array, type: MessageType = 'command'): DeviceInfo {
  const what = `VFIO_USER_DEVICE_GET_INFO ${type}`;
  needBytes(what, p, DEVICE_INFO.size);
  const r = DEVICE_INFO.read(p);
  const d: DeviceInfo = { argsz: r.argsz, flags: r.flags, numRegions: r.num_regions, numIrqs: r.num_irqs };
  if (type === 'command' && d.argsz < DEVICE_INFO.size)
    throw malformed(what, `argsz ${d.argsz} < ${DEVICE_INFO.size}`);
  return d;
}

export function encodeDeviceInfo(d: DeviceInfo): Uint8Array {
  const out = new Uint8Array(DEVICE_INFO.size);
  const value = { argsz: d.argsz, flags: d.flags, num_regions: d.numRegions, num_irqs: d.numIrqs };
  DEVICE_INFO.writeChecked(out, value, 'VFIO_USER_DEVICE_GET_INFO');
  return out;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_INFO
// ---------------------------------------------------------------------------------------------
/** The 32-byte struct vfio_region_info; a request sets argsz and index only (spec). */
export interface RegionInfoFields {
  readonly argsz: number;
  /** VfioUserRegionFlags: READ 1, WRITE 2, MMAP 4, CAPS 8. */
  readonly flags: number;
  readonly index: number;
  /** From the start of this struct; 32 when capabilities follow, 0 when none do. */
  readonly capOffset: number;
  readonly size: bigint;
  /** Offset to give mmap() on the fd sent with the reply (spec). */
  readonly offset: bigint;
}

export interface SparseMmapArea {
  readonly offset: bigint;
  readonly size: bigint;
}

/** A region capability: the two vfio-user defines, or any other kept as its bytes. */
export type RegionCap =
  | { readonly kind: 'sparse-mmap'; readonly version: number; readonly areas: readonly SparseMmapArea[] }
  | { readonly kind: 'type'; readonly version: number; readonly type: number; readonly subtype: number }
  /** `data` is everything after the 8-byte header up to the next capability (or the end). */
  | { readonly kind: 'raw'; readonly id: number; readonly version: number; readonly data: Uint8Array };

export interface RegionInfo extends RegionInfoFields {
  /** Chain order. Empty when the reply was cut short (argsz larger than the bytes sent). */
  readonly caps: readonly RegionCap[];
}

function readRegionFields(what: string, p: Uint8Array): RegionInfoFields {
  needBytes(what, p, REGION_INFO.size);
  const r = REGION_INFO.read(p);
  return {
    argsz: r.argsz,
    flags: r.flags,
    index: r.index,
    capOffset: r.cap_offset,
    size: r.size,
    offset: r.offset,
  };
}

function writeRegionFields(out: Uint8Array, r: RegionInfoFields, capOffset: number): void {
  const { argsz, flags, index, size, offset } = r;
  const value = { argsz, flags, index, cap_offset: capOffset, size, offset };
  REGION_INFO.writeChecked(out, value, 'VFIO_USER_DEVICE_GET_REGION_INFO');
}

/**
 * Request: the 32-byte struct (QEMU sends exactly that with argsz and index set).
 * @throws MalformedError(EINVAL): payload under 32 bytes; argsz under 32 (libvfio-user
 * handle_device_get_region_info; QEMU never asks with less).
 */
export function decodeRegionInfoRequest(p: Uint8Array): RegionInfoFields {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO command';
  const r = readRegionFields(what, p);
  if (r.argsz < REGION_INFO.size) throw malformed(what, `argsz ${r.argsz} < 32`);
  return r;
}

export function encodeRegionInfoRequest(r: RegionInfoFields): Uint8Array {
  const out = new Uint8Array(REGION_INFO.size);
  writeRegionFields(out, r, r.capOffset);
  return out;
}

function decodeCap(
  what: string,
  p: Uint8Array,
  at: number,
  end: number,
  id: number,
  version: number,
): RegionCap {
  const span = end - at;
  if (id === VfioUserRegionCapId.SPARSE_MMAP) {
    if (span < CAP_SPARSE.size)
      throw malformed(what, `sparse mmap capability at ${at} has ${span} bytes, needs 16`);
    const n = CAP_SPARSE.get(p, 'nr_areas', at);
    if (n > (span - CAP_SPARSE.size) / SPARSE_AREA.size) {
      throw malformed(what, `sparse mmap capability at ${at}: ${n} areas do not fit in ${span} bytes`);
    }
    const areas: SparseMmapArea[] = [];
    for (let i = 0; i < n; i++) {
      const area = SPARSE_AREA.read(p, at + CAP_SPARSE.offsetOf('areas') + i * SPARSE_AREA.size);
      checkRange64(what, area.offset, area.size, `sparse area ${i} offset + size`);
      areas.push(area);
    }
    return { kind: 'sparse-mmap', version, areas };
  }
  if (id === VfioUserRegionCapId.TYPE) {
    if (span < CAP_TYPE.size) throw malformed(what, `type capability at ${at} has ${span} bytes, needs 16`);
    const { type, subtype } = CAP_TYPE.read(p, at);
    return { kind: 'type', version, type, subtype };
  }
  return { kind: 'raw', id, version, data: p.subarray(at + CAP_HEADER.size, end) };
}

/**
 * Walks the capability chain of a region-info reply. Offsets count from the start of the struct
 * (spec, "cap_offset is relative to the beginning of the VFIO region info structure"); each must
 * lie after the 32-byte struct and after the previous capability, so the walk always ends.
 */
function decodeCaps(what: string, p: Uint8Array, r: RegionInfoFields): RegionCap[] {
  if (!(r.flags & VfioUserRegionFlags.CAPS) || r.capOffset === 0 || p.byteLength <= REGION_INFO.size)
    return [];
  const caps: RegionCap[] = [];
  let at = r.capOffset;
  let prev = REGION_INFO.size - 1;
  while (at !== 0) {
    if (at <= prev)
      throw malformed(what, `capability offset ${at} does not move past ${prev}: a loop or overlap`);
    if (at + CAP_HEADER.size > p.byteLength) {
      throw malformed(what, `capability at ${at} runs past the ${p.byteLength}-byte payload`);
    }
    if (caps.length === VFIO_USER_MAX_REGION_CAPS)
      throw malformed(what, `more than ${VFIO_USER_MAX_REGION_CAPS} capabilities`);
    const { id, version, next } = CAP_HEADER.read(p, at);
    if (next !== 0 && next < at + CAP_HEADER.size)
      throw malformed(what, `capability at ${at} points back to ${next}`);
    if (next > p.byteLength) throw malformed(what, `capability at ${at} points to ${next}, past the payload`);
    caps.push(decodeCap(what, p, at, next === 0 ? p.byteLength : next, id, version));
    prev = at;
    at = next;
  }
  return caps;
}

/**
 * Reply: the struct, then (when FLAG_CAPS is set and they fit in the client's argsz) the chain.
 * @throws MalformedError(EINVAL): payload under 32 bytes; a chain that loops, overlaps, points
 * outside the payload or is longer than VFIO_USER_MAX_REGION_CAPS; a sparse-mmap or type
 * capability too short for its contents; a sparse area whose offset + size passes 2^64.
 */
export function decodeRegionInfoReply(p: Uint8Array): RegionInfo {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO reply';
  const r = readRegionFields(what, p);
  return { ...r, caps: decodeCaps(what, p, r) };
}

const align = (n: number) => (n + VFIO_USER_CAP_ALIGN - 1) & ~(VFIO_USER_CAP_ALIGN - 1);

function capSize(c: RegionCap): number {
  switch (c.kind) {
    case 'sparse-mmap':
      return CAP_SPARSE.size + c.areas.length * SPARSE_AREA.size;
    case 'type':
      return CAP_TYPE.size;
    case 'raw':
      return CAP_HEADER.size + c.data.byteLength;
  }
}

/** Bytes the chain takes after the 32-byte struct (each capability 8-byte aligned but the last). */
export function regionCapsSize(caps: readonly RegionCap[]): number {
  let end: number = REGION_INFO.size;
  caps.forEach((c, i) => {
    end += capSize(c);
    if (i < caps.length - 1) end = align(end);
  });
  return end - REGION_INFO.size;
}

/**
 * The struct as given, then `caps` laid out from offset 32 (cap_offset is then written as 32).
 * The caller picks argsz and flags: argsz = 32 + regionCapsSize(caps) always, and caps only when
 * the client's argsz was at least that (libvfio-user handle_device_get_region_info).
 */
export function encodeRegionInfoReply(r: RegionInfo): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO reply';
  const out = new Uint8Array(REGION_INFO.size + regionCapsSize(r.caps));
  writeRegionFields(out, r, r.caps.length > 0 ? REGION_INFO.size : r.capOffset);
  let at: number = REGION_INFO.size;
  r.caps.forEach((c, i) => {
    const last = i === r.caps.length - 1;
    const next = last ? 0 : align(at + capSize(c));
    const id =
      c.kind === 'sparse-mmap'
        ? VfioUserRegionCapId.SPARSE_MMAP
        : c.kind === 'type'
          ? VfioUserRegionCapId.TYPE
          : c.id;
    CAP_HEADER.writeChecked(out, { id, version: c.version, next }, what, at, 'capability ');
    switch (c.kind) {
      case 'sparse-mmap':
        CAP_SPARSE.set(out, 'nr_areas', c.areas.length, at);
        c.areas.forEach((a, j) => {
          const o = at + CAP_SPARSE.offsetOf('areas') + j * SPARSE_AREA.size;
          SPARSE_AREA.writeChecked(out, a, what, o, 'area ');
        });
        break;
      case 'type':
        CAP_TYPE.writeChecked(out, { type: c.type, subtype: c.subtype }, what, at);
        break;
      case 'raw':
        out.set(c.data, at + CAP_HEADER.size);
        break;
    }
    at = next;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_GET_REGION_IO_FDS
// ---------------------------------------------------------------------------------------------
export interface IoFdsRequest {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}

/**
 * One sub-region. In the spec's 40-byte entry `shadowFdIndex` is the padding word at 28,
 * `shadowOffset` is 0 and `data` (datamatch or user_data) sits at 32. In libvfio-user's 48-byte
 * entry (vfio_user_sub_region_ioeventfd) they are shadow_mem_fd_index at 28, shadow_offset at 32
 * and datamatch at 40; a 48-byte entry is always read that way (libvfio-user sends no ioregionfd).
 */
export interface IoFdSubRegion {
  readonly offset: bigint;
  readonly size: bigint;
  readonly fdIndex: number;
  /** VfioUserIoFdType */
  readonly type: number;
  readonly flags: number;
  readonly shadowFdIndex: number;
  readonly shadowOffset: bigint;
  readonly data: bigint;
}

export interface IoFdsReply extends IoFdsRequest {
  /** Stride of `subRegions`: 40 (spec) or 48 (libvfio-user); (argsz - 16) / count on decode. */
  readonly entrySize: number;
  /** Empty when the reply carries only the 16-byte head (argsz says how much to ask for). */
  readonly subRegions: readonly IoFdSubRegion[];
}

function readIoFds(what: string, p: Uint8Array): IoFdsRequest {
  needBytes(what, p, IO_FDS.size);
  const { argsz, flags, index, count } = IO_FDS.read(p);
  return { argsz, flags, index, count };
}

function writeIoFds(out: Uint8Array, r: IoFdsRequest): void {
  const { argsz, flags, index, count } = r;
  IO_FDS.writeChecked(out, { argsz, flags, index, count }, 'VFIO_USER_DEVICE_GET_REGION_IO_FDS');
}

/**
 * Request: argsz, flags, index, count (16 bytes).
 * @throws MalformedError(EINVAL): payload under 16 bytes; argsz under 16 (libvfio-user
 * handle_device_get_region_io_fds).
 */
export function decodeIoFdsRequest(p: Uint8Array): IoFdsRequest {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS command';
  const r = readIoFds(what, p);
  if (r.argsz < IO_FDS.size) throw malformed(what, `argsz ${r.argsz} < 16`);
  return r;
}

export function encodeIoFdsRequest(r: IoFdsRequest): Uint8Array {
  const out = new Uint8Array(IO_FDS.size);
  writeIoFds(out, r);
  return out;
}

/**
 * Reply: the 16-byte head, then `count` entries when they fit in the client's argsz. The entry
 * stride is (argsz - 16) / count — the spec's "(argsz - 32) / count" misstates the fixed part.
 * @throws MalformedError(EINVAL): payload under 16 bytes; entries present but argsz not equal to
 * the payload length, count 0, or a stride that is not a whole number of bytes of at least 40.
 */
export function decodeIoFdsReply(p: Uint8Array): IoFdsReply {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS reply';
  const head = readIoFds(what, p);
  if (p.byteLength === IO_FDS.size) return { ...head, entrySize: SUB_SPEC.size, subRegions: [] };
  if (head.argsz !== p.byteLength) {
    throw malformed(what, `argsz ${head.argsz} but ${p.byteLength} payload bytes`);
  }
  const body = p.byteLength - IO_FDS.size;
  if (head.count === 0 || body % head.count !== 0 || body / head.count < SUB_SPEC.size) {
    throw malformed(
      what,
      `${body} bytes of sub-regions do not divide into ${head.count} entries of >= 40 bytes`,
    );
  }
  const entrySize = body / head.count;
  const wide = entrySize >= SUB_WIDE.size;
  const subRegions: IoFdSubRegion[] = [];
  for (let i = 0, at = IO_FDS.size; i < head.count; i++, at += entrySize) {
    if (wide) {
      const e = SUB_WIDE.read(p, at);
      subRegions.push({
        offset: e.offset,
        size: e.size,
        fdIndex: e.fd_index,
        type: e.type,
        flags: e.flags,
        shadowFdIndex: e.shadow_mem_fd_index,
        shadowOffset: e.shadow_offset,
        data: e.datamatch,
      });
    } else {
      const e = SUB_SPEC.read(p, at);
      const { offset, size, type, flags, data } = e;
      subRegions.push({
        offset,
        size,
        fdIndex: e.fd_index,
        type,
        flags,
        shadowFdIndex: e.padding,
        shadowOffset: 0n,
        data,
      });
    }
  }
  return { ...head, entrySize, subRegions };
}

/** The head, then `subRegions` at `entrySize` (40 or 48) each; argsz and count are written as given. */
export function encodeIoFdsReply(r: IoFdsReply): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS reply';
  if (r.subRegions.length > 0 && r.entrySize !== SUB_SPEC.size && r.entrySize !== SUB_WIDE.size) {
    encodeFail(what, `entry size ${r.entrySize} is neither 40 nor 48`);
  }
  const wide = r.entrySize === SUB_WIDE.size;
  const out = new Uint8Array(IO_FDS.size + r.subRegions.length * r.entrySize);
  writeIoFds(out, r);
  r.subRegions.forEach((s, i) => {
    const at = IO_FDS.size + i * r.entrySize;
    const { offset, size, type, flags } = s;
    if (wide) {
      const e = { offset, size, fd_index: s.fdIndex, type, flags, shadow_mem_fd_index: s.shadowFdIndex };
      SUB_WIDE.writeChecked(out, { ...e, shadow_offset: s.shadowOffset, datamatch: s.data }, what, at);
    } else {
      const e = { offset, size, fd_index: s.fdIndex, type, flags, padding: s.shadowFdIndex };
      SUB_SPEC.writeChecked(out, { ...e, data: s.data }, what, at);
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// DEVICE_RESET and the other empty payloads
// ---------------------------------------------------------------------------------------------
/** A payload with no fields (DEVICE_RESET both ways; DMA_MAP, SET_IRQS, MIG_DATA_WRITE replies). */
export type Empty = Record<string, never>;

/** Extra bytes are ignored, as libvfio-user and QEMU ignore them. */
export function decodeEmpty(_p: Uint8Array): Empty {
  return {};
}

export function encodeEmpty(_e: Empty = {}): Uint8Array {
  return new Uint8Array(0);
}
