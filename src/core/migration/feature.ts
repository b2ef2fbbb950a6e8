/**
 * The migration features of VFIO_DEVICE_FEATURE, as drivers/vfio/vfio_main.c answers them
 * before a driver's own features (vfio_ioctl_device_feature): MIGRATION, MIG_DEVICE_STATE,
 * DMA_LOGGING_START / _STOP / _REPORT and MIG_DATA_SIZE, each with vfio_check_feature's framing
 * and the checks vfio_main.c makes, in its order, then the engine (engine.ts).
 *
 * In-process there are no user pointers: DMA_LOGGING_START's ranges follow its struct and
 * REPORT's bitmap follows its struct, as vfio-user lays them out (spec, "Device Features"), so
 * `arg` carries them inline, and the vfio-user server hands its payload over unchanged. With it
 * comes the spec's "num_ranges ... A value of zero indicates that all writes should be logged"
 * (vfio_main.c refuses 0 with EINVAL).
 */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_SET,
} from '../../abi/vfio.js';
import {
  vfio_user_dma_logging_control,
  vfio_user_dma_logging_range,
  vfio_user_dma_logging_report,
} from '../../abi/vfio-user.js';
import { fail } from '../../errors.js';
import { struct } from '../../wire/struct.js';
import {
  deviceFeatureStruct,
  FEATURE_DATA,
  migDataSizeStruct,
  migrationStruct,
  migStateStruct,
} from '../../wire/vfio.js';
import { checkFeature, need } from '../uaccess.js';
import { bitmapBytes, DirtyLog, type LogRange, rangeEnd } from './dirty.js';
import type { DeviceMigration } from './engine.js';

const CONTROL = struct(vfio_user_dma_logging_control);
const RANGE = struct(vfio_user_dma_logging_range);
const REPORT = struct(vfio_user_dma_logging_report);
const U64 = (1n << 64n) - 1n;

/** vfio_main.c LOG_MAX_RANGES: "Ranges should fit into a single kernel page". */
export const MAX_LOG_RANGES = 4096 / RANGE.size;
/** The smallest page a report may ask for (vfio_main.c: `report.page_size < SZ_4K` is EINVAL). */
export const MIN_LOG_PAGE_SIZE = 4096n;
/** The largest tracking page START settles on; a larger hint gets this. */
export const MAX_LOG_PAGE_SIZE = 1n << 30n;
/**
 * Largest bitmap one REPORT fills (256 KiB: 8 GiB of 4 KiB pages). The vfio-user server offers it
 * as max_bitmap_size; a larger request is E2BIG, and the client asks in pieces.
 */
export const MAX_REPORT_BITMAP = 256 * 1024;

/** The features this file answers. */
export const MIGRATION_FEATURES: ReadonlySet<number> = new Set([
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
]);

/**
 * One migration feature request: `arg` is struct vfio_device_feature and its data, read and
 * written in place. MIG_DEVICE_STATE SET waits for the device (a promise); `openFd` turns the
 * session it opened into the data_fd the caller reports. Without migration (`m` undefined):
 * ENOTTY, as vfio_main.c answers a device without mig_ops / log_ops.
 */
export function migrationFeature(
  m: DeviceMigration | undefined,
  arg: Uint8Array,
  openFd: (session: number) => number,
): number | Promise<number> {
  const argsz = deviceFeatureStruct.get(arg, 'argsz');
  const flags = deviceFeatureStruct.get(arg, 'flags');
  const feature = flags & VFIO_DEVICE_FEATURE_MASK;
  const op = 'VFIO_DEVICE_FEATURE';
  if (!m) return fail(Errno.ENOTTY, op, `feature ${feature}: the device has no migration`);
  const size = argsz - FEATURE_DATA;
  const data = arg.subarray(FEATURE_DATA);
  const GET = VFIO_DEVICE_FEATURE_GET;
  const SET = VFIO_DEVICE_FEATURE_SET;
  switch (feature) {
    case VFIO_DEVICE_FEATURE_MIGRATION:
      if (checkFeature(flags, size, GET, migrationStruct.size) === 0) return 0;
      need(data, migrationStruct.size, op);
      migrationStruct.write(data, { flags: BigInt(m.flags) });
      return 0;
    case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: {
      if (checkFeature(flags, size, GET | SET, migStateStruct.size) === 0) return 0;
      need(data, migStateStruct.size, op);
      if (flags & GET) {
        migStateStruct.write(data, { device_state: m.state, data_fd: -1 });
        return 0;
      }
      // vfio_ioctl_device_feature_mig_device_state: data_fd is -1 unless the arc opened a
      // session, and the struct is copied back on failure too.
      const target = migStateStruct.get(data, 'device_state');
      migStateStruct.set(data, 'data_fd', -1);
      return m.setState(target).then(({ session }) => {
        if (session !== undefined) migStateStruct.set(data, 'data_fd', openFd(session));
        return 0;
      });
    }
    case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE:
      if (checkFeature(flags, size, GET, migDataSizeStruct.size) === 0) return 0;
      need(data, migDataSizeStruct.size, op);
      migDataSizeStruct.write(data, { stop_copy_length: m.dataSize() });
      return 0;
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
      if (checkFeature(flags, size, SET, CONTROL.size) === 0) return 0;
      return loggingStart(m, data, size);
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
      if (checkFeature(flags, size, SET, 0) === 0) return 0;
      m.stopLogging();
      return 0;
    case VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT:
      if (checkFeature(flags, size, GET, REPORT.size) === 0) return 0;
      return loggingReport(m, data, size);
  }
  return fail(Errno.ENOTTY, op, `feature ${feature}`);
}

