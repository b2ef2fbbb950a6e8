/**
 * VfioPciDevice: an emulated PCI device that answers the VFIO device uAPI the way Linux's
 * vfio-pci does (drivers/vfio/pci/vfio_pci_core.c), byte for byte, through a raw
 * `ioctl(request, bytes)`, `pread`/`pwrite` at region offsets and `mmap`.
 *
 * The device fd's operations live in rooms along the kernel's own seams, each reading the parts
 * it needs and none calling back here:
 *   regions.ts  the region table and the BARs behind it (vfio_pci_core_enable, REGION_INFO data)
 *   ioctl.ts    the ioctls (vfio_pci_core_ioctl, vfio_pci_core_ioctl_feature)
 *   rdwr.ts     pread/pwrite (vfio_pci_rdwr.c)
 *   mmap.ts     the one table of mapping handles and the one mmap end point (vfio_pci_core_mmap)
 *   wc.ts       the four write-combining request paths and their one gate (docs/wc-uapi.md)
 *   config.ts, irqs.ts, intx.ts  config space and interrupts (vfio_pci_config.c, vfio_pci_intrs.c)
 */
import { createHash } from 'node:crypto';
import { Errno } from '../abi/errno.js';
import { MIG_MODEL_AREA_BASE } from '../abi/migration.js';
import { VFIO_MIGRATION_P2P, VFIO_MIGRATION_STOP_COPY } from '../abi/vfio.js';
import { fail, VfioError } from '../errors.js';
import type { BehaviourContext, BehaviourFactory, DeviceBehaviour } from './behaviour.js';
import { ConfigSpace } from './config.js';
import type { BarDescription, DeviceDescription, KernelProfile } from './description.js';
import { DmaSpace } from './dma.js';
import type { CoreEnvironment } from './env.js';
import type { DmaBuf, OffsetOwner } from './handles.js';
import { IntxLine } from './intx.js';
import { CoreIoctls } from './ioctl.js';
import { IrqState } from './irqs.js';
import { DeviceMigration } from './migration/engine.js';
import { ALL_MIGRATION_FLAGS } from './migration/fsm.js';
import { RunGate } from './migration/gate.js';
import { encodeHeader, type MemoryArea } from './migration/stream.js';
import { type DeviceMapping, type MappingSource, MappingTable } from './mmap.js';
import { DEFAULT_OFFSET_BITS, type OffsetSpace } from './offsets.js';
import { RegionAccess } from './rdwr.js';
import { type DeviceRegion, RegionTable } from './regions.js';
import { ALL_EXTENSIONS, type Extensions, MAX_MMAP_COOKIES, WriteCombining } from './wc.js';

export type {
  AccessSize,
  BehaviourContext,
  BehaviourFactory,
  DeviceBehaviour,
  RegisterHandlers,
} from './behaviour.js';
export type { MappingPath, MemoryAttribute } from './handles.js';
export type { DeviceMapping, MappingSource } from './mmap.js';
export type { DeviceRegion } from './regions.js';
export { checkFeature } from './uaccess.js';
export {
  ALL_EXTENSIONS,
  type Extensions,
  MAX_DMABUF_RANGES,
  MAX_MMAP_COOKIES,
  NO_EXTENSIONS,
} from './wc.js';

export interface DeviceOptions {
  readonly env: CoreEnvironment;
  /** Which kernel's vfio-pci to answer like (default 7.3). */
  readonly profile?: KernelProfile;
  readonly extensions?: Partial<Extensions>;
  /**
   * The RFC allows WC only on prefetchable memory BARs (IORESOURCE_PREFETCH). The thread argues
   * prefetch says nothing about WC safety; `false` relaxes the rule to any memory BAR, for every
   * WC request path (wc.ts: the gate).
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
  /**
   * How the device fd was opened (default 'group', like every vfio-user client's view): what
   * vfio_device_cdev_opened() tells vfio-pci. Only PCI_HOT_RESET's group list depends on it
   * (src/core/ioctl.ts hotReset), and only in the 7.3 profile: 6.1 has no device cdev.
   */
  readonly opened?: 'group' | 'cdev';
  /** Where the device's notable events go (the device context's log); nowhere by default. */
  readonly log?: (line: string) => void;
  /**
   * Live migration (docs/migration.md): the VFIO_MIGRATION_* flags the device offers (default
   * STOP_COPY | P2P | PRE_COPY; the 6.1 profile has no PRE_COPY), how long the arc into STOP
   * waits for the device's work (QUIESCE_TIMEOUT_MS), or false for none (the migration features
   * are then ENOTTY, as vfio-pci without a variant driver answers).
   */
  readonly migration?: false | { readonly flags?: number; readonly quiesceTimeoutMs?: number };
}

