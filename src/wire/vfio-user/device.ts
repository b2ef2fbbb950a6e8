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
} from '../../abi/vfio-user.js';
import {
  checkRange64,
  checkU16,
  checkU32,
  checkU64,
  encodeFail,
  LE,
  malformed,
  needBytes,
  view,
} from './bytes.js';
import type { MessageType } from './header.js';

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
  const L = vfio_user_device_info;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const d: DeviceInfo = {
    argsz: dv.getUint32(L.argsz, LE),
    flags: dv.getUint32(L.flags, LE),
    numRegions: dv.getUint32(L.num_regions, LE),
    numIrqs: dv.getUint32(L.num_irqs, LE),
  };
  if (type === 'command' && d.argsz < L.SIZEOF) throw malformed(what, `argsz ${d.argsz} < ${L.SIZEOF}`);
  return d;
}

export function encodeDeviceInfo(d: DeviceInfo): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_INFO';
  const L = vfio_user_device_info;
  const out = new Uint8Array(L.SIZEOF);
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', d.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', d.flags), LE);
  dv.setUint32(L.num_regions, checkU32(what, 'num_regions', d.numRegions), LE);
  dv.setUint32(L.num_irqs, checkU32(what, 'num_irqs', d.numIrqs), LE);
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
  const L = vfio_user_region_info;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  return {
    argsz: dv.getUint32(L.argsz, LE),
    flags: dv.getUint32(L.flags, LE),
    index: dv.getUint32(L.index, LE),
    capOffset: dv.getUint32(L.cap_offset, LE),
    size: dv.getBigUint64(L.size, LE),
    offset: dv.getBigUint64(L.offset, LE),
  };
}

function writeRegionFields(out: Uint8Array, r: RegionInfoFields, capOffset: number): void {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO';
  const L = vfio_user_region_info;
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', r.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', r.flags), LE);
  dv.setUint32(L.index, checkU32(what, 'index', r.index), LE);
  dv.setUint32(L.cap_offset, checkU32(what, 'cap_offset', capOffset), LE);
  dv.setBigUint64(L.size, checkU64(what, 'size', r.size), LE);
  dv.setBigUint64(L.offset, checkU64(what, 'offset', r.offset), LE);
}

/**
 * Request: the 32-byte struct (QEMU sends exactly that with argsz and index set).
 * @throws MalformedError(EINVAL): payload under 32 bytes; argsz under 32 (libvfio-user
 * handle_device_get_region_info; QEMU never asks with less).
 */
export function decodeRegionInfoRequest(p: Uint8Array): RegionInfoFields {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO command';
  const r = readRegionFields(what, p);
  if (r.argsz < vfio_user_region_info.SIZEOF) throw malformed(what, `argsz ${r.argsz} < 32`);
  return r;
}

export function encodeRegionInfoRequest(r: RegionInfoFields): Uint8Array {
  const out = new Uint8Array(vfio_user_region_info.SIZEOF);
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
  const dv = view(p);
  const span = end - at;
  if (id === VfioUserRegionCapId.SPARSE_MMAP) {
    const S = vfio_user_cap_sparse_mmap;
    if (span < S.SIZEOF) throw malformed(what, `sparse mmap capability at ${at} has ${span} bytes, needs 16`);
    const n = dv.getUint32(at + S.nr_areas, LE);
    const A = vfio_user_sparse_mmap_area;
    if (n > (span - S.SIZEOF) / A.SIZEOF) {
      throw malformed(what, `sparse mmap capability at ${at}: ${n} areas do not fit in ${span} bytes`);
    }
    const areas: SparseMmapArea[] = [];
    for (let i = 0; i < n; i++) {
      const a = at + S.areas + i * A.SIZEOF;
      const area = { offset: dv.getBigUint64(a + A.offset, LE), size: dv.getBigUint64(a + A.size, LE) };
      checkRange64(what, area.offset, area.size, `sparse area ${i} offset + size`);
      areas.push(area);
    }
    return { kind: 'sparse-mmap', version, areas };
  }
  if (id === VfioUserRegionCapId.TYPE) {
    const T = vfio_user_cap_type;
    if (span < T.SIZEOF) throw malformed(what, `type capability at ${at} has ${span} bytes, needs 16`);
    return {
      kind: 'type',
      version,
      type: dv.getUint32(at + T.type, LE),
      subtype: dv.getUint32(at + T.subtype, LE),
    };
  }
  return { kind: 'raw', id, version, data: p.subarray(at + vfio_user_cap_header.SIZEOF, end) };
}

