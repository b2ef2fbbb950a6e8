/**
 * Helpers the in-guest test files share (on-hardware.ts, on-hardware-iommufd.ts): finding a PCI
 * function, an errno from a promise, and QEMU's edu DMA engine (hw/misc/edu.c), which copies
 * between an IOVA and its 4 KiB buffer at 0x40000 — the device that proves an IOMMU mapping by
 * really doing DMA through it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';

export const IN_GUEST = process.env.VFIO_TS_GUEST === '1';

export const IDS = {
  edu: [0x1234, 0x11e8],
  ivshmem: [0x1af4, 0x1110],
  nvme: [0x1b36, 0x0010],
  e1000e: [0x8086, 0x10d3],
} as const;
export type Name = keyof typeof IDS;

/** The `nth` (1-based, in address order) PCI function with these IDs. */
export function find(vendor: number, device: number, nth = 1): string {
  let n = nth;
  for (const d of readdirSync('/sys/bus/pci/devices').sort()) {
    const v = Number(readFileSync(`/sys/bus/pci/devices/${d}/vendor`, 'utf8'));
    const id = Number(readFileSync(`/sys/bus/pci/devices/${d}/device`, 'utf8'));
    if (v === vendor && id === device && --n === 0) return d;
  }
  throw new Error(`no PCI device ${vendor.toString(16)}:${device.toString(16)} #${nth}`);
}

/** The errno a promise rejects with (a VfioError), or undefined when it resolves. */
export async function errnoOf(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}

/** edu's DMA buffer (hw/misc/edu.c: DMA_START, DMA_SIZE 4096). */
export const EDU_DMA_BUFFER = 0x40000;
/**
 * The longest transfer the tests ask for: QEMU 7.2's edu_check_range rejects a transfer that
 * ends exactly at the end of the buffer with hw_error, which aborts QEMU (seen: "DMA range
 * 0x40000-0x40fff out of bounds (0x40000-0x40fff)").
 */
export const EDU_DMA_MAX = 2048;
/** edu's DMA command bits: start, direction (set: buffer to RAM). */
const EDU_DMA_START = 1;
const EDU_DMA_TO_RAM = 2;

/** Bus mastering and memory decode on (command register bits 2 and 1), as a driver does first. */
export async function enableBusMaster(edu: VfioDevice): Promise<void> {
  const cmd = await edu.readConfig(4, 2);
  await edu.writeConfig(4, new Uint8Array([cmd[0]! | 0x06, cmd[1]!]));
}

/**
 * One edu DMA transfer of `length` bytes, waited for: `toDevice` copies IOVA `iova` into the
 * buffer at `offset`, else the buffer at `offset` to `iova`. edu's addresses are clamped to its
 * 28-bit DMA mask, so IOVAs stay below 256 MiB.
 */
export async function eduDma(
  edu: VfioDevice,
  dir: 'toDevice' | 'toRam',
  iova: bigint,
  length: number,
  offset = 0,
): Promise<void> {
  const buf = EDU_DMA_BUFFER + offset;
  const [src, dst] = dir === 'toDevice' ? [Number(iova), buf] : [buf, Number(iova)];
  await edu.write32(0, 0x80, src);
  await edu.write32(0, 0x84, 0);
  await edu.write32(0, 0x88, dst);
  await edu.write32(0, 0x8c, 0);
  await edu.write32(0, 0x90, length);
  await edu.write32(0, 0x98, EDU_DMA_START | (dir === 'toRam' ? EDU_DMA_TO_RAM : 0));
  const until = Date.now() + 2000;
  while ((await edu.read32(0, 0x98)) & EDU_DMA_START && Date.now() < until)
    await new Promise((r) => setTimeout(r, 5));
}
