/**
 * Guests that use the NVMe device as a disk: QEMU 11's vfio-user-pci in front of our server
 * (in this process, or `vfio-ts serve` as its own process), a Debian kernel's nvme driver and
 * ext4 in the guest. Shared by qemu.test.ts and bench/nvme.ts.
 */

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import type { VfioPciDevice } from '../../../src/core/device.js';
import { type NvmeModel, nvmeDiskDevice } from '../../../src/devices/nvme.js';
import { nativeEnvironment } from '../../../src/runtime.js';
import { ThreadedServer, type ThreadLoopMode, VfioUserServer } from '../../../src/server/index.js';
import {
  type BootResult,
  bootGuest,
  buildInitramfs,
  type ChrootWorkDir,
  type KernelLabel,
  type Provisioned,
  sharedMemory,
  vfioUserPci,
} from '../../harness/index.js';
import { NVME_COUNTERS, type NvmeCounters } from './served.js';

/**
 * The nvme driver and ext4 with their dependencies (modules.dep): both kernels build them as
 * modules. 6.1's ext4 also asks the crypto API for crc32c at mount ("Cannot load crc32c driver"
 * otherwise), which modules.dep does not list; 7.3 has it built in.
 */
export const NVME_GUEST_MODULES = ['nvme', 'ext4', 'crc32c_generic?'];
export const GUEST_MEMORY_MIB = 512;
export const NVME_BOOT_TIMEOUT_MS = 240_000;

/** Waits for /dev/nvme0n1 (the driver probes asynchronously after insmod). */
export const WAIT_FOR_DISK = `
dev=/dev/nvme0n1
i=0
while [ ! -b $dev ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -b $dev ]; then echo "@@NVME-MISSING"; dmesg | grep -i -e nvme -e p2p -e vfio | tail -40; exit 1; fi
echo "@@NVME-MODEL $(cat /sys/class/nvme/nvme0/model)"
`;

export interface ServedNvme {
  readonly device: VfioPciDevice;
  /** The device's model: its controller. */
  readonly behaviour: NvmeModel;
  readonly log: string[];
  close(): void;
}

/** Our server, in this process, serving an nvme device on `disk` at `socket` (a host path). */
export async function serveNvme(
  socket: string,
  disk: string,
  size: number,
  cmbSize = 0,
  verbose = false,
): Promise<ServedNvme> {
  const log: string[] = [];
  const { device, model: behaviour } = (await nvmeDiskDevice({ disk, size, cmbSize })).instantiate({
    env: nativeEnvironment(),
    log: (l) => log.push(l),
  });
  const server = new VfioUserServer(device, {
    log: (l) => log.push(verbose ? `${performance.now().toFixed(1)} ${l}` : l),
    verbose,
  });
  server.listen(socket);
  return {
    device,
    behaviour,
    log,
    close() {
      server.stop();
      device.close();
    },
  };
}

/** Our server in a worker (ThreadedServer, as `vfio-ts serve` runs it) with the given loop. */
export interface ServedNvmeInWorker {
  readonly log: string[];
  /** Stops serving (the namespace flushed and closed); the controller's counters at that moment. */
  stop(): Promise<NvmeCounters>;
}

export async function serveNvmeInWorker(
  socket: string,
  disk: string,
  size: number,
  cmbSize = 0,
  loop: ThreadLoopMode = 'blocking',
): Promise<ServedNvmeInWorker> {
  const log: string[] = [];
  const server = await ThreadedServer.start(
    {
      module: new URL('./served.js', import.meta.url),
      export: 'nvmeWithCounters',
      arg: { disk, size, cmbSize },
    },
    { loop, log: (l) => log.push(l) },
  );
  server.listen(socket);
  let counters: Promise<NvmeCounters> | undefined;
  return {
    log,
    stop() {
      counters ??= server.stop().then(() => {
        const line = log.find((l) => l.startsWith(NVME_COUNTERS));
        if (!line) throw new Error(`no counters in the worker's log:\n${log.join('\n')}`);
        return JSON.parse(line.slice(NVME_COUNTERS.length)) as NvmeCounters;
      });
      return counters;
    },
  };
}

export interface NvmeGuestOptions {
  kernel: KernelLabel;
  script: string;
  /** Sockets (chroot paths) of vfio-user devices. */
  sockets: readonly string[];
  /** Guest RAM in a memfd (DMA through mapped fds) or plain (DMA_READ / DMA_WRITE). */
  ram: 'memfd' | 'anonymous';
  append?: string;
  args?: readonly string[];
  onConsole?: (text: string) => void;
  timeoutMs?: number;
}

/** Boots a guest under QEMU 11 with the nvme and ext4 modules and the given vfio-user devices. */
export async function bootNvmeGuest(
  p: Provisioned,
  work: ChrootWorkDir,
  o: NvmeGuestOptions,
): Promise<BootResult> {
  const initramfs = await buildInitramfs(p, {
    kernel: p.kernels[o.kernel],
    script: o.script,
    modules: NVME_GUEST_MODULES,
    outputDisk: true,
  });
  try {
    return await bootGuest(p, {
      initramfs,
      qemu: 'trixie',
      workDir: work,
      memoryMiB: GUEST_MEMORY_MIB,
      args: [
        ...(o.ram === 'memfd' ? sharedMemory(GUEST_MEMORY_MIB) : []),
        ...o.sockets.flatMap((s) => vfioUserPci(s)),
        ...(o.args ?? []),
      ],
      ...(o.append ? { append: o.append } : {}),
      ...(o.onConsole ? { onConsole: o.onConsole } : {}),
      timeoutMs: o.timeoutMs ?? NVME_BOOT_TIMEOUT_MS,
    });
  } finally {
    initramfs.cleanup();
  }
}

/** `e2fsck -fn` of an image (nothing changed); its exit status and output. */
export function e2fsck(image: string): { status: number; output: string } {
  try {
    return { status: 0, output: execFileSync('e2fsck', ['-fn', image], { encoding: 'utf8', stdio: 'pipe' }) };
  } catch (e) {
    const x = e as { status?: number; stdout?: string; stderr?: string };
    return { status: x.status ?? -1, output: `${x.stdout ?? ''}${x.stderr ?? ''}` };
  }
}

/** A file of an ext2/3/4 image, read with debugfs (no mount). */
export function debugfsCat(image: string, path: string): Buffer {
  return execFileSync('debugfs', ['-R', `cat ${path}`, image], {
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 64 << 20,
  });
}

export function md5(b: Uint8Array): string {
  return createHash('md5').update(b).digest('hex');
}
