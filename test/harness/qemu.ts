/**
 * Boots a guest kernel under QEMU (q35, TCG, emulated Intel IOMMU) with an initramfs from
 * buildInitramfs, and reports the console and the guest script's exit status. QEMU is always
 * killed by a timeout: a test never hangs on a guest. The recipe (q35 + intel-iommu +
 * intel_iommu=on, TCG rather than nested KVM) is the one ../shared/docs/real-kernel.md found
 * to give a working vfio-pci in Debian's kernels.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  copyFileSync,
  linkSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { buildInitramfs, type Initramfs, type InitramfsOptions, OUTPUT_DISK_SERIAL } from './initramfs.js';
import type { Provisioned } from './provisioned.js';

export const DEFAULT_BOOT_TIMEOUT_MS = 90_000;
export const DEFAULT_GUEST_MEMORY_MIB = 1024;
/** Console text kept per boot; beyond it output is dropped (and `truncated` set). */
export const MAX_CONSOLE_CHARS = 32 << 20;
/** After the end marker, how long QEMU gets to power off before it is killed. */
export const POWEROFF_GRACE_MS = 5_000;
/** Size of the output disk (sparse): the console's own cap plus room for the header. */
export const OUTPUT_DISK_BYTES = MAX_CONSOLE_CHARS + (1 << 20);
/** Where on the output disk the output starts; the header line is at 0 (scripts/guest/init.sh). */
export const OUTPUT_DISK_BODY_OFFSET = 4096;
/**
 * no_timer_check: on a loaded host TCG can miss the kernel's boot-time check that the IO-APIC
 * timer ticks, and the guest panics ("timer doesn't work through Interrupt-remapped IO-APIC",
 * arch/x86/kernel/apic/io_apic.c check_timer); seen in several guest tests here at load 8-10.
 */
export const BASE_APPEND = 'console=ttyS0 intel_iommu=on iommu=pt quiet panic=-1 no_timer_check';

// --- devices ---------------------------------------------------------------------------------

/** QEMU's educational device (1234:11e8): one 1 MiB BAR, INTx and MSI (hw/misc/edu.c). */
export function edu(): string[] {
  return ['-device', 'edu'];
}

/** ivshmem-plain (1af4:1110) on a shared RAM backend: BAR2 is 64-bit prefetchable. */
export function ivshmemPlain(opts: { id?: string; sizeMiB?: number } = {}): string[] {
  const id = opts.id ?? 'ivshmem0';
  const size = opts.sizeMiB ?? 4;
  return [
    '-object',
    `memory-backend-ram,id=${id},size=${size}M,share=on`,
    '-device',
    `ivshmem-plain,memdev=${id}`,
  ];
}

/**
 * NVMe controller (1b36:0010) on a raw image; its MSI-X table sits inside BAR0. `cmbSizeMiB`
 * adds a Controller Memory Buffer of that size in BAR2 (64-bit prefetchable; QEMU's NVMe 1.4
 * scheme: CMBLOC/CMBSZ read 0 until the host sets CMBMSC.CRE).
 */
export function nvme(opts: { image: string; id?: string; serial?: string; cmbSizeMiB?: number }): string[] {
  const id = opts.id ?? 'nvme0';
  const cmb = opts.cmbSizeMiB === undefined ? '' : `,cmb_size_mb=${opts.cmbSizeMiB}`;
  return [
    '-drive',
    `file=${opts.image},if=none,id=${id}-drive,format=raw`,
    '-device',
    `nvme,drive=${id}-drive,serial=${opts.serial ?? 'vfiots0'}${cmb}`,
  ];
}

/** Creates a sparse raw image for nvme(). */
export function makeSparseImage(path: string, sizeMiB = 16): string {
  writeFileSync(path, '');
  truncateSync(path, sizeMiB << 20);
  return path;
}

/** Intel 82574 NIC (8086:10d3) with no network behind it. */
export function e1000e(opts: { id?: string } = {}): string[] {
  const id = opts.id ?? 'net0';
  return ['-netdev', `hubport,id=${id},hubid=0`, '-device', `e1000e,netdev=${id}`];
}

/**
 * A conventional PCI-PCI bridge (QEMU's pci-bridge, 1b36:0001) with `devices` (QEMU device
 * names) behind it at slots 1, 2, ...: conventional PCI has no ACS and requester IDs alias to the
 * bridge, so under intel-iommu the bridge and everything behind it form one IOMMU group.
 */
