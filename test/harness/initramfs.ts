/**
 * Builds the initramfs the QEMU guests boot: busybox, the vfio modules of the chosen kernel,
 * optionally Node.js and directory trees (the project's dist/ and koffi), an /init and the
 * guest script. The result is several gzip'd newc archives concatenated, which the kernel
 * unpacks in order (Documentation/driver-api/early-userspace/buffer-format.rst); the pieces
 * that do not change between calls (busybox, modules, Node) are cached on disk.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gunzipSync, gzip as gzipCb } from 'node:zlib';
import { type CpioEntry, writeCpio } from './cpio.js';
import type { GuestKernel, Provisioned } from './provisioned.js';

const gzip = promisify(gzipCb);

/**
 * Modules loaded by /init, in this order (dependencies from modules.dep are added first).
 * A trailing `?` marks a module that may not exist: vfio_virqfd was folded into vfio in 6.2+, and a
 * kernel without VFIO groups has no type1 container (the 7.3-cdev kernel). In the kernels
 * provision.sh builds every one of them is built in (modules.builtin), so none is loaded.
 */
/** The virtio-blk serial /init looks for to find the output disk (at most 20 bytes, virtio_blk.h). */
export const OUTPUT_DISK_SERIAL = 'vfiots-guest-out';
/** What the output disk needs in the guest (virtio_pci is built in on some kernels). */
const OUTPUT_DISK_MODULES = ['virtio_pci?', 'virtio_blk'];

export const VFIO_MODULES: readonly string[] = [
  'irqbypass',
  'vfio',
  'vfio_virqfd?',
  'vfio_iommu_type1?',
  'vfio-pci-core',
  'vfio-pci',
];

/** The repository root, found from this file's place in dist/test/harness/. */
export function repoRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export interface TreeCopy {
  /** Host file or directory. */
  from: string;
  /** Absolute path in the guest. */
  to: string;
  /** Paths relative to `from` (posix separators) for which this returns true are left out. */
  exclude?: (rel: string) => boolean;
}

/** A host file copied into the guest; an ELF program brings the libraries ldd names. */
export interface HostFile {
  from: string;
  /** Absolute path in the guest; default the host path. */
  to?: string;
}

/**
 * pciutils' lspci from the host (scripts/provision.sh installs pciutils), with its ID database,
 * for guests that must show a device the way `lspci` does (busybox has no lspci applet).
 */
export const HOST_LSPCI: readonly HostFile[] = [
  { from: '/usr/bin/lspci' },
  { from: '/usr/share/misc/pci.ids' },
];

export interface GuestFile {
  /** Absolute path in the guest. */
  path: string;
  data: string | Uint8Array;
  mode?: number;
}

export interface InitramfsOptions {
  kernel: GuestKernel;
  /** Guest shell script, run by busybox sh after the modules load; lib.sh helpers are sourced. */
  script: string;
  /** Module names (see VFIO_MODULES, the default); `[]` loads none. */
  modules?: readonly string[];
  /** Copy this Node.js (process.execPath) to /usr/bin/node with the libraries ldd names. */
  node?: boolean;
  /**
   * Host files copied into the guest (programs with the libraries ldd names, and data files
   * such as /usr/share/misc/pci.ids); cached like Node. See HOST_LSPCI.
   */
  hostFiles?: readonly HostFile[];
  trees?: readonly TreeCopy[];
  files?: readonly GuestFile[];
  /** Where to write the result; default a fresh temporary directory. */
  outFile?: string;
  /**
   * Also write the script's output and status to a raw virtio disk that bootGuest attaches and
   * reads back (see OUTPUT_DISK_SERIAL): QEMU's 16550 console drops bytes when the host is
   * loaded, so a test that parses long output (lspci -vv) reads it from the disk instead.
   * Adds virtio_pci and virtio_blk to the modules, and one virtio-blk-pci device to the guest.
   */
  outputDisk?: boolean;
}

