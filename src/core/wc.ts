/**
 * The write-combining request paths of the seed thread (docs/wc-uapi.md), kept apart from the
 * vfio-pci uAPI proper in device.ts. Each path only validates a request and records a mapping
 * handle — (BAR, range, attribute) — where mmap will find it:
 *   1. RFC: SET_REGION_FLAGS flips a BAR's default attribute (barWriteCombine);
 *   2. cookies: a new offset of the device fd bound to (BAR, attribute);
 *   3. alias regions: a device-specific region whose offset maps the BAR WC;
 *   4. DMA_BUF: an fd naming BAR ranges with an attribute.
 * device.ts's mappingSource()/mmap()/mmapDmaBuf() is the one place any of them becomes a mapping.
 */
import { Errno } from '../abi/errno.js';
import {
  PCI_STD_NUM_BARS,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_REGION_FLAG_WRITE_COMBINE,
  VFIO_TS_MMAP_COOKIE_FLAG_RELEASE,
  VFIO_TS_REGION_SUBTYPE_BAR0_WC,
  VFIO_TS_REGION_TYPE_ALIAS,
  vfio_device_feature_dma_buf,
  vfio_region_flags,
  vfio_ts_alias_region,
  vfio_ts_mmap_cookie,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import { putU32, putU64, u32, u64, type VfioRegionCap } from '../wire/vfio.js';
import type { BarDescription } from './description.js';
import type { SharedMemory } from './env.js';
import { type OffsetSpace, PAGE_SIZE, roundUp } from './offsets.js';

export type MemoryAttribute = 'uc' | 'wc';
/** Which front door a mapping came through. */
export type MappingPath = 'region' | 'rfc-region-flags' | 'cookie' | 'alias-region' | 'dma-buf';

/** Which of the write-combining request paths the device offers (all by default). */
export interface Extensions {
  /** The seed RFC: PREFETCH flag in REGION_INFO and VFIO_DEVICE_SET_REGION_FLAGS. */
  readonly rfc: boolean;
  /** VFIO_TS_FEATURE_MMAP_COOKIE. */
  readonly cookies: boolean;
  /** VFIO_TS_FEATURE_ALIAS_REGION. */
  readonly alias: boolean;
  /** DMA_BUF's proposed ATTR field and mmap of the dma-buf fd (needs the 7.3 profile). */
  readonly dmabufWc: boolean;
}
export const ALL_EXTENSIONS: Extensions = { rfc: true, cookies: true, alias: true, dmabufWc: true };
export const NO_EXTENSIONS: Extensions = { rfc: false, cookies: false, alias: false, dmabufWc: false };

export interface Cookie {
  readonly base: bigint;
  readonly size: bigint;
  readonly bar: number;
  readonly attribute: MemoryAttribute;
  released: boolean;
  mappings: number;
}

export interface DmaBufRange {
  readonly offset: bigint;
  readonly length: bigint;
}

export interface DmaBuf {
  readonly fd: number;
  readonly bar: number;
  readonly ranges: readonly DmaBufRange[];
  readonly size: bigint;
  readonly attribute: MemoryAttribute;
  /** Opened O_RDWR (open_flags): a writable shared mapping of a read-only fd is EACCES. */
  readonly writable: boolean;
}

/** Who owns an offset of the device fd. */
export type OffsetOwner = { kind: 'region'; region: number } | { kind: 'cookie'; cookie: Cookie };

/**
 * Alias regions take indexes 9..14 (one per BAR); under the kernel encoding their windows are
 * kept free and cookies are packed above 15 << 40.
 */
export const MAX_ALIAS_REGIONS = PCI_STD_NUM_BARS;
const COOKIE_BASE_INDEX = BigInt(VFIO_PCI_NUM_REGIONS + MAX_ALIAS_REGIONS);
/**
 * KMALLOC_MAX_SIZE on x86-64 (include/linux/slab.h, SLUB: 1 << (MAX_PAGE_ORDER 10 + PAGE_SHIFT
 * 12)): the largest kmalloc, hence the largest memdup_user.
 */
export const KMALLOC_MAX_SIZE = 4 << 20;
/**
 * Linux 7.3 has no explicit limit on nr_ranges and does not check it against argsz:
 * vfio_pci_core_feature_dma_buf copies `nr_ranges` 16-byte ranges with memdup_array_user, whose
 * kmalloc fails past KMALLOC_MAX_SIZE (ENOMEM); ranges the user's memory does not hold are
 * EFAULT. The model's "user memory" is the ioctl buffer, so its length bounds the work (and a
 * vfio-user request is bounded by MAX_FEATURE_PAYLOAD before it gets here).
 */
export const MAX_DMABUF_RANGES = KMALLOC_MAX_SIZE / 16;
/**
 * Default most mmap cookies one device holds at once (released-but-still-mapped ones included;
 * DeviceOptions.maxMmapCookies, `vfio-ts serve --max-mmap-cookies`). Each cookie costs memory and
 * offset space; past the limit a GET is ENOSPC, the errno the core uses for exhausted offset space.
 */
export const MAX_MMAP_COOKIES = 4096;

/** What the WC paths need of the device. */
export interface WcHost {
  readonly extensions: Extensions;
  readonly offsets: OffsetSpace<OffsetOwner>;
  readonly denseOffsets: boolean;
  readonly wcRequiresPrefetch: boolean;
  /** Most live cookies (MAX_MMAP_COOKIES unless configured). */
  readonly maxCookies: number;
  bar(i: number): BarDescription | undefined;
  barMmapSupported(i: number): boolean;
  memoryOf(bar: number): SharedMemory | undefined;
  /** The mmap capability the BAR's own region carries (MSI-X: sparse areas or MSIX_MAPPABLE). */
  barMmapCaps(bar: number): VfioRegionCap[];
  /** Index of BAR `bar`'s alias region, if one exists. */
  aliasOf(bar: number): number | undefined;
  /** Adds a device-specific region aliasing `bar` (MMAP only, with `caps`); returns its index. */
  addAlias(bar: number, caps: VfioRegionCap[], attribute: MemoryAttribute): number;
  closeFd(fd: number): void;
}

export class WriteCombining {
  /** RFC: vdev->bar_write_combine[] */
  private readonly barWriteCombine = new Array<boolean>(PCI_STD_NUM_BARS).fill(false);
  private readonly cookies = new Set<Cookie>();
  private readonly dmabufs = new Map<number, DmaBuf>();

  constructor(private readonly host: WcHost) {}

  /** Attribute and path of a mapping through BAR `bar`'s own region offset (path 1). */
  regionAttribute(bar: number): { attribute: MemoryAttribute; via: MappingPath } {
    return this.barWriteCombine[bar]
      ? { attribute: 'wc', via: 'rfc-region-flags' }
      : { attribute: 'uc', via: 'region' };
  }

  /**
   * Whether WC may be requested for `bar`. Every path needs a memory BAR; the RFC path (and the
   * others unless relaxed) also needs it prefetchable, following the RFC and the existing
   * resourceN_wc convention (pci_create_resource_files).
   */
  private checkWcAllowed(bar: number, attribute: MemoryAttribute, op: string, rfc: boolean): void {
    if (attribute !== 'wc') return;
    const b = this.host.bar(bar);
    if (!b || b.kind === 'io') fail(Errno.EINVAL, op, `BAR ${bar} is not a memory BAR`);
    if (this.host.wcRequiresPrefetch && !b.prefetchable)
      fail(Errno.EINVAL, op, `BAR ${bar} is not prefetchable${rfc ? '' : ' (wcRequiresPrefetch)'}`);
  }

  // --- 1. the RFC --------------------------------------------------------------------------------
  /** Seed RFC: vfio_pci_ioctl_set_region_flags. */
  setRegionFlags(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_SET_REGION_FLAGS';
    need(arg, vfio_region_flags.size, op);
    const index = u32(arg, 0);
    const flags = u32(arg, 4);
    if (index >= PCI_STD_NUM_BARS) fail(Errno.EINVAL, op, `index ${index}`);
    if (flags & VFIO_REGION_FLAG_WRITE_COMBINE) {
      // The RFC: !(res->flags & IORESOURCE_MEM) || !(res->flags & IORESOURCE_PREFETCH) → EINVAL.
      this.checkWcAllowed(index, 'wc', op, true);
      this.barWriteCombine[index] = true;
    } else this.barWriteCombine[index] = false;
    return 0;
  }

  // --- 2. cookies --------------------------------------------------------------------------------
  /** VFIO_TS_FEATURE_MMAP_COOKIE: GET allocates, SET with RELEASE frees (docs/wc-uapi.md). */
  cookieFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_TS_FEATURE_MMAP_COOKIE';
    const supported = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET;
    if (checkFeature(flags, dataSize, supported, vfio_ts_mmap_cookie.size) !== 1) return 0;
    need(data, vfio_ts_mmap_cookie.size, op);
    const index = u32(data, 0);
    const cflags = u32(data, 4);
    if (!(flags & VFIO_DEVICE_FEATURE_GET)) {
      if (cflags !== VFIO_TS_MMAP_COOKIE_FLAG_RELEASE) fail(Errno.EINVAL, op, 'SET needs flags RELEASE');
      const owner = this.host.offsets.lookup(u64(data, 8));
      if (owner?.owner.kind !== 'cookie' || owner.base !== u64(data, 8) || owner.owner.cookie.released)
        fail(Errno.EINVAL, op, 'no such cookie');
      const c = owner.owner.cookie;
      c.released = true;
      if (c.mappings === 0) this.freeCookie(c);
      return 0;
    }
    const attribute = attributeFromFlags(cflags, op);
    if (!this.host.barMmapSupported(index)) fail(Errno.EINVAL, op, `region ${index} cannot be mapped`);
    this.checkWcAllowed(index, attribute, op, false);
    if (this.cookies.size >= this.host.maxCookies)
      fail(Errno.ENOSPC, op, `${this.host.maxCookies} cookies already (maxMmapCookies)`);
    const barSize = BigInt(this.host.bar(index)!.size);
    const size = roundUp(barSize, PAGE_SIZE);
    // Cookies pack densely; under kernel offsets they stay above the alias windows (15 << 40).
    const floor = this.host.denseOffsets ? 0n : COOKIE_BASE_INDEX << VFIO_PCI_OFFSET_SHIFT;
    const cookie: Cookie = { base: 0n, size, bar: index, attribute, released: false, mappings: 0 };
    const range = this.host.offsets.allocate(size, { kind: 'cookie', cookie }, floor);
    (cookie as { base: bigint }).base = range.base;
    this.cookies.add(cookie);
    putU64(data, 8, range.base);
    putU64(data, 16, barSize);
    return 0;
  }

  /** A mapping through cookie `c` was made (`+1`) or removed (`-1`). */
  cookieMapped(c: Cookie, delta: 1 | -1): void {
    c.mappings += delta;
    if (c.mappings === 0 && c.released) this.freeCookie(c);
  }

  /** Cookies holding offset space (released ones that are still mapped included). */
  get cookieCount(): number {
    return this.cookies.size;
  }

  private freeCookie(c: Cookie): void {
    this.host.offsets.release(c.base);
    this.cookies.delete(c);
  }

  // --- 3. alias regions --------------------------------------------------------------------------
  /** VFIO_TS_FEATURE_ALIAS_REGION: GET creates or finds the WC alias region of a BAR. */
  aliasFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_TS_FEATURE_ALIAS_REGION';
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_GET, vfio_ts_alias_region.size) !== 1) return 0;
    need(data, vfio_ts_alias_region.size, op);
    const bar = u32(data, 0);
    const attribute = attributeFromFlags(u32(data, 4), op);
    if (attribute !== 'wc') fail(Errno.EINVAL, op, 'only WC aliases (UC is the BAR region itself)');
    if (!this.host.barMmapSupported(bar)) fail(Errno.EINVAL, op, `BAR ${bar} cannot be mapped`);
    this.checkWcAllowed(bar, attribute, op, false);
    let index = this.host.aliasOf(bar);
    if (index === undefined) {
      // At most one alias per BAR, so indexes 9..14: under the kernel encoding their windows
      // always fit (44 bits, the least that holds the 9 fixed windows, has 16). The only ENOSPC
      // is the offset space's own: dense offsets in a width the regions already fill.
      const type = {
        kind: 'type' as const,
        type: VFIO_TS_REGION_TYPE_ALIAS,
        subtype: VFIO_TS_REGION_SUBTYPE_BAR0_WC + bar,
      };
      // The alias maps the same pages the BAR does (mappingSource refuses the MSI-X table and PBA
      // on both), so it says so the way the kernel does on the BAR (vfio_pci_ioctl_get_region_info:
      // the sparse-mmap or MSIX_MAPPABLE capability).
      index = this.host.addAlias(bar, [type, ...this.host.barMmapCaps(bar)], 'wc');
    }
    putU32(data, 8, index);
    putU32(data, 12, 0);
    return 0;
  }

  // --- 4. DMA_BUF --------------------------------------------------------------------------------
  /** vfio_pci_core_feature_dma_buf (Linux 7.3), plus the proposed ATTR field when enabled. */
  dmaBufFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_DEVICE_FEATURE_DMA_BUF';
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_GET, vfio_device_feature_dma_buf.size) !== 1)
      return 0;
    need(data, vfio_device_feature_dma_buf.size, op);
    const regionIndex = u32(data, 0);
    const openFlags = u32(data, 4);
    const dflags = u32(data, 8);
    const nr = u32(data, 12);
    let attribute: MemoryAttribute = 'uc';
    if (this.host.extensions.dmabufWc) {
      if (dflags & ~VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK) fail(Errno.EINVAL, op, 'unknown flags');
      attribute = attributeFromFlags(dflags, op);
      if (!nr) fail(Errno.EINVAL, op, 'no ranges');
    } else if (!nr || dflags) fail(Errno.EINVAL, op, 'flags must be 0 and nr_ranges > 0');
    if (regionIndex >= VFIO_PCI_ROM_REGION_INDEX) fail(Errno.ENODEV, op, `region ${regionIndex}`);
    // memdup_array_user(&arg->dma_ranges, nr_ranges, sizeof(*dma_ranges)): kmalloc's limit is
    // ENOMEM, unreadable user memory EFAULT; argsz is not consulted.
    if (nr > MAX_DMABUF_RANGES) fail(Errno.ENOMEM, op, `${nr} ranges: more than KMALLOC_MAX_SIZE`);
    need(data, vfio_device_feature_dma_buf.size + 16 * nr, op);
    // validate_dmabuf_input: every range non-empty and page aligned; the total must not overflow.
    const ranges: DmaBufRange[] = [];
    let total = 0n;
    for (let i = 0; i < nr; i++) {
      const offset = u64(data, 16 + 16 * i);
      const length = u64(data, 24 + 16 * i);
      if (!length || offset % PAGE_SIZE || length % PAGE_SIZE)
        fail(Errno.EINVAL, op, `range ${i} not page aligned`);
      total += length;
      if (total >= 1n << 64n) fail(Errno.EINVAL, op, 'total overflows');
      ranges.push({ offset, length });
    }
    // get_dmabuf_phys: only memory BARs have a p2pdma provider; ranges must end inside the BAR.
    const b = this.host.bar(regionIndex);
    const mem = this.host.memoryOf(regionIndex);
    // An unimplemented BAR is ENODEV on 7.3 (no p2pdma provider for it), an I/O or sub-page one EINVAL.
    if (!b) fail(Errno.ENODEV, op, `BAR ${regionIndex} is not implemented`);
    if (b.kind === 'io' || !mem) fail(Errno.EINVAL, op, `BAR ${regionIndex} is not memory`);
    for (const r of ranges) {
      if (r.offset + r.length >= 1n << 64n) fail(Errno.EOVERFLOW, op, 'range overflows');
      if (r.offset + r.length > BigInt(b.size)) fail(Errno.EINVAL, op, 'range beyond the BAR');
    }
    const fd = mem.dup() ?? fail(Errno.ENOMEM, op, 'no fd');
    this.dmabufs.set(fd, {
      fd,
      bar: regionIndex,
      ranges,
      size: total,
      attribute,
      writable: (openFlags & 3) === 2,
    });
    return fd;
  }

  dmaBuf(fd: number): DmaBuf | undefined {
    return this.dmabufs.get(fd);
  }

  /** Closes a dma-buf fd (the file's release). */
  closeDmaBuf(fd: number): void {
    if (this.dmabufs.delete(fd)) this.host.closeFd(fd);
  }

  close(): void {
    for (const fd of [...this.dmabufs.keys()]) this.closeDmaBuf(fd);
  }
}

