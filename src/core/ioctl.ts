/**
 * The device fd's ioctls as drivers/vfio/pci/vfio_pci_core.c answers them: vfio_pci_core_ioctl's
 * handlers (GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS, RESET, the hot-reset pair,
 * IOEVENTFD) and vfio_pci_core_ioctl_feature's, plus the RFC's SET_REGION_FLAGS. `arg` is the
 * user buffer, read and written in place like copy_from_user/copy_to_user; a buffer shorter than
 * what the kernel would copy is EFAULT.
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
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
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
  VFIO_MIGRATION_PRE_COPY,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_TS_FEATURE_ALIAS_REGION,
  VFIO_TS_FEATURE_MMAP_COOKIE,
  vfio_device_info,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import {
  deviceFeatureStruct,
  deviceInfoStruct,
  encodeCapChain,
  FEATURE_DATA,
  hotResetInfoStruct,
  hotResetStruct,
  ioeventfdStruct,
  irqInfoStruct,
  irqSetStruct,
  lowPowerWakeupStruct,
  regionInfoStruct,
} from '../wire/vfio.js';
import type { DeviceBehaviour } from './behaviour.js';
import type { DeviceDescription, KernelProfile } from './description.js';
import type { CoreEnvironment } from './env.js';
import type { IntxLine } from './intx.js';
import type { IrqState } from './irqs.js';
import type { DeviceMigration } from './migration/engine.js';
import { MIGRATION_FEATURES, migrationFeature } from './migration/feature.js';
import type { RegionTable } from './regions.js';
import { checkFeature, copyArgsz, need } from './uaccess.js';
import type { Extensions, WriteCombining } from './wc.js';

/** vfio.h (7.3): VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2. */
const VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOV2 = 12;
/** VFIO_DEVICE_IOEVENTFD_SIZE_MASK: the access size, 1, 2, 4 or 8 bytes. */
const VFIO_DEVICE_IOEVENTFD_SIZE_MASK = 0xf;
/** Bytes of one MSI-X table entry (PCI 3.0 §6.8.2). */
const MSIX_ENTRY_SIZE = 16;

/** What the ioctls read and change: the parts of the device (vfio_pci_core_device's fields). */
export interface IoctlParts {
  readonly description: DeviceDescription;
  readonly profile: KernelProfile;
  /** vfio_device_cdev_opened(): the fd is a device cdev's (DeviceOptions.opened). */
  readonly cdevOpened: boolean;
  readonly extensions: Extensions;
  readonly env: CoreEnvironment;
  readonly regions: RegionTable;
  readonly irqs: IrqState;
  readonly intx: IntxLine;
  readonly wc: WriteCombining;
  readonly behaviour: DeviceBehaviour;
  /** The migration driver (src/core/migration), absent when DeviceOptions.migration is false. */
  readonly migration: DeviceMigration | undefined;
  /** The data_fd a MIG_DEVICE_STATE arc reports for session `n` (VfioPciDevice.migrationData). */
  migrationFd(session: number): number;
}

export class CoreIoctls {
  /** vdev->pm_runtime_engaged: LOW_POWER_ENTRY done, not yet left. */
  private lowPower = false;

  constructor(private readonly d: IoctlParts) {}

