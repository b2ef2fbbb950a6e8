/**
 * The kernel backend: VfioDeviceFile over Linux's own VFIO. Opens a vfio-pci device by PCI address
 *
 * - through the device cdev (/dev/vfio/devices/vfioN bound to /dev/iommu, an IOAS attached:
 *   Documentation/driver-api/vfio.rst "VFIO device cdev"), when the kernel has both; or
 * - through the legacy container/group path (/dev/vfio/vfio + /dev/vfio/<group>:
 *   drivers/vfio/container.c, drivers/vfio/group.c), which every kernel with VFIO has.
 *
 * ioctl/pread/pwrite/mmap go to the device fd unchanged; DMA maps use VFIO_IOMMU_MAP_DMA on the
 * container (or IOMMU_IOAS_MAP on the iommufd). A write-combining mapping outside the device fd
 * comes from sysfs `resourceN_wc` (pci_mmap_resource_wc: prefetchable memory BARs only), and is
 * checked against the x86 PAT list where it can be read (src/kernel/pat.ts).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Errno } from '../abi/errno.js';
import {
  VFIO_API_VERSION,
  VFIO_CHECK_EXTENSION,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_GET_API_VERSION,
  VFIO_GROUP_FLAGS_VIABLE,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from '../abi/vfio.js';
import type { MappingPath } from '../core/device.js';
import type { DmaMemory, Mapping, VfioDeviceFile } from '../driver/file.js';
import { fail, VfioError } from '../errors.js';
import {
  closeFd,
  ioctl,
  MAP_PRIVATE,
  MAP_SHARED,
  mmap,
  type NativeMapping,
  O_CLOEXEC,
  O_RDWR,
  openPath,
  PROT_READ,
  PROT_WRITE,
  pread,
  pwrite,
} from '../native/index.js';
import {
  deviceFeatureStruct,
  dmaBufStruct,
  encodeFds,
  FEATURE_DATA,
  groupStatusStruct,
  type1DmaMapStruct,
  type1DmaUnmapStruct,
} from '../wire/vfio.js';
import { IOMMUFD_PATH, type IommuContext, openViaCdev, VFIO_CDEV_DIR } from './iommufd.js';
import { patTypeOf, readPatList } from './pat.js';
import {
  groupViability,
  iomemRelaxed,
  iommuGroup,
  normalizeBdf,
  resourceRange,
  resourceSize,
  resourceWcPath,
  vfioCdevName,
} from './sysfs.js';

export { IOMMUFD_PATH, VFIO_CDEV_DIR };
export const VFIO_CONTAINER_PATH = '/dev/vfio/vfio';
const PAGE = 4096n;

export type KernelIommuPath = 'group' | 'cdev';

/** How a device was opened: its group and container, or its cdev bound to an iommufd IOAS. */
export type KernelOpened =
  | { readonly path: 'group'; readonly group: number; readonly node: string }
  | {
      readonly path: 'cdev';
      /** /dev/vfio/devices/vfioN */
      readonly node: string;
      /** VFIO_DEVICE_BIND_IOMMUFD's out_devid. */
      readonly devid: number;
      /** The IOAS the device is attached to (VFIO_DEVICE_ATTACH_IOMMUFD_PT). */
      readonly ioas: number;
    };

export interface OpenKernelOptions {
  /** 'auto' (default): the cdev path when /dev/iommu and the device's cdev exist, else 'group'. */
  path?: 'auto' | KernelIommuPath;
  /** sysfs root of PCI devices (tests). */
  sysfs?: string;
  /**
   * BARs to map write-combining through sysfs `resourceN_wc` *before* the device is opened, kept
   * until close; `mapWriteCombining` then hands out views of them. Needs a kernel booted with
   * `iomem=relaxed` (else EINVAL): with the default strict iomem the claim at open (7.3) or at
   * first access (6.1) revokes the mapping, and a mapping made after vfio-pci has ioremapped the
   * BAR is refused (strict) or made uncached-minus by PAT (relaxed). Made first, the WC
   * reservation is what vfio-pci's own ioremap of the BAR, and its region mmaps, then inherit:
   * on a BAR with registers, pread/pwrite through the device fd become write-combining too.
   */
  wcBars?: readonly number[];
}

function fdOrClose<T>(fds: number[], fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    for (const fd of fds.reverse()) closeFd(fd);
    throw e;
  }
}

