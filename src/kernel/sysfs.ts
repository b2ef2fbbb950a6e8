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

/** Size of the sysfs resource file of BAR `bar` (the BAR's size), or undefined. */
export function resourceSize(bdf: string, bar: number, sysfs = SYSFS_PCI_DEVICES): number | undefined {
  try {
    return statSync(join(deviceDir(bdf, sysfs), `resource${bar}`)).size;
  } catch {
    return undefined;
  }
}

/** The vfio device cdev name (vfioN) of a vfio-bound function, when the kernel has cdevs. */
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
  /** Whether every member of the group is bound to vfio-pci or to no driver (the group is viable). */
  viable: boolean;
}

/** Group viability as vfio_group_viable sees it: every member driverless or bound to a vfio driver. */
export function groupViability(bdf: string, sysfs = SYSFS_PCI_DEVICES) {
  const members = groupMembers(bdf, sysfs).map((m) => ({ bdf: m, driver: boundDriver(m, sysfs) }));
  // drivers/vfio/group.c: vfio_dev_driver_allowed / vfio_group_has_device: pcieport is allowed too.
  const ok = (d: string | undefined) => d === undefined || d === VFIO_PCI_DRIVER || d === 'pcieport';
  return { members, viable: members.every((m) => ok(m.driver)) };
}

/**
 * Binds a PCI function to vfio-pci: driver_override = vfio-pci, unbind from the current driver,
 * drivers_probe. Errors: ENODEV for an unknown address or missing vfio-pci module, EBUSY when
 * the group is left not viable (another member is bound to a host driver).
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
  return { bdf: addr, group, previousDriver, groupMembers: v.members, viable: v.viable };
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
