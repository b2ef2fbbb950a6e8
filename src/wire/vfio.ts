/**
 * Pure encode/decode of the VFIO device ioctl structs and their capability chains
 * (include/uapi/linux/vfio.h). Host byte order (little endian on every platform vfio-ts runs on).
 * Layout numbers come from src/abi/vfio.ts; nothing here knows device behaviour.
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  vfio_device_feature,
  vfio_device_feature_dma_buf,
  vfio_device_info,
  vfio_irq_info,
  vfio_irq_set,
  vfio_region_info,
} from '../abi/vfio.js';
import { MalformedError } from '../errors.js';

/** Most capabilities a chain may hold before the decoder calls it malformed. */
export const MAX_CAPS_IN_CHAIN = 64;
/** Most sparse-mmap areas a capability may list (QEMU caps at a few; 4096 is generous). */
export const MAX_SPARSE_AREAS = 4096;
/** vfio_info_cap_add (vfio_main.c) aligns every capability to 8 bytes. */
export const CAP_ALIGN = 8;

export const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ---------------------------------------------------------------------------------------------
// Capabilities: a closed tagged union; unknown ones are kept as bytes, never dropped.
// ---------------------------------------------------------------------------------------------
export interface SparseArea {
  readonly offset: bigint;
  readonly size: bigint;
}
export type RegionCap =
  | { readonly kind: 'sparse-mmap'; readonly areas: readonly SparseArea[] }
  | { readonly kind: 'type'; readonly type: number; readonly subtype: number }
  | { readonly kind: 'msix-mappable' }
  | { readonly kind: 'unknown'; readonly id: number; readonly version: number; readonly body: Uint8Array };

function capBody(cap: RegionCap): { id: number; version: number; body: Uint8Array } {
  switch (cap.kind) {
    case 'sparse-mmap': {
      const body = new Uint8Array(8 + 16 * cap.areas.length);
      const v = view(body);
      v.setUint32(0, cap.areas.length, true);
      cap.areas.forEach((a, i) => {
        v.setBigUint64(8 + 16 * i, a.offset, true);
        v.setBigUint64(16 + 16 * i, a.size, true);
      });
      return { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body };
    }
    case 'type': {
      const body = new Uint8Array(8);
      view(body).setUint32(0, cap.type >>> 0, true);
      view(body).setUint32(4, cap.subtype >>> 0, true);
      return { id: VFIO_REGION_INFO_CAP_TYPE, version: 1, body };
    }
    case 'msix-mappable':
      return { id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1, body: new Uint8Array(0) };
    case 'unknown':
      return { id: cap.id, version: cap.version, body: cap.body };
  }
}

/**
 * Lays out a capability chain as the kernel does (vfio_info_cap_add + vfio_info_cap_shift):
 * each capability 8-byte aligned, `next` counted from the start of the enclosing struct, whose
 * size is `base` (the chain starts at `base`). The last capability's `next` is 0.
 */
export function encodeCapChain(caps: readonly RegionCap[], base: number): Uint8Array {
  const parts = caps.map(capBody);
  const sizes = parts.map((p) => align(8 + p.body.length, CAP_ALIGN));
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  const v = view(out);
  let at = 0;
  parts.forEach((p, i) => {
    const size = sizes[i]!;
    v.setUint16(at, p.id, true);
    v.setUint16(at + 2, p.version, true);
    v.setUint32(at + 4, i + 1 < parts.length ? base + at + size : 0, true);
    out.set(p.body, at + 8);
    at += size;
  });
  return out;
}

/**
 * Walks a capability chain inside `buf` (the whole struct, offsets count from its start).
 * Bounds checked (header and body inside `buf`, first offset at or past `minOffset`) and loop
 * checked (every `next` must move strictly forward), so a hostile chain cannot hang or overread.
 * @throws MalformedError
 */
