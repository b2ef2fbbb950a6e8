/**
 * VfioPciDevice: an emulated PCI device that answers the VFIO device uAPI the way Linux's
 * vfio-pci does (drivers/vfio/pci/vfio_pci_core.c), byte for byte, through a raw
 * `ioctl(request, bytes)`, `pread`/`pwrite` at region offsets and `mmap`.
 *
 * Write combining: every request path of the seed thread resolves to one mechanism, a mapping
 * handle = (region, range, attribute), found through an offset of the device fd ("mmap cookie")
 * or a dma-buf fd:
 *   1. RFC: SET_REGION_FLAGS(WRITE_COMBINE) flips a BAR's default attribute (rfc.ts docs);
 *   2. per-request cookies: VFIO_TS_FEATURE_MMAP_COOKIE returns a new offset bound to
 *      (region, attribute);
 *   3. WC alias regions: VFIO_TS_FEATURE_ALIAS_REGION creates a device-specific region;
 *   4. DMA_BUF (feature 11) with ATTR_WC.
 * docs/wc-uapi.md is the uAPI of 2-4 written down.
 */
import { Errno } from '../abi/errno.js';
import {
  PCI_STD_NUM_BARS,
  sizeIn,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
  VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
  VFIO_DEVICE_FEATURE_LOW_POWER_EXIT,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_IOEVENTFD,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_DEVICE_SET_REGION_FLAGS,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_PREFETCH,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_TS_FEATURE_ALIAS_REGION,
  VFIO_TS_FEATURE_MMAP_COOKIE,
  vfio_device_feature,
  vfio_device_info,
  vfio_irq_info,
  vfio_irq_set,
  vfio_region_info,
} from '../abi/vfio.js';
import { fail, VfioError } from '../errors.js';
import { encodeCapChain, putU32, putU64, u32, u64, type VfioRegionCap, view } from '../wire/vfio.js';
import { ConfigSpace } from './config.js';
import type { BarDescription, DeviceDescription, KernelProfile } from './description.js';
import { DmaSpace } from './dma.js';
import type { CoreEnvironment, MemoryMapping, SharedMemory } from './env.js';
import { IrqState } from './irqs.js';
import { DEFAULT_OFFSET_BITS, OffsetSpace, PAGE_SIZE, roundUp } from './offsets.js';
import {
  ALL_EXTENSIONS,
  checkFeature,
  type Extensions,
  MAX_MMAP_COOKIES,
  type MappingPath,
  type MemoryAttribute,
  need,
  type OffsetOwner,
  WriteCombining,
} from './wc.js';

export {
  ALL_EXTENSIONS,
  checkFeature,
  type Extensions,
  MAX_DMABUF_RANGES,
  MAX_MMAP_COOKIES,
  type MappingPath,
  type MemoryAttribute,
  NO_EXTENSIONS,
} from './wc.js';

export interface DeviceOptions {
  readonly env: CoreEnvironment;
  /** Which kernel's vfio-pci to answer like (default 7.3). */
  readonly profile?: KernelProfile;
  readonly extensions?: Partial<Extensions>;
  /**
   * The RFC allows WC only on prefetchable memory BARs (IORESOURCE_PREFETCH). The thread argues
   * prefetch says nothing about WC safety; `false` relaxes the rule to any memory BAR.
   */
  readonly wcRequiresPrefetch?: boolean;
  /** Width of the device fd's offset space in bits (44 = a 32-bit pgoff with 4 KiB pages). */
  readonly offsetBits?: number;
  /**
   * 'kernel': region i at i << 40 like every Linux (cookies packed above the alias windows);
   * 'dense': regions packed by size too (offsets are opaque; the seed thread's point).
   */
  readonly regionOffsets?: 'kernel' | 'dense';
  /** Let mmap cover trapped (behaviour-handled) BARs too, as the kernel does for real hardware. */
  readonly mmapTrappedBars?: boolean;
  /**
   * MSI-X table pages: 'kernel' reports MSIX_MAPPABLE and allows mmap over them (Linux >= 4.16);
   * 'sparse' reports a sparse-mmap capability without them and refuses mmap there (default).
   */
  readonly msixMmap?: 'kernel' | 'sparse';
  /** Most live mmap cookies (default MAX_MMAP_COOKIES); a GET past it is ENOSPC. */
  readonly maxMmapCookies?: number;
}

/** What a device's behaviour (src/devices/*) can reach. */
export interface DeviceContext {
  readonly config: ConfigSpace;
  readonly dma: DmaSpace;
  /** The memory of a memory-backed BAR. */
  barMemory(bar: number): Uint8Array | undefined;
  /** Raise interrupt `vector` of whatever type the driver enabled (INTx: 0). */
  raise(vector?: number): boolean;
  /**
   * INTx is a level: the device deasserts its line (QEMU's pci_set_irq(dev, 0)). The Interrupt
   * Status bit clears, and an unmask no longer re-sends it. No-op for MSI.
   */
  lower(): void;
  readonly irqType: 'none' | 'intx' | 'msi' | 'msix';
}

/**
 * Trapped BAR accesses, naturally aligned, as vfio_pci_core_do_io_rw cuts a pread/pwrite: 1, 2
 * or 4 bytes, and on Linux >= 6.11 ("vfio/pci: Support 8-byte PCI loads and stores",
 * VFIO_IORDWR(64)) 8 bytes where at least 8 remain at an 8-aligned offset (the 7.3 profile).
 */
export interface DeviceBehaviour {
  attach?(ctx: DeviceContext): void;
  barRead?(bar: number, offset: number, size: 1 | 2 | 4): number;
  barWrite?(bar: number, offset: number, size: 1 | 2 | 4, value: number): void;
  /**
   * An 8-byte access. A behaviour without these takes it as two 4-byte accesses, low half first,
   * as QEMU's memory core splits an access wider than a region's `.impl.max_access_size`
   * (softmmu/memory.c access_with_adjusted_size).
   */
  barRead64?(bar: number, offset: number): bigint;
  barWrite64?(bar: number, offset: number, value: bigint): void;
  reset?(): void;
  close?(): void;
}

/** Kept as a name for device files; `backing` lives in BarDescription. */
export type DeviceBarDescription = BarDescription;

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

