/**
 * What `scripts/provision.sh` left in the cache, as paths a test can use. Layout (see
 * docs/provisioning.md):
 *
 *   $VFIO_TS_CACHE (default /var/cache/vfio-ts)/
 *     ready                         key=value versions, written last by provision.sh
 *     kernels/<label>/{vmlinuz,release,packages,config,modules/<release>/}
 *       6.1, 7.3: Debian's packaged kernels; 7.3-iommufd, 7.3-cdev: built from Debian's
 *       linux-source-7.3 with iommufd and the VFIO device cdev (scripts/kernel/)
 *     trixie/                       Debian trixie chroot with QEMU 11 (/usr/bin/qemu-system-x86_64)
 *     initramfs/                    initramfs pieces cached by buildInitramfs
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { KernelProfile } from '../../src/core/description.js';
import { requireOrSkip } from '../helpers/env.js';

export const DEFAULT_CACHE_DIR = '/var/cache/vfio-ts';
/** Debian's kernels as packaged (bookworm's 6.1, trixie-backports' 7.3). */
export const KERNEL_LABELS = ['6.1', '7.3'] as const;
export type KernelLabel = (typeof KERNEL_LABELS)[number];
/**
 * Kernels provision.sh builds from Debian's linux-source-7.3 (scripts/kernel/vfio-guest.config,
 * everything built in): `7.3-iommufd` has /dev/iommu and the VFIO device cdev beside the group
 * and container; `7.3-cdev` has only the cdev and /dev/iommu (CONFIG_VFIO_GROUP off).
 */
export const BUILT_KERNEL_LABELS = ['7.3-iommufd', '7.3-cdev'] as const;
export type BuiltKernelLabel = (typeof BUILT_KERNEL_LABELS)[number];
export type GuestKernelLabel = KernelLabel | BuiltKernelLabel;
/** What a skipped test tells the reader to do. */
export const PROVISION_HINT =
  'run `bash scripts/provision.sh` as root (Debian packages, and a guest kernel built from Debian source: 10-20 minutes the first time)';

export interface GuestKernel {
  label: GuestKernelLabel;
  /** The model profile that answers like this kernel's vfio-pci. */
  profile: KernelProfile;
  /** Bootable bzImage. */
  vmlinuz: string;
  /** `modules/<release>`: holds kernel/ and the depmod indexes (modules.dep). */
  modulesDir: string;
  /** `uname -r` of the kernel, e.g. `6.1.0-56-amd64`. */
  release: string;
  /** Debian packages it came from, `name=version` separated by spaces. */
  packages: string;
  /** The kernel's .config, when the packages carried one. */
  config: string | undefined;
}

export interface Provisioned {
  cacheDir: string;
  /** The key=value lines of `$CACHE/ready`. */
  ready: Readonly<Record<string, string>>;
  kernels: Readonly<Record<KernelLabel, GuestKernel>> &
    Readonly<Partial<Record<BuiltKernelLabel, GuestKernel>>>;
  /** Debian trixie chroot holding QEMU 11 (vfio-user-pci client). */
  trixieRoot: string;
  /** QEMU 11's path inside the chroot. */
  trixieQemu: string;
  /** Host QEMU (bookworm's 7.2). */
  qemuHost: string;
  /** Static busybox copied into every initramfs. */
  busybox: string;
  /** Where buildInitramfs caches pieces (writable). */
  initramfsCacheDir: string;
  /** Whether this process may chroot (root). */
  canChroot: boolean;
}

export interface ProvisionedQuery {
  /** Also require what the trixie chroot needs (root, for chroot(2)). */
  chroot?: boolean;
  /** Cache root; default `$VFIO_TS_CACHE` or /var/cache/vfio-ts. */
  cacheDir?: string;
  /** Also require the kernels provision.sh builds (BUILT_KERNEL_LABELS). */
  built?: boolean;
}

export function cacheDir(): string {
  const env = process.env.VFIO_TS_CACHE;
  return env !== undefined && env !== '' ? env : DEFAULT_CACHE_DIR;
}