export interface Initramfs {
  /** The concatenated gzip'd cpio archives. */
  path: string;
  size: number;
  kernel: GuestKernel;
  /** Printed by /init in its begin and end markers, so a script cannot fake them by accident. */
  nonce: string;
  /** Module files /init loads, in order (relative to /lib/modules). */
  modules: readonly string[];
  /** /init copies the script's output to the disk with serial OUTPUT_DISK_SERIAL. */
  outputDisk: boolean;
  /** Removes the file (and its temporary directory, when buildInitramfs made one). */
  cleanup(): void;
}

/** The trees a guest needs to run the compiled project under /app: dist/, package.json, koffi. */
export function projectTrees(root: string = repoRoot()): TreeCopy[] {
  const noBuildNoise = (rel: string): boolean => rel.endsWith('.tsbuildinfo') || rel.endsWith('.map');
  return [
    { from: join(root, 'package.json'), to: '/app/package.json' },
    { from: join(root, 'dist'), to: '/app/dist', exclude: noBuildNoise },
    {
      from: join(root, 'node_modules', 'koffi'),
      to: '/app/node_modules/koffi',
      exclude: (rel) => rel === 'doc' || rel.startsWith('doc/'),
    },
    {
      from: join(root, 'node_modules', '@koromix', 'koffi-linux-x64'),
      to: '/app/node_modules/@koromix/koffi-linux-x64',
      exclude: (rel) => rel === 'musl_x64' || rel.startsWith('musl_x64/'),
    },
  ];
}

// --- modules ---------------------------------------------------------------------------------

interface ModuleIndex {
  /** normalized name -> path relative to modulesDir */
  byName: Map<string, string>;
  /** path -> dependency paths */
  deps: Map<string, string[]>;
  builtin: Set<string>;
}

function modName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.xz|\.gz|\.zst)?$/, '').replace(/-/g, '_');
}

function readModuleIndex(kernel: GuestKernel): ModuleIndex {
  const byName = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon);
    byName.set(modName(path), path);
    deps.set(
      path,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  const builtin = new Set<string>();
  const builtinFile = join(kernel.modulesDir, 'modules.builtin');
  if (existsSync(builtinFile)) {
    for (const line of readFileSync(builtinFile, 'utf8').split('\n')) if (line) builtin.add(modName(line));
  }
  return { byName, deps, builtin };
}

/** Module files to load for `names`, dependencies first, built-in ones skipped. */
export function resolveModules(kernel: GuestKernel, names: readonly string[]): string[] {
  const idx = readModuleIndex(kernel);
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const d of idx.deps.get(path) ?? []) visit(d);
    order.push(path);
  };
  for (const raw of names) {
    const optional = raw.endsWith('?');
    const name = modName(optional ? raw.slice(0, -1) : raw);
    const path = idx.byName.get(name);
    if (path !== undefined) visit(path);
    else if (!optional && !idx.builtin.has(name)) {
      throw new Error(`kernel ${kernel.release} has no module ${name} (modules.dep of ${kernel.modulesDir})`);
    }
  }
  return order;
}

function decompressModule(file: string): Buffer {
  if (file.endsWith('.xz')) return execFileSync('xz', ['-dc', file], { maxBuffer: 256 << 20 });
  if (file.endsWith('.gz')) return gunzipSync(readFileSync(file));
  if (file.endsWith('.zst')) return execFileSync('zstd', ['-dc', file], { maxBuffer: 256 << 20 });
  return readFileSync(file);
}

// --- shared libraries ------------------------------------------------------------------------

