/**
 * Our NVMe controller (src/devices/nvme) on a disk image, reached the two ways the driver meets
 * it in CI: in-process (LocalDeviceFile over the device core) and over vfio-user from
 * `vfio-ts serve --device nvme --disk IMAGE` (with an MDTS, `--module`) as a child process.
 * What the device saw is read from the controller in-process, and from the line the server logs
 * at every shutdown (CC.SHN) otherwise: "nvme: shutdown complete: N commands (M fetched from
 * the CMB), ...".
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { VfioUserClient } from '../../../src/client/index.js';
import type { AccessSize } from '../../../src/core/define.js';
import { ALL_EXTENSIONS, type Extensions } from '../../../src/core/wc.js';
import type { NamespaceBackend } from '../../../src/devices/nvme/host.js';
import { FileNamespace } from '../../../src/devices/nvme/namespace.js';
import { type NvmeModel, nvmeDevice } from '../../../src/devices/nvme.js';
import { VfioDevice } from '../../../src/driver/device.js';
import { LocalDeviceFile } from '../../../src/driver/local.js';
import { nativeEnvironment } from '../../../src/runtime.js';
import { repoRoot } from '../../harness/index.js';

export type Backend = 'in-process' | 'vfio-user';
export const BACKENDS: readonly Backend[] = ['in-process', 'vfio-user'];
export const IMAGE_BYTES = 8 << 20;
export const CMB_BYTES = 2 << 20;
/** How long a child server gets to start, and to log or exit (a loaded 2-CPU machine). */
const SERVER_WAIT_MS = 30_000;

/** The device's counts since it started. */
export interface DeviceCounts {
  readonly commands: number;
  readonly sqesFromCmb: number;
  readonly reads: number;
  readonly writes: number;
}

export interface OurNvmeOptions {
  /** The namespace's image (created sparse, IMAGE_BYTES, when missing). */
  readonly image?: string;
  /** CMB bytes (default CMB_BYTES; 0: no CMB). */
  readonly cmbSize?: number;
  /** Identify MDTS (served: by a device module, as `vfio-ts serve` has no flag for it). */
  readonly mdts?: number;
  /** In-process only: the core's WC extensions. */
  readonly extensions?: Partial<Extensions>;
  /** In-process only: told of every BAR0 write as it reaches the device, before the controller acts on it. */
  readonly onRegisterWrite?: (offset: number, size: AccessSize, value: bigint) => void;
  /** In-process only: a disk that hangs or corrupts (FaultyDisk) over the image. */
  readonly faults?: boolean;
}

export interface OurNvme {
  readonly backend: Backend;
  readonly dev: VfioDevice;
  readonly image: string;
  /** In-process: the controller's own counts. Over vfio-user: those of the next shutdown line. */
  counts(): Promise<DeviceCounts>;
  /** Bytes of the image file as it holds them now. */
  readImage(offset: number, length: number): Uint8Array;
  /** In-process: the device's model (its controller), its disk's faults (with `faults`), the DMA mappings it holds. */
  readonly model?: NvmeModel;
  readonly disk?: FaultyDisk;
  dmaCount?(): number;
  /** vfio-user: the server process and what it printed. */
  readonly server?: ChildProcess;
  log(): string;
  close(): Promise<void>;
}

