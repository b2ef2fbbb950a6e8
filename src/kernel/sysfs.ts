/**
 * PCI functions in sysfs as vfio-pci's users meet them: addresses, IOMMU groups, the bound driver,
 * resource files, and binding to vfio-pci (Documentation/driver-api/vfio.rst, "VFIO Usage
 * Example"; Documentation/ABI/testing/sysfs-bus-pci: driver_override, drivers_probe, resourceN_wc).
 */
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Errno } from '../abi/errno.js';
import { fail, VfioError } from '../errors.js';

export const SYSFS_PCI_DEVICES = '/sys/bus/pci/devices';
export const SYSFS_PCI_DRIVERS_PROBE = '/sys/bus/pci/drivers_probe';
export const SYSFS_VFIO_PCI_DRIVER = '/sys/bus/pci/drivers/vfio-pci';
export const VFIO_PCI_DRIVER = 'vfio-pci';

/** domain:bus:device.function, all hex (0000:00:03.0); a short form (00:03.0) gets domain 0000. */
const BDF_RE = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$/;

/** The canonical sysfs name of a PCI address, or EINVAL. */
export function normalizeBdf(bdf: string): string {
  const m = BDF_RE.exec(bdf.trim());
  if (!m) return fail(Errno.EINVAL, 'PCI address', `'${bdf}' is not domain:bus:device.function`);
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2]!.toLowerCase()}:${m[3]!.toLowerCase()}.${m[4]}`;
}

export function isBdf(s: string): boolean {
  return BDF_RE.test(s.trim());
}

/** /sys/bus/pci/devices/<bdf>, or ENODEV when no such function exists. */
export function deviceDir(bdf: string, sysfs = SYSFS_PCI_DEVICES): string {
  const dir = join(sysfs, normalizeBdf(bdf));
  if (!existsSync(dir)) fail(Errno.ENODEV, 'PCI device', `${dir} does not exist`);
  return dir;
}

function readTrim(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The IOMMU group number (the name the iommu_group link points at). */
export function iommuGroup(bdf: string, sysfs = SYSFS_PCI_DEVICES): number {
  const link = join(deviceDir(bdf, sysfs), 'iommu_group');
  let target: string;
  try {
    target = readlinkSync(link);
  } catch {
    return fail(
      Errno.ENODEV,
      'IOMMU group',
      `${normalizeBdf(bdf)} has no iommu_group: no IOMMU is enabled (boot with intel_iommu=on or amd_iommu=on)`,
    );
  }
  return Number(basename(target));
}

/** Every PCI address in the function's IOMMU group (all must be vfio-bound or driverless). */
export function groupMembers(bdf: string, sysfs = SYSFS_PCI_DEVICES): string[] {
  const dir = join(deviceDir(bdf, sysfs), 'iommu_group', 'devices');
  try {
    return readdirSync(dir).sort();
  } catch {
    return [normalizeBdf(bdf)];
  }
}

/** The driver bound to the function, or undefined. */
export function boundDriver(bdf: string, sysfs = SYSFS_PCI_DEVICES): string | undefined {
  try {
    return basename(readlinkSync(join(deviceDir(bdf, sysfs), 'driver')));
  } catch {
    return undefined;
  }
}

export interface PciIds {
  vendor: number;
  device: number;
  class: number;
}

export function pciIds(bdf: string, sysfs = SYSFS_PCI_DEVICES): PciIds {
  const dir = deviceDir(bdf, sysfs);
  const n = (f: string) => Number(readTrim(join(dir, f)) ?? Number.NaN);
  return { vendor: n('vendor'), device: n('device'), class: n('class') };
}

/** Path of BAR `bar`'s `resourceN_wc` file (only prefetchable memory BARs have one), if present. */
export function resourceWcPath(bdf: string, bar: number, sysfs = SYSFS_PCI_DEVICES): string | undefined {
  const p = join(deviceDir(bdf, sysfs), `resource${bar}_wc`);
  return existsSync(p) ? p : undefined;
}

/** Physical start and exclusive end of BAR `bar` from sysfs `resource`, or undefined when empty. */
export function resourceRange(
  bdf: string,
  bar: number,
  sysfs = SYSFS_PCI_DEVICES,
): { start: bigint; end: bigint } | undefined {
  const line = readTrim(join(deviceDir(bdf, sysfs), 'resource'))?.split('\n')[bar];
  const [s, e] = (line ?? '').trim().split(/\s+/);
  if (s === undefined || e === undefined) return undefined;
  const start = BigInt(s);
  const last = BigInt(e);
  return last > start ? { start, end: last + 1n } : undefined;
}

/**
 * Whether the kernel was booted with `iomem=relaxed` (kernel/resource.c: strict_iomem, which
 * looks for "relaxed" in the option): then sysfs may map a BAR a driver has claimed
 * (iomem_is_exclusive is false for busy, non-exclusive ranges) and a claim no longer revokes
 * such mappings (revoke_iomem returns early when devmem_is_allowed).
 */
export function iomemRelaxed(cmdline = '/proc/cmdline'): boolean {
  return /(?:^|\s)iomem=\S*relaxed/.test(readTrim(cmdline) ?? '');
}

/** Size of the sysfs resource file of BAR `bar` (the BAR's size), or undefined. */
export function resourceSize(bdf: string, bar: number, sysfs = SYSFS_PCI_DEVICES): number | undefined {
  try {
    return statSync(join(deviceDir(bdf, sysfs), `resource${bar}`)).size;
  } catch {
    return undefined;
  }
}

/**
 * The vfio device name (vfioN, sysfs `vfio-dev/`) of a vfio-bound function: every kernel since
 * 6.1 lists it; /dev/vfio/devices/vfioN exists only with CONFIG_VFIO_DEVICE_CDEV.
 */
export function vfioCdevName(bdf: string, sysfs = SYSFS_PCI_DEVICES): string | undefined {
  try {
    return readdirSync(join(deviceDir(bdf, sysfs), 'vfio-dev')).find((n) => /^vfio\d+$/.test(n));
  } catch {
    return undefined;
  }
}

function writeSysfs(path: string, value: string, op: string): void {
  try {
    writeFileSync(path, value);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const errno = code !== undefined && code in Errno ? Errno[code as keyof typeof Errno] : Errno.EIO;
    const hint = code === 'EACCES' || code === 'EPERM' ? ' (needs root)' : '';
    fail(errno, op, `writing '${value}' to ${path} failed: ${code ?? String(e)}${hint}`);
  }
}

/** Whether the vfio-pci driver is loaded (its directory exists under /sys/bus/pci/drivers). */
export function vfioPciLoaded(driverDir = SYSFS_VFIO_PCI_DRIVER): boolean {
  return existsSync(driverDir);
}

export interface BindOptions {
  sysfs?: string;
  driversProbe?: string;
  driverDir?: string;
}

export interface BindResult {
  bdf: string;
  group: number;
  /** The driver bound before (undefined when none was). */
  previousDriver: string | undefined;
  /** The group's other members and their drivers. */
  groupMembers: { bdf: string; driver: string | undefined }[];
  /** Whether every member of the group leaves DMA to its user (groupViability: the group is viable). */
  viable: boolean;
  /**
   * The vfio device's name (sysfs `vfio-dev/vfioN`, listed since Linux 6.1); its cdev is
   * /dev/vfio/devices/vfioN where the kernel has CONFIG_VFIO_DEVICE_CDEV.
   */
  cdev: string | undefined;
}

/**
 * Drivers that declare `driver_managed_dma` (they do no DMA through the kernel's default domain,
 * so they do not take DMA ownership of the group): pci-stub (drivers/pci/pci-stub.c), the PCIe
 * port driver (drivers/pci/pcie/portdrv.c), vfio-pci and every vfio-pci variant driver
 * (drivers/vfio/pci/.../*: mlx5_vfio_pci, hisi_acc_vfio_pci, pds_vfio_pci, virtio_vfio_pci,
 * nvgrace_gpu_vfio_pci, xe-vfio-pci, ...). sysfs does not show the flag, so it goes by name.
 */
export function driverLeavesDmaToUser(driver: string | undefined): boolean {
  if (driver === undefined) return true;
  return driver === 'pci-stub' || driver === 'pcieport' || /vfio[-_]pci/.test(driver);
}

/**
 * Group viability as Linux 6.1 and 7.3 decide it. VFIO_GROUP_GET_STATUS sets
 * VFIO_GROUP_FLAGS_VIABLE unless iommu_group_dma_owner_claimed() (drivers/vfio/group.c:
 * vfio_group_ioctl_get_status; 6.1: drivers/vfio/vfio_main.c), and SET_CONTAINER's
 * iommu_group_claim_dma_owner() fails while any member holds the default domain
 * (drivers/iommu/iommu.c: group->owner_cnt). A member takes it when a driver without
 * `driver_managed_dma` binds (drivers/pci/pci-driver.c: pci_dma_configure →
 * iommu_device_use_default_domain). So a member is fine with no driver or with one of
 * driverLeavesDmaToUser's. Bridges get no exemption of their own since 5.19 (the old
 * vfio_dev_driver_allowed allowed any non-normal header type): a bridge is fine with no driver
 * or pcieport, not with e.g. shpchp.
 */
export function groupViability(bdf: string, sysfs = SYSFS_PCI_DEVICES) {
  const members = groupMembers(bdf, sysfs).map((m) => ({ bdf: m, driver: boundDriver(m, sysfs) }));
  const blocking = members.filter((m) => !driverLeavesDmaToUser(m.driver));
  return { members, blocking, viable: blocking.length === 0 };
}

/**
 * Binds a PCI function to vfio-pci: driver_override = vfio-pci, unbind from the current driver,
 * drivers_probe. Errors: ENODEV for an unknown address or missing vfio-pci module. A group left
 * not viable is not an error here: `viable` says so (vfio-ts bind exits 1 naming the devices,
 * and opening the device fails EBUSY).
 */
export function bindVfioPci(bdf: string, opts: BindOptions = {}): BindResult {
  const sysfs = opts.sysfs ?? SYSFS_PCI_DEVICES;
  const addr = normalizeBdf(bdf);
  const dir = deviceDir(addr, sysfs);
  if (!vfioPciLoaded(opts.driverDir))
    fail(Errno.ENODEV, 'bind', 'the vfio-pci module is not loaded (modprobe vfio-pci)');
  const group = iommuGroup(addr, sysfs);
  const previousDriver = boundDriver(addr, sysfs);
  if (previousDriver !== VFIO_PCI_DRIVER) {
    writeSysfs(join(dir, 'driver_override'), VFIO_PCI_DRIVER, 'bind');
    if (previousDriver !== undefined) writeSysfs(join(dir, 'driver', 'unbind'), addr, 'bind');
    writeSysfs(opts.driversProbe ?? SYSFS_PCI_DRIVERS_PROBE, addr, 'bind');
    const now = boundDriver(addr, sysfs);
    if (now !== VFIO_PCI_DRIVER)
      fail(Errno.EIO, 'bind', `${addr} is bound to ${now ?? 'no driver'} after drivers_probe, not vfio-pci`);
  }
  const v = groupViability(addr, sysfs);
  const cdev = vfioCdevName(addr, sysfs);
  return { bdf: addr, group, previousDriver, groupMembers: v.members, viable: v.viable, cdev };
}

/** Gives the function back to the kernel: unbind from vfio-pci, clear driver_override, reprobe. */
export function unbindVfioPci(
  bdf: string,
  opts: BindOptions = {},
): { bdf: string; driver: string | undefined } {
  const sysfs = opts.sysfs ?? SYSFS_PCI_DEVICES;
  const addr = normalizeBdf(bdf);
  const dir = deviceDir(addr, sysfs);
  const driver = boundDriver(addr, sysfs);
  if (driver !== undefined) writeSysfs(join(dir, 'driver', 'unbind'), addr, 'unbind');
  // An empty write (a lone newline) clears driver_override (sysfs-bus-pci).
  writeSysfs(join(dir, 'driver_override'), '\n', 'unbind');
  try {
    writeSysfs(opts.driversProbe ?? SYSFS_PCI_DRIVERS_PROBE, addr, 'unbind');
  } catch (e) {
    // No host driver for the device is not an error: it is simply left unbound.
    if (!(e instanceof VfioError)) throw e;
  }
  return { bdf: addr, driver: boundDriver(addr, sysfs) };
}