/** Legacy path: container + group (drivers/vfio/container.c, group.c). */
function openViaGroup(
  bdf: string,
  sysfs: string | undefined,
): { deviceFd: number; iommu: IommuContext; group: number } {
  if (!existsSync(VFIO_CONTAINER_PATH))
    fail(
      Errno.ENODEV,
      'open kernel device',
      existsSync(VFIO_CDEV_DIR)
        ? `${VFIO_CONTAINER_PATH} is missing: this kernel offers only the device cdev path (${VFIO_CDEV_DIR}; CONFIG_VFIO_GROUP off)`
        : `${VFIO_CONTAINER_PATH} is missing: load the vfio module`,
    );
  const group = iommuGroup(bdf, sysfs);
  const groupPath = `/dev/vfio/${group}`;
  const fds: number[] = [];
  return fdOrClose(fds, () => {
    const container = openPath(VFIO_CONTAINER_PATH, O_RDWR | O_CLOEXEC);
    fds.push(container);
    const api = ioctl(container, VFIO_GET_API_VERSION, null);
    if (api !== VFIO_API_VERSION)
      fail(Errno.EPROTO, 'VFIO_GET_API_VERSION', `API ${api}, expected ${VFIO_API_VERSION}`);
    if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) !== 1)
      fail(Errno.ENODEV, 'VFIO_CHECK_EXTENSION', 'no VFIO_TYPE1v2_IOMMU (load vfio_iommu_type1)');
    let groupFd: number;
    try {
      groupFd = openPath(groupPath, O_RDWR | O_CLOEXEC);
    } catch (e) {
      if (e instanceof VfioError && e.errno === Errno.ENOENT)
        fail(
          Errno.ENODEV,
          'open kernel device',
          `${groupPath} is missing: is ${bdf} bound to vfio-pci? (vfio-ts bind ${bdf})`,
        );
      throw e;
    }
    fds.push(groupFd);
    const status = groupStatusStruct.encode({ argsz: groupStatusStruct.size });
    ioctl(groupFd, VFIO_GROUP_GET_STATUS, status);
    if (!(groupStatusStruct.get(status, 'flags') & VFIO_GROUP_FLAGS_VIABLE)) {
      const others = groupViability(bdf, sysfs).blocking.map((m) => `${m.bdf} (${m.driver})`);
      fail(
        Errno.EBUSY,
        'VFIO_GROUP_GET_STATUS',
        `IOMMU group ${group} is not viable: every device in it must be unbound or bound to vfio-pci, a vfio-pci variant, pci-stub or pcieport${others.length ? `; bound elsewhere: ${others.join(', ')}` : ''}`,
      );
    }
    // VFIO_GROUP_SET_CONTAINER takes a pointer to the container's fd (an int).
    ioctl(groupFd, VFIO_GROUP_SET_CONTAINER, encodeFds([container]));
    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
    const deviceFd = ioctl(groupFd, VFIO_GROUP_GET_DEVICE_FD, bdf);
    fds.push(deviceFd);
    const iommu: IommuContext = {
      map(iova, vaddr, size, read, write) {
        const flags = (read ? VFIO_DMA_MAP_FLAG_READ : 0) | (write ? VFIO_DMA_MAP_FLAG_WRITE : 0);
        const argsz = type1DmaMapStruct.size;
        ioctl(container, VFIO_IOMMU_MAP_DMA, type1DmaMapStruct.encode({ argsz, flags, vaddr, iova, size }));
      },
      unmap(iova, size) {
        const argsz = type1DmaUnmapStruct.size;
        const b = type1DmaUnmapStruct.encode({ argsz, iova, size });
        ioctl(container, VFIO_IOMMU_UNMAP_DMA, b);
        // vfio_iommu_type1.c: vfio_iommu_type1_unmap_dma writes back the size it unmapped.
        return type1DmaUnmapStruct.get(b, 'size');
      },
      close() {
        // Closing the group drops it from the container; the container goes last.
        closeFd(groupFd);
        closeFd(container);
      },
    };
    return { deviceFd, iommu, group };
  });
}

/**
 * Which path openKernelDevice would take for `bdf`: the cdev when /dev/iommu (`iommufdPath`) exists
 * and so does the device's cdev (`cdevDir`/vfioN, named by sysfs vfio-dev/), else the group path.
 * sysfs names vfioN on every kernel since 6.1; only the node says the kernel has the cdev.
 */