export function pciBridge(
  devices: readonly string[],
  opts: { id?: string; chassis?: number } = {},
): string[] {
  const id = opts.id ?? 'vfiotsbr0';
  return [
    '-device',
    `pci-bridge,id=${id},chassis_nr=${opts.chassis ?? 1}`,
    ...devices.flatMap((d, i) => ['-device', `${d},bus=${id},addr=${i + 1}`]),
  ];
}

/** Guest RAM in a shared memfd: vfio-user needs fd-backed RAM to hand DMA regions to a server. */
export function sharedMemory(sizeMiB = DEFAULT_GUEST_MEMORY_MIB): string[] {
  return [
    '-object',
    `memory-backend-memfd,id=ram0,size=${sizeMiB}M,share=on`,
    '-machine',
    'memory-backend=ram0',
  ];
}

/** QEMU 11's vfio-user-pci connected to `socket` (a path as the chrooted QEMU sees it). */
export function vfioUserPci(socket: string, extra = ''): string[] {
  return ['-device', `{"driver":"vfio-user-pci","socket":{"path":"${socket}","type":"unix"}${extra}}`];
}

/**
 * qtest options: q35 with memfd guest RAM (so DMA_MAP carries fds) and vfio-user devices.
 * `ram: 'anonymous'` gives plain `-m` RAM instead: QEMU has no fd to pass, its DMA_MAPs carry
 * none, and the server reaches guest RAM with DMA_READ / DMA_WRITE messages.
 */
export function vfioUserQtest(
  sockets: readonly string[],
  memoryMiB = 512,
  ram: 'memfd' | 'anonymous' = 'memfd',
): { machine: string; args: string[] } {
  if (ram === 'anonymous')
    return { machine: 'q35', args: ['-m', `${memoryMiB}M`, ...sockets.flatMap((s) => vfioUserPci(s))] };
  return {
    machine: 'q35,memory-backend=mem',
    args: [
      '-m',
      `${memoryMiB}M`,
      '-object',
      `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`,
      ...sockets.flatMap((s) => vfioUserPci(s)),
    ],
  };
}

// --- command lines ---------------------------------------------------------------------------

export interface GuestArgsOptions {
  vmlinuz: string;
  initrd: string;
  /** Appended to BASE_APPEND. */
  append?: string;
  memoryMiB?: number;
  /** Extra arguments, e.g. `[...edu(), ...ivshmemPlain()]`. */
  args?: readonly string[];
}

/** QEMU arguments (without the program) for a TCG q35 guest with an emulated Intel IOMMU. */
export function guestQemuArgs(o: GuestArgsOptions): string[] {
  return [
    '-machine',
    'q35',
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-smp',
    '1',
    '-m',
    String(o.memoryMiB ?? DEFAULT_GUEST_MEMORY_MIB),
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-device',
    'intel-iommu',
    '-kernel',
    o.vmlinuz,
    '-initrd',
    o.initrd,
    '-append',
    o.append === undefined || o.append === '' ? BASE_APPEND : `${BASE_APPEND} ${o.append}`,
    ...(o.args ?? []),
  ];
}

export interface Command {
  file: string;
  args: string[];
}

/** Runs the trixie chroot's QEMU 11 with these arguments: every path in them is a chroot path. */
export function trixieQemuCommand(p: Provisioned, qemuArgs: readonly string[]): Command {
  return { file: 'chroot', args: [p.trixieRoot, p.trixieQemu, ...qemuArgs] };
}

/** A scratch directory inside the trixie chroot, for sockets, kernels and initramfs images. */
export interface ChrootWorkDir {
  /** The directory as the host sees it. */
  hostDir: string;
  /** The same directory as QEMU in the chroot sees it. */
  chrootDir: string;
  /** Puts a host file into the directory (hard link, or copy across filesystems); returns its chroot path. */
  bring(hostFile: string, name?: string): string;
  /** Host path and chroot path of a name in the directory (e.g. a socket a server listens on). */
  path(name: string): { host: string; chroot: string };
  cleanup(): void;
}

export function chrootWorkDir(p: Provisioned): ChrootWorkDir {
  const hostDir = mkdtempSync(join(p.trixieRoot, 'tmp', 'vfio-ts-'));
  const chrootDir = `/${relative(p.trixieRoot, hostDir)}`;
  const path = (name: string) => ({ host: join(hostDir, name), chroot: `${chrootDir}/${name}` });
  return {
    hostDir,
    chrootDir,
    path,
    bring: (hostFile, name = basename(hostFile)) => {
      const dest = path(name);
      try {
        linkSync(hostFile, dest.host);
      } catch {
        copyFileSync(hostFile, dest.host);
      }
      return dest.chroot;
    },
    cleanup: () => rmSync(hostDir, { recursive: true, force: true }),
  };
}

