/**
 * What the commands are pointed at: a vfio-user server's UNIX socket, or a PCI address bound to
 * vfio-pci. Each is checked before it is used, so a mistake is named in words (no such PCI
 * device; a plain file, not a socket; nobody listening) instead of surfacing as the errno of
 * whatever system call met it first.
 */
import { lstatSync, readFileSync, readlinkSync, type Stats, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Errno } from '../abi/errno.js';
import { VfioUserClient } from '../client/client.js';
import type { VfioDeviceFile } from '../driver/file.js';
import type { KernelFacts } from '../driver/lspci.js';
import { fail, VfioError } from '../errors.js';
import { openKernelDevice } from '../kernel/device.js';
import { boundDriver, isBdf, normalizeBdf, SYSFS_PCI_DEVICES } from '../kernel/sysfs.js';
import { UsageError } from './args.js';

/** Where a sysfs PCI device's files are; tests point it at a fake tree. */
export interface TargetOptions {
  readonly sysfs?: string;
  /** Per-request timeout of a vfio-user connection, in ms. */
  readonly timeoutMs?: number;
}

/** `s` as a canonical PCI address whose function exists in sysfs, or an error saying otherwise. */
export function existingPciDevice(command: string, s: string, sysfs = SYSFS_PCI_DEVICES): string {
  if (!isBdf(s))
    throw new UsageError(
      command,
      `'${s}' is not a PCI address (domain:bus:device.function, e.g. 0000:00:03.0)`,
    );
  const bdf = normalizeBdf(s);
  if (!exists(`${sysfs}/${bdf}`))
    fail(Errno.ENODEV, bdf, `no such PCI device: ${sysfs} has no ${bdf}; lspci -D lists the devices`);
  return bdf;
}

function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

function kindOf(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a socket';
}

/** A path `info` or `nvme` may connect to: it exists and is a socket. */
export function checkSocketPath(path: string): void {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch {
    const dir = dirname(path);
    if (!exists(dir)) fail(Errno.ENOENT, path, `no such file: directory ${dir} does not exist`);
    fail(Errno.ENOENT, path, 'no such file: neither a vfio-user socket nor a PCI address');
  }
  if (st.isSymbolicLink()) {
    try {
      st = statSync(path);
    } catch {
      fail(Errno.ENOENT, path, 'a symbolic link to nothing');
    }
  }
  if (!st.isSocket()) fail(Errno.ENOTSOCK, path, `not a socket: it is ${kindOf(st)}`);
}

/** Connects to a vfio-user server, with ECONNREFUSED said in words. */
export async function connectSocket(path: string, opts: TargetOptions = {}): Promise<VfioUserClient> {
  checkSocketPath(path);
  try {
    return await VfioUserClient.connect(
      path,
      opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs },
    );
  } catch (e) {
    if (e instanceof VfioError && e.errno === Errno.ECONNREFUSED)
      fail(
        Errno.ECONNREFUSED,
        path,
        'no server is listening on this socket (left behind by one that exited?)',
      );
    throw e;
  }
}

/**
 * A PCI address whose function is bound to vfio-pci (or a vfio-pci variant driver, whose name
 * says vfio: mlx5_vfio_pci, ...). Unbound or bound elsewhere is said with the command that fixes it.
 */
export function vfioBoundPciDevice(command: string, s: string, sysfs = SYSFS_PCI_DEVICES): string {
  const bdf = existingPciDevice(command, s, sysfs);
  const driver = boundDriver(bdf, sysfs);
  if (driver === undefined) fail(Errno.ENODEV, bdf, `not bound to any driver: vfio-ts bind ${bdf} first`);
  if (!/vfio/.test(driver))
    fail(Errno.ENODEV, bdf, `bound to ${driver}, not vfio-pci: vfio-ts bind ${bdf} first`);
  return bdf;
}

/** Opens a target: a socket path (vfio-user) or a PCI address (the kernel's vfio-pci). */
export async function openTarget(
  command: string,
  target: string,
  opts: TargetOptions = {},
): Promise<VfioDeviceFile> {
  if (!isBdf(target)) return connectSocket(target, opts);
  const bdf = vfioBoundPciDevice(command, target, opts.sysfs);
  return openKernelDevice(bdf, opts.sysfs ? { sysfs: opts.sysfs } : {});
}

/**
 * What lspci -vv reads from sysfs beside config space (pciutils lib/sysfs.c): the kernel's IRQ
 * for the pin (`irq`), the IOMMU group (the `iommu_group` link) and the bound driver (`driver`).
 * Each is left out when sysfs does not have it.
 */
export function kernelFacts(bdf: string, sysfs = SYSFS_PCI_DEVICES): KernelFacts {
  const dir = join(sysfs, bdf);
  const link = (name: string) => {
    try {
      return basename(readlinkSync(join(dir, name)));
    } catch {
      return undefined;
    }
  };
  let irq: number | undefined;
  try {
    irq = Number(readFileSync(join(dir, 'irq'), 'utf8').trim());
  } catch {
    irq = undefined;
  }
  const group = link('iommu_group');
  const driver = link('driver');
  return {
    ...(irq !== undefined && Number.isSafeInteger(irq) ? { irq } : {}),
    ...(group !== undefined ? { iommuGroup: group } : {}),
    ...(driver !== undefined ? { driver } : {}),
  };
}