/** vfio.h (7.3): VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2. */
const VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOV2 = 12;
/** Linux's VGA region: legacy VGA ranges, 0xa0000-0xbffff plus I/O ports (vfio_pci_core.c). */
const VGA_REGION_SIZE = 0xc0000n;

export class VfioPciDevice {
  readonly profile: KernelProfile;
  readonly extensions: Extensions;
  readonly config: ConfigSpace;
  readonly irqs: IrqState;
  readonly dma = new DmaSpace();
  readonly offsets: OffsetSpace<OffsetOwner>;
  private readonly bars: (DeviceBarDescription | undefined)[];
  private readonly barMemory: (SharedMemory | undefined)[] = [];
  private readonly romImage: Uint8Array | undefined;
  private readonly regions: DeviceRegion[] = [];
  /** The four write-combining request paths (wc.ts). */
  private readonly wc: WriteCombining;
  private readonly liveMappings = new Set<DeviceMapping>();
  private readonly wcRequiresPrefetch: boolean;
  private readonly mmapTrappedBars: boolean;
  private readonly msixMmap: 'kernel' | 'sparse';
  private readonly denseOffsets: boolean;
  private lowPower = false;
  private closed = false;
  /** The device asserts INTx (DeviceContext.raise with INTx active, until lower). */
  private intxLevel = false;