export function kernelPathFor(
  bdf: string,
  sysfs?: string,
  iommufdPath = IOMMUFD_PATH,
  cdevDir = VFIO_CDEV_DIR,
): KernelIommuPath {
  const name = vfioCdevName(bdf, sysfs);
  return existsSync(iommufdPath) && name !== undefined && existsSync(join(cdevDir, name)) ? 'cdev' : 'group';
}

function toMapping(m: NativeMapping, via: Mapping['via'], attribute: 'uc' | 'wc'): Mapping {
  return { bytes: m.bytes, length: m.length, attribute, via, unmap: () => m.unmap() };
}

/** Where sysfs resourceN_wc gives a WC mapping of a vfio-pci device (measured in the guests). */
export const SYSFS_WC_KERNELS =
  'sysfs resourceN_wc: works on Linux 6.1 until vfio-pci claims the BAR (its first access through the device fd); on 7.3 refused once the device is open unless the kernel runs with iomem=relaxed and the BAR is mapped before open (wcBars)';

/** What the administrator can do when sysfs refuses a WC mapping of a claimed BAR. */
export const IOMEM_RELAXED_REMEDY =
  'boot the kernel with iomem=relaxed and open the device with wcBars (openKernelDevice(bdf, { wcBars: [bar] })), which maps the BAR write-combining before vfio-pci claims and ioremaps it';

/**
 * mmap of sysfs `resource<region>_wc`, then the PAT check: the kernel silently gives a WC request
 * the type already reserved over the range (memtype_check_conflict), uncached-minus once vfio-pci
 * has ioremapped the BAR. EOPNOTSUPP then, naming what PAT gave. Unchecked when the list cannot
 * be read (not x86, no debugfs, not root).
 */
function mmapSysfsWc(bdf: string, region: number, offset: bigint, length: number, sysfs: string | undefined) {
  const file = region < 6 ? resourceWcPath(bdf, region, sysfs) : undefined;
  if (file === undefined)
    fail(
      Errno.EOPNOTSUPP,
      'map WC',
      `${bdf} region ${region} has no sysfs resource${region}_wc (only prefetchable memory BARs do) and the kernel offers no other WC path`,
    );
  const fd = openPath(file, O_RDWR | O_CLOEXEC);
  let m: NativeMapping;
  try {
    m = mmap(fd, offset, length, PROT_READ | PROT_WRITE, MAP_SHARED);
  } catch (e) {
    if (e instanceof VfioError && e.errno === Errno.EINVAL)
      fail(
        Errno.EINVAL,
        'map WC',
        iomemRelaxed()
          ? `mmap of ${file} refused (EINVAL) although the kernel runs with iomem=relaxed`
          : `mmap of ${file} refused: vfio-pci has claimed BAR ${region} (pci_request_selected_regions: on Linux 6.1 at the first read, write or mmap of the BAR through the device fd, on 7.3 when the device is opened), and with CONFIG_IO_STRICT_DEVMEM the kernel maps no claimed BAR through sysfs (pci_mmap_resource: iomem_is_exclusive); remedy for the administrator: ${IOMEM_RELAXED_REMEDY}; on 6.1 alone, mapping WC before any other access to the BAR also works`,
      );
    throw e;
  } finally {
    closeFd(fd);
  }
  const bar = resourceRange(bdf, region, sysfs);
  const pat = bar === undefined ? undefined : readPatList();
  if (bar !== undefined && pat !== undefined) {
    const got = patTypeOf(pat, bar.start + offset, bar.start + offset + BigInt(length));
    if (got !== undefined && got !== 'write-combining') {
      m.unmap();
      fail(
        Errno.EOPNOTSUPP,
        'map WC',
        `mmap of ${file} was given ${got}, not write-combining (x86 PAT: the range is already reserved ${got} — on 7.3 by vfio-pci's ioremap of the BAR at open — and memtype_check_conflict gives a new mapping that type); ${iomemRelaxed() ? 'the kernel runs with iomem=relaxed: open the device with wcBars (openKernelDevice(bdf, { wcBars: [bar] })) to map the BAR write-combining before vfio-pci ioremaps it' : IOMEM_RELAXED_REMEDY}`,
      );
    }
  }
  return m;
}