/** Libraries `ldd` lists for these ELF files, as the paths the loader will look for. */
export function sharedLibraries(files: readonly string[]): string[] {
  const out = new Set<string>();
  for (const f of files) {
    let text: string;
    try {
      text = execFileSync('ldd', [f], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      continue; // static, or not an ELF ldd understands
    }
    for (const line of text.split('\n')) {
      const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
      if (m?.[1] !== undefined) out.add(m[1]);
    }
  }
  return [...out].sort();
}

function libEntries(libs: readonly string[]): CpioEntry[] {
  return libs.map((l) => ({ kind: 'file', path: l, data: readFileSync(realpathSync(l)), mode: 0o755 }));
}

// --- trees -----------------------------------------------------------------------------------

function treeEntries(tree: TreeCopy, nativeFiles: string[]): CpioEntry[] {
  const out: CpioEntry[] = [];
  const walk = (hostPath: string, rel: string): void => {
    if (rel !== '' && tree.exclude?.(rel) === true) return;
    const guestPath = rel === '' ? tree.to : posix.join(tree.to, rel);
    const st = lstatSync(hostPath);
    if (st.isSymbolicLink()) {
      out.push({ kind: 'symlink', path: guestPath, target: readlinkSync(hostPath) });
    } else if (st.isDirectory()) {
      out.push({ kind: 'dir', path: guestPath, mode: st.mode & 0o7777 });
      for (const name of readdirSync(hostPath).sort())
        walk(join(hostPath, name), rel === '' ? name : `${rel}/${name}`);
    } else if (st.isFile()) {
      if (hostPath.endsWith('.node')) nativeFiles.push(hostPath);
      out.push({ kind: 'file', path: guestPath, data: readFileSync(hostPath), mode: st.mode & 0o7777 });
    }
  };
  walk(tree.from, '');
  return out;
}

// --- cached pieces ---------------------------------------------------------------------------

/** Returns the cached gzip'd archive named by `key`, building it with `make` the first time. */
async function cachedPiece(
  cacheDir: string,
  name: string,
  key: string,
  level: number,
  make: () => CpioEntry[],
): Promise<string> {
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 16);
  const file = join(cacheDir, `${name}-${hash}.cpio.gz`);
  if (existsSync(file)) return file;
  const gz = await gzip(writeCpio(make()), { level });
  // Written under a unique name then renamed: concurrent test processes never see half a file.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, gz);
  renameSync(tmp, file);
  return file;
}

function fileKey(path: string): string {
  const st = statSync(path);
  return `${path}:${st.size}:${st.mtimeMs}`;
}

function busyboxPiece(p: Provisioned): Promise<string> {
  return cachedPiece(p.initramfsCacheDir, 'busybox', `v1 ${fileKey(p.busybox)}`, 6, () => {
    const entries: CpioEntry[] = [];
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'proc',
      'sys',
      'dev',
      'tmp',
      'run',
      'root',
      'etc',
    ]) {
      entries.push({ kind: 'dir', path: d });
    }
    entries.push({ kind: 'file', path: 'bin/busybox', data: readFileSync(p.busybox), mode: 0o755 });
    const applets = execFileSync(p.busybox, ['--list-full'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    for (const a of applets)
      if (a !== 'bin/busybox') entries.push({ kind: 'symlink', path: a, target: '/bin/busybox' });
    return entries;
  });
}

function modulesPiece(p: Provisioned, kernel: GuestKernel, files: readonly string[]): Promise<string> {
  const key = `v1 ${kernel.modulesDir} ${files.map((f) => fileKey(join(kernel.modulesDir, f))).join(' ')}`;
  return cachedPiece(p.initramfsCacheDir, `modules-${kernel.label}`, key, 6, () => {
    const entries: CpioEntry[] = [];
    for (const f of files) {
      entries.push({
        kind: 'file',
        path: `lib/modules/${modName(f)}.ko`,
        data: decompressModule(join(kernel.modulesDir, f)),
      });
    }
    return entries;
  });
}

/**
 * Host files at their guest paths plus every library ldd names for them (non-ELF files have
 * none), as one cached piece: Node, lspci.
 */
function hostFilesPiece(
  p: Provisioned,
  name: string,
  files: readonly HostFile[],
  level: number,
): Promise<string> {
  const libs = sharedLibraries(files.map((f) => f.from));
  // The key names the sources (the piece's name fixes where they go): Node's key is unchanged.
  const key = `v1 ${files.map((f) => fileKey(f.from)).join(' ')} ${libs.map(fileKey).join(' ')}`;
  return cachedPiece(p.initramfsCacheDir, name, key, level, () => [
    ...files.map((f): CpioEntry => {
      const mode = statSync(f.from).mode & 0o7777;
      return { kind: 'file', path: (f.to ?? f.from).replace(/^\/+/, ''), data: readFileSync(f.from), mode };
    }),
    ...libEntries(libs),
  ]);
}