// --- running ---------------------------------------------------------------------------------

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
/** QEMU children are killed if the test process exits first. */
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Spawns a QEMU (host or chroot) with piped stdio, tracked so it dies with the test process. */
export function spawnQemu(cmd: Command): ChildProcess {
  const child = spawn(cmd.file, cmd.args, { stdio: ['pipe', 'pipe', 'pipe'] });
  track(child);
  return child;
}

export interface BootOptions {
  initramfs: Initramfs;
  /** Extra QEMU arguments: device helpers above, or anything else. Chroot paths for 'trixie'. */
  args?: readonly string[];
  append?: string;
  memoryMiB?: number;
  timeoutMs?: number;
  /** 'host': bookworm's QEMU 7.2 (default). 'trixie': QEMU 11 in the chroot (needs root). */
  qemu?: 'host' | 'trixie';
  /** For 'trixie': where kernel and initramfs are placed; default a fresh one, removed after. */
  workDir?: ChrootWorkDir;
  /** Live console text, as it arrives (e.g. to echo while debugging). */
  onConsole?: (text: string) => void;
}

export interface BootResult {
  /** Everything QEMU printed on stdout (serial console), `\r` removed. */
  console: string;
  /**
   * What the guest script printed: from the output disk when the initramfs has one and the guest
   * wrote it, else the console between /init's begin and end markers.
   */
  output: string;
  /** Where `output` and `status` came from. */
  outputFrom: 'disk' | 'console';
  /** The guest script's exit status; undefined when the end marker never came. */
  status: number | undefined;
  /** QEMU's own stderr. */
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  truncated: boolean;
  durationMs: number;
  argv: string[];
}

/** Finds /init's markers in console text. */
export function parseMarkers(
  consoleText: string,
  nonce: string,
): { output: string; status: number | undefined } {
  const begin = `@@VFIO-TS-GUEST-BEGIN ${nonce}@@\n`;
  const endRe = new RegExp(`@@VFIO-TS-GUEST-END ${nonce} status=(\\d+)@@`);
  const b = consoleText.indexOf(begin);
  const m = endRe.exec(consoleText);
  const start = b < 0 ? 0 : b + begin.length;
  const stop = m === null ? consoleText.length : m.index;
  return {
    output: b < 0 && m === null ? '' : consoleText.slice(start, Math.max(start, stop)),
    status: m?.[1] === undefined ? undefined : Number(m[1]),
  };
}

/**
 * Reads what /init wrote to the output disk (scripts/guest/init.sh): the header line
 * `VFIOTS-GUEST <nonce> <status> <length>` at byte 0, the output at OUTPUT_DISK_BODY_OFFSET.
 * Undefined when the guest never finished writing it (killed, timed out: the header goes last)
 * or wrote it for another nonce.
 */
export function readOutputDisk(image: string, nonce: string): { output: string; status: number } | undefined {
  const fd = openSync(image, 'r');
  try {
    const head = Buffer.alloc(128);
    const n = readSync(fd, head, 0, head.length, 0);
    const nl = head.subarray(0, n).indexOf(10);
    const m = /^VFIOTS-GUEST ([0-9a-f]+) (\d+) (\d+)$/.exec(
      head.subarray(0, Math.max(nl, 0)).toString('latin1'),
    );
    if (nl < 0 || m === null || m[1] !== nonce) return undefined;
    const len = Number(m[3]);
    if (len > OUTPUT_DISK_BYTES - OUTPUT_DISK_BODY_OFFSET) return undefined;
    const body = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const r = readSync(fd, body, got, len - got, OUTPUT_DISK_BODY_OFFSET + got);
      if (r === 0) break;
      got += r;
    }
    return { output: body.subarray(0, got).toString('utf8').replace(/\r/g, ''), status: Number(m[2]) };
  } finally {
    closeSync(fd);
  }
}