export function decodeCapChain(buf: Uint8Array, first: number, minOffset: number): RegionCap[] {
  const caps: RegionCap[] = [];
  const v = view(buf);
  let at = first;
  let prev = minOffset - 1;
  while (at !== 0) {
    if (at <= prev) throw new MalformedError('capability chain', `offset ${at} does not move forward (loop)`);
    if (at < minOffset || at + 8 > buf.length)
      throw new MalformedError('capability chain', `header at ${at} outside 0..${buf.length}`);
    if (caps.length >= MAX_CAPS_IN_CHAIN)
      throw new MalformedError('capability chain', 'too many capabilities');
    const id = v.getUint16(at, true);
    const version = v.getUint16(at + 2, true);
    const next = v.getUint32(at + 4, true);
    const end = next !== 0 ? Math.min(next, buf.length) : buf.length;
    const body = buf.subarray(at + 8, Math.max(at + 8, end));
    caps.push(decodeCap(id, version, body));
    prev = at;
    at = next;
  }
  return caps;
}

function decodeCap(id: number, version: number, body: Uint8Array): RegionCap {
  const v = view(body);
  if (id === VFIO_REGION_INFO_CAP_SPARSE_MMAP && version === 1) {
    if (body.length < 8) throw new MalformedError('sparse mmap capability', `body of ${body.length} bytes`);
    const n = v.getUint32(0, true);
    if (n > MAX_SPARSE_AREAS || 8 + 16 * n > body.length)
      throw new MalformedError('sparse mmap capability', `${n} areas do not fit in ${body.length} bytes`);
    const areas: SparseArea[] = [];
    for (let i = 0; i < n; i++)
      areas.push({ offset: v.getBigUint64(8 + 16 * i, true), size: v.getBigUint64(16 + 16 * i, true) });
    return { kind: 'sparse-mmap', areas };
  }
  if (id === VFIO_REGION_INFO_CAP_TYPE && version === 1) {
    if (body.length < 8) throw new MalformedError('type capability', `body of ${body.length} bytes`);
    return { kind: 'type', type: v.getUint32(0, true), subtype: v.getUint32(4, true) };
  }
  if (id === VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) return { kind: 'msix-mappable' };
  return { kind: 'unknown', id, version, body: body.slice() };
}

export const align = (n: number, a: number): number => Math.ceil(n / a) * a;

// ---------------------------------------------------------------------------------------------
// Structs
// ---------------------------------------------------------------------------------------------
function need(buf: Uint8Array, size: number, what: string): DataView {
  if (buf.length < size) throw new MalformedError(what, `${buf.length} bytes, need ${size}`, Errno.EINVAL);
  return view(buf);
}

export interface DeviceInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
  readonly capOffset: number;
}
export function encodeDeviceInfo(d: DeviceInfo): Uint8Array {
  const b = new Uint8Array(vfio_device_info.size);
  const v = view(b);
  v.setUint32(0, d.argsz, true);
  v.setUint32(4, d.flags, true);
  v.setUint32(8, d.numRegions, true);
  v.setUint32(12, d.numIrqs, true);
  v.setUint32(16, d.capOffset, true);
  return b;
}
export function decodeDeviceInfo(b: Uint8Array): DeviceInfo {
  const v = need(b, 16, 'vfio_device_info');
  return {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    numRegions: v.getUint32(8, true),
    numIrqs: v.getUint32(12, true),
    capOffset: b.length >= 20 ? v.getUint32(16, true) : 0,
  };
}

export interface RegionInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly capOffset: number;
  readonly size: bigint;
  readonly offset: bigint;
  readonly caps: readonly RegionCap[];
}
/** Encodes the 32-byte header followed by `caps` laid out at 32 (cap_offset set when caps exist). */
export function encodeRegionInfo(r: Omit<RegionInfo, 'capOffset'> & { capOffset?: number }): Uint8Array {
  const chain = r.caps.length ? encodeCapChain(r.caps, vfio_region_info.size) : new Uint8Array(0);
  const b = new Uint8Array(vfio_region_info.size + chain.length);
  const v = view(b);
  v.setUint32(0, r.argsz, true);
  v.setUint32(4, r.flags, true);
  v.setUint32(8, r.index, true);
  v.setUint32(12, r.capOffset ?? (chain.length ? vfio_region_info.size : 0), true);
  v.setBigUint64(16, r.size, true);
  v.setBigUint64(24, r.offset, true);
  b.set(chain, vfio_region_info.size);
  return b;
}
export function decodeRegionInfo(b: Uint8Array): RegionInfo {
  const v = need(b, vfio_region_info.size, 'vfio_region_info');
  const capOffset = v.getUint32(12, true);
  const caps = capOffset ? decodeCapChain(b, capOffset, vfio_region_info.size) : [];
  return {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    index: v.getUint32(8, true),
    capOffset,
    size: v.getBigUint64(16, true),
    offset: v.getBigUint64(24, true),
    caps,
  };
}

