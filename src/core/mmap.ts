/**
 * The one table of mapping handles and the one place a handle becomes a mapping
 * (vfio_pci_core.c: vfio_pci_core_mmap; the proposed DMA_BUF mmap). Every write-combining request
 * path (wc.ts) records its handle here after the WC gate granted it:
 *   1. RFC: the attribute of a BAR's own region offset (vdev->bar_write_combine[]);
 *   2. cookies: offsets of the device fd bound to (BAR, attribute), in the offset space;
 *   3. alias regions: a region of the table (regions.ts) with its own attribute;
 *   4. dma-bufs: an fd naming BAR ranges with an attribute.
 * `source` validates and describes a mapping through any of them; `map` makes it.
 */
import { Errno } from '../abi/errno.js';
import { PCI_STD_NUM_BARS } from '../abi/vfio.js';
import { fail } from '../errors.js';
import type { CoreEnvironment, MemoryMapping, SharedMemory } from './env.js';
import type { BarRange, Cookie, DmaBuf, MappingPath, MemoryAttribute } from './handles.js';
import { PAGE_SIZE, roundUp } from './offsets.js';
import type { RegionTable } from './regions.js';

/** A live mapping of device memory. */
export interface DeviceMapping {
  readonly regionIndex: number;
  /** Offset of the mapping's first byte within the region (BAR). */
  readonly regionOffset: bigint;
  readonly length: number;
  readonly attribute: MemoryAttribute;
  readonly via: MappingPath;
  readonly bytes: Uint8Array;
  unmap(): void;
}

/** How a transport hands a mapping to a peer: this fd, at this offset within it. */
export interface MappingSource {
  readonly memory: SharedMemory;
  readonly memoryOffset: bigint;
  readonly regionIndex: number;
  readonly attribute: MemoryAttribute;
  readonly via: MappingPath;
}

/** A mapping handle: what an mmap through an offset or a dma-buf maps. */
export interface MappingHandle {
  readonly bar: number;
  readonly attribute: MemoryAttribute;
  readonly via: MappingPath;
  /** The BAR windows it names, counted through in order (one whole BAR for device-fd offsets). */
  readonly ranges: readonly BarRange[];
  /** Through the device fd, vfio_pci_core_mmap refuses the MSI-X table and PBA pages. */
  readonly msixHoles: boolean;
  /** The cookie a mapping through it holds (a released cookie is freed with its last mapping). */
  readonly cookie?: Cookie;
}

export class MappingTable {
  /** RFC: vdev->bar_write_combine[], the attribute of each BAR's own region offset. */
  private readonly barWc = new Array<boolean>(PCI_STD_NUM_BARS).fill(false);
  private readonly cookies = new Set<Cookie>();
  private readonly dmabufs = new Map<number, DmaBuf>();
  private readonly live = new Set<DeviceMapping>();

  constructor(
    private readonly regions: RegionTable,
    private readonly env: CoreEnvironment,
  ) {}

  // --- recording (wc.ts, after the gate) ---------------------------------------------------------
  /** Path 1: later mmaps of BAR `bar`'s region offset get `attribute`; existing ones keep theirs. */
  setRegionAttribute(bar: number, attribute: MemoryAttribute): void {
    this.barWc[bar] = attribute === 'wc';
  }

  /** Path 2: a new cookie of `size` offsets for (bar, attribute), at or above `floor`. ENOSPC when full. */
  addCookie(bar: number, attribute: MemoryAttribute, size: bigint, floor: bigint): Cookie {
    const cookie: Cookie = { base: 0n, size, bar, attribute, released: false, mappings: 0 };
    const range = this.regions.offsets.allocate(size, { kind: 'cookie', cookie }, floor);
    (cookie as { base: bigint }).base = range.base;
    this.cookies.add(cookie);
    return cookie;
  }

  /** The live cookie whose first offset is `offset`, if any. */
  cookieAt(offset: bigint): Cookie | undefined {
    const hit = this.regions.offsets.lookup(offset);
    if (hit?.owner.kind !== 'cookie' || hit.base !== offset || hit.owner.cookie.released) return undefined;
    return hit.owner.cookie;
  }

  /** No new mapping through `c`; its offsets are freed with its last mapping. */
  releaseCookie(c: Cookie): void {
    c.released = true;
    if (c.mappings === 0) this.freeCookie(c);
  }

  /** Cookies holding offset space (released ones that are still mapped included). */
  get cookieCount(): number {
    return this.cookies.size;
  }

  /** Path 3: an alias region of BAR `bar` (regions.ts holds it: it is a region too). */
  addAlias(bar: number, attribute: MemoryAttribute): number {
    return this.regions.aliasOf(bar) ?? this.regions.addAlias(bar, attribute).index;
  }

  /** Path 4: a dma-buf fd. */
  addDmaBuf(d: DmaBuf): void {
    this.dmabufs.set(d.fd, d);
  }

  dmaBuf(fd: number): DmaBuf | undefined {
    return this.dmabufs.get(fd);
  }

  /** Closes a dma-buf fd (the file's release). */
  closeDmaBuf(fd: number): void {
    if (this.dmabufs.delete(fd)) this.env.closeFd(fd);
  }