/**
 * In-process data_fd numbers (MIG_DEVICE_STATE's): handles of this device, not process fds, far
 * above any fd a process holds (VfioPciDevice.migrationData).
 */
export const MIGRATION_FD_BASE = 0x4000_0000;

/** The migration data_fd, in-process: the session's stream (the kernel's read/write/ioctl on it). */
export interface MigrationDataFile {
  read(max: number): Uint8Array;
  write(data: Uint8Array): void;
  /** VFIO_MIG_GET_PRECOPY_INFO. */
  precopyInfo(): { initialBytes: bigint; dirtyBytes: bigint };
}

/** Kept as a name for device files; `backing` lives in BarDescription. */
export type DeviceBarDescription = BarDescription;

export class VfioPciDevice {
  readonly profile: KernelProfile;
  readonly extensions: Extensions;
  readonly config: ConfigSpace;
  readonly irqs: IrqState;
  readonly dma = new DmaSpace();
  /** Holds the device's DMA and interrupts while migration has it stopped. */
  readonly gate = new RunGate();
  /** The migration driver (src/core/migration), unless DeviceOptions.migration is false. */
  readonly migration: DeviceMigration | undefined;
  private readonly regions: RegionTable;
  private readonly table: MappingTable;
  private readonly access: RegionAccess;
  private readonly ioctls: CoreIoctls;
  private readonly intx: IntxLine;
  private readonly behaviour: DeviceBehaviour;
  private closed = false;

  /**
   * `behaviour` is the device side: an object, or a factory the core calls once with the
   * device's context (interrupts, DMA, BAR memory) before the device is used. Every register
   * BAR (`backing: 'trapped'`, and every I/O BAR) must have a handler in its `bars`.
   */
  constructor(
    readonly description: DeviceDescription,
    behaviour: DeviceBehaviour | BehaviourFactory,
    options: DeviceOptions,
  ) {
    const { env } = options;
    this.profile = options.profile ?? '7.3';
    this.extensions = { ...ALL_EXTENSIONS, ...options.extensions };
    this.config = new ConfigSpace(description);
    this.irqs = new IrqState(env, {
      dynamicMsix: this.profile !== '6.1' && description.msix !== undefined,
      vectorLookup: this.profile !== '6.1',
      // vfio_msi_enable / vfio_msi_disable reflect the state in the virtual capability.
      onMsiChange: (msix, vectors) => {
        if (msix) this.config.setMsixEnabled(vectors > 0);
        else if (vectors > 0) this.config.setMsiEnabled(true, vectors);
        else this.config.setMsiEnabled(false);
      },
      // INTx unmasked, by the ioctl or by the unmask eventfd (virqfd), which runs outside any
      // SET_IRQS: see IntxLine.serviced.
      onIntxUnmasked: () => this.intx.serviced(),
    });
    this.intx = new IntxLine(this.config, this.irqs);
    this.regions = new RegionTable(description, env, {
      reportPrefetch: this.extensions.rfc,
      mmapTrappedBars: options.mmapTrappedBars ?? false,
      msixMmap: options.msixMmap ?? 'sparse',
      offsetBits: options.offsetBits ?? DEFAULT_OFFSET_BITS,
      dense: options.regionOffsets === 'dense',
      configSize: this.config.size,
    });
    this.table = new MappingTable(this.regions, env);
    this.behaviour = typeof behaviour === 'function' ? behaviour(this.context(options.log)) : behaviour;
    this.migration = this.migrationDriver(options);
    for (const [i, b] of description.bars.entries())
      if (b && (b.backing === 'trapped' || b.kind === 'io') && !this.behaviour.bars?.[i])
        fail(Errno.EINVAL, 'VfioPciDevice', `${description.name}: BAR${i} is trapped but has no handler`);
    const wc = new WriteCombining(this.regions, this.table, {
      extensions: this.extensions,
      wcRequiresPrefetch: options.wcRequiresPrefetch ?? true,
      maxCookies: options.maxMmapCookies ?? MAX_MMAP_COOKIES,
    });
    this.access = new RegionAccess(
      this.regions,
      this.config,
      this.behaviour,
      description.msix,
      this.profile !== '6.1',
    );
    this.ioctls = new CoreIoctls({
      description,
      profile: this.profile,
      cdevOpened: options.opened === 'cdev',
      extensions: this.extensions,
      env,
      regions: this.regions,
      irqs: this.irqs,
      intx: this.intx,
      wc,
      behaviour: this.behaviour,
      migration: this.migration,
      migrationFd: (n) => MIGRATION_FD_BASE + n,
    });
  }

