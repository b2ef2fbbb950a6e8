/**
 * Pure encode/decode of the VFIO device ioctl structs and their capability chains
 * (include/uapi/linux/vfio.h), the RFC's and vfio-ts's own, built on the layouts of
 * src/abi/vfio.ts (src/wire/struct.ts): one codec per struct, which the core, the driver and
 * the transports share. Nothing here knows device behaviour.
 *
 * Names say which protocol a type belongs to: `VfioRegionInfo` is vfio.h's struct as an ioctl
 * carries it; src/wire/vfio-user/ has the vfio-user messages (`RegionInfo` there is a reply).
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  VFIO_TS_FEATURE_ALIAS_REGION,
  VFIO_TS_FEATURE_MMAP_COOKIE,
  VFIO_TS_MMAP_COOKIE_FLAG_RELEASE,
  vfio_device_feature,
  vfio_device_feature_dma_buf,
  vfio_device_feature_mig_data_size,
  vfio_device_feature_mig_state,
  vfio_device_feature_migration,
  vfio_device_info,
  vfio_device_ioeventfd,
  vfio_device_low_power_entry_with_wakeup,
  vfio_group_status,
  vfio_info_cap_header,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_hot_reset,
  vfio_pci_hot_reset_info,
  vfio_precopy_info,
  vfio_region_dma_range,
  vfio_region_flags,
  vfio_region_info,
  vfio_region_info_cap_sparse_mmap,
  vfio_region_info_cap_type,
  vfio_region_sparse_mmap_area,
  vfio_ts_alias_region,
  vfio_ts_mmap_cookie,
} from '../abi/vfio.js';
import { MalformedError } from '../errors.js';
import { type StructValue, struct, view } from './struct.js';

export { view };

// ---------------------------------------------------------------------------------------------
// One codec per struct (typed get/set/read/write by the C field names; see struct.ts)
// ---------------------------------------------------------------------------------------------
export const capHeaderStruct = struct(vfio_info_cap_header);
export const groupStatusStruct = struct(vfio_group_status);
export const deviceInfoStruct = struct(vfio_device_info);
export const regionInfoStruct = struct(vfio_region_info);
export const sparseMmapCapStruct = struct(vfio_region_info_cap_sparse_mmap);
export const sparseAreaStruct = struct(vfio_region_sparse_mmap_area);
export const typeCapStruct = struct(vfio_region_info_cap_type);
export const irqInfoStruct = struct(vfio_irq_info);
export const irqSetStruct = struct(vfio_irq_set);
export const hotResetInfoStruct = struct(vfio_pci_hot_reset_info);
export const hotResetStruct = struct(vfio_pci_hot_reset);
export const ioeventfdStruct = struct(vfio_device_ioeventfd);
export const deviceFeatureStruct = struct(vfio_device_feature);
export const lowPowerWakeupStruct = struct(vfio_device_low_power_entry_with_wakeup);
export const dmaRangeStruct = struct(vfio_region_dma_range);
export const dmaBufStruct = struct(vfio_device_feature_dma_buf);
export const regionFlagsStruct = struct(vfio_region_flags);
export const mmapCookieStruct = struct(vfio_ts_mmap_cookie);
export const aliasRegionStruct = struct(vfio_ts_alias_region);
export const type1DmaMapStruct = struct(vfio_iommu_type1_dma_map);
export const type1DmaUnmapStruct = struct(vfio_iommu_type1_dma_unmap);
export const migrationStruct = struct(vfio_device_feature_migration);
export const migStateStruct = struct(vfio_device_feature_mig_state);
export const migDataSizeStruct = struct(vfio_device_feature_mig_data_size);
export const precopyInfoStruct = struct(vfio_precopy_info);

/** Where a VFIO_DEVICE_FEATURE argument's `data` starts (8): the feature structs sit there. */
export const FEATURE_DATA = deviceFeatureStruct.offsetOf('data');