/** Bytes [offset, offset + length) of a file. */
export function readImage(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

/**
 * The image with faults a real disk can have: reads that hang until released (a controller
 * whose commands never complete), and a block that a Write stores with its first byte inverted.
 */
export class FaultyDisk implements NamespaceBackend {
  hangReads = false;
  corruptLba: number | undefined;
  private readonly hung: (() => void)[] = [];

  constructor(private readonly file: NamespaceBackend) {}

  get size(): number {
    return this.file.size;
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    if (this.hangReads) await new Promise<void>((r) => this.hung.push(r));
    return this.file.read(offset, dst);
  }

  async write(offset: number, src: Uint8Array): Promise<void> {
    const bad = this.corruptLba === undefined ? -1 : this.corruptLba * 512 - offset;
    if (bad < 0 || bad >= src.length) return this.file.write(offset, src);
    const copy = src.slice();
    copy[bad]! ^= 0xff;
    return this.file.write(offset, copy);
  }

  flush(): Promise<void> {
    return this.file.flush();
  }

  deallocate(offset: number, length: number): Promise<void> {
    return this.file.deallocate(offset, length);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  /** Lets every hung read go on, and later ones not hang. */
  release(): void {
    this.hangReads = false;
    for (const r of this.hung.splice(0)) r();
  }
}

export async function openOurNvme(backend: Backend, o: OurNvmeOptions = {}): Promise<OurNvme> {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-driver-'));
  const image = o.image ?? join(dir, 'disk.img');
  const cmbSize = o.cmbSize ?? CMB_BYTES;
  try {
    return backend === 'in-process'
      ? await inProcess(dir, image, cmbSize, o)
      : await served(dir, image, cmbSize, o.mdts);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

async function inProcess(dir: string, image: string, cmbSize: number, o: OurNvmeOptions): Promise<OurNvme> {
  const file = await FileNamespace.open(image, { blockSize: 512, size: IMAGE_BYTES });
  const disk = o.faults ? new FaultyDisk(file) : undefined;
  const lines: string[] = [];
  const { device: core, model } = nvmeDevice({ namespace: disk ?? file, cmbSize, mdts: o.mdts }).instantiate({
    env: nativeEnvironment(),
    log: (l) => lines.push(l),
    ...(o.extensions && { extensions: { ...ALL_EXTENSIONS, ...o.extensions } }),
  });
  const tap = o.onRegisterWrite;
  if (tap) {
    // The core calls the model's BAR0 handler as it finds it at each access.
    const regs = model.bars![0]!;
    const write = regs.write.bind(regs);
    Object.assign(regs, {
      write: (offset: number, size: AccessSize, value: bigint) => {
        tap(offset, size, value);
        write(offset, size, value);
      },
    });
  }
  const dev = new VfioDevice(new LocalDeviceFile(core));
  return {
    backend: 'in-process',
    dev,
    image,
    model,
    ...(disk && { disk }),
    async counts() {
      const { stats, ioStats } = model.controller;
      return {
        commands: stats.commands,
        sqesFromCmb: stats.sqesFromCmb,
        reads: ioStats.reads,
        writes: ioStats.writes,
      };
    },
    readImage: (offset, length) => readImage(image, offset, length),
    dmaCount: () => core.dma.count,
    log: () => lines.join('\n'),
    async close() {
      disk?.release();
      await dev.close();
      // The device closes its namespace (a flush) in the background; settled() waits for it.
      await core.settled();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const SHUTDOWN_LINE =
  /nvme: shutdown complete: (\d+) commands \((\d+) fetched from the CMB\), (\d+) reads, (\d+) writes/g;

async function until(cond: () => boolean, what: string, out: () => string): Promise<void> {
  const end = Date.now() + SERVER_WAIT_MS;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}; the server printed:\n${out()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface ServedNvme {
  readonly socket: string;
  readonly child: ChildProcess;
  /** What the server printed so far. */
  log(): string;
  /** The counts of the next shutdown line not returned yet (waiting for it to be printed). */
  counts(): Promise<DeviceCounts>;
  /** SIGTERM (the server closes the device: fdatasync) and wait for it and its pipes to close. */
  stop(): Promise<void>;
}

/**
 * `vfio-ts serve --device nvme --disk IMAGE` as a child process, serving at DIR/nvme.sock. With
 * `mdts`, `vfio-ts serve --module DIR/nvme-device.mjs`: a module exporting the same device
 * (nvmeDiskDevice) built with that MDTS.
 */
export async function serveNvme(
  dir: string,
  image: string,
  cmbSize = CMB_BYTES,
  mdts?: number,
): Promise<ServedNvme> {
  const socket = join(dir, 'nvme.sock');
  const args = ['serve', '--socket', socket];
  if (mdts === undefined) {
    args.push('--device', 'nvme', '--disk', image, '--size', String(IMAGE_BYTES));
    if (cmbSize) args.push('--cmb-size', String(cmbSize));
  } else {
    const module = join(dir, 'nvme-device.mjs');
    const devices = pathToFileURL(join(repoRoot(), 'dist/src/devices/nvme.js')).href;
    const options = { disk: image, size: IMAGE_BYTES, cmbSize, mdts };
    writeFileSync(
      module,
      `import { nvmeDiskDevice } from ${JSON.stringify(devices)};\nexport default nvmeDiskDevice(${JSON.stringify(options)});\n`,
    );
    args.push('--module', module);
  }
  const child = spawn(process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const append = (d: string) => {
    text += d;
  };
  child.stdout.setEncoding('utf8').on('data', append);
  child.stderr.setEncoding('utf8').on('data', append);
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  const log = () => text;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await closed;
  };
  try {
    await until(() => /serving nvme/.test(text) || child.exitCode !== null, 'serving nvme', log);
    assert.match(text, /serving nvme/, text);
  } catch (e) {
    await stop();
    throw e;
  }
  let seen = 0;
  return {
    socket,
    child,
    log,
    async counts() {
      await until(() => [...text.matchAll(SHUTDOWN_LINE)].length > seen, 'the shutdown line', log);
      const m = [...text.matchAll(SHUTDOWN_LINE)][seen++]!;
      return { commands: +m[1]!, sqesFromCmb: +m[2]!, reads: +m[3]!, writes: +m[4]! };
    },
    stop,
  };
}

/** The served device and a vfio-user client connected to it. */
async function served(dir: string, image: string, cmbSize: number, mdts?: number): Promise<OurNvme> {
  const server = await serveNvme(dir, image, cmbSize, mdts);
  let dev: VfioDevice;
  try {
    dev = new VfioDevice(await VfioUserClient.connect(server.socket));
  } catch (e) {
    await server.stop();
    throw e;
  }
  return {
    backend: 'vfio-user',
    dev,
    image,
    server: server.child,
    counts: () => server.counts(),
    readImage: (offset, length) => readImage(image, offset, length),
    log: server.log,
    async close() {
      try {
        await dev.close().catch(() => {});
        await server.stop();
        // SIGTERM: the server closes the device (fdatasync) and exits 0; SIGKILL was a test's.
        if (server.child.signalCode !== 'SIGKILL') assert.equal(server.child.exitCode, 0, server.log());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