  // -------------------------------------------------------------------------------------------
  // Regions
  // -------------------------------------------------------------------------------------------
  /** The device fd's offset space: region windows and mmap cookies. */
  get offsets(): OffsetSpace<OffsetOwner> {
    return this.regions.offsets;
  }

  get numRegions(): number {
    return this.regions.count;
  }

  /** Region `index` (size, flags, caps, offset), or undefined: what transports ask instead of a REGION_INFO ioctl. */
  region(index: number): DeviceRegion | undefined {
    return this.regions.get(index);
  }

  /** The offset of region `index` in the device fd (what REGION_INFO reports). */
  regionOffset(index: number): bigint {
    return this.regions.offsetOf(index);
  }

  // -------------------------------------------------------------------------------------------
  // ioctl (ioctl.ts)
  // -------------------------------------------------------------------------------------------
  /**
   * The device fd's ioctl. `arg` is the user buffer, read and written in place like the kernel's
   * copy_from_user/copy_to_user; a buffer shorter than what the kernel would copy is EFAULT.
   * Returns the ioctl's result (0, or an fd for DMA_BUF).
   * @throws VfioError
   */
  ioctl(request: number, arg: Uint8Array): number {
    this.assertOpen('ioctl');
    return this.ioctls.ioctl(request, arg) as number;
  }

  /**
   * `ioctl` for requests that may sleep, as the kernel's do: VFIO_DEVICE_FEATURE
   * MIG_DEVICE_STATE SET waits for the device to quiesce (the arc into STOP); `ioctl` refuses it
   * with EAGAIN. Every other request answers as `ioctl` does.
   * @throws VfioError
   */
  async ioctlAsync(request: number, arg: Uint8Array): Promise<number> {
    this.assertOpen('ioctl');
    return this.ioctls.ioctl(request, arg, true);
  }

  /**
   * The data_fd MIG_DEVICE_STATE returned: read / write / VFIO_MIG_GET_PRECOPY_INFO on the
   * session's stream. EBADF for a number that never was one; a session that has ended is ENODEV.
   */
  migrationData(fd: number): MigrationDataFile {
    const m = this.migration;
    const session = fd - MIGRATION_FD_BASE;
    if (!m || !Number.isInteger(session) || session < 1)
      fail(Errno.EBADF, 'migration data', `fd ${fd} is not a migration data_fd of this device`);
    return {
      read: (max) => m.read(max, session),
      write: (data) => m.write(data, session),
      precopyInfo: () => m.precopyInfo(session),
    };
  }

  /** vfio_pci_get_irq_count */
  irqCount(index: number): number {
    return this.ioctls.irqCount(index);
  }

  /** vdev->has_dyn_msix: MSI-X vectors can be added while MSI-X is enabled (not on 6.1). */
  get dynamicMsix(): boolean {
    return this.ioctls.dynamicMsix;
  }

  get inLowPower(): boolean {
    return this.ioctls.inLowPower;
  }

  /**
   * Device reset (DEVICE_RESET's effect; the vfio-user server's when a client leaves): the
   * device's state and the BAR memory it declares `reset: 'zero'`; config and interrupts stay.
   */
  reset(): void {
    this.ioctls.reset();
  }

  /** Resolves when no work the device started (a DMA, a command) is still running. */
  settled(): Promise<void> {
    return this.behaviour.settled?.() ?? Promise.resolve();
  }

  // -------------------------------------------------------------------------------------------
  // Region read/write (rdwr.ts)
  // -------------------------------------------------------------------------------------------
  /**
   * pread on the device fd. Like the kernel: a read starting at or past the region's end is
   * EINVAL, one that crosses it is cut short (vfio_pci_bar_rw: count = min(count, end - pos)).
   */
  pread(offset: bigint, length: number): Uint8Array {
    this.assertOpen('pread');
    // fs/read_write.c vfs_read: a zero-length read returns 0 before the driver is asked, at any
    // offset (seen on 6.1 and 7.3 at a BAR's end).
    if (length === 0) return new Uint8Array(0);
    const { region, pos } = this.regions.resolve(offset, 'pread');
    return this.access.rw(region, pos, new Uint8Array(length), false);
  }

