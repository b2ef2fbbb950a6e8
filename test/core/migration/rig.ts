/**
 * The migration features of the device core, called as a user of the device fd calls them: the
 * VFIO_DEVICE_FEATURE bytes (vfio.h layouts; DMA logging's ranges and bitmap inline, as
 * src/core/migration/feature.ts takes them), MIG_DEVICE_STATE SET through ioctlAsync, and the
 * data_fd it returns through VfioPciDevice.migrationData.
 */
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_SET,
} from '../../../src/abi/vfio.js';
import type { VfioPciDevice } from '../../../src/core/device.js';
import { concat } from '../../server/raw.js';

/** struct vfio_device_feature with `data` after it; argsz defaults to the whole buffer. */
export function featureArg(flags: number, data: Uint8Array = new Uint8Array(0), argsz?: number): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, argsz ?? b.length, true);
  v.setUint32(4, flags >>> 0, true);
  b.set(data, 8);
  return b;
}

/** MIG_DEVICE_STATE SET; resolves with the data_fd (-1 when the arc opened no session). */
export async function setState(dev: VfioPciDevice, state: number): Promise<number> {
  const d = new Uint8Array(8);
  new DataView(d.buffer).setUint32(0, state, true);
  const arg = featureArg(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, d);
  await dev.ioctlAsync(VFIO_DEVICE_FEATURE, arg);
  return new DataView(arg.buffer).getInt32(12, true);
}

/** MIG_DEVICE_STATE GET. */
export function getState(dev: VfioPciDevice): number {
  const arg = featureArg(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, new Uint8Array(8));
  dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return new DataView(arg.buffer).getUint32(8, true);
}

export { errnoOfAsync } from '../../helpers/errno.js';

/** Every byte the saving session has now, read in `chunk`-byte reads until a short one. */
export function drain(dev: VfioPciDevice, fd: number, chunk = 64 * 1024): Uint8Array[] {
  const out: Uint8Array[] = [];
  const f = dev.migrationData(fd);
  for (;;) {
    const b = f.read(chunk);
    if (b.length) out.push(b);
    if (b.length < chunk) return out;
  }
}

/** Concatenation. */
export const join = (parts: readonly Uint8Array[]): Uint8Array => concat(...parts);

/**
 * `src` saved (with PRE_COPY when `precopy`) and restored into `dst`; both end RUNNING (`src`
 * back from STOP: a cancelled migration's source, or one kept for comparison). Returns the
 * stream.
 */
export async function migrate(src: VfioPciDevice, dst: VfioPciDevice, precopy = true): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let fd: number;
  if (precopy) {
    fd = await setState(src, 6 /* PRE_COPY */);
    parts.push(...drain(src, fd));
    await setState(src, 3 /* STOP_COPY */);
  } else fd = await setState(src, 3 /* STOP_COPY */);
  parts.push(...drain(src, fd));
  await setState(src, 1 /* STOP */);
  const stream = join(parts);
  const rfd = await setState(dst, 4 /* RESUMING */);
  dst.migrationData(rfd).write(stream);
  await setState(dst, 2 /* RUNNING */);
  await setState(src, 2 /* RUNNING */);
  return stream;
}

/** DMA_LOGGING_START over `ranges` with `pageSize`; returns the page size the device chose. */
export function loggingStart(dev: VfioPciDevice, pageSize: bigint, ranges: [bigint, bigint][]): bigint {
  const d = new Uint8Array(16 + 16 * ranges.length);
  const v = new DataView(d.buffer);
  v.setBigUint64(0, pageSize, true);
  v.setUint32(8, ranges.length, true);
  ranges.forEach(([iova, len], i) => {
    v.setBigUint64(16 + i * 16, iova, true);
    v.setBigUint64(24 + i * 16, len, true);
  });
  const arg = featureArg(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, d);
  dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return new DataView(arg.buffer).getBigUint64(8, true);
}

export function loggingStop(dev: VfioPciDevice): void {
  dev.ioctl(VFIO_DEVICE_FEATURE, featureArg(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP));
}

/** DMA_LOGGING_REPORT: the page indexes (from `iova`) whose bit is set. */
export function loggingReport(dev: VfioPciDevice, iova: bigint, length: bigint, pageSize: bigint): number[] {
  const pages = Number((length + pageSize - 1n) / pageSize);
  const bytes = Math.ceil(pages / 64) * 8;
  const d = new Uint8Array(24 + bytes);
  const v = new DataView(d.buffer);
  v.setBigUint64(0, iova, true);
  v.setBigUint64(8, length, true);
  v.setBigUint64(16, pageSize, true);
  const arg = featureArg(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, d);
  dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return setBits(arg.subarray(8 + 24));
}

/** Indexes of the set bits of a little-endian bitmap. */
export function setBits(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  bitmap.forEach((b, i) => {
    for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
  });
  return out;
}