function nodePiece(p: Provisioned): Promise<string> {
  // Level 1: Node is ~100 MB and gzip -6 would take several times as long for a few MB less.
  return hostFilesPiece(p, 'node', [{ from: process.execPath, to: '/usr/bin/node' }], 1);
}

function guestFile(name: string): string {
  return readFileSync(join(repoRoot(), 'scripts', 'guest', name), 'utf8');
}

/** Builds an initramfs for one boot; see InitramfsOptions. */
export async function buildInitramfs(p: Provisioned, opts: InitramfsOptions): Promise<Initramfs> {
  const kernel = opts.kernel;
  const nonce = randomBytes(8).toString('hex');
  const outputDisk = opts.outputDisk === true;
  const wanted = opts.modules ?? VFIO_MODULES;
  const modules = resolveModules(
    kernel,
    outputDisk ? [...wanted, ...OUTPUT_DISK_MODULES] : wanted, // resolveModules drops repeats
  );

  const pieces: string[] = [await busyboxPiece(p)];
  if (modules.length > 0) pieces.push(await modulesPiece(p, kernel, modules));
  if (opts.node === true) pieces.push(await nodePiece(p));
  if (opts.hostFiles !== undefined && opts.hostFiles.length > 0)
    pieces.push(await hostFilesPiece(p, 'host-files', opts.hostFiles, 6));

  // The part that changes with every call: not cached.
  const nativeFiles: string[] = [];
  const entries: CpioEntry[] = [];
  for (const tree of opts.trees ?? []) entries.push(...treeEntries(tree, nativeFiles));
  // Native addons (koffi) may want libraries beyond Node's own.
  if (nativeFiles.length > 0) entries.push(...libEntries(sharedLibraries(nativeFiles)));
  for (const f of opts.files ?? []) {
    const data = typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data;
    entries.push({ kind: 'file', path: f.path, data, mode: f.mode ?? 0o644 });
  }
  entries.push(
    { kind: 'file', path: 'init', data: Buffer.from(guestFile('init.sh')), mode: 0o755 },
    { kind: 'file', path: 'etc/vfio-ts/lib.sh', data: Buffer.from(guestFile('lib.sh')) },
    { kind: 'file', path: 'etc/vfio-ts/nonce', data: Buffer.from(`${nonce}\n`) },
    {
      kind: 'file',
      path: 'etc/vfio-ts/modules',
      data: Buffer.from(modules.map((m) => `${modName(m)}.ko\n`).join('')),
    },
    ...(outputDisk
      ? [
          {
            kind: 'file' as const,
            path: 'etc/vfio-ts/out-disk',
            data: Buffer.from(`${OUTPUT_DISK_SERIAL}\n`),
          },
        ]
      : []),
    {
      kind: 'file',
      path: 'guest.sh',
      data: Buffer.from(`. /etc/vfio-ts/lib.sh\n${opts.script}\n`),
      mode: 0o755,
    },
  );
  const last = await gzip(writeCpio(entries), { level: 1 });

  let madeDir: string | undefined;
  let out = opts.outFile;
  if (out === undefined) {
    madeDir = mkdtempSync(join(tmpdir(), 'vfio-ts-initrd-'));
    out = join(madeDir, 'initrd.gz');
  }
  const fd = openSync(out, 'w');
  let size = 0;
  try {
    for (const piece of pieces) {
      const buf = readFileSync(piece);
      writeSync(fd, buf);
      size += buf.length;
    }
    writeSync(fd, last);
    size += last.length;
  } finally {
    closeSync(fd);
  }
  const path = out;
  return {
    path,
    size,
    kernel,
    nonce,
    modules: modules.map((m) => `${modName(m)}.ko`),
    outputDisk,
    cleanup: () => {
      rmSync(madeDir ?? path, { recursive: true, force: true });
    },
  };
}