function parseReady(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function writableDir(preferred: string, fallbackName: string): string {
  try {
    mkdirSync(preferred, { recursive: true });
    accessSync(preferred, constants.W_OK);
    return preferred;
  } catch {
    const fb = join(tmpdir(), `${fallbackName}-${process.getuid?.() ?? 'u'}`);
    mkdirSync(fb, { recursive: true });
    return fb;
  }
}

/** kernels/<label> of the cache, or what is missing there. */
function guestKernel(dir: string, label: GuestKernelLabel): GuestKernel | { missing: string } {
  const kdir = join(dir, 'kernels', label);
  const release = readText(join(kdir, 'release'));
  if (release === undefined || release === '') return { missing: `${join(kdir, 'release')}` };
  const vmlinuz = join(kdir, 'vmlinuz');
  const modulesDir = join(kdir, 'modules', release);
  if (!existsSync(vmlinuz)) return { missing: vmlinuz };
  if (!existsSync(join(modulesDir, 'modules.dep'))) return { missing: join(modulesDir, 'modules.dep') };
  const config = join(kdir, 'config');
  return {
    label,
    profile: label === '6.1' ? '6.1' : '7.3',
    vmlinuz,
    modulesDir,
    release,
    packages: readText(join(kdir, 'packages')) ?? '',
    config: existsSync(config) ? config : undefined,
  };
}

/** A kernel of `p`, or the error naming what provisioning left out (built kernels are optional). */
export function kernelOf(p: Provisioned, label: GuestKernelLabel): GuestKernel {
  const k = p.kernels[label];
  if (k === undefined)
    throw new Error(`kernels/${label} is not provisioned (provisioned({ built: true }) requires it)`);
  return k;
}

/** Describes the provisioned cache, or names the first thing that is missing. */
export function provisioned(query: ProvisionedQuery = {}): Provisioned | { missing: string } {
  const dir = query.cacheDir ?? cacheDir();
  const readyText = readText(join(dir, 'ready'));
  if (readyText === undefined) return { missing: `${join(dir, 'ready')} (provisioning not done)` };
  const ready = parseReady(readyText);

  const kernels: Partial<Record<GuestKernelLabel, GuestKernel>> = {};
  for (const label of [...KERNEL_LABELS, ...BUILT_KERNEL_LABELS]) {
    const k = guestKernel(dir, label);
    if ('missing' in k) {
      if ((KERNEL_LABELS as readonly string[]).includes(label) || query.built === true) return k;
    } else kernels[label] = k;
  }

  const qemuHost = '/usr/bin/qemu-system-x86_64';
  if (!existsSync(qemuHost)) return { missing: `${qemuHost} (Debian package qemu-system-x86)` };
  const busybox = '/bin/busybox';
  if (!existsSync(busybox)) return { missing: `${busybox} (Debian package busybox-static)` };

  const trixieRoot = join(dir, 'trixie');
  const trixieQemu = '/usr/bin/qemu-system-x86_64';
  if (!existsSync(join(trixieRoot, trixieQemu))) return { missing: join(trixieRoot, trixieQemu) };
  const canChroot = process.getuid?.() === 0;
  if (query.chroot === true && !canChroot) return { missing: 'root (to chroot into the trixie QEMU 11)' };

  return {
    cacheDir: dir,
    ready,
    kernels: kernels as Provisioned['kernels'],
    trixieRoot,
    trixieQemu,
    qemuHost,
    busybox,
    initramfsCacheDir: writableDir(join(dir, 'initramfs'), 'vfio-ts-initramfs'),
    canChroot,
  };
}

/**
 * `provisioned()` gated through `requireOrSkip`: undefined (test skipped, loudly) when something
 * is missing outside CI; throws under CI=true.
 */
export function provisionedOrSkip(t: TestContext, query: ProvisionedQuery = {}): Provisioned | undefined {
  const p = provisioned(query);
  if ('missing' in p) {
    requireOrSkip(t, p.missing, PROVISION_HINT);
    return undefined;
  }
  return p;
}