/**
 * Walks the capability chain of a region-info reply. Offsets count from the start of the struct
 * (spec, "cap_offset is relative to the beginning of the VFIO region info structure"); each must
 * lie after the 32-byte struct and after the previous capability, so the walk always ends.
 */
function decodeCaps(what: string, p: Uint8Array, r: RegionInfoFields): RegionCap[] {
  const L = vfio_user_region_info;
  if (!(r.flags & VfioUserRegionFlags.CAPS) || r.capOffset === 0 || p.byteLength <= L.SIZEOF) return [];
  const H = vfio_user_cap_header;
  const dv = view(p);
  const caps: RegionCap[] = [];
  let at = r.capOffset;
  let prev = L.SIZEOF - 1;
  while (at !== 0) {
    if (at <= prev)
      throw malformed(what, `capability offset ${at} does not move past ${prev}: a loop or overlap`);
    if (at + H.SIZEOF > p.byteLength) {
      throw malformed(what, `capability at ${at} runs past the ${p.byteLength}-byte payload`);
    }
    if (caps.length === VFIO_USER_MAX_REGION_CAPS)
      throw malformed(what, `more than ${VFIO_USER_MAX_REGION_CAPS} capabilities`);
    const id = dv.getUint16(at + H.id, LE);
    const version = dv.getUint16(at + H.version, LE);
    const next = dv.getUint32(at + H.next, LE);
    if (next !== 0 && next < at + H.SIZEOF)
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
      return vfio_user_cap_sparse_mmap.SIZEOF + c.areas.length * vfio_user_sparse_mmap_area.SIZEOF;
    case 'type':
      return vfio_user_cap_type.SIZEOF;
    case 'raw':
      return vfio_user_cap_header.SIZEOF + c.data.byteLength;
  }
}

/** Bytes the chain takes after the 32-byte struct (each capability 8-byte aligned but the last). */
export function regionCapsSize(caps: readonly RegionCap[]): number {
  let end: number = vfio_user_region_info.SIZEOF;
  caps.forEach((c, i) => {
    end += capSize(c);
    if (i < caps.length - 1) end = align(end);
  });
  return end - vfio_user_region_info.SIZEOF;
}

/**
 * The struct as given, then `caps` laid out from offset 32 (cap_offset is then written as 32).
 * The caller picks argsz and flags: argsz = 32 + regionCapsSize(caps) always, and caps only when
 * the client's argsz was at least that (libvfio-user handle_device_get_region_info).
 */
export function encodeRegionInfoReply(r: RegionInfo): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_REGION_INFO reply';
  const L = vfio_user_region_info;
  const H = vfio_user_cap_header;
  const out = new Uint8Array(L.SIZEOF + regionCapsSize(r.caps));
  writeRegionFields(out, r, r.caps.length > 0 ? L.SIZEOF : r.capOffset);
  const dv = view(out);
  let at: number = L.SIZEOF;
  r.caps.forEach((c, i) => {
    const last = i === r.caps.length - 1;
    const next = last ? 0 : align(at + capSize(c));
    const id =
      c.kind === 'sparse-mmap'
        ? VfioUserRegionCapId.SPARSE_MMAP
        : c.kind === 'type'
          ? VfioUserRegionCapId.TYPE
          : c.id;
    dv.setUint16(at + H.id, checkU16(what, 'capability id', id), LE);
    dv.setUint16(at + H.version, checkU16(what, 'capability version', c.version), LE);
    dv.setUint32(at + H.next, next, LE);
    switch (c.kind) {
      case 'sparse-mmap': {
        const S = vfio_user_cap_sparse_mmap;
        const A = vfio_user_sparse_mmap_area;
        dv.setUint32(at + S.nr_areas, c.areas.length, LE);
        c.areas.forEach((a, j) => {
          const o = at + S.areas + j * A.SIZEOF;
          dv.setBigUint64(o + A.offset, checkU64(what, 'area offset', a.offset), LE);
          dv.setBigUint64(o + A.size, checkU64(what, 'area size', a.size), LE);
        });
        break;
      }
      case 'type':
        dv.setUint32(at + vfio_user_cap_type.type, checkU32(what, 'type', c.type), LE);
        dv.setUint32(at + vfio_user_cap_type.subtype, checkU32(what, 'subtype', c.subtype), LE);
        break;
      case 'raw':
        out.set(c.data, at + H.SIZEOF);
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
  const L = vfio_user_region_io_fds;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  return {
    argsz: dv.getUint32(L.argsz, LE),
    flags: dv.getUint32(L.flags, LE),
    index: dv.getUint32(L.index, LE),
    count: dv.getUint32(L.count, LE),
  };
}

function writeIoFds(out: Uint8Array, r: IoFdsRequest): void {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS';
  const L = vfio_user_region_io_fds;
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', r.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', r.flags), LE);
  dv.setUint32(L.index, checkU32(what, 'index', r.index), LE);
  dv.setUint32(L.count, checkU32(what, 'count', r.count), LE);
}