  /**
   * vfio_pci_core_ioctl. Returns the ioctl's result (0, or an fd for DMA_BUF). With `wait`, a
   * MIG_DEVICE_STATE SET returns a promise (the arc waits for the device to quiesce); without it,
   * that request is EAGAIN. @throws VfioError
   */
  ioctl(request: number, arg: Uint8Array, wait = false): number | Promise<number> {
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
        if (!this.d.description.resettable) fail(Errno.EINVAL, 'VFIO_DEVICE_RESET', 'no reset method');
        this.reset();
        return 0;
      case VFIO_DEVICE_FEATURE:
        return this.feature(arg, wait);
      case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
        return this.hotResetInfo(arg);
      case VFIO_DEVICE_PCI_HOT_RESET:
        return this.hotReset(arg);
      case VFIO_DEVICE_IOEVENTFD:
        return this.ioeventfd(arg);
      case VFIO_DEVICE_SET_REGION_FLAGS:
        if (this.d.extensions.rfc) return this.d.wc.setRegionFlags(arg);
        break;
    }
    return fail(Errno.ENOTTY, 'ioctl', `request 0x${request.toString(16)}`);
  }

  /**
   * Device reset: device state only. vfio_pci_ioctl_reset → pci_try_reset_function saves the
   * function's config space and restores it after the reset, and vfio's virtual config (vconfig)
   * is not touched, so what a user reads from the config region is unchanged (seen on 6.1 and 7.3:
   * the command register reads back what was written before DEVICE_RESET). Interrupts stay.
   * What the device itself clears is its own decision (BarDescription.reset, the behaviour's
   * reset): a function reset need not touch a memory BAR's contents (ivshmem's shared memory is
   * a host memory backend; it outlives resets, guests and clients).
   */
  reset(): void {
    // mlx5vf_pci_aer_reset_done and its kin: a reset returns the migration state to RUNNING.
    this.d.migration?.reset();
    this.d.regions.resetMemory();
    this.d.behaviour.reset?.();
  }

  get inLowPower(): boolean {
    return this.lowPower;
  }

  /**
   * vdev->has_dyn_msix (Linux 6.5+, pci_msix_can_alloc_dyn): MSI-X vectors can be added while
   * MSI-X is enabled. The 6.1 profile has no such thing.
   */
  get dynamicMsix(): boolean {
    return this.d.profile !== '6.1' && this.d.description.msix !== undefined;
  }

  /** vfio_pci_get_irq_count */
  irqCount(index: number): number {
    const d = this.d.description;
    switch (index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        return d.identity.interruptPin ? 1 : 0;
      case VFIO_PCI_MSI_IRQ_INDEX:
        return d.msi ? d.msi.vectors : 0;
      case VFIO_PCI_MSIX_IRQ_INDEX:
        return d.msix ? d.msix.tableSize : 0;
      case VFIO_PCI_ERR_IRQ_INDEX:
        return this.d.profile === '6.1' ? (d.pcie ? 1 : 0) : 1;
      case VFIO_PCI_REQ_IRQ_INDEX:
        return 1;
    }
    return 0;
  }

  /**
   * vfio_pci_ioctl_get_info: minsz ends at num_irqs. What is copied back differs: 6.1 copies
   * minsz bytes, or up to cap_offset's end once argsz reaches it ("For backward compatibility,
   * cannot require this": `if (info.argsz >= capsz) minsz = capsz`); 7.3 copies min(argsz, sizeof)
   * bytes of a zeroed struct (24 bytes, a trailing pad), so a partial cap_offset reads back 0 too.
   */
  private getInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_INFO';
    const S = deviceInfoStruct;
    const argsz = copyArgsz(arg, S, S.endOf('num_irqs'), op);
    const capsz = S.endOf('cap_offset');
    const out =
      this.d.profile === '6.1'
        ? argsz >= capsz
          ? capsz
          : S.endOf('num_irqs')
        : Math.min(argsz, sizeIn(vfio_device_info, this.d.profile));
    need(arg, out, op);
    const flags = VFIO_DEVICE_FLAGS_PCI | (this.d.description.resettable ? VFIO_DEVICE_FLAGS_RESET : 0);
    S.write(arg, { flags, num_regions: this.d.regions.count, num_irqs: VFIO_PCI_NUM_IRQS });
    arg.fill(0, S.endOf('num_irqs'), out); // cap_offset and pad, whole or in part
    return 0;
  }

  /** vfio_pci_ioctl_get_region_info, including the argsz exchange for capabilities. */
  private getRegionInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_REGION_INFO';
    const R = regionInfoStruct;
    const minsz = R.size;
    const argsz = copyArgsz(arg, R, minsz, op);
    const index = R.get(arg, 'index');
    const r = this.d.regions.get(index);
    if (!r || (index === VFIO_PCI_VGA_REGION_INDEX && !this.d.description.vga))
      return fail(Errno.EINVAL, op, `index ${index}`);
    // `flags` is output only: whatever the caller put there is overwritten (seed thread, A.W.).
    let flags = r.flags;
    // cap_offset is written only when the region has capabilities; otherwise the caller's value
    // goes back unchanged (the kernel copies the whole 32-byte header in and out). Seen on 6.1/7.3.
    let capOffset = R.get(arg, 'cap_offset');
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
    R.write(arg, { argsz: newArgsz, flags, cap_offset: capOffset, size: r.size, offset: r.base });
    return 0;
  }

  /**
   * vfio_pci_ioctl_get_pci_hot_reset_info: minsz ends at `count`; flags is zeroed; then a slot
   * or bus reset must be possible (pci_probe_reset_slot / pci_probe_reset_bus), else ENODEV. The
   * model's function sits alone on a root bus (like QEMU's q35 root-complex devices): ENODEV.
   */
  private hotResetInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO';
    copyArgsz(arg, hotResetInfoStruct, hotResetInfoStruct.endOf('count'), op);
    hotResetInfoStruct.set(arg, 'flags', 0);
    return fail(Errno.ENODEV, op, 'no slot or bus reset for this function');
  }

  /**
   * vfio_pci_ioctl_pci_hot_reset: `argsz < minsz || flags` is EINVAL. 7.3 (not 6.1: the check
   * came with the device cdev's hot reset, "vfio/pci: Allow passing zero-length fd array in
   * VFIO_DEVICE_PCI_HOT_RESET") then requires the group list to match how the fd was opened,
   * `if (!!hdr.count == vfio_device_cdev_opened(&vdev->vdev)) return -EINVAL`: an empty list is
   * for a cdev fd only ("zero-length array is only for cdev opened devices"), group fds for a
   * group fd only. Then, as above, no slot or bus reset: ENODEV. 6.1 probes the reset first (its
   * `!hdr.count || hdr.count > count` comes after), so every count is ENODEV there.
   */
  private hotReset(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_PCI_HOT_RESET';
    copyArgsz(arg, hotResetStruct, hotResetStruct.endOf('count'), op);
    const { flags, count } = hotResetStruct.read(arg);
    if (flags) fail(Errno.EINVAL, op, 'flags');
    if (this.d.profile !== '6.1' && (count !== 0) === this.d.cdevOpened)
      fail(
        Errno.EINVAL,
        op,
        this.d.cdevOpened
          ? 'a device opened through its cdev takes no group fds (count must be 0)'
          : 'count 0 (an empty group list) is only for a device opened through its cdev',
      );
    return fail(Errno.ENODEV, op, 'no slot or bus reset for this function');
  }

  /**
   * vfio_pci_ioctl_ioeventfd → vfio_pci_ioeventfd: the validation, and deletion of an ioeventfd
   * that does not exist (ENODEV). The model registers none: a new one gets ENOSPC, the kernel's
   * answer when VFIO_PCI_IOEVENTFD_MAX are in use (here the maximum is 0).
   */
  private ioeventfd(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_IOEVENTFD';
    const S = ioeventfdStruct;
    // `minsz = offsetofend(struct vfio_device_ioeventfd, fd)`: 28 bytes, the trailing word unread.
    copyArgsz(arg, S, S.endOf('fd'), op);
    const flags = S.get(arg, 'flags');
    const offset = S.get(arg, 'offset');
    const fd = S.get(arg, 'fd');
    if (flags & ~VFIO_DEVICE_IOEVENTFD_SIZE_MASK) fail(Errno.EINVAL, op, 'flags');
    const count = flags & VFIO_DEVICE_IOEVENTFD_SIZE_MASK;
    // `if (hweight8(count) != 1 || ioeventfd.fd < -1) return -EINVAL;`
    if (count !== 1 && count !== 2 && count !== 4 && count !== 8) fail(Errno.EINVAL, op, 'size');
    if (fd < -1) fail(Errno.EINVAL, op, `fd ${fd}`);
    // vfio_pci_ioeventfd: `bar = VFIO_PCI_OFFSET_TO_INDEX(offset); pos = offset &
    // VFIO_PCI_OFFSET_MASK; if (bar > VFIO_PCI_BAR5_REGION_INDEX) return -EINVAL;`. The region is
    // found through the offset space, so dense offsets decode too (under the kernel encoding the
    // lookup gives exactly index = offset >> 40, pos = the low 40 bits); an offset no region
    // owns (a cookie, a hole) is EINVAL like a region past BAR5.
    const hit = this.d.regions.offsets.lookup(offset);
    const bar = hit?.owner.kind === 'region' ? hit.owner.region : PCI_STD_NUM_BARS;
    const pos = hit ? offset - hit.base : 0n;
    if (bar >= PCI_STD_NUM_BARS) fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}: not a BAR`);
    const b = this.d.regions.bar(bar);
    if (pos + BigInt(count) > BigInt(b ? b.size : 0)) fail(Errno.EINVAL, op, 'beyond the BAR');
    const m = this.d.description.msix;
    if (m && m.tableBar === bar) {
      const ts = BigInt(m.tableOffset);
      const te = ts + BigInt(m.tableSize * MSIX_ENTRY_SIZE);
      if (!(pos + BigInt(count) <= ts || pos >= te)) fail(Errno.EINVAL, op, 'overlaps the MSI-X table');
    }
    if (fd < 0) fail(Errno.ENODEV, op, 'no such ioeventfd');
    return fail(Errno.ENOSPC, op, 'the model offers no ioeventfds');
  }

  /** vfio_pci_ioctl_get_irq_info */
  private getIrqInfo(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_GET_IRQ_INFO';
    const S = irqInfoStruct;
    copyArgsz(arg, S, S.size, op);
    const index = S.get(arg, 'index');
    if (index >= VFIO_PCI_NUM_IRQS) fail(Errno.EINVAL, op, `index ${index}`);
    // 6.1: ERR exists only on PCIe devices; 7.3 answers it for every device (seen in the guest).
    if (index === VFIO_PCI_ERR_IRQ_INDEX && this.d.profile === '6.1' && !this.d.description.pcie)
      fail(Errno.EINVAL, op, 'ERR IRQ on a non-PCIe device');
    let flags = VFIO_IRQ_INFO_EVENTFD;
    if (index === VFIO_PCI_INTX_IRQ_INDEX) flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    // 6.5+ (vfio_pci_ioctl_get_irq_info): NORESIZE unless MSI-X on a device with dynamic MSI-X
    // allocation (vdev->has_dyn_msix, true on x86 for any MSI-X device). Seen on 7.3 for nvme/e1000e.
    else if (index !== VFIO_PCI_MSIX_IRQ_INDEX || !this.dynamicMsix) flags |= VFIO_IRQ_INFO_NORESIZE;
    S.write(arg, { flags, count: this.irqCount(index) });
    return 0;
  }

  /** vfio_pci_ioctl_set_irqs → vfio_set_irqs_validate_and_prepare → vfio_pci_set_irqs_ioctl */
  private setIrqs(arg: Uint8Array): number {
    const op = 'VFIO_DEVICE_SET_IRQS';
    const S = irqSetStruct;
    const minsz = S.size;
    const argsz = copyArgsz(arg, S, minsz, op);
    const { flags, index, start, count } = S.read(arg);
    if (
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
        size = 1; // u8 per interrupt
        break;
      case VFIO_IRQ_SET_DATA_EVENTFD:
        size = 4; // s32 per interrupt
        break;
      default:
        return fail(Errno.EINVAL, op, 'data type');
    }
    let data: Uint8Array = new Uint8Array(0);
    if (size) {
      const at = S.offsetOf('data');
      if (argsz - minsz < count * size) fail(Errno.EINVAL, op, 'argsz too small for data');
      need(arg, at + count * size, op);
      data = arg.subarray(at, at + count * size);
    }
    // 6.1 handles ERR triggers only on PCIe devices; 7.3 on every device (seen in the guest).
    this.d.irqs.set(index, flags, start, count, data, !!this.d.description.pcie || this.d.profile !== '6.1');
    if (index === VFIO_PCI_INTX_IRQ_INDEX) this.d.intx.afterSetIrqs();
    return 0;
  }

  /** vfio_ioctl_device_feature (vfio_main.c) → vfio_pci_core_ioctl_feature. */
  private feature(arg: Uint8Array, wait: boolean): number | Promise<number> {
    const op = 'VFIO_DEVICE_FEATURE';
    const minsz = deviceFeatureStruct.size;
    const argsz = copyArgsz(arg, deviceFeatureStruct, minsz, op);
    const flags = deviceFeatureStruct.get(arg, 'flags');
    const ops = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_GET;
    if (flags & ~(VFIO_DEVICE_FEATURE_MASK | ops | VFIO_DEVICE_FEATURE_PROBE))
      fail(Errno.EINVAL, op, 'unknown flags');
    if (!(flags & VFIO_DEVICE_FEATURE_PROBE) && (flags & ops) === ops)
      fail(Errno.EINVAL, op, 'GET and SET together');
    const dataSize = argsz - minsz;
    // The kernel reads `data` from user memory as the feature needs it; a short buffer is EFAULT.
    const data = arg.subarray(FEATURE_DATA);
    const { profile, extensions, wc, migration } = this.d;
    const feature = flags & VFIO_DEVICE_FEATURE_MASK;
    // vfio_main.c answers the migration features before the driver's own; 6.1's knows only
    // MIGRATION and MIG_DEVICE_STATE (DMA logging and MIG_DATA_SIZE came later: ENOTTY).
    if (
      MIGRATION_FEATURES.has(feature) &&
      (profile !== '6.1' || feature <= VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE)
    ) {
      const setState = feature === VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE && flags & VFIO_DEVICE_FEATURE_SET;
      if (setState && !(flags & VFIO_DEVICE_FEATURE_PROBE) && !wait && migration)
        fail(Errno.EAGAIN, op, 'MIG_DEVICE_STATE SET waits for the device: VfioPciDevice.ioctlAsync');
      return migrationFeature(migration, arg, (n) => this.d.migrationFd(n));
    }
    switch (feature) {
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
        return this.lowPowerWithWakeup(flags, dataSize, data);
      case VFIO_DEVICE_FEATURE_DMA_BUF:
        if (profile === '6.1') break;
        return wc.dmaBufFeature(flags, dataSize, data);
      case VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOV2:
        // 7.3's vfio_main.c answers feature 12 for every device; one without migration ops
        // gets EINVAL for any op, PROBE included (seen on 7.3), and so does one without PRE_COPY
        // (vfio_ioctl_device_feature_migration_precopy_info_v2). 6.1 does not know it: ENOTTY.
        if (profile === '6.1') break;
        if (!migration || !(migration.flags & VFIO_MIGRATION_PRE_COPY))
          return fail(Errno.EINVAL, op, 'no migration with PRE_COPY');
        // Enables the REINIT flag of vfio_precopy_info, which this driver never needs to set.
        return checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_SET, 0) && 0;
      case VFIO_TS_FEATURE_MMAP_COOKIE:
        if (!extensions.cookies) break;
        return wc.cookieFeature(flags, dataSize, data);
      case VFIO_TS_FEATURE_ALIAS_REGION:
        if (!extensions.alias) break;
        return wc.aliasFeature(flags, dataSize, data);
    }
    return fail(Errno.ENOTTY, op, `feature ${feature}`);
  }

  /** vfio_pci_core_pm_entry_with_wakeup. */
  private lowPowerWithWakeup(flags: number, dataSize: number, data: Uint8Array): number {
    const op = 'VFIO_DEVICE_FEATURE';
    const S = lowPowerWakeupStruct;
    if (checkFeature(flags, dataSize, VFIO_DEVICE_FEATURE_SET, S.size) !== 1) return 0;
    need(data, S.size, op);
    // `if (entry.wakeup_eventfd < 0) return -EINVAL;` before eventfd_ctx_fdget (EBADF / EINVAL)
    // looks the fd up.
    const fd = S.get(data, 'wakeup_eventfd');
    if (fd < 0) fail(Errno.EINVAL, op, `wakeup_eventfd ${fd}`);
    this.d.env.eventfd(fd).close();
    if (this.lowPower) fail(Errno.EINVAL, op, 'already in low power');
    this.lowPower = true;
    return 0;
  }
}
