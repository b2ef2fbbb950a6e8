/**
 * The regions of the device fd and the BARs behind them: what vfio_pci_core.c sets up in
 * vfio_pci_core_enable (bar_mmap_supported), reports in vfio_pci_ioctl_get_region_info, and maps
 * in vfio_pci_core_mmap. One table, shared by the ioctls, region access (rdwr.ts), the mapping
 * end point (mmap.ts) and the write-combining paths (wc.ts): each reads it, none calls back.
 *
 * Regions 0-8 are the fixed vfio-pci ones (BAR0-5, ROM, config, VGA); alias regions (wc.ts) are
 * added at 9, 10, ... and never move. Each region owns a window of the device fd's offset space:
 * `index << 40` like every Linux, or packed by size with `regionOffsets: 'dense'`.
 */
import { Errno } from '../abi/errno.js';
import {
  PCI_STD_NUM_BARS,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_PREFETCH,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_TS_REGION_SUBTYPE_BAR0_WC,
  VFIO_TS_REGION_TYPE_ALIAS,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import type { VfioRegionCap } from '../wire/vfio.js';
import type { BarDescription, DeviceDescription } from './description.js';
import type { CoreEnvironment, SharedMemory } from './env.js';
import type { MemoryAttribute, OffsetOwner } from './handles.js';
import { OffsetSpace, PAGE_SIZE, roundUp } from './offsets.js';

/** A region of the device fd as REGION_INFO reports it (caps before the argsz exchange). */
export interface DeviceRegion {
  readonly index: number;
  readonly size: bigint;
  readonly flags: number;
  readonly base: bigint;
  readonly caps: VfioRegionCap[];
  /** BAR this region maps (BARs and aliases). */
  readonly bar?: number;
  readonly aliasAttribute?: MemoryAttribute;
}

export interface RegionOptions {
  /** Report the seed RFC's PREFETCH flag on mmappable prefetchable BARs. */
  readonly reportPrefetch: boolean;
  /** Let mmap cover trapped (behaviour-handled) BARs too, as the kernel does for real hardware. */
  readonly mmapTrappedBars: boolean;
  /** MSI-X table pages: 'kernel' = MSIX_MAPPABLE and mappable; 'sparse' = a sparse-mmap cap without them. */
  readonly msixMmap: 'kernel' | 'sparse';
  /** Width of the offset space in bits. */
  readonly offsetBits: number;
  /** Regions packed by size instead of at `index << 40`. */
  readonly dense: boolean;
  /** Bytes of config space (256, or 4096 for PCI Express). */
  readonly configSize: number;
}

/** Linux's VGA region: legacy VGA ranges, 0xa0000-0xbffff plus I/O ports (vfio_pci_core.c). */
const VGA_REGION_SIZE = 0xc0000n;
/** Bytes of one MSI-X table entry and of one PBA word (PCI 3.0 §6.8.2). */
const MSIX_ENTRY_SIZE = 16;
const PBA_WORD_SIZE = 8;

export class RegionTable {
  readonly offsets: OffsetSpace<OffsetOwner>;
  /** The expansion ROM's bytes, when the device has one. */
  readonly rom: Uint8Array | undefined;
  /** Regions (and so cookies) packed by size, not at `index << 40`. */
  readonly dense: boolean;
  private readonly bars: readonly (BarDescription | undefined)[];
  private readonly memory: (SharedMemory | undefined)[] = [];
  private readonly list: DeviceRegion[] = [];

  constructor(
    private readonly description: DeviceDescription,
    env: CoreEnvironment,
    private readonly options: RegionOptions,
  ) {
    this.offsets = new OffsetSpace(options.offsetBits);
    this.dense = options.dense;
    const bars = [...description.bars];
    while (bars.length < PCI_STD_NUM_BARS) bars.push(undefined);
    this.bars = bars;
    for (const [i, bar] of bars.entries())
      if (bar && bar.kind !== 'io')
        this.memory[i] = env.allocate(
          `${description.name}-bar${i}`,
          Number(roundUp(BigInt(bar.size), PAGE_SIZE)),
        );
    this.rom = description.rom ? romImage(description.rom.size) : undefined;
    for (let i = 0; i < VFIO_PCI_NUM_REGIONS; i++) this.add(this.fixedRegion(i));
  }

  // --- BARs ------------------------------------------------------------------------------------
  bar(i: number): BarDescription | undefined {
    return i >= 0 && i < PCI_STD_NUM_BARS ? this.bars[i] : undefined;
  }

  /** The memory behind BAR `i` (memory and trapped BARs alike; I/O BARs have none). */
  memoryOf(i: number): SharedMemory | undefined {
    return this.memory[i];
  }

  /** vfio_pci_core_enable's bar_mmap_supported, with the model's trapped BARs and overrides. */
  mmapSupported(i: number): boolean {
    const b = this.bar(i);
    if (!b || b.kind === 'io') return false;
    if (b.mmappable !== undefined) return b.mmappable;
    return b.backing !== 'trapped' || this.options.mmapTrappedBars;
  }

  prefetchable(i: number): boolean {
    const b = this.bar(i);
    return !!b && b.kind !== 'io' && !!b.prefetchable;
  }

  /** Page-aligned [start, end) ranges of `bar` holding the MSI-X table or PBA, which mmap refuses. */
  msixHoles(bar: number): [bigint, bigint][] {
    const m = this.description.msix;
    if (!m || this.options.msixMmap === 'kernel') return [];
    const holes: [bigint, bigint][] = [];
    const page = (s: number, len: number): [bigint, bigint] => [
      (BigInt(s) / PAGE_SIZE) * PAGE_SIZE,
      roundUp(BigInt(s + len), PAGE_SIZE),
    ];
    if (m.tableBar === bar) holes.push(page(m.tableOffset, m.tableSize * MSIX_ENTRY_SIZE));
    if (m.pbaBar === bar) holes.push(page(m.pbaOffset, Math.ceil(m.tableSize / 64) * PBA_WORD_SIZE));
    return holes.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }

  /**
   * A function reset: zeroes the memory of BARs that declare `reset: 'zero'`, and the page
   * behind a trapped BAR (plain memory an mmap of it shows, not device memory); memory BARs
   * keep their bytes by default.
   */
  resetMemory(): void {
    for (const [i, m] of this.memory.entries()) {
      const b = this.bars[i];
      if (m && b && (b.reset === 'zero' || (b.reset === undefined && b.backing === 'trapped')))
        m.bytes.fill(0);
    }
  }

  close(): void {
    for (const m of this.memory) m?.close();
  }

  // --- regions ---------------------------------------------------------------------------------
  get count(): number {
    return this.list.length;
  }

  get(index: number): DeviceRegion | undefined {
    return this.list[index];
  }

  /** The offset of region `index` in the device fd (what REGION_INFO reports). */
  offsetOf(index: number): bigint {
    const r = this.list[index] ?? fail(Errno.EINVAL, 'region offset', `no region ${index}`);
    return r.base;
  }

  /** The region holding device-fd `offset` and the position in it; EINVAL for any other offset. */
  resolve(offset: bigint, op: string): { region: DeviceRegion; pos: bigint } {
    const hit = this.offsets.lookup(offset);
    if (hit?.owner.kind !== 'region') return fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    return { region: this.list[hit.owner.region]!, pos: offset - hit.base };
  }

  /** Index of BAR `bar`'s alias region, if one exists. */
  aliasOf(bar: number): number | undefined {
    return this.list.find((r) => r.index >= VFIO_PCI_NUM_REGIONS && r.bar === bar)?.index;
  }

  /**
   * Adds a device-specific region aliasing BAR `bar` with `attribute` (Alex Williamson: alias
   * regions "may expose only the MMAP flag and not READ or WRITE"), typed in vfio-ts's vendor
   * space. It maps the same pages the BAR does (mmap.ts refuses the MSI-X table and PBA on both),
   * so it carries the BAR's own mmap capability, as vfio_pci_ioctl_get_region_info puts it on the
   * BAR. ENOSPC when the offset space has no room for its window.
   */
  addAlias(bar: number, attribute: MemoryAttribute): DeviceRegion {
    const type: VfioRegionCap = {
      kind: 'type',
      type: VFIO_TS_REGION_TYPE_ALIAS,
      subtype: VFIO_TS_REGION_SUBTYPE_BAR0_WC + bar,
    };
    return this.add({
      index: this.list.length,
      size: BigInt(this.bar(bar)!.size),
      flags: VFIO_REGION_INFO_FLAG_MMAP,
      caps: [type, ...this.mmapCaps(bar)],
      bar,
      aliasAttribute: attribute,
    });
  }

  private add(r: Omit<DeviceRegion, 'base'>): DeviceRegion {
    const owner: OffsetOwner = { kind: 'region', region: r.index };
    let base: bigint;
    if (this.options.dense) {
      base = this.offsets.allocate(r.size > 0n ? r.size : PAGE_SIZE, owner).base;
    } else {
      base = BigInt(r.index) << VFIO_PCI_OFFSET_SHIFT;
      this.offsets.reserveFixed(base, 1n << VFIO_PCI_OFFSET_SHIFT, owner);
    }
    const region = { ...r, base };
    this.list[r.index] = region;
    return region;
  }

  /** The capability the BAR's mmap needs: MSIX_MAPPABLE (Linux >= 4.16) or a sparse mmap. */
  private mmapCaps(bar: number): VfioRegionCap[] {
    if (this.description.msix?.tableBar !== bar) return [];
    if (this.options.msixMmap === 'kernel') return [{ kind: 'msix-mappable' }];
    const size = roundUp(BigInt(this.bar(bar)!.size), PAGE_SIZE);
    const areas: { offset: bigint; size: bigint }[] = [];
    let at = 0n;
    for (const [s, e] of this.msixHoles(bar)) {
      if (s > at) areas.push({ offset: at, size: s - at });
      at = e > at ? e : at;
    }
    if (at < size) areas.push({ offset: at, size: size - at });
    return [{ kind: 'sparse-mmap', areas }];
  }

  private fixedRegion(index: number): Omit<DeviceRegion, 'base'> {
    const d = this.description;
    const rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    if (index < PCI_STD_NUM_BARS) {
      const b = this.bar(index);
      if (!b) return { index, size: 0n, flags: 0, caps: [] };
      let flags = rw;
      let caps: VfioRegionCap[] = [];
      if (this.mmapSupported(index)) {
        flags |= VFIO_REGION_INFO_FLAG_MMAP;
        caps = this.mmapCaps(index);
        // Seed RFC: PREFETCH is reported inside `if (bar_mmap_supported)` for IORESOURCE_PREFETCH.
        if (this.options.reportPrefetch && this.prefetchable(index)) flags |= VFIO_REGION_INFO_FLAG_PREFETCH;
      }
      return { index, size: BigInt(b.size), flags, caps, bar: index };
    }
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      // "Report the BAR size, not the ROM size"; READ only when a ROM is really there.
      const size = d.rom ? BigInt(d.rom.size) : 0n;
      return { index, size, flags: size ? VFIO_REGION_INFO_FLAG_READ : 0, caps: [] };
    }
    if (index === VFIO_PCI_CONFIG_REGION_INDEX)
      return { index, size: BigInt(this.options.configSize), flags: rw, caps: [] };
    // VGA (VFIO_PCI_VGA_REGION_INDEX): only VGA devices have it; REGION_INFO is EINVAL otherwise.
    return { index, size: d.vga ? VGA_REGION_SIZE : 0n, flags: d.vga ? rw : 0, caps: [] };
  }
}

/** A minimal valid expansion ROM image: 0x55 0xAA signature, size in 512-byte units. */
function romImage(size: number): Uint8Array {
  const img = new Uint8Array(size);
  img[0] = 0x55;
  img[1] = 0xaa;
  img[2] = Math.min(255, Math.ceil(size / 512));
  return img;
}