  /** pwrite on the device fd; returns the bytes written. */
  pwrite(offset: bigint, data: Uint8Array): number {
    this.assertOpen('pwrite');
    if (data.length === 0) return 0; // vfs_write, as vfs_read above
    const { region, pos } = this.regions.resolve(offset, 'pwrite');
    return this.access.rw(region, pos, data, true).length;
  }

  /**
   * pread of region `index` at `pos`, addressed by index (vfio-user REGION_READ) rather than by
   * device-fd offset: the same checks and errnos, no offset encode/decode round trip.
   */
  readRegion(index: number, pos: bigint, length: number): Uint8Array {
    this.assertOpen('pread');
    if (length === 0) return new Uint8Array(0);
    const region = this.regions.get(index) ?? fail(Errno.EINVAL, 'pread', `no region ${index}`);
    return this.access.rw(region, pos, new Uint8Array(length), false);
  }

  /**
   * `readRegion` into all of `dst`, the position a number (below 2^53): nothing allocated for
   * config space or a memory BAR (the vfio-user server answers REGION_READ straight from its
   * reply buffer). Returns the bytes read, fewer where the region ends.
   */
  readRegionInto(index: number, pos: number, dst: Uint8Array): number {
    this.assertOpen('pread');
    if (dst.length === 0) return 0;
    const region = this.regions.get(index) ?? fail(Errno.EINVAL, 'pread', `no region ${index}`);
    return this.access.readInto(region, pos, dst);
  }

  /** pwrite of region `index` at `pos` (vfio-user REGION_WRITE); returns the bytes written. */
  writeRegion(index: number, pos: bigint, data: Uint8Array): number {
    this.assertOpen('pwrite');
    if (data.length === 0) return 0;
    const region = this.regions.get(index) ?? fail(Errno.EINVAL, 'pwrite', `no region ${index}`);
    return this.access.rw(region, pos, data, true).length;
  }

  // -------------------------------------------------------------------------------------------
  // mmap (mmap.ts) — every WC path ends here
  // -------------------------------------------------------------------------------------------
  /**
   * Where `offset` of the device fd maps: the region's memory, the offset within it, and the
   * attribute the mapping gets. Validates like vfio_pci_core_mmap. Transports use it to hand the
   * memory's fd to a peer; `mmap` uses it to map.
   */
  mappingSource(offset: bigint, length: number, shared = true): MappingSource & { regionOffset: bigint } {
    const op = 'mmap';
    this.assertOpen(op);
    if (!shared) fail(Errno.EINVAL, op, 'MAP_PRIVATE');
    const { handle, pos } = this.table.offsetHandle(offset, op);
    return this.table.source(handle, pos, length, op);
  }

  /** mmap(MAP_SHARED) of the device fd at `offset`; MAP_PRIVATE is EINVAL (VM_SHARED). */
  mmap(offset: bigint, length: number, shared = true): DeviceMapping {
    const op = 'mmap';
    this.assertOpen(op);
    if (!shared) fail(Errno.EINVAL, op, 'MAP_PRIVATE');
    const { handle, pos } = this.table.offsetHandle(offset, op);
    return this.table.map(handle, pos, length, op);
  }

  /** mmap of a dma-buf fd this device exported. 7.3 refuses (EINVAL); the extension maps it. */
  mmapDmaBuf(fd: number, offset: bigint, length: number): DeviceMapping {
    const op = 'mmap dma-buf';
    const { handle, dmabuf } = this.table.dmaBufHandle(fd, op);
    // mm/mmap.c do_mmap: MAP_SHARED with PROT_WRITE needs FMODE_WRITE, before the exporter is asked.
    if (!dmabuf.writable) fail(Errno.EACCES, op, 'dma-buf fd not opened O_RDWR');
    if (!this.extensions.dmabufWc) fail(Errno.EINVAL, op, 'Linux 7.3 dma-bufs cannot be mmapped');
    return this.table.map(handle, offset, length, op);
  }

  /** The dma-buf behind an fd this device exported (for transports): its first range's source. */
  dmaBuf(fd: number): (MappingSource & { size: bigint; ranges: DmaBuf['ranges'] }) | undefined {
    if (!this.table.dmaBuf(fd)) return undefined;
    const { handle, dmabuf } = this.table.dmaBufHandle(fd, 'dma-buf');
    return {
      ...this.table.describe(handle, dmabuf.ranges[0]!.offset),
      size: dmabuf.size,
      ranges: dmabuf.ranges,
    };
  }

