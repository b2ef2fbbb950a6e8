/**
 * The write-combining request paths of the seed thread (docs/wc-uapi.md), kept apart from the
 * vfio-pci uAPI proper. Each path decodes its request, asks the one gate (`grantWc`) whether the
 * BAR may be mapped WC, and records a mapping handle in the one table (mmap.ts), where mmap finds
 * it:
 *   1. RFC: SET_REGION_FLAGS flips the attribute of a BAR's own region offset;
 *   2. cookies: a new offset of the device fd bound to (BAR, attribute);
 *   3. alias regions: a device-specific region whose offset maps the BAR WC;
 *   4. DMA_BUF: an fd naming BAR ranges with an attribute.
 */
import { Errno } from '../abi/errno.js';
import {
  PCI_STD_NUM_BARS,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_REGION_FLAG_WRITE_COMBINE,
  VFIO_TS_MMAP_COOKIE_FLAG_RELEASE,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import {
  aliasRegionStruct,
  dmaBufStruct,
  dmaRangeStruct,
  mmapCookieStruct,
  regionFlagsStruct,
} from '../wire/vfio.js';
import type { BarRange, MemoryAttribute } from './handles.js';
import type { MappingTable } from './mmap.js';
import { PAGE_SIZE, roundUp } from './offsets.js';
import type { RegionTable } from './regions.js';
import { checkFeature, need } from './uaccess.js';

export type { MappingPath, MemoryAttribute } from './handles.js';

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

/** The device's WC policy and limits (DeviceOptions). */
export interface WcPolicy {
  readonly extensions: Extensions;
  /** WC only on prefetchable memory BARs (the RFC's rule); `false` allows any memory BAR. */
  readonly wcRequiresPrefetch: boolean;
  /** Most live cookies (MAX_MMAP_COOKIES unless configured). */
  readonly maxCookies: number;
}

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
export const MAX_DMABUF_RANGES = KMALLOC_MAX_SIZE / dmaRangeStruct.size;
/**
 * Default most mmap cookies one device holds at once (released-but-still-mapped ones included;
 * DeviceOptions.maxMmapCookies, `vfio-ts serve --max-mmap-cookies`). Each cookie costs memory and
 * offset space; past the limit a GET is ENOSPC, the errno the core uses for exhausted offset space.
 */
export const MAX_MMAP_COOKIES = 4096;
/** open_flags' access mode (O_ACCMODE) and O_RDWR (include/uapi/asm-generic/fcntl.h). */
const O_ACCMODE = 3;
const O_RDWR = 2;

export class WriteCombining {
  constructor(
    private readonly regions: RegionTable,
    private readonly table: MappingTable,
    private readonly policy: WcPolicy,
  ) {}

  /**
   * The one WC gate: every path asks it before it records a WC handle (docs/wc-uapi.md). WC needs
   * a memory BAR the device lets userspace map, prefetchable unless `wcRequiresPrefetch: false`
   * (the RFC's rule and the resourceN_wc convention of pci_create_resource_files(); the seed thread
   * argues prefetch says nothing about WC safety, hence the option). EINVAL otherwise. UC is
   * never refused here: each path keeps its own rules for UC.
   *
   * DMA_BUF asks it too, although the upstream series it models allows WC on any BAR it exports:
   * one policy keeps the four paths comparable, and `wcRequiresPrefetch: false` is upstream's
   * behaviour, for all of them at once.
   */
  grantWc(bar: number, op: string): void {
    const b = this.regions.bar(bar);
    if (!b || b.kind === 'io') fail(Errno.EINVAL, op, `BAR ${bar} is not a memory BAR`);
    if (!this.regions.mmapSupported(bar)) fail(Errno.EINVAL, op, `BAR ${bar} cannot be mapped`);
    if (this.policy.wcRequiresPrefetch && !b.prefetchable)
      fail(Errno.EINVAL, op, `BAR ${bar} is not prefetchable (wcRequiresPrefetch)`);
  }

  // --- 1. the RFC --------------------------------------------------------------------------------
  /** Seed RFC: vfio_pci_ioctl_set_region_flags. Clearing never fails for index < 6. */
  setRegionFlags(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_SET_REGION_FLAGS';
    need(arg, regionFlagsStruct.size, op);
    const { index, flags } = regionFlagsStruct.read(arg);
    if (index >= PCI_STD_NUM_BARS) fail(Errno.EINVAL, op, `index ${index}`);
    // The RFC: !(res->flags & IORESOURCE_MEM) || !(res->flags & IORESOURCE_PREFETCH) → EINVAL.
    if (flags & VFIO_REGION_FLAG_WRITE_COMBINE) this.grantWc(index, op);
    this.table.setRegionAttribute(index, flags & VFIO_REGION_FLAG_WRITE_COMBINE ? 'wc' : 'uc');
    return 0;
  }

  // --- 2. cookies --------------------------------------------------------------------------------
  /** VFIO_TS_FEATURE_MMAP_COOKIE: GET allocates, SET with RELEASE frees (docs/wc-uapi.md). */
  cookieFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_TS_FEATURE_MMAP_COOKIE';
    const C = mmapCookieStruct;
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET, C.size) !== 1)
      return 0;
    need(data, C.size, op);
    const req = C.read(data);
    if (!(flags & VFIO_DEVICE_FEATURE_GET)) {
      if (req.flags !== VFIO_TS_MMAP_COOKIE_FLAG_RELEASE) fail(Errno.EINVAL, op, 'SET needs flags RELEASE');
      this.table.releaseCookie(this.table.cookieAt(req.offset) ?? fail(Errno.EINVAL, op, 'no such cookie'));
      return 0;
    }
    const bar = req.region_index;
    const attribute = attributeFromFlags(req.flags, op);
    // A cookie is an mmap offset: its BAR must be mappable, for UC cookies too.
    if (!this.regions.mmapSupported(bar)) fail(Errno.EINVAL, op, `region ${bar} cannot be mapped`);
    if (attribute === 'wc') this.grantWc(bar, op);
    if (this.table.cookieCount >= this.policy.maxCookies)
      fail(Errno.ENOSPC, op, `${this.policy.maxCookies} cookies already (maxMmapCookies)`);
    const barSize = BigInt(this.regions.bar(bar)!.size);
    // Cookies pack densely; under kernel offsets they stay above the alias windows (15 << 40).
    const floor = this.regions.dense ? 0n : COOKIE_BASE_INDEX << VFIO_PCI_OFFSET_SHIFT;
    const cookie = this.table.addCookie(bar, attribute, roundUp(barSize, PAGE_SIZE), floor);
    C.write(data, { offset: cookie.base, size: barSize });
    return 0;
  }

  // --- 3. alias regions --------------------------------------------------------------------------
  /** VFIO_TS_FEATURE_ALIAS_REGION: GET creates or finds the WC alias region of a BAR. */
  aliasFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_TS_FEATURE_ALIAS_REGION';
    const A = aliasRegionStruct;
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_GET, A.size) !== 1) return 0;
    need(data, A.size, op);
    const { region_index: bar, flags: attrFlags } = A.read(data);
    const attribute = attributeFromFlags(attrFlags, op);
    if (attribute !== 'wc') fail(Errno.EINVAL, op, 'only WC aliases (UC is the BAR region itself)');
    if (!this.regions.mmapSupported(bar)) fail(Errno.EINVAL, op, `BAR ${bar} cannot be mapped`);
    this.grantWc(bar, op);
    // At most one alias per BAR, so indexes 9..14: under the kernel encoding their windows always
    // fit (44 bits, the least that holds the 9 fixed windows, has 16). The only ENOSPC is the
    // offset space's own: dense offsets in a width the regions already fill.
    A.write(data, { alias_index: this.table.addAlias(bar, attribute), reserved: 0 });
    return 0;
  }

  // --- 4. DMA_BUF --------------------------------------------------------------------------------
  /** vfio_pci_core_feature_dma_buf (Linux 7.3), plus the proposed ATTR field when enabled. */
  dmaBufFeature(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_DEVICE_FEATURE_DMA_BUF';
    const D = dmaBufStruct;
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_GET, D.size) !== 1) return 0;
    need(data, D.size, op);
    const { region_index: regionIndex, open_flags: openFlags, flags: dflags, nr_ranges: nr } = D.read(data);
    let attribute: MemoryAttribute = 'uc';
    if (this.policy.extensions.dmabufWc) {
      if (dflags & ~VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK) fail(Errno.EINVAL, op, 'unknown flags');
      attribute = attributeFromFlags(dflags, op);
      if (!nr) fail(Errno.EINVAL, op, 'no ranges');
    } else if (!nr || dflags) fail(Errno.EINVAL, op, 'flags must be 0 and nr_ranges > 0');
    if (regionIndex >= VFIO_PCI_ROM_REGION_INDEX) fail(Errno.ENODEV, op, `region ${regionIndex}`);
    // memdup_array_user(&arg->dma_ranges, nr_ranges, sizeof(*dma_ranges)): kmalloc's limit is
    // ENOMEM, unreadable user memory EFAULT; argsz is not consulted.
    if (nr > MAX_DMABUF_RANGES) fail(Errno.ENOMEM, op, `${nr} ranges: more than KMALLOC_MAX_SIZE`);
    const first = D.offsetOf('dma_ranges');
    need(data, first + dmaRangeStruct.size * nr, op);
    // validate_dmabuf_input: every range non-empty and page aligned; the total must not overflow.
    const ranges: BarRange[] = [];
    let total = 0n;
    for (let i = 0; i < nr; i++) {
      const { offset, length } = dmaRangeStruct.read(data, first + dmaRangeStruct.size * i);
      if (!length || offset % PAGE_SIZE || length % PAGE_SIZE)
        fail(Errno.EINVAL, op, `range ${i} not page aligned`);
      total += length;
      if (total >= 1n << 64n) fail(Errno.EINVAL, op, 'total overflows');
      ranges.push({ offset, length });
    }
    // get_dmabuf_phys: only memory BARs have a p2pdma provider; ranges must end inside the BAR.
    const b = this.regions.bar(regionIndex);
    const mem = this.regions.memoryOf(regionIndex);
    // An unimplemented BAR is ENODEV on 7.3 (no p2pdma provider for it), an I/O or sub-page one EINVAL.
    if (!b) fail(Errno.ENODEV, op, `BAR ${regionIndex} is not implemented`);
    if (b.kind === 'io' || !mem) fail(Errno.EINVAL, op, `BAR ${regionIndex} is not memory`);
    for (const r of ranges) {
      if (r.offset + r.length >= 1n << 64n) fail(Errno.EOVERFLOW, op, 'range overflows');
      if (r.offset + r.length > BigInt(b.size)) fail(Errno.EINVAL, op, 'range beyond the BAR');
    }
    // The WC attribute passes the one gate like every other path (docs/wc-uapi.md §4), after the
    // checks 7.3 makes of any dma-buf: a UC dma-buf is exported as 7.3 exports it.
    if (attribute === 'wc') this.grantWc(regionIndex, op);
    const fd = mem.dup() ?? fail(Errno.ENOMEM, op, 'no fd');
    const writable = (openFlags & O_ACCMODE) === O_RDWR;
    this.table.addDmaBuf({ fd, bar: regionIndex, ranges, size: total, attribute, writable });
    return fd;
  }
}

/** The ATTR field shared by every path: UC or WC; other bits or attributes are EINVAL. */
export function attributeFromFlags(flags: number, op: string): MemoryAttribute {
  if (flags & ~VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK) fail(Errno.EINVAL, op, 'unknown flags');
  const attr = flags & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK;
  if (attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC) return 'uc';
  if (attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC) return 'wc';
  return fail(Errno.EINVAL, op, `attribute 0x${attr.toString(16)}`);
}