/** Boots the kernel of `opts.initramfs` and waits for power-off, the timeout, or QEMU's exit. */
export function bootGuest(p: Provisioned, opts: BootOptions): Promise<BootResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  let work: ChrootWorkDir | undefined;
  let ownWork = false;
  let cmd: Command;
  // The output disk's image: in the chroot work directory for QEMU 11, else a temporary one.
  let disk: { host: string; guest: string; cleanup(): void } | undefined;
  const diskArgs = (path: string): string[] => [
    '-drive',
    `file=${path},format=raw,if=none,id=vfiotsout`,
    '-device',
    `virtio-blk-pci,drive=vfiotsout,serial=${OUTPUT_DISK_SERIAL}`,
  ];
  if (opts.qemu === 'trixie') {
    work = opts.workDir ?? chrootWorkDir(p);
    ownWork = opts.workDir === undefined;
  }
  if (opts.initramfs.outputDisk) {
    const name = `out-${opts.initramfs.nonce}.img`;
    if (work !== undefined) {
      const at = work.path(name);
      disk = { host: at.host, guest: at.chroot, cleanup: () => rmSync(at.host, { force: true }) };
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-out-'));
      const host = join(dir, name);
      disk = { host, guest: host, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    }
    writeFileSync(disk.host, '');
    truncateSync(disk.host, OUTPUT_DISK_BYTES);
  }
  const common = {
    ...(opts.append === undefined ? {} : { append: opts.append }),
    ...(opts.memoryMiB === undefined ? {} : { memoryMiB: opts.memoryMiB }),
    args: [...(opts.args ?? []), ...(disk === undefined ? [] : diskArgs(disk.guest))],
  };
  if (opts.qemu === 'trixie' && work !== undefined) {
    const vmlinuz = work.bring(opts.initramfs.kernel.vmlinuz, `vmlinuz-${opts.initramfs.kernel.label}`);
    const initrd = work.bring(opts.initramfs.path, `initrd-${opts.initramfs.nonce}.gz`);
    cmd = trixieQemuCommand(p, guestQemuArgs({ vmlinuz, initrd, ...common }));
  } else {
    cmd = {
      file: p.qemuHost,
      args: guestQemuArgs({ vmlinuz: opts.initramfs.kernel.vmlinuz, initrd: opts.initramfs.path, ...common }),
    };
  }

  const started = Date.now();
  const child = spawnQemu(cmd);
  child.stdin?.end();
  let text = '';
  let stderr = '';
  let truncated = false;
  let timedOut = false;
  let graceTimer: NodeJS.Timeout | undefined;
  const endMarker = `@@VFIO-TS-GUEST-END ${opts.initramfs.nonce} status=`;

  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    opts.onConsole?.(chunk);
    if (text.length + chunk.length > MAX_CONSOLE_CHARS) {
      truncated = true;
      return;
    }
    text += chunk;
    // The script is done: power-off normally follows at once; never wait on it for long.
    if (graceTimer === undefined && text.includes(endMarker)) {
      graceTimer = setTimeout(() => child.kill('SIGKILL'), POWEROFF_GRACE_MS);
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    if (stderr.length < MAX_CONSOLE_CHARS) stderr += chunk;
  });
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);

  return new Promise<BootResult>((resolvePromise, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      if (graceTimer !== undefined) clearTimeout(graceTimer);
      disk?.cleanup();
      if (ownWork) work?.cleanup();
      reject(err);
    });
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer);
      if (graceTimer !== undefined) clearTimeout(graceTimer);
      const fromDisk = disk === undefined ? undefined : readOutputDisk(disk.host, opts.initramfs.nonce);
      disk?.cleanup();
      if (ownWork) work?.cleanup();
      const consoleText = text.replace(/\r/g, '');
      const parsed = fromDisk ?? parseMarkers(consoleText, opts.initramfs.nonce);
      resolvePromise({
        console: consoleText,
        output: parsed.output,
        outputFrom: fromDisk === undefined ? 'console' : 'disk',
        status: parsed.status,
        stderr,
        exitCode,
        signal,
        timedOut,
        truncated,
        durationMs: Date.now() - started,
        argv: [cmd.file, ...cmd.args],
      });
    });
  });
}

export type RunGuestOptions = InitramfsOptions & Omit<BootOptions, 'initramfs'>;

/** buildInitramfs + bootGuest + cleanup, for the common one-shot case. */
export async function runGuest(p: Provisioned, opts: RunGuestOptions): Promise<BootResult> {
  const initramfs = await buildInitramfs(p, opts);
  try {
    return await bootGuest(p, { ...opts, initramfs });
  } finally {
    initramfs.cleanup();
  }
}

/** A readable summary of a boot for assertion messages. */
export function describeBoot(r: BootResult, tailLines = 60): string {
  const lines = r.console.split('\n');
  const tail = lines.slice(-tailLines).join('\n');
  return [
    `status=${r.status} (from the ${r.outputFrom}) exitCode=${r.exitCode} signal=${r.signal} timedOut=${r.timedOut} ${r.durationMs} ms`,
    `argv: ${r.argv.join(' ')}`,
    r.stderr === '' ? '' : `stderr:\n${r.stderr.slice(-4000)}`,
    `console (last ${tailLines} lines):\n${tail}`,
  ].join('\n');
}