export class KernelDeviceFile implements VfioDeviceFile {
  readonly transport = 'kernel' as const;
  private closed = false;
  /** DMA maps made from a memfd mapping of our own: iova → the mapping that pins it. */
  private readonly dmaViews = new Map<bigint, NativeMapping>();
  /** dma-buf fds this file saw the device return, with the attribute asked for. */
  private readonly dmaBufAttr = new Map<number, 'uc' | 'wc'>();
  /** Whole-BAR WC mappings made before the device was opened (OpenKernelOptions.wcBars). */
  readonly premappedWc: ReadonlyMap<number, NativeMapping>;
  /** Whether IOMMU_IOAS_MAP_FILE took a memfd here (undefined until tried; cdev path only). */
  private mapFileWorks: boolean | undefined;

  constructor(
    readonly bdf: string,
    readonly deviceFd: number,
    readonly opened: KernelOpened,
    private readonly iommu: IommuContext,
    private readonly sysfs: string | undefined,
    premappedWc: ReadonlyMap<number, NativeMapping> = new Map(),
  ) {
    this.premappedWc = premappedWc;
  }

  get path(): KernelIommuPath {
    return this.opened.path;
  }

  /** The IOMMU group number on the group path. */
  get group(): number | undefined {
    return this.opened.path === 'group' ? this.opened.group : undefined;
  }

  private check(op: string): void {
    if (this.closed) fail(Errno.EBADF, op, 'device closed');
  }

  async ioctl(request: number, arg: Uint8Array): Promise<number> {
    this.check('ioctl');
    const r = ioctl(this.deviceFd, request, arg);
    // Remember what a DMA_BUF export asked for, so a mapping of it can say what it is.
    if (request === VFIO_DEVICE_FEATURE && arg.length >= FEATURE_DATA + dmaBufStruct.endOf('flags')) {
      const flags = deviceFeatureStruct.get(arg, 'flags');
      if (
        (flags & VFIO_DEVICE_FEATURE_MASK) === VFIO_DEVICE_FEATURE_DMA_BUF &&
        flags & VFIO_DEVICE_FEATURE_GET &&
        !(flags & VFIO_DEVICE_FEATURE_PROBE) &&
        r > 0
      ) {
        const attr = dmaBufStruct.get(arg, 'flags', FEATURE_DATA) & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK;
        this.dmaBufAttr.set(r, attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC ? 'wc' : 'uc');
      }
    }
    return r;
  }

  async pread(offset: bigint, length: number): Promise<Uint8Array> {
    this.check('pread');
    return pread(this.deviceFd, length, offset);
  }

  async pwrite(offset: bigint, data: Uint8Array): Promise<number> {
    this.check('pwrite');
    return pwrite(this.deviceFd, data, offset);
  }

  async mmap(offset: bigint, length: number): Promise<Mapping> {
    this.check('mmap');
    return toMapping(mmap(this.deviceFd, offset, length, PROT_READ | PROT_WRITE, MAP_SHARED), 'region', 'uc');
  }

  /** mmap(MAP_PRIVATE) of the device fd: vfio-pci refuses it (vfio_pci_core_mmap: VM_SHARED). */
  async mmapPrivate(offset: bigint, length: number): Promise<Mapping> {
    this.check('mmap');
    return toMapping(
      mmap(this.deviceFd, offset, length, PROT_READ | PROT_WRITE, MAP_PRIVATE),
      'region',
      'uc',
    );
  }

  async mmapDmaBuf(fd: number, offset: bigint, length: number): Promise<Mapping> {
    this.check('mmap dma-buf');
    const m = mmap(fd, offset, length, PROT_READ | PROT_WRITE, MAP_SHARED);
    return toMapping(m, 'dma-buf' satisfies MappingPath, this.dmaBufAttr.get(fd) ?? 'uc');
  }

  async closeFd(fd: number): Promise<void> {
    this.dmaBufAttr.delete(fd);
    closeFd(fd);
  }

