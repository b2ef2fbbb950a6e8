/**
 * VfioDevice: the driver-side API, written once against VfioDeviceFile and so the same on every
 * backend. It does what a careful VFIO user (QEMU's hw/vfio, DPDK's eal_vfio, rust-vmm/vfio)
 * does: the two-call argsz exchange for region info, capability decoding, region offsets taken
 * from REGION_INFO (never computed), and — for write combining — a probe of every request path,
 * using the first the device offers.
 */
import { Errno } from '../abi/errno.js';
import {
  aliasRegionBar,
  PCI_STD_NUM_BARS,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_DEVICE_SET_REGION_FLAGS,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_REGION_FLAG_WRITE_COMBINE,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_PREFETCH,
  VFIO_TS_FEATURE_ALIAS_REGION,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../abi/vfio.js';
import type { MemoryAttribute } from '../core/device.js';
import { fail, VfioError } from '../errors.js';
import {
  aliasRegionStruct,
  type DmaRange,
  decodeMmapCookie,
  decodeVfioDeviceInfo,
  decodeVfioIrqInfo,
  decodeVfioRegionInfo,
  deviceInfoStruct,
  encodeAliasRegionGet,
  encodeDmaBuf,
  encodeFds,
  encodeMmapCookieGet,
  encodeMmapCookieRelease,
  encodeVfioDeviceFeature,
  encodeVfioIrqSet,
  FEATURE_DATA,
  irqInfoStruct,
  putU32,
  regionFlagsStruct,
  regionInfoStruct,
  u32,
  type VfioDeviceInfo,
  type VfioIrqInfo,
  type VfioRegionInfo,
} from '../wire/vfio.js';
import type { DmaMemory, Mapping, VfioDeviceFile } from './file.js';

/** The write-combining request paths, in the order `map(..., {attribute: 'wc'})` tries them. */
export type WcPath = 'cookie' | 'dma-buf' | 'alias-region' | 'rfc-region-flags' | 'sysfs-resource-wc';
export const WC_PATH_ORDER: readonly WcPath[] = [
  'cookie',
  'dma-buf',
  'alias-region',
  'rfc-region-flags',
  'sysfs-resource-wc',
];

/** Largest region-info reply the driver accepts (argsz asked back by the device). */
export const MAX_REGION_INFO_SIZE = 64 * 1024;

export interface MapOptions {
  readonly offset?: bigint;
  /** Bytes to map (default: the whole region, page rounded). */
  readonly length?: number;
  readonly attribute?: MemoryAttribute;
  /** Force one WC path instead of the first available. */
  readonly path?: WcPath;
  /** With attribute 'wc': fall back to an uncached mapping when no WC path exists. */
  readonly allowUcFallback?: boolean;
}

export class VfioDevice {
  private readonly regionCache = new Map<number, VfioRegionInfo>();

  constructor(readonly file: VfioDeviceFile) {}

  get transport() {
    return this.file.transport;
  }

  async info(): Promise<VfioDeviceInfo> {
    const b = deviceInfoStruct.encode({ argsz: deviceInfoStruct.size });
    await this.file.ioctl(VFIO_DEVICE_GET_INFO, b);
    return decodeVfioDeviceInfo(b);
  }

  /** REGION_INFO with the argsz exchange: ask with 32 bytes, then again with what it needs. */
  async regionInfo(index: number): Promise<VfioRegionInfo> {
    const cached = this.regionCache.get(index);
    if (cached) return cached;
    const R = regionInfoStruct;
    let size = R.size;
    for (;;) {
      const b = R.encode({ argsz: size, index }, size - R.size);
      await this.file.ioctl(VFIO_DEVICE_GET_REGION_INFO, b);
      const argsz = R.get(b, 'argsz');
      if (argsz > size) {
        if (argsz > MAX_REGION_INFO_SIZE) fail(Errno.E2BIG, 'VFIO_DEVICE_GET_REGION_INFO', `argsz ${argsz}`);
        size = argsz;
        continue;
      }
      const info = decodeVfioRegionInfo(b);
      this.regionCache.set(index, info);
      return info;
    }
  }

  /** Every region the device reports; indexes that answer EINVAL (VGA on a non-VGA device) skipped. */
  async regions(): Promise<VfioRegionInfo[]> {
    const { numRegions } = await this.info();
    const out: VfioRegionInfo[] = [];
    for (let i = 0; i < numRegions; i++) {
      try {
        out.push(await this.regionInfo(i));
      } catch (e) {
        if (!(e instanceof VfioError && e.errno === Errno.EINVAL)) throw e;
      }
    }
    return out;
  }

  async irqInfo(index: number): Promise<VfioIrqInfo> {
    const b = irqInfoStruct.encode({ argsz: irqInfoStruct.size, index });
    await this.file.ioctl(VFIO_DEVICE_GET_IRQ_INFO, b);
    return decodeVfioIrqInfo(b);
  }

  async read(region: number, offset: bigint | number, length: number): Promise<Uint8Array> {
    const r = await this.regionInfo(region);
    return this.file.pread(r.offset + BigInt(offset), length);
  }

  async write(region: number, offset: bigint | number, data: Uint8Array): Promise<number> {
    const r = await this.regionInfo(region);
    return this.file.pwrite(r.offset + BigInt(offset), data);
  }

  async read32(region: number, offset: bigint | number): Promise<number> {
    const b = await this.read(region, offset, 4);
    if (b.length !== 4) fail(Errno.EIO, 'read32', `short read of ${b.length}`);
    return u32(b, 0);
  }

  async write32(region: number, offset: bigint | number, value: number): Promise<void> {
    const b = new Uint8Array(4);
    putU32(b, 0, value);
    await this.write(region, offset, b);
  }

  /** Config space: `readConfig(0, 4)` is vendor and device ID. */
  readConfig(offset: number, length: number): Promise<Uint8Array> {
    return this.read(VFIO_PCI_CONFIG_REGION_INDEX, offset, length);
  }

  writeConfig(offset: number, data: Uint8Array): Promise<number> {
    return this.write(VFIO_PCI_CONFIG_REGION_INDEX, offset, data);
  }

  // ---------------------------------------------------------------------------------------------
  // Interrupts
  // ---------------------------------------------------------------------------------------------
  /** Routes vectors start.. of IRQ `index` to eventfds (fd -1 leaves a vector unrouted). */
  async setIrqEventfds(index: number, start: number, fds: readonly number[]): Promise<void> {
    const flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    await this.file.ioctl(
      VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags, index, start, count: fds.length, data: encodeFds(fds) }),
    );
  }

  /** DATA_NONE | TRIGGER with count 0: disables IRQ `index`. */
  async disableIrqs(index: number): Promise<void> {
    const flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    await this.file.ioctl(
      VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags, index, start: 0, count: 0, data: new Uint8Array(0) }),
    );
  }

  /** Loopback: the kernel (or model) signals the eventfds itself (DATA_NONE | TRIGGER). */
  async triggerIrqs(index: number, start: number, count: number): Promise<void> {
    const flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    await this.file.ioctl(
      VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags, index, start, count, data: new Uint8Array(0) }),
    );
  }

  /** INTx is automasked: unmask after handling it. */
  async unmaskIntx(): Promise<void> {
    const flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK;
    await this.file.ioctl(
      VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags, index: 0, start: 0, count: 1, data: new Uint8Array(0) }),
    );
  }

  async reset(): Promise<void> {
    await this.file.ioctl(VFIO_DEVICE_RESET, new Uint8Array(0));
  }

  /** VFIO_DEVICE_FEATURE with PROBE: does the device know `feature` (for `ops` GET/SET)? */
  async probeFeature(feature: number, ops = VFIO_DEVICE_FEATURE_GET): Promise<boolean> {
    try {
      await this.file.ioctl(
        VFIO_DEVICE_FEATURE,
        encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_PROBE | ops | feature),
      );
      return true;
    } catch (e) {
      if (e instanceof VfioError && (e.errno === Errno.ENOTTY || e.errno === Errno.EINVAL)) return false;
      throw e;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // DMA
  // ---------------------------------------------------------------------------------------------
  dmaMap(iova: bigint, memory: DmaMemory, access?: { read: boolean; write: boolean }): Promise<void> {
    return this.file.dmaMap(iova, memory, access);
  }

  dmaUnmap(iova: bigint, size: bigint): Promise<void> {
    return this.file.dmaUnmap(iova, size);
  }

  // ---------------------------------------------------------------------------------------------
  // Mappings and write combining
  // ---------------------------------------------------------------------------------------------
  /** The WC paths the device offers for BAR `region`, in preference order. */
  async wcPaths(region: number): Promise<WcPath[]> {
    const info = await this.regionInfo(region);
    if (region >= PCI_STD_NUM_BARS || !(info.flags & VFIO_REGION_INFO_FLAG_MMAP)) return [];
    const paths: WcPath[] = [];
    // A cookie is cheap: ask for one and give it back, so the device's own policy (e.g. WC only
    // on prefetchable BARs) decides. An alias region cannot be given back, so it is listed when
    // the feature exists and the same policy allowed a WC cookie or the BAR is prefetchable.
    const cookieOk = await this.probeCookieWc(region);
    if (cookieOk) paths.push('cookie');
    if (await this.probeDmaBufWc(region)) paths.push('dma-buf');
    if (
      (cookieOk || info.flags & VFIO_REGION_INFO_FLAG_PREFETCH) &&
      (await this.probeFeature(VFIO_TS_FEATURE_ALIAS_REGION))
    )
      paths.push('alias-region');
    if (info.flags & VFIO_REGION_INFO_FLAG_PREFETCH && (await this.probeRegionFlags()))
      paths.push('rfc-region-flags');
    // The kernel backend says whether the BAR has a resourceN_wc file (prefetchable memory BARs
    // only: drivers/pci/pci-sysfs.c, pci_create_attr); the RFC's PREFETCH flag is not in Linux.
    const route = this.file.writeCombiningRoute?.(region);
    if (
      this.file.mapWriteCombining &&
      (route ? route.available : !!(info.flags & VFIO_REGION_INFO_FLAG_PREFETCH))
    )
      paths.push('sysfs-resource-wc');
    return paths;
  }

  /**
   * Does the RFC's SET_REGION_FLAGS exist here? Asked with an index no device has: EINVAL says
   * the ioctl is there (the RFC checks the index first), ENOTTY that it is not (Linux without the
   * RFC; vfio-user, which has no command for it).
   */
  private async probeRegionFlags(): Promise<boolean> {
    const b = regionFlagsStruct.encode({ index: 0xffffffff });
    try {
      await this.file.ioctl(VFIO_DEVICE_SET_REGION_FLAGS, b);
      return true;
    } catch (e) {
      if (e instanceof VfioError) return e.errno !== Errno.ENOTTY;
      throw e;
    }
  }

  private async probeCookieWc(region: number): Promise<boolean> {
    if (!(await this.probeFeature(VFIO_TS_FEATURE_MMAP_COOKIE))) return false;
    try {
      await this.releaseCookie((await this.mmapCookie(region, 'wc')).offset);
      return true;
    } catch (e) {
      if (e instanceof VfioError) return false;
      throw e;
    }
  }

  /**
   * DMA_BUF may exist without the WC attribute (Linux 7.3): ask for a one-page WC dma-buf and see
   * whether the device accepts the attribute.
   */
  private async probeDmaBufWc(region: number): Promise<boolean> {
    if (!(await this.probeFeature(VFIO_DEVICE_FEATURE_DMA_BUF))) return false;
    try {
      const fd = await this.exportDmaBuf(region, [{ offset: 0n, length: 4096n }], 'wc');
      await this.file.closeFd(fd);
      return true;
    } catch (e) {
      if (e instanceof VfioError) return false;
      throw e;
    }
  }

  /**
   * Maps BAR `region`. With attribute 'wc', tries the device's WC paths in WC_PATH_ORDER (or the
   * one named by `path`); with none available it fails EOPNOTSUPP unless `allowUcFallback`.
   */
  async map(region: number, opts: MapOptions = {}): Promise<Mapping> {
    const info = await this.regionInfo(region);
    const offset = opts.offset ?? 0n;
    const length = opts.length ?? Number(((info.size + 4095n) / 4096n) * 4096n);
    if (opts.attribute !== 'wc') return this.file.mmap(info.offset + offset, length);
    const paths = opts.path ? [opts.path] : await this.wcPaths(region);
    for (const path of paths) {
      switch (path) {
        case 'cookie': {
          const c = await this.mmapCookie(region, 'wc');
          const m = await this.file.mmap(c.offset + offset, length);
          // The mapping holds the cookie; releasing now frees its offsets when the mapping goes.
          await this.releaseCookie(c.offset);
          return m;
        }
        case 'dma-buf': {
          const pageOff = (offset / 4096n) * 4096n;
          const fd = await this.exportDmaBuf(region, [{ offset: pageOff, length: BigInt(length) }], 'wc');
          try {
            return await this.file.mmapDmaBuf(fd, offset - pageOff, length);
          } finally {
            await this.file.closeFd(fd);
          }
        }
        case 'alias-region': {
          const idx = await this.aliasRegion(region);
          const a = await this.regionInfo(idx);
          return this.file.mmap(a.offset + offset, length);
        }
        case 'rfc-region-flags':
          await this.setRegionFlags(region, true);
          return this.file.mmap(info.offset + offset, length);
        case 'sysfs-resource-wc':
          if (!this.file.mapWriteCombining) break;
          try {
            return await this.file.mapWriteCombining(region, offset, length);
          } catch (e) {
            // The kernel backend offers this path for every BAR and names why it cannot map
            // one; with allowUcFallback that reason falls through to the UC mapping below.
            if (!(opts.allowUcFallback && e instanceof VfioError)) throw e;
          }
          break;
      }
    }
    if (opts.allowUcFallback) return this.file.mmap(info.offset + offset, length);
    const route = this.file.writeCombiningRoute?.(region);
    return fail(
      Errno.EOPNOTSUPP,
      'map WC',
      `no write-combining path for region ${region} (${this.transport})${route && !route.available ? `: ${route.note}` : ''}`,
    );
  }

  /** VFIO_TS_FEATURE_MMAP_COOKIE GET: a new offset bound to (region, attribute). */
  async mmapCookie(region: number, attribute: MemoryAttribute): Promise<{ offset: bigint; size: bigint }> {
    const b = encodeMmapCookieGet(region, attrFlags(attribute));
    await this.file.ioctl(VFIO_DEVICE_FEATURE, b);
    const { offset, size } = decodeMmapCookie(b);
    return { offset, size };
  }

  async releaseCookie(offset: bigint): Promise<void> {
    await this.file.ioctl(VFIO_DEVICE_FEATURE, encodeMmapCookieRelease(offset));
  }

  /** VFIO_TS_FEATURE_ALIAS_REGION GET: the index of BAR `bar`'s WC alias region. */
  async aliasRegion(bar: number): Promise<number> {
    const b = encodeAliasRegionGet(bar, VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    await this.file.ioctl(VFIO_DEVICE_FEATURE, b);
    const index = aliasRegionStruct.get(b, 'alias_index', FEATURE_DATA);
    const info = await this.regionInfo(index);
    const type = info.caps.find((c) => c.kind === 'type');
    if (type?.kind !== 'type' || aliasRegionBar(type.type, type.subtype) !== bar)
      fail(Errno.EPROTO, 'alias region', `region ${index} lacks the WC alias type capability`);
    return index;
  }

  /** The seed RFC's VFIO_DEVICE_SET_REGION_FLAGS. */
  async setRegionFlags(bar: number, writeCombine: boolean): Promise<void> {
    const flags = writeCombine ? VFIO_REGION_FLAG_WRITE_COMBINE : 0;
    await this.file.ioctl(VFIO_DEVICE_SET_REGION_FLAGS, regionFlagsStruct.encode({ index: bar, flags }));
  }

  /** VFIO_DEVICE_FEATURE_DMA_BUF: returns the dma-buf fd. */
  async exportDmaBuf(
    region: number,
    ranges: readonly DmaRange[],
    attribute: MemoryAttribute = 'uc',
  ): Promise<number> {
    const data = encodeDmaBuf({
      regionIndex: region,
      openFlags: 0o2000002 /* O_RDWR | O_CLOEXEC: a writable mmap needs it */,
      flags: attrFlags(attribute),
      ranges,
    });
    return this.file.ioctl(
      VFIO_DEVICE_FEATURE,
      encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, data),
    );
  }

  async close(): Promise<void> {
    this.regionCache.clear();
    await this.file.close();
  }
}

/** The ATTR field every WC request path shares (docs/wc-uapi.md). */
function attrFlags(attribute: MemoryAttribute): number {
  return attribute === 'wc' ? VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC : VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC;
}