  constructor(
    readonly description: DeviceDescription,
    private readonly behaviour: DeviceBehaviour,
    private readonly options: DeviceOptions,
  ) {
    this.profile = options.profile ?? '7.3';
    this.extensions = { ...ALL_EXTENSIONS, ...options.extensions };
    this.wcRequiresPrefetch = options.wcRequiresPrefetch ?? true;
    this.mmapTrappedBars = options.mmapTrappedBars ?? false;
    this.msixMmap = options.msixMmap ?? 'sparse';
    this.denseOffsets = options.regionOffsets === 'dense';
    this.offsets = new OffsetSpace(options.offsetBits ?? DEFAULT_OFFSET_BITS);
    this.bars = [...description.bars];
    while (this.bars.length < PCI_STD_NUM_BARS) this.bars.push(undefined);
    this.config = new ConfigSpace(description);
    this.irqs = new IrqState(options.env, {
      dynamicMsix: this.profile !== '6.1' && description.msix !== undefined,
      vectorLookup: this.profile !== '6.1',
      // vfio_msi_enable / vfio_msi_disable reflect the state in the virtual capability.
      onMsiChange: (msix, vectors) => {
        if (msix) this.config.setMsixEnabled(vectors > 0);
        else if (vectors > 0) this.config.setMsiEnabled(true, vectors);
        else this.config.setMsiEnabled(false);
      },
      // INTx unmasked, by the ioctl or by the unmask eventfd (virqfd), which runs outside any
      // SET_IRQS: see intxServiced.
      onIntxUnmasked: () => this.intxServiced(),
    });
    for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
      const bar = this.bars[i];
      if (bar && bar.kind !== 'io')
        this.barMemory[i] = options.env.allocate(
          `${description.name}-bar${i}`,
          Number(roundUp(BigInt(bar.size), PAGE_SIZE)),
        );
    }
    this.romImage = description.rom ? romImage(description) : undefined;
    for (let i = 0; i < VFIO_PCI_NUM_REGIONS; i++) this.addRegion(this.fixedRegion(i));
    this.wc = new WriteCombining({
      extensions: this.extensions,
      offsets: this.offsets,
      denseOffsets: this.denseOffsets,
      wcRequiresPrefetch: this.wcRequiresPrefetch,
      maxCookies: options.maxMmapCookies ?? MAX_MMAP_COOKIES,
      bar: (i) => this.bar(i),
      barMmapSupported: (i) => this.barMmapSupported(i),
      memoryOf: (bar) => this.barMemory[bar],
      barMmapCaps: (bar) => (this.msixOnBar(bar) ? [this.msixCap(bar)] : []),
      aliasOf: (bar) => this.regions.find((r) => r.index >= VFIO_PCI_NUM_REGIONS && r.bar === bar)?.index,
      addAlias: (bar, caps, attribute) =>
        // Alex Williamson: alias regions "may expose only the MMAP flag and not READ or WRITE".
        this.addRegion({
          index: this.regions.length,
          size: BigInt(this.bar(bar)!.size),
          flags: VFIO_REGION_INFO_FLAG_MMAP,
          caps,
          bar,
          aliasAttribute: attribute,
        }).index,
      closeFd: (fd) => options.env.closeFd(fd),
    });
    behaviour.attach?.(this.context());
  }

  // -------------------------------------------------------------------------------------------
  // Regions
  // -------------------------------------------------------------------------------------------
  private bar(i: number): DeviceBarDescription | undefined {
    return i >= 0 && i < PCI_STD_NUM_BARS ? this.bars[i] : undefined;
  }

  private barMmapSupported(i: number): boolean {
    const b = this.bar(i);
    if (!b || b.kind === 'io') return false;
    if (b.mmappable !== undefined) return b.mmappable;
    return b.backing !== 'trapped' || this.mmapTrappedBars;
  }

  private isPrefetchable(i: number): boolean {
    const b = this.bar(i);
    return !!b && b.kind !== 'io' && !!b.prefetchable;
  }

  private msixOnBar(i: number): boolean {
    return this.description.msix?.tableBar === i;
  }

  private fixedRegion(index: number): Omit<DeviceRegion, 'base'> {
    const caps: VfioRegionCap[] = [];
    if (index < PCI_STD_NUM_BARS) {
      const b = this.bar(index);
      if (!b) return { index, size: 0n, flags: 0, caps };
      let flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
      if (this.barMmapSupported(index)) {
        flags |= VFIO_REGION_INFO_FLAG_MMAP;
        if (this.msixOnBar(index)) caps.push(this.msixCap(index));
        // Seed RFC: PREFETCH is reported inside `if (bar_mmap_supported)` for IORESOURCE_PREFETCH.
        if (this.extensions.rfc && this.isPrefetchable(index)) flags |= VFIO_REGION_INFO_FLAG_PREFETCH;
      }
      return { index, size: BigInt(b.size), flags, caps, bar: index };
    }
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      // "Report the BAR size, not the ROM size"; READ only when a ROM is really there.
      const size = this.description.rom ? BigInt(this.description.rom.size) : 0n;
      return { index, size, flags: size ? VFIO_REGION_INFO_FLAG_READ : 0, caps };
    }
    if (index === VFIO_PCI_CONFIG_REGION_INDEX)
      return {
        index,
        size: BigInt(this.config.size),
        flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
        caps,
      };
    // VGA: exists only for VGA devices; REGION_INFO answers EINVAL otherwise.
    return {
      index,
      size: this.description.vga ? VGA_REGION_SIZE : 0n,
      flags: this.description.vga ? VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE : 0,
      caps,
    };
  }

  /** MSI-X BAR: MSIX_MAPPABLE (kernel >= 4.16) or a sparse mmap around the table and PBA. */
  private msixCap(bar: number): VfioRegionCap {
    if (this.msixMmap === 'kernel') return { kind: 'msix-mappable' };
    const size = roundUp(BigInt(this.bar(bar)!.size), PAGE_SIZE);
    const holes = this.msixHoles(bar);
    const areas: { offset: bigint; size: bigint }[] = [];
    let at = 0n;
    for (const [s, e] of holes) {
      if (s > at) areas.push({ offset: at, size: s - at });
      at = e > at ? e : at;
    }
    if (at < size) areas.push({ offset: at, size: size - at });
    return { kind: 'sparse-mmap', areas };
  }

  /** Page-aligned [start, end) ranges of `bar` holding the MSI-X table or PBA. */
  private msixHoles(bar: number): [bigint, bigint][] {
    const m = this.description.msix;
    if (!m || this.msixMmap === 'kernel') return [];
    const holes: [bigint, bigint][] = [];
    const page = (s: number, len: number): [bigint, bigint] => [
      (BigInt(s) / PAGE_SIZE) * PAGE_SIZE,
      roundUp(BigInt(s + len), PAGE_SIZE),
    ];
    if (m.tableBar === bar) holes.push(page(m.tableOffset, m.tableSize * 16));
    if (m.pbaBar === bar) holes.push(page(m.pbaOffset, Math.ceil(m.tableSize / 64) * 8));
    return holes.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }

  private addRegion(r: Omit<DeviceRegion, 'base'>): DeviceRegion {
    let base: bigint;
    if (this.denseOffsets) {
      base = this.offsets.allocate(r.size > 0n ? r.size : PAGE_SIZE, {
        kind: 'region',
        region: r.index,
      }).base;
    } else {
      base = BigInt(r.index) << VFIO_PCI_OFFSET_SHIFT;
      this.offsets.reserveFixed(base, 1n << VFIO_PCI_OFFSET_SHIFT, { kind: 'region', region: r.index });
    }
    const region = { ...r, base };
    this.regions[r.index] = region;
    return region;
  }

  get numRegions(): number {
    return this.regions.length;
  }

  /** Region `index` (size, flags, caps, offset), or undefined: what transports ask instead of a REGION_INFO ioctl. */
  region(index: number): DeviceRegion | undefined {
    return this.regions[index];
  }

  /**
   * pread of region `index` at `pos`, addressed by index (vfio-user REGION_READ) rather than by
   * device-fd offset: the same checks and errnos, no offset encode/decode round trip.
   */
  readRegion(index: number, pos: bigint, length: number): Uint8Array {
    this.assertOpen('pread');
    if (length === 0) return new Uint8Array(0);
    const region = this.regions[index] ?? fail(Errno.EINVAL, 'pread', `no region ${index}`);
    return this.regionRw(region, pos, new Uint8Array(length), false);
  }

  /** pwrite of region `index` at `pos` (vfio-user REGION_WRITE); returns the bytes written. */
  writeRegion(index: number, pos: bigint, data: Uint8Array): number {
    this.assertOpen('pwrite');
    if (data.length === 0) return 0;
    const region = this.regions[index] ?? fail(Errno.EINVAL, 'pwrite', `no region ${index}`);
    return this.regionRw(region, pos, data, true).length;
  }

  /** The offset of region `index` in the device fd (what REGION_INFO reports). */
  regionOffset(index: number): bigint {
    const r = this.regions[index];
    if (!r) fail(Errno.EINVAL, 'region offset', `no region ${index}`);
    return r.base;
  }

  // -------------------------------------------------------------------------------------------
  // ioctl
  // -------------------------------------------------------------------------------------------
  /**
   * The device fd's ioctl. `arg` is the user buffer, read and written in place like the kernel's
   * copy_from_user/copy_to_user; a buffer shorter than what the kernel would copy is EFAULT.
   * Returns the ioctl's result (0, or an fd for DMA_BUF).
   * @throws VfioError
   */
  ioctl(request: number, arg: Uint8Array): number {
    this.assertOpen('ioctl');
    switch (request) {
      case VFIO_DEVICE_GET_INFO:
        return this.getInfo(arg);
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.getRegionInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO:
        return this.getIrqInfo(arg);
      case VFIO_DEVICE_SET_IRQS:
        return this.setIrqs(arg);
      case VFIO_DEVICE_RESET:
        return this.resetIoctl();
      case VFIO_DEVICE_FEATURE:
        return this.feature(arg);
      case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
        return this.hotResetInfo(arg);
      case VFIO_DEVICE_PCI_HOT_RESET:
        return this.hotReset(arg);
      case VFIO_DEVICE_IOEVENTFD:
        return this.ioeventfd(arg);
      case VFIO_DEVICE_SET_REGION_FLAGS:
        if (this.extensions.rfc) return this.wc.setRegionFlags(arg);
        break;
    }
    return fail(Errno.ENOTTY, 'ioctl', `request 0x${request.toString(16)}`);
  }

  /** vfio_pci_ioctl_get_info: minsz ends at num_irqs; copies back min(argsz, sizeof) bytes. */
  private getInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_INFO';
    const minsz = 16;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
    // The struct is 20 bytes in 6.1's header and 24 in 7.3's (a trailing pad); the kernel copies
    // back min(argsz, sizeof) bytes of a zeroed struct, so cap_offset and pad read back as 0.
    const out = Math.min(argsz, sizeIn(vfio_device_info, this.profile));
    need(arg, out, op);
    const flags = VFIO_DEVICE_FLAGS_PCI | (this.description.resettable ? VFIO_DEVICE_FLAGS_RESET : 0);
    putU32(arg, 4, flags);
    putU32(arg, 8, this.regions.length);
    putU32(arg, 12, VFIO_PCI_NUM_IRQS);
    for (let at = 16; at + 4 <= out; at += 4) putU32(arg, at, 0);
    return 0;
  }

  /** vfio_pci_ioctl_get_region_info, including the argsz exchange for capabilities. */
  private getRegionInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_REGION_INFO';
    const minsz = vfio_region_info.size;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
    const index = u32(arg, 8);
    const r = this.regions[index];
    if (!r || (index === VFIO_PCI_VGA_REGION_INDEX && !this.description.vga))
      fail(Errno.EINVAL, op, `index ${index}`);
    // `flags` is output only: whatever the caller put there is overwritten (seed thread, A.W.).
    let flags = r.flags;
    // cap_offset is written only when the region has capabilities; otherwise the caller's value
    // goes back unchanged (the kernel copies the whole 32-byte header in and out). Seen on 6.1/7.3.
    let capOffset = u32(arg, 12);
    let newArgsz = argsz;
    if (r.caps.length) {
      const chain = encodeCapChain(r.caps, minsz);
      flags |= VFIO_REGION_INFO_FLAG_CAPS;
      capOffset = 0;
      if (argsz < minsz + chain.length) {
        newArgsz = minsz + chain.length;
      } else {
        need(arg, minsz + chain.length, op);
        arg.set(chain, minsz);
        capOffset = minsz;
      }
    }
    putU32(arg, 0, newArgsz);
    putU32(arg, 4, flags);
    putU32(arg, 12, capOffset);
    putU64(arg, 16, r.size);
    putU64(arg, 24, r.base);
    return 0;
  }

  private isPcie(): boolean {
    return !!this.description.pcie;
  }

  /**
   * vdev->has_dyn_msix (Linux 6.5+, pci_msix_can_alloc_dyn): MSI-X vectors can be added while
   * MSI-X is enabled. The 6.1 profile has no such thing.
   */
  get dynamicMsix(): boolean {
    return this.profile !== '6.1' && this.description.msix !== undefined;
  }

  /**
   * vfio_pci_ioctl_get_pci_hot_reset_info: minsz ends at `count`; flags is zeroed; then a slot
   * or bus reset must be possible (pci_probe_reset_slot / pci_probe_reset_bus), else ENODEV. The
   * model's function sits alone on a root bus (like QEMU's q35 root-complex devices): ENODEV.
   */
  private hotResetInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO';
    const minsz = 12;
    need(arg, minsz, op);
    if (u32(arg, 0) < minsz) fail(Errno.EINVAL, op, 'argsz');
    putU32(arg, 4, 0);
    return fail(Errno.ENODEV, op, 'no slot or bus reset for this function');
  }

  /** vfio_pci_ioctl_pci_hot_reset: `argsz < minsz || flags` is EINVAL, then as above ENODEV. */
  private hotReset(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_PCI_HOT_RESET';
    const minsz = 12;
    need(arg, minsz, op);
    if (u32(arg, 0) < minsz || u32(arg, 4)) fail(Errno.EINVAL, op, 'argsz or flags');
    return fail(Errno.ENODEV, op, 'no slot or bus reset for this function');
  }

  /**
   * vfio_pci_ioctl_ioeventfd → vfio_pci_ioeventfd: the validation, and deletion of an ioeventfd
   * that does not exist (ENODEV). The model registers none: a new one gets ENOSPC, the kernel's
   * answer when VFIO_PCI_IOEVENTFD_MAX are in use (here the maximum is 0).
   */
  private ioeventfd(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_IOEVENTFD';
    const minsz = 32; // offsetofend(struct vfio_device_ioeventfd, fd)
    need(arg, minsz, op);
    if (u32(arg, 0) < minsz) fail(Errno.EINVAL, op, 'argsz');
    const flags = u32(arg, 4);
    const SIZE_MASK = 0xf; // VFIO_DEVICE_IOEVENTFD_SIZE_MASK: 1, 2, 4 or 8 bytes
    if (flags & ~SIZE_MASK) fail(Errno.EINVAL, op, 'flags');
    const count = flags & SIZE_MASK;
    if (count !== 1 && count !== 2 && count !== 4 && count !== 8) fail(Errno.EINVAL, op, 'size');
    const offset = u64(arg, 8);
    // vfio_pci_ioeventfd: `bar = VFIO_PCI_OFFSET_TO_INDEX(offset); pos = offset &
    // VFIO_PCI_OFFSET_MASK; if (bar > VFIO_PCI_BAR5_REGION_INDEX) return -EINVAL;`. The region is
    // found through the offset space, so dense offsets decode too (under the kernel encoding the
    // lookup gives exactly index = offset >> 40, pos = the low 40 bits); an offset no region
    // owns (a cookie, a hole) is EINVAL like a region past BAR5.
    const hit = this.offsets.lookup(offset);
    const bar = hit?.owner.kind === 'region' ? hit.owner.region : PCI_STD_NUM_BARS;
    const pos = hit ? offset - hit.base : 0n;
    if (bar >= PCI_STD_NUM_BARS) fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}: not a BAR`);
    const b = this.bar(bar);
    if (pos + BigInt(count) > BigInt(b ? b.size : 0)) fail(Errno.EINVAL, op, 'beyond the BAR');
    const m = this.description.msix;
    if (m && m.tableBar === bar) {
      const ts = BigInt(m.tableOffset);
      const te = ts + BigInt(m.tableSize * 16);
      if (!(pos + BigInt(count) <= ts || pos >= te)) fail(Errno.EINVAL, op, 'overlaps the MSI-X table');
    }
    const fd = view(arg).getInt32(24, true);
    if (fd < 0) fail(Errno.ENODEV, op, 'no such ioeventfd');
    return fail(Errno.ENOSPC, op, 'the model offers no ioeventfds');
  }

  /** vfio_pci_get_irq_count */
  irqCount(index: number): number {
    const d = this.description;
    switch (index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        return d.identity.interruptPin ? 1 : 0;
      case VFIO_PCI_MSI_IRQ_INDEX:
        return d.msi ? d.msi.vectors : 0;
      case VFIO_PCI_MSIX_IRQ_INDEX:
        return d.msix ? d.msix.tableSize : 0;
      case VFIO_PCI_ERR_IRQ_INDEX:
        return this.profile === '6.1' ? (this.isPcie() ? 1 : 0) : 1;
      case VFIO_PCI_REQ_IRQ_INDEX:
        return 1;
    }
    return 0;
  }

  /** vfio_pci_ioctl_get_irq_info */
  private getIrqInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_IRQ_INFO';
    const minsz = vfio_irq_info.size;
    need(arg, minsz, op);
    if (u32(arg, 0) < minsz) fail(Errno.EINVAL, op, 'argsz');
    const index = u32(arg, 8);
    if (index >= VFIO_PCI_NUM_IRQS) fail(Errno.EINVAL, op, `index ${index}`);
    // 6.1: ERR exists only on PCIe devices; 7.3 answers it for every device (seen in the guest).
    if (index === VFIO_PCI_ERR_IRQ_INDEX && this.profile === '6.1' && !this.isPcie())
      fail(Errno.EINVAL, op, 'ERR IRQ on a non-PCIe device');
    let flags = VFIO_IRQ_INFO_EVENTFD;
    if (index === VFIO_PCI_INTX_IRQ_INDEX) flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    // 6.5+ (vfio_pci_ioctl_get_irq_info): NORESIZE unless MSI-X on a device with dynamic MSI-X
    // allocation (vdev->has_dyn_msix, true on x86 for any MSI-X device). Seen on 7.3 for nvme/e1000e.
    else if (index !== VFIO_PCI_MSIX_IRQ_INDEX || !this.dynamicMsix) flags |= VFIO_IRQ_INFO_NORESIZE;
    putU32(arg, 4, flags);
    putU32(arg, 12, this.irqCount(index));
    return 0;
  }

  /** vfio_pci_ioctl_set_irqs → vfio_set_irqs_validate_and_prepare → vfio_pci_set_irqs_ioctl */
  private setIrqs(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_SET_IRQS';
    const minsz = vfio_irq_set.size;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    const flags = u32(arg, 4);
    const index = u32(arg, 8);
    const start = u32(arg, 12);
    const count = u32(arg, 16);
    if (
      argsz < minsz ||
      index >= VFIO_PCI_NUM_IRQS ||
      count >= 0xffffffff - start ||
      flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)
    )
      fail(Errno.EINVAL, op, 'header');
    const max = this.irqCount(index);
    if (start >= max || start + count > max) fail(Errno.EINVAL, op, `start ${start} count ${count} > ${max}`);
    let size: number;
    switch (flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
      case VFIO_IRQ_SET_DATA_NONE:
        size = 0;
        break;
      case VFIO_IRQ_SET_DATA_BOOL:
        size = 1;
        break;
      case VFIO_IRQ_SET_DATA_EVENTFD:
        size = 4;
        break;
      default:
        return fail(Errno.EINVAL, op, 'data type');
    }
    let data: Uint8Array = new Uint8Array(0);
    if (size) {
      if (argsz - minsz < count * size) fail(Errno.EINVAL, op, 'argsz too small for data');
      need(arg, minsz + count * size, op);
      data = arg.subarray(minsz, minsz + count * size);
    }
    // 6.1 handles ERR triggers only on PCIe devices; 7.3 on every device (seen in the guest).
    this.irqs.set(index, flags, start, count, data, this.isPcie() || this.profile !== '6.1');
    // The INTx Interrupt Status bit stays set from the device's assertion until the interrupt is
    // serviced (unmasked after its automask); drivers that share lines (uio_pci_generic:
    // pci_check_and_mask_intx) read it to claim the interrupt.
    if (index === VFIO_PCI_INTX_IRQ_INDEX) {
      if (this.irqs.type === 'intx' && !this.irqs.intxMasked) this.intxServiced();
      else if (this.irqs.type !== 'intx' && !this.intxLevel) this.config.setInterruptStatus(false);
    }
    return 0;
  }

  /**
   * INTx is enabled and unmasked. vfio_pci_intx_unmask_handler: a line still asserted is
   * signalled again at once (pci_check_and_unmask_intx finds it pending; the delivery automasks
   * it again); a device that lowered its line is quiet and its Interrupt Status bit clears.
   */
  private intxServiced(): void {
    if (this.intxLevel) {
      if (!this.config.intxDisabled) this.irqs.raise(0);
    } else this.config.setInterruptStatus(false);
  }

  /** vfio_pci_ioctl_reset: EINVAL when the device cannot reset (reset_works false). */
  private resetIoctl(): number {
    if (!this.description.resettable) fail(Errno.EINVAL, 'VFIO_DEVICE_RESET', 'no reset method');
    this.reset();
    return 0;
  }

  /**
   * Device reset: device state only. vfio_pci_ioctl_reset → pci_try_reset_function saves the
   * function's config space and restores it after the reset, and vfio's virtual config (vconfig)
   * is not touched, so what a user reads from the config region is unchanged (seen on 6.1 and 7.3:
   * the command register reads back what was written before DEVICE_RESET). Interrupts stay.
   */
  reset(): void {
    for (const m of this.barMemory) m?.bytes.fill(0);
    this.behaviour.reset?.();
  }

  /** vfio_ioctl_device_feature (vfio_main.c) → vfio_pci_core_ioctl_feature. */
  private feature(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_FEATURE';
    const minsz = vfio_device_feature.size;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    const flags = u32(arg, 4);
    if (argsz < minsz) fail(Errno.EINVAL, op, 'argsz');
    if (
      flags &
      ~(
        VFIO_DEVICE_FEATURE_MASK |
        VFIO_DEVICE_FEATURE_SET |
        VFIO_DEVICE_FEATURE_GET |
        VFIO_DEVICE_FEATURE_PROBE
      )
    )
      fail(Errno.EINVAL, op, 'unknown flags');
    if (
      !(flags & VFIO_DEVICE_FEATURE_PROBE) &&
      flags & VFIO_DEVICE_FEATURE_SET &&
      flags & VFIO_DEVICE_FEATURE_GET
    )
      fail(Errno.EINVAL, op, 'GET and SET together');
    const dataSize = argsz - minsz;
    // The kernel reads `data` from user memory as the feature needs it; a short buffer is EFAULT.
    const data = arg.subarray(minsz);
    switch (flags & VFIO_DEVICE_FEATURE_MASK) {
      case VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
      case VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
        if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_SET, 0) !== 1) return 0;
        if ((flags & VFIO_DEVICE_FEATURE_MASK) === VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY) {
          // vfio_pci_runtime_pm_entry: `if (vdev->pm_runtime_engaged) return -EINVAL` (seen on
          // 6.1 and 7.3); exit is fine when not engaged.
          if (this.lowPower) fail(Errno.EINVAL, op, 'already in low power');
          this.lowPower = true;
        } else this.lowPower = false;
        return 0;
      case VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
        if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_SET, 8) !== 1) return 0;
        need(data, 8, op);
        {
          // vfio_pci_core_pm_entry_with_wakeup: `if (entry.wakeup_eventfd < 0) return -EINVAL;`
          // before eventfd_ctx_fdget (EBADF / EINVAL) looks the fd up.
          const fd = view(data).getInt32(0, true);
          if (fd < 0) fail(Errno.EINVAL, op, `wakeup_eventfd ${fd}`);
          this.options.env.eventfd(fd).close();
        }
        if (this.lowPower) fail(Errno.EINVAL, op, 'already in low power');
        this.lowPower = true;
        return 0;
      case VFIO_DEVICE_FEATURE_DMA_BUF:
        if (this.profile === '6.1') break;
        return this.wc.dmaBufFeature(flags, dataSize, data);
      case VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOV2:
        // 7.3's vfio_main.c answers feature 12 for every device; one without migration ops
        // gets EINVAL for any op, PROBE included (seen on 7.3). 6.1 does not know it: ENOTTY.
        if (this.profile === '6.1') break;
        return fail(Errno.EINVAL, op, 'no migration support');
      case VFIO_TS_FEATURE_MMAP_COOKIE:
        if (!this.extensions.cookies) break;
        return this.wc.cookieFeature(flags, dataSize, data);
      case VFIO_TS_FEATURE_ALIAS_REGION:
        if (!this.extensions.alias) break;
        return this.wc.aliasFeature(flags, dataSize, data);
    }
    return fail(Errno.ENOTTY, op, `feature ${flags & VFIO_DEVICE_FEATURE_MASK}`);
  }

  get inLowPower(): boolean {
    return this.lowPower;
  }

  // -------------------------------------------------------------------------------------------
  // Region read/write (vfio_pci_rw)
  // -------------------------------------------------------------------------------------------
  private resolve(offset: bigint, op: string): { region: DeviceRegion; pos: bigint } {
    const hit = this.offsets.lookup(offset);
    if (hit?.owner.kind !== 'region') fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const region = this.regions[hit.owner.region]!;
    return { region, pos: offset - hit.base };
  }

  /**
   * pread on the device fd. Like the kernel: a read starting at or past the region's end is
   * EINVAL, one that crosses it is cut short (vfio_pci_bar_rw: count = min(count, end - pos)).
   */
  pread(offset: bigint, length: number): Uint8Array {
    this.assertOpen('pread');
    // fs/read_write.c vfs_read: a zero-length read returns 0 before the driver is asked, at any
    // offset (seen on 6.1 and 7.3 at a BAR's end).
    if (length === 0) return new Uint8Array(0);
    const { region, pos } = this.resolve(offset, 'pread');
    return this.regionRw(region, pos, new Uint8Array(length), false);
  }

  /** pwrite on the device fd; returns the bytes written. */
  pwrite(offset: bigint, data: Uint8Array): number {
    this.assertOpen('pwrite');
    if (data.length === 0) return 0; // vfs_write, as vfs_read above
    const { region, pos } = this.resolve(offset, 'pwrite');
    return this.regionRw(region, pos, data, true).length;
  }

  private regionRw(region: DeviceRegion, pos: bigint, buf: Uint8Array, write: boolean): Uint8Array {
    const op = write ? 'pwrite' : 'pread';
    const index = region.index;
    const rwFlag = write ? VFIO_REGION_INFO_FLAG_WRITE : VFIO_REGION_INFO_FLAG_READ;
    if (!(region.flags & rwFlag)) fail(Errno.EINVAL, op, `region ${index} at 0x${pos.toString(16)}`);
    // The config region has its own range check: the whole access must fit, else EFAULT
    // (vfio_config_do_rw via vfio_pci_config_rw; ConfigSpace throws CONFIG_RANGE_ERRNO).
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (write) this.config.write(Number(pos), buf);
      else buf.set(this.config.read(Number(pos), buf.length));
      return buf;
    }
    if (pos >= region.size) fail(Errno.EINVAL, op, `region ${index} at 0x${pos.toString(16)}`);
    const count = Number(BigInt(buf.length) < region.size - pos ? BigInt(buf.length) : region.size - pos);
    const at = Number(pos);
    const part = buf.subarray(0, count);
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (write) this.config.write(at, part);
      else part.set(this.config.read(at, count));
      return part;
    }
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      if (write) fail(Errno.EINVAL, op, 'ROM is read-only');
      // The memory enable bit is not virtualized (only INTx disable is): a clear bit reaches the
      // device, which stops decoding, so pci_map_rom's pci_get_rom_size finds no 0x55AA signature
      // and returns NULL before any test_mem check: vfio_pci_bar_rw fails ENOMEM (seen on 6.1
      // and 7.3 with e1000e's ROM).
      if (!this.config.memoryEnabled) fail(Errno.ENOMEM, op, 'ROM not readable: memory decode disabled');
      part.set(this.romImage!.subarray(at, at + count));
      return part;
    }
    if (index === VFIO_PCI_VGA_REGION_INDEX) {
      if (!write) part.fill(0xff);
      return part;
    }
    this.barRw(index, at, part, write);
    return part;
  }

  /**
   * __vfio_pci_memory_enabled, asked by vfio_pci_core_ioread/iowrite##size when test_mem (the
   * resource is IORESOURCE_MEM): with the memory enable bit clear in vconfig, or the function in
   * D3hot, the access is EIO. I/O BARs are not tested (PCI_COMMAND_IO is never consulted): the
   * access reaches the device, which decodes it or not as its own I/O enable says.
   */
  private assertMemoryEnabled(op: string, index: number): void {
    if (!this.config.memoryEnabled) fail(Errno.EIO, op, `region ${index}: memory decode disabled`);
  }

  /**
   * BAR access: memory-backed BARs read and write their memory; trapped BARs go to the behaviour in
   * naturally aligned pieces, the widest that fits: 4/2/1 bytes on 6.1, 8/4/2/1 on 7.3 (see
   * DeviceBehaviour). The MSI-X table reads as 0xff and drops writes, as vfio_pci_bar_rw's
   * "x_start/x_end" exclusion does; only accesses outside it are memory-tested (EIO), so an
   * access that falls wholly in the table succeeds with memory decode off.
   */
  private barRw(bar: number, at: number, part: Uint8Array, write: boolean): void {
    const b = this.bar(bar)!;
    const mem = this.barMemory[bar];
    const holes = this.msixExclusion(bar);
    const testMem = b.kind !== 'io';
    const wide = this.profile !== '6.1';
    let i = 0;
    while (i < part.length) {
      const pos = at + i;
      const hole = holes.find(([s, e]) => pos >= s && pos < e);
      if (hole) {
        const n = Math.min(part.length - i, hole[1] - pos);
        if (!write) part.fill(0xff, i, i + n);
        i += n;
        continue;
      }
      // The first access fails the whole pread/pwrite: do_io_rw returns the error, not a count.
      if (testMem) this.assertMemoryEnabled(write ? 'pwrite' : 'pread', bar);
      const nextHole = holes
        .filter(([s]) => s > pos)
        .reduce((m, [s]) => Math.min(m, s), Number.POSITIVE_INFINITY);
      const limit = Math.min(part.length - i, nextHole - pos);
      if (!testMem && !this.config.ioEnabled) {
        // An I/O BAR with I/O decode off: the command bit reaches the device (only INTx disable
        // is virtualized), which no longer decodes the port: reads all-ones, writes go nowhere
        // (seen on 6.1 and 7.3 with e1000e's BAR2).
        if (!write) part.fill(0xff, i, i + limit);
        i += limit;
      } else if (b.backing === 'trapped' || !mem) {
        const dv = view(part);
        if (wide && pos % 8 === 0 && limit >= 8) {
          this.trapped64(bar, pos, dv, i, write);
          i += 8;
          continue;
        }
        const size: 1 | 2 | 4 = pos % 4 === 0 && limit >= 4 ? 4 : pos % 2 === 0 && limit >= 2 ? 2 : 1;
        if (write) {
          const v = size === 4 ? dv.getUint32(i, true) : size === 2 ? dv.getUint16(i, true) : part[i]!;
          this.behaviour.barWrite?.(bar, pos, size, v);
        } else {
          const v = this.behaviour.barRead?.(bar, pos, size) ?? 0xffffffff;
          if (size === 4) dv.setUint32(i, v >>> 0, true);
          else if (size === 2) dv.setUint16(i, v & 0xffff, true);
          else part[i] = v & 0xff;
        }
        i += size;
      } else {
        if (write) mem.bytes.set(part.subarray(i, i + limit), pos);
        else part.set(mem.bytes.subarray(pos, pos + limit), i);
        i += limit;
      }
    }
  }

  /** One 8-byte trapped access at `pos`, bytes `i..i+8` of `dv` (a behaviour without 64-bit ops gets 4 + 4). */
  private trapped64(bar: number, pos: number, dv: DataView, i: number, write: boolean): void {
    const bh = this.behaviour;
    if (write) {
      const v = dv.getBigUint64(i, true);
      if (bh.barWrite64) bh.barWrite64(bar, pos, v);
      else {
        bh.barWrite?.(bar, pos, 4, dv.getUint32(i, true));
        bh.barWrite?.(bar, pos + 4, 4, dv.getUint32(i + 4, true));
      }
    } else if (bh.barRead64) dv.setBigUint64(i, BigInt.asUintN(64, bh.barRead64(bar, pos)), true);
    else {
      dv.setUint32(i, (bh.barRead?.(bar, pos, 4) ?? 0xffffffff) >>> 0, true);
      dv.setUint32(i + 4, (bh.barRead?.(bar, pos + 4, 4) ?? 0xffffffff) >>> 0, true);
    }
  }

  /** Byte range (not page-rounded) of the MSI-X table in `bar`, which BAR reads and writes skip. */
  private msixExclusion(bar: number): [number, number][] {
    const m = this.description.msix;
    if (!m) return [];
    const out: [number, number][] = [];
    // Only the table: vfio_pci_bar_rw excludes [msix_offset, msix_offset + msix_size), the table;
    // the PBA reads through (seen on 6.1 and 7.3 with nvme and e1000e).
    if (m.tableBar === bar) out.push([m.tableOffset, m.tableOffset + m.tableSize * 16]);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // mmap (vfio_pci_core_mmap) — every WC path ends here
  // -------------------------------------------------------------------------------------------
  /**
   * Where `offset` of the device fd maps: the region's memory, the offset within it, and the
   * attribute the mapping gets. Validates like vfio_pci_core_mmap. Transports use it to hand the
   * memory's fd to a peer; `mmap` uses it to map.
   */
  mappingSource(offset: bigint, length: number, shared = true): MappingSource & { regionOffset: bigint } {
    const op = 'mmap';
    this.assertOpen(op);
    if (length <= 0 || offset % PAGE_SIZE) fail(Errno.EINVAL, op, 'length 0 or offset not page aligned');
    if (!shared) fail(Errno.EINVAL, op, 'MAP_PRIVATE');
    const hit = this.offsets.lookup(offset) ?? fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const len = roundUp(BigInt(length), PAGE_SIZE);
    let bar: number;
    let pos = offset - hit.base;
    let attribute: MemoryAttribute;
    let via: MappingPath;
    if (hit.owner.kind === 'cookie') {
      const c = hit.owner.cookie;
      if (c.released) fail(Errno.EINVAL, op, 'cookie released');
      ({ bar, attribute } = c);
      via = 'cookie';
    } else if (hit.owner.kind === 'region') {
      const region = this.regions[hit.owner.region]!;
      if (region.index >= PCI_STD_NUM_BARS && region.aliasAttribute === undefined)
        fail(Errno.EINVAL, op, `region ${region.index} cannot be mapped`);
      bar = region.bar ?? fail(Errno.EINVAL, op, 'not a BAR');
      if (region.aliasAttribute) {
        attribute = region.aliasAttribute;
        via = 'alias-region';
      } else ({ attribute, via } = this.wc.regionAttribute(bar));
    } else return fail(Errno.EINVAL, op, 'unknown offset owner');
    if (!this.barMmapSupported(bar)) fail(Errno.EINVAL, op, `BAR ${bar} cannot be mapped`);
    const physLen = roundUp(BigInt(this.bar(bar)!.size), PAGE_SIZE);
    if (pos + len > physLen) fail(Errno.EINVAL, op, 'beyond the BAR');
    for (const [s, e] of this.msixHoles(bar))
      if (pos < e && s < pos + len) fail(Errno.EINVAL, op, 'overlaps the MSI-X table or PBA');
    pos = BigInt(pos);
    return {
      memory: this.barMemory[bar]!,
      memoryOffset: pos,
      regionIndex: bar,
      regionOffset: pos,
      attribute,
      via,
    };
  }

  /** mmap(MAP_SHARED) of the device fd at `offset`. */
  mmap(offset: bigint, length: number, shared = true): DeviceMapping {
    const src = this.mappingSource(offset, length, shared);
    const owner = this.offsets.lookup(offset)?.owner;
    const c = owner?.kind === 'cookie' ? owner.cookie : undefined;
    const m = src.memory.map(Number(src.memoryOffset), length);
    if (!c) return this.track(src, m, length);
    // The mapping holds its cookie: a released cookie's offsets are freed with its last mapping.
    this.wc.cookieMapped(c, 1);
    return this.track(src, m, length, () => this.wc.cookieMapped(c, -1));
  }

  /** mmap of a dma-buf fd this device exported. 7.3 refuses (EINVAL); the extension maps it. */
  mmapDmaBuf(fd: number, offset: bigint, length: number): DeviceMapping {
    const op = 'mmap dma-buf';
    const d = this.wc.dmaBuf(fd) ?? fail(Errno.EBADF, op, `fd ${fd}`);
    // mm/mmap.c do_mmap: MAP_SHARED with PROT_WRITE needs FMODE_WRITE, before the exporter is asked.
    if (!d.writable) fail(Errno.EACCES, op, 'dma-buf fd not opened O_RDWR');
    if (!this.extensions.dmabufWc) fail(Errno.EINVAL, op, 'Linux 7.3 dma-bufs cannot be mmapped');
    if (length <= 0 || offset % PAGE_SIZE) fail(Errno.EINVAL, op, 'alignment');
    // Offsets count through the ranges in order; one mapping must stay inside one range.
    let at = offset;
    for (const r of d.ranges) {
      if (at < r.length) {
        if (at + BigInt(length) > r.length) fail(Errno.EINVAL, op, 'mapping spans two ranges');
        const src: MappingSource = {
          memory: this.barMemory[d.bar]!,
          memoryOffset: r.offset + at,
          regionIndex: d.bar,
          attribute: d.attribute,
          via: 'dma-buf',
        };
        return this.track(
          { ...src, regionOffset: r.offset + at },
          src.memory.map(Number(r.offset + at), length),
          length,
        );
      }
      at -= r.length;
    }
    return fail(Errno.EINVAL, op, 'beyond the dma-buf');
  }

  /** The dma-buf behind an fd this device exported (for transports). */
  dmaBuf(
    fd: number,
  ): (MappingSource & { size: bigint; ranges: readonly { offset: bigint; length: bigint }[] }) | undefined {
    const d = this.wc.dmaBuf(fd);
    if (!d) return undefined;
    return {
      memory: this.barMemory[d.bar]!,
      memoryOffset: d.ranges[0]!.offset,
      regionIndex: d.bar,
      attribute: d.attribute,
      via: 'dma-buf',
      size: d.size,
      ranges: d.ranges,
    };
  }

  /** Closes a dma-buf fd (the file's release). */
  closeDmaBuf(fd: number): void {
    this.wc.closeDmaBuf(fd);
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
        this.liveMappings.delete(mapping);
        onUnmap?.();
      },
    };
    this.liveMappings.add(mapping);
    return mapping;
  }

  /** Live mappings, for reports and tests. */
  mappings(): readonly DeviceMapping[] {
    return [...this.liveMappings];
  }

  /** Cookies holding offset space (released ones that are still mapped included). */
  get cookieCount(): number {
    return this.wc.cookieCount;
  }

  // -------------------------------------------------------------------------------------------
  // Device side
  // -------------------------------------------------------------------------------------------
  private context(): DeviceContext {
    const self = this;
    return {
      config: this.config,
      dma: this.dma,
      barMemory: (bar) => this.barMemory[bar]?.bytes,
      raise: (vector = 0) => {
        if (this.irqs.type !== 'intx') return this.irqs.raise(vector);
        this.intxLevel = true;
        if (this.config.intxDisabled) return false;
        this.config.setInterruptStatus(true);
        return this.irqs.raise(vector);
      },
      lower: () => {
        if (!this.intxLevel) return;
        this.intxLevel = false;
        this.config.setInterruptStatus(false);
      },
      get irqType() {
        return self.irqs.type;
      },
    };
  }

  /** Closes the device: drops interrupts, mappings, dma-bufs, DMA ranges and BAR memory. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.irqs.close();
    for (const m of [...this.liveMappings]) m.unmap();
    this.wc.close();
    this.dma.unmapAll();
    this.behaviour.close?.();
    for (const m of this.barMemory) m?.close();
  }

  private assertOpen(op: string): void {
    if (this.closed) throw new VfioError(Errno.EBADF, op, 'device closed');
  }
}

/** A minimal valid expansion ROM image: 0x55 0xAA signature, size in 512-byte units. */
function romImage(d: DeviceDescription): Uint8Array {
  const img = new Uint8Array(d.rom!.size);
  img[0] = 0x55;
  img[1] = 0xaa;
  img[2] = Math.min(255, Math.ceil(d.rom!.size / 512));
  return img;
}