  // --- lookup: an offset of the device fd, or a dma-buf fd ---------------------------------------
  /** The handle behind device-fd `offset` and the position in it (vfio_pci_core_mmap's lookup). */
  offsetHandle(offset: bigint, op: string): { handle: MappingHandle; pos: bigint } {
    const hit =
      this.regions.offsets.lookup(offset) ?? fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const pos = offset - hit.base;
    if (hit.owner.kind === 'cookie') {
      const c = hit.owner.cookie;
      if (c.released) fail(Errno.EINVAL, op, 'cookie released');
      return { handle: this.barHandle(c.bar, c.attribute, 'cookie', c), pos };
    }
    const region = this.regions.get(hit.owner.region)!;
    if (region.index >= PCI_STD_NUM_BARS && region.aliasAttribute === undefined)
      fail(Errno.EINVAL, op, `region ${region.index} cannot be mapped`);
    const bar = region.bar ?? fail(Errno.EINVAL, op, 'not a BAR');
    if (region.aliasAttribute)
      return { handle: this.barHandle(bar, region.aliasAttribute, 'alias-region'), pos };
    const wc = this.barWc[bar];
    return { handle: this.barHandle(bar, wc ? 'wc' : 'uc', wc ? 'rfc-region-flags' : 'region'), pos };
  }

  /** The handle behind dma-buf `fd`. EBADF for an fd this device did not export. */
  dmaBufHandle(fd: number, op: string): { handle: MappingHandle; dmabuf: DmaBuf } {
    const d = this.dmabufs.get(fd) ?? fail(Errno.EBADF, op, `fd ${fd}`);
    return {
      handle: { bar: d.bar, attribute: d.attribute, via: 'dma-buf', ranges: d.ranges, msixHoles: false },
      dmabuf: d,
    };
  }

  private barHandle(
    bar: number,
    attribute: MemoryAttribute,
    via: MappingPath,
    cookie?: Cookie,
  ): MappingHandle {
    const b = this.regions.bar(bar);
    const ranges = [{ offset: 0n, length: b ? roundUp(BigInt(b.size), PAGE_SIZE) : 0n }];
    return cookie
      ? { bar, attribute, via, ranges, msixHoles: true, cookie }
      : { bar, attribute, via, ranges, msixHoles: true };
  }

  // --- the one end point -------------------------------------------------------------------------
  /**
   * Where bytes [pos, pos + length) of `handle` map: the BAR's memory, the offset in it, the
   * attribute. Validates as vfio_pci_core_mmap does, for every path: page-aligned and non-empty,
   * a BAR that can be mapped, inside one window of the handle, clear of the MSI-X table and PBA
   * through the device fd. @throws VfioError(EINVAL)
   */
  source(
    handle: MappingHandle,
    pos: bigint,
    length: number,
    op: string,
  ): MappingSource & { regionOffset: bigint } {
    if (length <= 0 || pos % PAGE_SIZE) fail(Errno.EINVAL, op, 'length 0 or offset not page aligned');
    if (!this.regions.mmapSupported(handle.bar)) fail(Errno.EINVAL, op, `BAR ${handle.bar} cannot be mapped`);
    const len = roundUp(BigInt(length), PAGE_SIZE);
    let at = pos;
    for (const [i, r] of handle.ranges.entries()) {
      if (at >= r.length) {
        at -= r.length;
        continue;
      }
      // Offsets count through the windows in order; one mapping stays inside one window.
      if (at + len > r.length)
        fail(Errno.EINVAL, op, i + 1 < handle.ranges.length ? 'mapping spans two ranges' : 'beyond the BAR');
      const start = r.offset + at;
      if (handle.msixHoles)
        for (const [s, e] of this.regions.msixHoles(handle.bar))
          if (start < e && s < start + len) fail(Errno.EINVAL, op, 'overlaps the MSI-X table or PBA');
      return this.describe(handle, start);
    }
    return fail(Errno.EINVAL, op, 'beyond the mapping');
  }

  /** The one MappingSource constructor: `handle`'s BAR memory at BAR offset `at`. */
  describe(handle: MappingHandle, at: bigint): MappingSource & { regionOffset: bigint } {
    const memory =
      this.regions.memoryOf(handle.bar) ?? fail(Errno.EINVAL, 'mmap', `BAR ${handle.bar} has no memory`);
    const { attribute, via } = handle;
    return { memory, memoryOffset: at, regionIndex: handle.bar, regionOffset: at, attribute, via };
  }

  /** mmap(MAP_SHARED) of `length` bytes of `handle` from `pos`. */
  map(handle: MappingHandle, pos: bigint, length: number, op: string): DeviceMapping {
    const src = this.source(handle, pos, length, op);
    const m = src.memory.map(Number(src.memoryOffset), length);
    const c = handle.cookie;
    if (!c) return this.track(src, m, length);
    // The mapping holds its cookie: a released cookie's offsets are freed with its last mapping.
    c.mappings++;
    return this.track(src, m, length, () => {
      if (--c.mappings === 0 && c.released) this.freeCookie(c);
    });
  }

  /** Live mappings, for reports and tests. */
  mappings(): readonly DeviceMapping[] {
    return [...this.live];
  }

  /** Unmaps everything and closes every dma-buf (the device fd's release). */
  close(): void {
    for (const m of [...this.live]) m.unmap();
    for (const fd of [...this.dmabufs.keys()]) this.closeDmaBuf(fd);
  }

  private freeCookie(c: Cookie): void {
    this.regions.offsets.release(c.base);
    this.cookies.delete(c);
  }

  private track(
    src: MappingSource & { regionOffset: bigint },
    m: MemoryMapping,
    length: number,
    onUnmap?: () => void,
  ): DeviceMapping {
    let live = true;
    const mapping: DeviceMapping = {
      regionIndex: src.regionIndex,
      regionOffset: src.regionOffset,
      length,
      attribute: src.attribute,
      via: src.via,
      bytes: m.bytes,
      unmap: () => {
        if (!live) return;
        live = false;
        m.unmap();
        this.live.delete(mapping);
        onUnmap?.();
      },
    };
    this.live.add(mapping);
    return mapping;
  }
}