  /** Closes a dma-buf fd (the file's release). */
  closeDmaBuf(fd: number): void {
    this.table.closeDmaBuf(fd);
  }

  /** Live mappings, for reports and tests. */
  mappings(): readonly DeviceMapping[] {
    return this.table.mappings();
  }

  /** Cookies holding offset space (released ones that are still mapped included). */
  get cookieCount(): number {
    return this.table.cookieCount;
  }

  // -------------------------------------------------------------------------------------------
  // Device side
  // -------------------------------------------------------------------------------------------
  /**
   * The device's own view. DMA and interrupts pass the migration gate: while the device is
   * stopped a DMA waits and an interrupt is held (gate.ts).
   */
  private context(log: ((line: string) => void) | undefined): BehaviourContext {
    const { irqs, intx, regions, dma, gate } = this;
    return {
      config: this.config,
      // DmaSpace's own promise while the gate is open: an async wrapper here would add a promise
      // and its ticks to every DMA (about 200 ns a call measured) for a check that costs nothing.
      dma: {
        read: (iova, length) =>
          gate.open ? dma.read(iova, length) : gate.wait().then(() => dma.read(iova, length)),
        readInto: (iova, into) =>
          gate.open ? dma.readInto(iova, into) : gate.wait().then(() => dma.readInto(iova, into)),
        write: (iova, data) =>
          gate.open ? dma.write(iova, data) : gate.wait().then(() => dma.write(iova, data)),
      },
      barMemory: (bar) => regions.memoryOf(bar)?.bytes,
      raise: (vector = 0) => {
        if (gate.open) return intx.raise(vector);
        gate.hold(vector);
        return false;
      },
      lower: () => intx.lower(),
      get irqType() {
        return irqs.type;
      },
      log: log ?? (() => {}),
    };
  }

  /** The migration driver of this device (DeviceOptions.migration), over the device's parts. */
  private migrationDriver(options: DeviceOptions): DeviceMigration | undefined {
    if (options.migration === false) return undefined;
    const profileFlags =
      this.profile === '6.1' ? VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P : ALL_MIGRATION_FLAGS;
    const flags = options.migration?.flags ?? profileFlags;
    if (flags & ~profileFlags)
      fail(
        Errno.EINVAL,
        'VfioPciDevice',
        `migration flags 0x${flags.toString(16)} beyond Linux ${this.profile}'s`,
      );
    const { description, config, intx, irqs, behaviour, gate, dma, regions } = this;
    let header: Uint8Array | undefined;
    const memoryAreas = (): MemoryArea[] => {
      const out: MemoryArea[] = [];
      for (const [i, b] of description.bars.entries())
        if (b?.backing === 'memory') out.push({ id: i, bytes: regions.memoryOf(i)!.bytes });
      for (const [n, bytes] of (behaviour.migration?.memory?.() ?? []).entries())
        out.push({ id: MIG_MODEL_AREA_BASE + n, bytes });
      return out;
    };
    return new DeviceMigration(
      {
        config,
        intx,
        irqs,
        behaviour,
        gate,
        dma,
        memoryAreas,
        deliver: (v) => intx.raise(v),
        header: () => {
          header ??= encodeHeader({
            vendor: description.identity.vendorId,
            device: description.identity.deviceId,
            subsystemVendor: description.identity.subsystemVendorId,
            subsystem: description.identity.subsystemId,
            classCode: description.identity.classCode,
            revision: description.identity.revision,
            name: description.name,
            fingerprint: createHash('sha256')
              .update(JSON.stringify(description))
              .update(config.layout.bytes)
              .update(
                memoryAreas()
                  .map((a) => `${a.id}:${a.bytes.length}`)
                  .join(','),
              )
              .digest(),
          });
          return header;
        },
      },
      flags,
      options.migration?.quiesceTimeoutMs,
    );
  }

  /**
   * Closes the device: drops interrupts, mappings, dma-bufs, DMA ranges and BAR memory. What the
   * device's own close started (an nvme namespace flushed and closed) is work `settled()` waits for.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.irqs.close();
    this.table.close();
    this.dma.unmapAll();
    this.behaviour.close?.();
    this.regions.close();
  }

  private assertOpen(op: string): void {
    if (this.closed) throw new VfioError(Errno.EBADF, op, 'device closed');
  }
}