/** IS_ALIGNED(x, a) with u64 arithmetic, as vfio_main.c applies it to the page size hint. */
const aligned = (x: bigint, a: bigint) => (x & ((a - 1n) & U64)) === 0n;

/** vfio_ioctl_device_feature_logging_start, its checks in its order, then log_start. */
function loggingStart(m: DeviceMigration, data: Uint8Array, size: number): number {
  const op = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_START';
  need(data, CONTROL.size, op);
  const c = CONTROL.read(data);
  if (c.num_ranges > MAX_LOG_RANGES)
    fail(Errno.E2BIG, op, `${c.num_ranges} ranges, at most ${MAX_LOG_RANGES}`);
  const first = CONTROL.offsetOf('ranges');
  if (size < first + c.num_ranges * RANGE.size)
    fail(Errno.EINVAL, op, `argsz too small for ${c.num_ranges} ranges`);
  need(data, first + c.num_ranges * RANGE.size, op);
  const ranges: LogRange[] = [];
  for (let i = 0; i < c.num_ranges; i++) {
    const r = RANGE.read(data, first + i * RANGE.size);
    if (!aligned(r.iova, c.page_size) || !aligned(r.length, c.page_size))
      fail(Errno.EINVAL, op, `range ${i} not aligned to page_size 0x${c.page_size.toString(16)}`);
    const end = rangeEnd(r.iova, r.length) ?? fail(Errno.EOVERFLOW, op, `range ${i} passes 2^64`);
    if (r.length === 0n) fail(Errno.EINVAL, op, `range ${i} is empty`);
    if (ranges.some((o) => o.start < end && r.iova < o.end))
      fail(Errno.EINVAL, op, `range ${i} overlaps another`);
    ranges.push({ start: r.iova, end });
  }
  // log_start: the driver picks the page it tracks and reports it back in page_size. Ours is the
  // hint when it is a power of two from 4 KiB to 1 GiB, else the nearest of those.
  let page = MIN_LOG_PAGE_SIZE;
  while (page < c.page_size && page < MAX_LOG_PAGE_SIZE) page <<= 1n;
  if (page > c.page_size && page > MIN_LOG_PAGE_SIZE) page >>= 1n;
  m.startLogging(new DirtyLog(page, ranges));
  CONTROL.set(data, 'page_size', page);
  return 0;
}

/** vfio_ioctl_device_feature_logging_report, then log_read_and_clear into the inline bitmap. */
function loggingReport(m: DeviceMigration, data: Uint8Array, size: number): number {
  const op = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT';
  need(data, REPORT.size, op);
  const r = REPORT.read(data);
  if (r.page_size < MIN_LOG_PAGE_SIZE || (r.page_size & (r.page_size - 1n)) !== 0n)
    fail(Errno.EINVAL, op, `page_size 0x${r.page_size.toString(16)}`);
  if (rangeEnd(r.iova, r.length) === undefined) fail(Errno.EOVERFLOW, op, 'iova + length passes 2^64');
  const log = m.logging ?? fail(Errno.EINVAL, op, 'DMA logging is not started');
  const bytes = bitmapBytes(r.length, r.page_size);
  if (bytes > BigInt(MAX_REPORT_BITMAP))
    fail(Errno.E2BIG, op, `a bitmap of ${bytes} bytes, at most ${MAX_REPORT_BITMAP}`);
  const first = REPORT.offsetOf('bitmap');
  if (BigInt(size - first) < bytes)
    fail(Errno.EINVAL, op, `argsz leaves no room for ${bytes} bytes of bitmap`);
  need(data, first + Number(bytes), op);
  log.report(r.iova, r.length, r.page_size, data.subarray(first, first + Number(bytes)));
  return 0;
}
