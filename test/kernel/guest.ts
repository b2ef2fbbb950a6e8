/**
 * One QEMU boot with the four devices the kernel tests ask the real vfio-pci about (edu,
 * ivshmem-plain, nvme on a sparse image, e1000e) plus a raw virtio disk the guest writes its
 * results to (the serial console drops bytes under load; see guest-probe.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MalformedError } from '../../src/errors.js';
import {
  type BootResult,
  e1000e,
  edu,
  type GuestKernelLabel,
  ivshmemPlain,
  kernelOf,
  makeSparseImage,
  nvme,
  type Provisioned,
  projectTrees,
  runGuest,
  VFIO_MODULES,
} from '../harness/index.js';

/** name=vendor:device arguments of guest-probe.js, in probe order. */
export const PROBE_DEVICES = ['edu=1234:11e8', 'ivshmem=1af4:1110', 'nvme=1b36:0010', 'e1000e=8086:10d3'];
export const OUT_DEVICE = '/dev/vda';
export const GUEST_TIMEOUT_MS = 180_000;
/** Where in-guest.test.ts's script leaves what `vfio-ts bind` said with vfio-pci unloaded. */
export const NO_MODULE_OUT = '/tmp/vfio-ts-no-module.txt';

export interface KernelGuestRun {
  boot: BootResult;
  /** What the guest wrote to OUT_DEVICE with writeOut (undefined when nothing was written). */
  out: string | undefined;
}

/** What a boot may add to the four devices: kernel options, devices, modules. */
export interface KernelGuestOptions {
  /** Appended to the kernel command line (e.g. `iomem=relaxed`). */
  append?: string;
  /** More QEMU arguments (devices). */
  args?: readonly string[];
  /** More modules for /init to load after the vfio ones and the output disk's. */
  modules?: readonly string[];
}

/** Boots `label` with the four devices and the output disk; runs `script` (cd /app done). */
export async function runKernelGuest(
  p: Provisioned,
  label: GuestKernelLabel,
  script: string,
  opts: KernelGuestOptions = {},
): Promise<KernelGuestRun> {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-kernel-'));
  try {
    const image = makeSparseImage(join(dir, 'nvme.img'), 16);
    const outImage = makeSparseImage(join(dir, 'out.img'), 16);
    const boot = await runGuest(p, {
      kernel: kernelOf(p, label),
      node: true,
      trees: projectTrees(),
      modules: [...VFIO_MODULES, 'virtio_pci?', 'virtio_blk', ...(opts.modules ?? [])],
      ...(opts.append ? { append: opts.append } : {}),
      script: `cd /app || exit 90\n${script}`,
      args: [
        ...edu(),
        ...ivshmemPlain(),
        ...nvme({ image }),
        ...e1000e(),
        '-drive',
        `file=${outImage},format=raw,if=none,id=vfiotsout`,
        '-device',
        'virtio-blk-pci,drive=vfiotsout',
        ...(opts.args ?? []),
      ],
      timeoutMs: GUEST_TIMEOUT_MS,
    });
    return { boot, out: readOut(readFileSync(outImage)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Parses `VFIOTS <length>\n<body>` from the start of the output image. */
export function readOut(image: Uint8Array): string | undefined {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (b.subarray(0, 7).toString() !== 'VFIOTS ') return undefined;
  const nl = b.indexOf(10);
  const len = Number(b.subarray(7, nl).toString());
  if (!Number.isSafeInteger(len) || nl + 1 + len > b.length)
    throw new MalformedError('guest output', `length ${len}`);
  return b.subarray(nl + 1, nl + 1 + len).toString('utf8');
}