export interface IrqInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}
export function encodeIrqInfo(i: IrqInfo): Uint8Array {
  const b = new Uint8Array(vfio_irq_info.size);
  const v = view(b);
  v.setUint32(0, i.argsz, true);
  v.setUint32(4, i.flags, true);
  v.setUint32(8, i.index, true);
  v.setUint32(12, i.count, true);
  return b;
}
export function decodeIrqInfo(b: Uint8Array): IrqInfo {
  const v = need(b, vfio_irq_info.size, 'vfio_irq_info');
  return {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    index: v.getUint32(8, true),
    count: v.getUint32(12, true),
  };
}

export interface IrqSet {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly start: number;
  readonly count: number;
  /** The bytes after the 20-byte header: u8 bools or s32 eventfds, as `flags` says. */
  readonly data: Uint8Array;
}
export function encodeIrqSet(s: Omit<IrqSet, 'argsz'> & { argsz?: number }): Uint8Array {
  const b = new Uint8Array(vfio_irq_set.size + s.data.length);
  const v = view(b);
  v.setUint32(0, s.argsz ?? b.length, true);
  v.setUint32(4, s.flags, true);
  v.setUint32(8, s.index, true);
  v.setUint32(12, s.start, true);
  v.setUint32(16, s.count, true);
  b.set(s.data, vfio_irq_set.size);
  return b;
}
export function decodeIrqSet(b: Uint8Array): IrqSet {
  const v = need(b, vfio_irq_set.size, 'vfio_irq_set');
  return {
    argsz: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    index: v.getUint32(8, true),
    start: v.getUint32(12, true),
    count: v.getUint32(16, true),
    data: b.subarray(vfio_irq_set.size),
  };
}
/** s32 eventfd array for DATA_EVENTFD. */
export function encodeFds(fds: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * fds.length);
  for (const [i, fd] of fds.entries()) view(b).setInt32(4 * i, fd, true);
  return b;
}

export interface DeviceFeature {
  readonly argsz: number;
  readonly flags: number;
  readonly data: Uint8Array;
}
export function encodeDeviceFeature(flags: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(vfio_device_feature.size + data.length);
  view(b).setUint32(0, b.length, true);
  view(b).setUint32(4, flags >>> 0, true);
  b.set(data, vfio_device_feature.size);
  return b;
}

export interface DmaRange {
  readonly offset: bigint;
  readonly length: bigint;
}
export interface DmaBufRequest {
  readonly regionIndex: number;
  readonly openFlags: number;
  readonly flags: number;
  readonly ranges: readonly DmaRange[];
}
/** struct vfio_device_feature_dma_buf with its trailing ranges (the feature's `data`). */
export function encodeDmaBuf(r: DmaBufRequest): Uint8Array {
  const b = new Uint8Array(vfio_device_feature_dma_buf.size + 16 * r.ranges.length);
  const v = view(b);
  v.setUint32(0, r.regionIndex, true);
  v.setUint32(4, r.openFlags, true);
  v.setUint32(8, r.flags >>> 0, true);
  v.setUint32(12, r.ranges.length, true);
  r.ranges.forEach((x, i) => {
    v.setBigUint64(16 + 16 * i, x.offset, true);
    v.setBigUint64(24 + 16 * i, x.length, true);
  });
  return b;
}

/** Little helpers shared by decoders of small fixed structs. */
export function u32(b: Uint8Array, off: number): number {
  return view(b).getUint32(off, true);
}
export function u64(b: Uint8Array, off: number): bigint {
  return view(b).getBigUint64(off, true);
}
export function putU32(b: Uint8Array, off: number, value: number): void {
  view(b).setUint32(off, value >>> 0, true);
}
export function putU64(b: Uint8Array, off: number, value: bigint): void {
  view(b).setBigUint64(off, BigInt.asUintN(64, value), true);
}