  /**
   * VFIO_IOMMU_MAP_DMA (or IOMMU_IOAS_MAP) of `memory`: the kernel pins the pages at a virtual
   * address of this process. That is `memory.address` when given. Otherwise, on the cdev path,
   * IOMMU_IOAS_MAP_FILE maps the memfd itself (Linux >= 6.13); else the memfd is mapped once more
   * here and that mapping (kept until dmaUnmap/close) is what the IOMMU points at.
   */
  async dmaMap(iova: bigint, memory: DmaMemory, access = { read: true, write: true }): Promise<void> {
    this.check('dmaMap');
    const size = BigInt(memory.size);
    if (size === 0n || size % PAGE || iova % PAGE)
      fail(Errno.EINVAL, 'VFIO_IOMMU_MAP_DMA', 'size and iova must be page multiples');
    let vaddr = memory.address;
    let own: NativeMapping | undefined;
    if (vaddr === undefined) {
      if (memory.fd === undefined)
        fail(Errno.EINVAL, 'VFIO_IOMMU_MAP_DMA', 'memory has neither an address nor an fd to map');
      if (this.iommu.mapFile !== undefined && this.mapFileWorks !== false) {
        try {
          this.iommu.mapFile(iova, memory.fd, 0n, size, access.read, access.write);
          this.mapFileWorks = true;
          return;
        } catch (e) {
          // ENOTTY: an iommufd older than IOMMU_IOAS_MAP_FILE (6.6-6.12); map the memfd instead.
          if (!(e instanceof VfioError && e.errno === Errno.ENOTTY)) throw e;
          this.mapFileWorks = false;
        }
      }
      own = mmap(memory.fd, 0n, memory.size, PROT_READ | PROT_WRITE, MAP_SHARED);
      vaddr = own.address;
    }
    try {
      this.iommu.map(iova, vaddr, size, access.read, access.write);
    } catch (e) {
      own?.unmap();
      throw e;
    }
    if (own) this.dmaViews.set(iova, own);
  }
  /**
   * IOMMU_IOAS_MAP_FILE: `size` bytes of file `fd` from `start` at `iova` — a memfd, or a dma-buf
   * vfio-pci exported (VFIO_DEVICE_FEATURE_DMA_BUF) of one range: peer-to-peer DMA to another
   * device's BAR. The cdev path only; the type1 container maps addresses of this process, and a
   * vfio-pci dma-buf cannot be mmapped (EOPNOTSUPP here).
   */
  async dmaMapFile(
    iova: bigint,
    fd: number,
    start: bigint,
    size: bigint,
    access = { read: true, write: true },
  ): Promise<void> {
    this.check('dmaMapFile');
    if (this.iommu.mapFile === undefined)
      fail(
        Errno.EOPNOTSUPP,
        'IOMMU_IOAS_MAP_FILE',
        `${this.bdf} is open through its group: the type1 container maps only addresses of this process; open it through the device cdev (path: 'cdev')`,
      );
    this.iommu.mapFile(iova, fd, start, size, access.read, access.write);
  }

  async dmaUnmap(iova: bigint, size: bigint): Promise<void> {
    await this.dmaUnmapped(iova, size);
  }

  /**
   * dmaUnmap, returning what the kernel says it unmapped: the type1 container answers 0 bytes for
   * a range with nothing mapped, iommufd ENOENT (docs/kernel-profiles.md).
   */
  async dmaUnmapped(iova: bigint, size: bigint): Promise<bigint> {
    this.check('dmaUnmap');
    const n = this.iommu.unmap(iova, size);
    this.dmaViews.get(iova)?.unmap();
    this.dmaViews.delete(iova);
    return n;
  }

  /**
   * Whether mapWriteCombining has a route for `region`: a BAR mapped before open (wcBars), or a
   * BAR with a sysfs resourceN_wc file; the note says where that route works.
   */
  writeCombiningRoute(region: number): { available: boolean; note: string } {
    if (this.premappedWc.has(region))
      return { available: true, note: `resource${region}_wc mapped before open (wcBars, iomem=relaxed)` };
    const file = region < 6 ? resourceWcPath(this.bdf, region, this.sysfs) : undefined;
    if (file === undefined)
      return {
        available: false,
        note: `${this.bdf} has no sysfs resource${region}_wc (only prefetchable memory BARs have one) and the kernel offers no other WC path`,
      };
    return { available: true, note: SYSFS_WC_KERNELS };
  }