/**
 * Request: argsz, flags, index, count (16 bytes).
 * @throws MalformedError(EINVAL): payload under 16 bytes; argsz under 16 (libvfio-user
 * handle_device_get_region_io_fds).
 */
export function decodeIoFdsRequest(p: Uint8Array): IoFdsRequest {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS command';
  const r = readIoFds(what, p);
  if (r.argsz < vfio_user_region_io_fds.SIZEOF) throw malformed(what, `argsz ${r.argsz} < 16`);
  return r;
}

export function encodeIoFdsRequest(r: IoFdsRequest): Uint8Array {
  const out = new Uint8Array(vfio_user_region_io_fds.SIZEOF);
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
  const L = vfio_user_region_io_fds;
  const S = vfio_user_sub_region_io_fd;
  const head = readIoFds(what, p);
  if (p.byteLength === L.SIZEOF) return { ...head, entrySize: S.SIZEOF_SPEC, subRegions: [] };
  if (head.argsz !== p.byteLength) {
    throw malformed(what, `argsz ${head.argsz} but ${p.byteLength} payload bytes`);
  }
  const body = p.byteLength - L.SIZEOF;
  if (head.count === 0 || body % head.count !== 0 || body / head.count < S.SIZEOF_SPEC) {
    throw malformed(
      what,
      `${body} bytes of sub-regions do not divide into ${head.count} entries of >= 40 bytes`,
    );
  }
  const entrySize = body / head.count;
  const wide = entrySize >= S.SIZEOF_LIBVFIO_USER;
  const dv = view(p);
  const subRegions: IoFdSubRegion[] = [];
  for (let i = 0, at = L.SIZEOF; i < head.count; i++, at += entrySize) {
    subRegions.push({
      offset: dv.getBigUint64(at + S.offset, LE),
      size: dv.getBigUint64(at + S.size, LE),
      fdIndex: dv.getUint32(at + S.fd_index, LE),
      type: dv.getUint32(at + S.type, LE),
      flags: dv.getUint32(at + S.flags, LE),
      shadowFdIndex: dv.getUint32(at + S.word28, LE),
      shadowOffset: wide ? dv.getBigUint64(at + S.word32, LE) : 0n,
      data: dv.getBigUint64(at + (wide ? S.word40 : S.word32), LE),
    });
  }
  return { ...head, entrySize, subRegions };
}

/** The head, then `subRegions` at `entrySize` (40 or 48) each; argsz and count are written as given. */
export function encodeIoFdsReply(r: IoFdsReply): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS reply';
  const L = vfio_user_region_io_fds;
  const S = vfio_user_sub_region_io_fd;
  if (r.subRegions.length > 0 && r.entrySize !== S.SIZEOF_SPEC && r.entrySize !== S.SIZEOF_LIBVFIO_USER) {
    encodeFail(what, `entry size ${r.entrySize} is neither 40 nor 48`);
  }
  const wide = r.entrySize === S.SIZEOF_LIBVFIO_USER;
  const out = new Uint8Array(L.SIZEOF + r.subRegions.length * r.entrySize);
  writeIoFds(out, r);
  const dv = view(out);
  r.subRegions.forEach((s, i) => {
    const at = L.SIZEOF + i * r.entrySize;
    dv.setBigUint64(at + S.offset, checkU64(what, 'offset', s.offset), LE);
    dv.setBigUint64(at + S.size, checkU64(what, 'size', s.size), LE);
    dv.setUint32(at + S.fd_index, checkU32(what, 'fd_index', s.fdIndex), LE);
    dv.setUint32(at + S.type, checkU32(what, 'type', s.type), LE);
    dv.setUint32(at + S.flags, checkU32(what, 'flags', s.flags), LE);
    dv.setUint32(at + S.word28, checkU32(what, 'shadow_mem_fd_index', s.shadowFdIndex), LE);
    if (wide) dv.setBigUint64(at + S.word32, checkU64(what, 'shadow_offset', s.shadowOffset), LE);
    dv.setBigUint64(at + (wide ? S.word40 : S.word32), checkU64(what, 'datamatch', s.data), LE);
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