/** Most capabilities a chain may hold before the decoder calls it malformed. */
export const MAX_CAPS_IN_CHAIN = 64;
/** Most sparse-mmap areas a capability may list (QEMU caps at a few; 4096 is generous). */
export const MAX_SPARSE_AREAS = 4096;
/** vfio_info_cap_add (vfio_main.c) aligns every capability to 8 bytes. */
export const CAP_ALIGN = 8;

// ---------------------------------------------------------------------------------------------
// Capabilities: a closed tagged union; unknown ones are kept as bytes, never dropped.
// ---------------------------------------------------------------------------------------------
export interface SparseArea {
  readonly offset: bigint;
  readonly size: bigint;
}
export type VfioRegionCap =
  | { readonly kind: 'sparse-mmap'; readonly areas: readonly SparseArea[] }
  | { readonly kind: 'type'; readonly type: number; readonly subtype: number }
  | { readonly kind: 'msix-mappable' }
  | { readonly kind: 'unknown'; readonly id: number; readonly version: number; readonly body: Uint8Array };

/** A capability's id, version and body (the bytes after its 8-byte header). */
function capBody(cap: VfioRegionCap): { id: number; version: number; body: Uint8Array } {
  const H = capHeaderStruct.size;
  switch (cap.kind) {
    case 'sparse-mmap': {
      const areas = sparseMmapCapStruct.offsetOf('areas');
      const whole = new Uint8Array(sparseMmapCapStruct.size + sparseAreaStruct.size * cap.areas.length);
      sparseMmapCapStruct.set(whole, 'nr_areas', cap.areas.length);
      for (const [i, a] of cap.areas.entries())
        sparseAreaStruct.write(whole, a, areas + sparseAreaStruct.size * i);
      return { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: whole.subarray(H) };
    }
    case 'type': {
      const whole = typeCapStruct.encode({ type: cap.type >>> 0, subtype: cap.subtype >>> 0 });
      return { id: VFIO_REGION_INFO_CAP_TYPE, version: 1, body: whole.subarray(H) };
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
export function encodeCapChain(caps: readonly VfioRegionCap[], base: number): Uint8Array {
  const parts = caps.map(capBody);
  const sizes = parts.map((p) => align(capHeaderStruct.size + p.body.length, CAP_ALIGN));
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  let at = 0;
  parts.forEach((p, i) => {
    const size = sizes[i]!;
    const next = i + 1 < parts.length ? base + at + size : 0;
    capHeaderStruct.write(out, { id: p.id, version: p.version, next }, at);
    out.set(p.body, at + capHeaderStruct.size);
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
export function decodeCapChain(buf: Uint8Array, first: number, minOffset: number): VfioRegionCap[] {
  const caps: VfioRegionCap[] = [];
  const H = capHeaderStruct.size;
  let at = first;
  let prev = minOffset - 1;
  while (at !== 0) {
    if (at <= prev) throw new MalformedError('capability chain', `offset ${at} does not move forward (loop)`);
    if (at < minOffset || at + H > buf.length)
      throw new MalformedError('capability chain', `header at ${at} outside 0..${buf.length}`);
    if (caps.length >= MAX_CAPS_IN_CHAIN)
      throw new MalformedError('capability chain', 'too many capabilities');
    const { id, version, next } = capHeaderStruct.read(buf, at);
    const end = next !== 0 ? Math.min(next, buf.length) : buf.length;
    caps.push(decodeCap(id, version, buf.subarray(at, Math.max(at + H, end))));
    prev = at;
    at = next;
  }
  return caps;
}

/** One capability from `whole`, its bytes from the header on. */
function decodeCap(id: number, version: number, whole: Uint8Array): VfioRegionCap {
  const H = capHeaderStruct.size;
  const bodyLength = whole.length - H;
  if (id === VFIO_REGION_INFO_CAP_SPARSE_MMAP && version === 1) {
    if (whole.length < sparseMmapCapStruct.size)
      throw new MalformedError('sparse mmap capability', `body of ${bodyLength} bytes`);
    const n = sparseMmapCapStruct.get(whole, 'nr_areas');
    const areas = sparseMmapCapStruct.offsetOf('areas');
    if (n > MAX_SPARSE_AREAS || areas + sparseAreaStruct.size * n > whole.length)
      throw new MalformedError('sparse mmap capability', `${n} areas do not fit in ${bodyLength} bytes`);
    const list: SparseArea[] = [];
    for (let i = 0; i < n; i++) list.push(sparseAreaStruct.read(whole, areas + sparseAreaStruct.size * i));
    return { kind: 'sparse-mmap', areas: list };
  }
  if (id === VFIO_REGION_INFO_CAP_TYPE && version === 1) {
    if (whole.length < typeCapStruct.size)
      throw new MalformedError('type capability', `body of ${bodyLength} bytes`);
    const { type, subtype } = typeCapStruct.read(whole);
    return { kind: 'type', type, subtype };
  }
  if (id === VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) return { kind: 'msix-mappable' };
  return { kind: 'unknown', id, version, body: whole.slice(H) };
}

export const align = (n: number, a: number): number => Math.ceil(n / a) * a;

// ---------------------------------------------------------------------------------------------
// Whole ioctl arguments, decoded to camelCase objects
// ---------------------------------------------------------------------------------------------
function need(buf: Uint8Array, size: number, what: string): void {
  if (buf.length < size) throw new MalformedError(what, `${buf.length} bytes, need ${size}`, Errno.EINVAL);
}

export interface VfioDeviceInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
  readonly capOffset: number;
}
export function encodeVfioDeviceInfo(d: VfioDeviceInfo): Uint8Array {
  const { argsz, flags } = d;
  return deviceInfoStruct.encode({
    argsz,
    flags,
    num_regions: d.numRegions,
    num_irqs: d.numIrqs,
    cap_offset: d.capOffset,
  });
}
/** Accepts 6.1's 16-byte form (before cap_offset) as well as the whole struct. */
export function decodeVfioDeviceInfo(b: Uint8Array): VfioDeviceInfo {
  const S = deviceInfoStruct;
  need(b, S.endOf('num_irqs'), 'vfio_device_info');
  return {
    argsz: S.get(b, 'argsz'),
    flags: S.get(b, 'flags'),
    numRegions: S.get(b, 'num_regions'),
    numIrqs: S.get(b, 'num_irqs'),
    capOffset: b.length >= S.endOf('cap_offset') ? S.get(b, 'cap_offset') : 0,
  };
}

export interface VfioRegionInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly capOffset: number;
  readonly size: bigint;
  readonly offset: bigint;
  readonly caps: readonly VfioRegionCap[];
}
/** Encodes the 32-byte header followed by `caps` laid out at 32 (cap_offset set when caps exist). */
export function encodeVfioRegionInfo(
  r: Omit<VfioRegionInfo, 'capOffset'> & { capOffset?: number },
): Uint8Array {
  const S = regionInfoStruct;
  const chain = r.caps.length ? encodeCapChain(r.caps, S.size) : new Uint8Array(0);
  const { argsz, flags, index, size, offset } = r;
  const b = S.encode({ argsz, flags, index, size, offset }, chain.length);
  S.set(b, 'cap_offset', r.capOffset ?? (chain.length ? S.size : 0));
  b.set(chain, S.size);
  return b;
}
export function decodeVfioRegionInfo(b: Uint8Array): VfioRegionInfo {
  const S = regionInfoStruct;
  need(b, S.size, 'vfio_region_info');
  const { argsz, flags, index, cap_offset, size, offset } = S.read(b);
  const caps = cap_offset ? decodeCapChain(b, cap_offset, S.size) : [];
  return { argsz, flags, index, capOffset: cap_offset, size, offset, caps };
}

export interface VfioIrqInfo {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}
export function encodeVfioIrqInfo(i: VfioIrqInfo): Uint8Array {
  return irqInfoStruct.encode(i);
}
export function decodeVfioIrqInfo(b: Uint8Array): VfioIrqInfo {
  need(b, irqInfoStruct.size, 'vfio_irq_info');
  return irqInfoStruct.read(b);
}

export interface VfioIrqSet {
  readonly argsz: number;
  readonly flags: number;
  readonly index: number;
  readonly start: number;
  readonly count: number;
  /** The bytes after the 20-byte header: u8 bools or s32 eventfds, as `flags` says. */
  readonly data: Uint8Array;
}
export function encodeVfioIrqSet(s: Omit<VfioIrqSet, 'argsz'> & { argsz?: number }): Uint8Array {
  const S = irqSetStruct;
  const { flags, index, start, count } = s;
  const b = S.encode({ flags, index, start, count }, s.data.length);
  S.set(b, 'argsz', s.argsz ?? b.length);
  b.set(s.data, S.offsetOf('data'));
  return b;
}
export function decodeVfioIrqSet(b: Uint8Array): VfioIrqSet {
  need(b, irqSetStruct.size, 'vfio_irq_set');
  return { ...irqSetStruct.read(b), data: b.subarray(irqSetStruct.offsetOf('data')) };
}
/** s32 eventfd array for DATA_EVENTFD. */
export function encodeFds(fds: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * fds.length);
  for (const [i, fd] of fds.entries()) view(b).setInt32(4 * i, fd, true);
  return b;
}

export interface VfioDeviceFeature {
  readonly argsz: number;
  readonly flags: number;
  readonly data: Uint8Array;
}
/** A VFIO_DEVICE_FEATURE argument: argsz (the whole length), flags, then `data`. */
export function encodeVfioDeviceFeature(flags: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = deviceFeatureStruct.encode({ flags: flags >>> 0 }, data.length);
  deviceFeatureStruct.set(b, 'argsz', b.length);
  b.set(data, FEATURE_DATA);
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
  const ranges = dmaBufStruct.offsetOf('dma_ranges');
  const b = dmaBufStruct.encode(
    {
      region_index: r.regionIndex,
      open_flags: r.openFlags,
      flags: r.flags >>> 0,
      nr_ranges: r.ranges.length,
    },
    dmaRangeStruct.size * r.ranges.length,
  );
  for (const [i, x] of r.ranges.entries()) dmaRangeStruct.write(b, x, ranges + dmaRangeStruct.size * i);
  return b;
}

// ---------------------------------------------------------------------------------------------
// The vfio-ts mmap cookie (docs/wc-uapi.md §2): one codec for everyone who speaks it
// ---------------------------------------------------------------------------------------------
export type MmapCookie = StructValue<typeof vfio_ts_mmap_cookie.fields>;

/** GET | VFIO_TS_FEATURE_MMAP_COOKIE: a new cookie for BAR `regionIndex` with `attr` (ATTR_UC/WC). */
export function encodeMmapCookieGet(regionIndex: number, attr: number): Uint8Array {
  const data = mmapCookieStruct.encode({ region_index: regionIndex, flags: attr });
  return encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_TS_FEATURE_MMAP_COOKIE, data);
}

/** SET | VFIO_TS_FEATURE_MMAP_COOKIE with flags RELEASE: give cookie `offset` back. */
export function encodeMmapCookieRelease(offset: bigint): Uint8Array {
  const data = mmapCookieStruct.encode({ flags: VFIO_TS_MMAP_COOKIE_FLAG_RELEASE, offset });
  return encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_SET | VFIO_TS_FEATURE_MMAP_COOKIE, data);
}

/**
 * The cookie struct inside a cookie feature's argument: the request, or (after the ioctl) the
 * offset and size the device wrote back. To rewrite a field in place:
 * `mmapCookieStruct.set(arg, 'offset', x, FEATURE_DATA)`.
 */
export function decodeMmapCookie(arg: Uint8Array): MmapCookie {
  return mmapCookieStruct.read(arg, FEATURE_DATA);
}

/** GET | VFIO_TS_FEATURE_ALIAS_REGION for BAR `regionIndex` with `attr` (ATTR_WC). */
export function encodeAliasRegionGet(regionIndex: number, attr: number): Uint8Array {
  const data = aliasRegionStruct.encode({ region_index: regionIndex, flags: attr });
  return encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_TS_FEATURE_ALIAS_REGION, data);
}

// ---------------------------------------------------------------------------------------------
// Raw little-endian words (for data that is no struct: register values, test buffers)
// ---------------------------------------------------------------------------------------------
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