/** vfio_check_feature (include/linux/vfio.h): 0 = PROBE answered, 1 = go on; throws otherwise. */
export function checkFeature(flags: number, argsz: number, supported: number, minsz: number): 0 | 1 {
  const op = 'VFIO_DEVICE_FEATURE';
  if (flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supported)
    fail(Errno.EINVAL, op, 'op not supported');
  if (flags & VFIO_DEVICE_FEATURE_PROBE) return 0;
  if (!(flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)))
    fail(Errno.EINVAL, op, 'neither GET nor SET');
  if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
  return 1;
}

/** The ATTR field shared by every path: UC or WC; other bits or attributes are EINVAL. */
export function attributeFromFlags(flags: number, op: string): MemoryAttribute {
  if (flags & ~VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK) fail(Errno.EINVAL, op, 'unknown flags');
  const attr = flags & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK;
  if (attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC) return 'uc';
  if (attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC) return 'wc';
  return fail(Errno.EINVAL, op, `attribute 0x${attr.toString(16)}`);
}

/** copy_from_user/copy_to_user of `size` bytes from a buffer that is shorter: EFAULT. */
export function need(buf: Uint8Array, size: number, op: string): void {
  if (buf.length < size) fail(Errno.EFAULT, op, `buffer of ${buf.length} bytes, ${size} needed`);
}