  /**
   * A WC mapping of BAR `region` through sysfs `resourceN_wc` (pci_mmap_resource_wc →
   * pci_mmap_resource_range with write_combine). The file exists only for prefetchable memory
   * BARs (pci_create_attr: `if (res->flags & IORESOURCE_PREFETCH)`).
   *
   * Seen in the guests (both Debian kernels have CONFIG_IO_STRICT_DEVMEM=y): sysfs refuses to
   * map a BAR vfio-pci has claimed (EINVAL), and vfio-pci claiming the BAR later — its first
   * pread/pwrite/mmap of that BAR on 6.1 — revokes this mapping (revoke_iomem: the pages are
   * zapped and the PAT entry goes; a later access faults). Keep every access to a WC-mapped BAR
   * on the WC mapping. On 7.3 the BARs are claimed at open: no sysfs WC at all, unless the kernel
   * runs with iomem=relaxed and the BAR was mapped before open (OpenKernelOptions.wcBars); with
   * iomem=relaxed alone a mapping made after open is uncached-minus (PAT) and refused here.
   */
  async mapWriteCombining(region: number, offset: bigint, length: number): Promise<Mapping> {
    this.check('map WC');
    const pre = this.premappedWc.get(region);
    if (pre !== undefined) {
      if (offset < 0n || offset + BigInt(length) > BigInt(pre.length))
        fail(Errno.EINVAL, 'map WC', `range beyond BAR ${region} (${pre.length} bytes)`);
      // A view of the mapping made before open; it lives until close (unmap is a no-op).
      const bytes = pre.bytes.subarray(Number(offset), Number(offset) + length);
      return { bytes, length, attribute: 'wc', via: 'sysfs-resource-wc', unmap: () => {} };
    }
    return toMapping(mmapSysfsWc(this.bdf, region, offset, length, this.sysfs), 'sysfs-resource-wc', 'wc');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [iova, m] of this.dmaViews) {
      try {
        this.iommu.unmap(iova, BigInt(m.length));
      } catch {
        // Closing the container unmaps everything anyway.
      }
      m.unmap();
    }
    this.dmaViews.clear();
    closeFd(this.deviceFd);
    this.iommu.close();
    for (const m of this.premappedWc.values()) m.unmap();
  }
}

/**
 * Opens the vfio-pci device at `bdf` (bound to vfio-pci already: `vfio-ts bind`). EBUSY names the
 * devices that keep its IOMMU group from being viable; ENODEV says what is missing.
 */
export async function openKernelDevice(bdf: string, opts: OpenKernelOptions = {}): Promise<KernelDeviceFile> {
  const addr = normalizeBdf(bdf);
  const want = opts.path ?? 'auto';
  const path: KernelIommuPath = want === 'auto' ? kernelPathFor(addr, opts.sysfs) : want;
  const pre = premapWc(addr, opts.wcBars ?? [], opts.sysfs);
  try {
    if (path === 'cdev') {
      const o = openViaCdev(addr, opts.sysfs);
      const opened = { path: 'cdev', node: o.cdev, devid: o.devid, ioas: o.ioas } as const;
      return new KernelDeviceFile(addr, o.deviceFd, opened, o.iommu, opts.sysfs, pre);
    }
    const { deviceFd, iommu, group } = openViaGroup(addr, opts.sysfs);
    const opened = { path: 'group', group, node: `/dev/vfio/${group}` } as const;
    return new KernelDeviceFile(addr, deviceFd, opened, iommu, opts.sysfs, pre);
  } catch (e) {
    for (const m of pre.values()) m.unmap();
    throw e;
  }
}

/** OpenKernelOptions.wcBars: whole-BAR sysfs WC mappings, made before the device is opened. */
function premapWc(
  bdf: string,
  bars: readonly number[],
  sysfs: string | undefined,
): Map<number, NativeMapping> {
  const out = new Map<number, NativeMapping>();
  if (bars.length === 0) return out;
  if (!iomemRelaxed())
    fail(
      Errno.EINVAL,
      'open kernel device',
      `wcBars needs a kernel booted with iomem=relaxed: with strict iomem (CONFIG_IO_STRICT_DEVMEM) vfio-pci's claim of the BAR revokes a sysfs mapping (revoke_iomem) and a later access faults`,
    );
  try {
    for (const bar of bars) {
      const size = resourceSize(bdf, bar, sysfs);
      if (size === undefined || size === 0)
        fail(Errno.EINVAL, 'open kernel device', `${bdf} BAR ${bar} is empty`);
      out.set(bar, mmapSysfsWc(bdf, bar, 0n, size, sysfs));
    }
  } catch (e) {
    for (const m of out.values()) m.unmap();
    throw e;
  }
  return out;
}
