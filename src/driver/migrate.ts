/**
 * Migrating a device from one device file to another (docs/migration.md, "Orchestrator"): what
 * QEMU's hw/vfio/migration.c does for a VFIO device, over any backend that has migration (the
 * vfio-user client, the in-process device), in the order vfio.h's state machine comment gives:
 *
 *   target   -> RESUMING                     the target takes a stream from now on
 *   source   DMA_LOGGING_START over the memory the caller owns; all of it copied once
 *   source   -> PRE_COPY (when it offers it): rounds of { stream so far to the target; the
 *            caller's `round` hook (the device keeps working); DMA_LOGGING_REPORT, dirty pages
 *            copied } until a round finds nothing new or `maxRounds`
 *   source   -> STOP_COPY                    the device stops; the rest of the stream; the last
 *            report (pages written before the stop); DMA_LOGGING_STOP
 *   target   -> RUNNING                      the stream is checked and loaded (RESUMING -> STOP),
 *            then the device runs on the target
 *   source   -> STOP                         where QEMU leaves a migrated-away device
 *
 * Any failure after the source left RUNNING puts it back in RUNNING (vfio.h: the migration can be
 * cancelled from PRE_COPY / STOP_COPY by going back to RUNNING) and resets the target, whose
 * half-loaded state means nothing; the error is rethrown as it came.
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_RESET,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VfioMigState,
} from '../abi/vfio.js';
import {
  vfio_user_dma_logging_control,
  vfio_user_dma_logging_range,
  vfio_user_dma_logging_report,
} from '../abi/vfio-user.js';
import { bitmapBytes } from '../core/migration/dirty.js';
import { fail } from '../errors.js';
import { struct } from '../wire/struct.js';
import { encodeVfioDeviceFeature, FEATURE_DATA, migrationStruct, migStateStruct } from '../wire/vfio.js';
import type { MigrationData, VfioDeviceFile } from './file.js';

/** Bytes asked for per MIG_DATA_READ (a vfio-user client sends at most max_data_xfer_size). */
export const MIGRATE_READ_CHUNK = 1024 * 1024;
/** Pre-copy rounds before stop-and-copy when the device keeps dirtying memory. */
export const MIGRATE_MAX_ROUNDS = 8;
/** The dirty page size asked for: the IOMMU page of every backend here. */
export const MIGRATE_PAGE_SIZE = 4096n;

/** Guest memory the caller owns: mapped at `iova` on the source (`source`) and on the target. */
export interface MigrationMemory {
  readonly iova: bigint;
  readonly source: Uint8Array;
  readonly target: Uint8Array;
}

export interface MigrateOptions {
  /** Memory the device writes by DMA, copied to the target and kept in step by dirty logging. */
  readonly memory?: readonly MigrationMemory[];
  /** Most pre-copy rounds (MIGRATE_MAX_ROUNDS); 0 goes straight to stop-and-copy. */
  readonly maxRounds?: number;
  /** Called in each pre-copy round while the device runs on the source (a workload, a log). */
  round?(n: number): unknown;
  /** Every DMA_LOGGING_REPORT: the round (the last is after the stop) and the dirty page IOVAs. */
  dirty?(round: number, iovas: readonly bigint[]): void;
}

export interface MigrationResult {
  /** Whether the source offered PRE_COPY and it was used. */
  readonly precopy: boolean;
  /** Pre-copy rounds run. */
  readonly rounds: number;
  /** Stream bytes moved in pre-copy, and in all. */
  readonly precopyBytes: number;
  readonly streamBytes: number;
  /** Dirty pages copied after the first full copy. */
  readonly dirtyPages: number;
  /** From the source's stop to the target's RUNNING, in ms. */
  readonly downtimeMs: number;
}

const OP = 'migrate';

// The DMA logging structs as the device fd takes them in-process and vfio-user carries them:
// ranges and bitmap inline after their struct (src/core/migration/feature.ts).
const CONTROL = struct(vfio_user_dma_logging_control);
const RANGE = struct(vfio_user_dma_logging_range);
const REPORT = struct(vfio_user_dma_logging_report);

/** VFIO_DEVICE_FEATURE_MIGRATION's flags; EOPNOTSUPP when the device has no STOP_COPY. */
export async function migrationFlags(dev: VfioDeviceFile): Promise<number> {
  const arg = encodeVfioDeviceFeature(
    VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
    new Uint8Array(migrationStruct.size),
  );
  await dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  const flags = Number(migrationStruct.get(arg, 'flags', FEATURE_DATA));
  if (!(flags & VFIO_MIGRATION_STOP_COPY)) fail(Errno.EOPNOTSUPP, OP, 'the device has no STOP_COPY');
  return flags;
}

/** MIG_DEVICE_STATE GET. */
export async function migrationState(dev: VfioDeviceFile): Promise<number> {
  const arg = encodeVfioDeviceFeature(
    VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    new Uint8Array(migStateStruct.size),
  );
  await dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return migStateStruct.get(arg, 'device_state', FEATURE_DATA);
}

/** MIG_DEVICE_STATE SET (the server resolves multi-arc requests); the data_fd, or -1. */
export async function setMigrationState(dev: VfioDeviceFile, state: number): Promise<number> {
  const arg = encodeVfioDeviceFeature(
    VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
    migStateStruct.encode({ device_state: state }),
  );
  await dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return migStateStruct.get(arg, 'data_fd', FEATURE_DATA);
}

/** DMA_LOGGING_START over `ranges`; the page size the device chose. */
export async function dirtyLoggingStart(
  dev: VfioDeviceFile,
  pageSize: bigint,
  ranges: readonly { iova: bigint; length: bigint }[],
): Promise<bigint> {
  const first = CONTROL.offsetOf('ranges');
  const d = CONTROL.encode({ page_size: pageSize, num_ranges: ranges.length }, ranges.length * RANGE.size);
  for (const [i, r] of ranges.entries())
    RANGE.write(d, { iova: r.iova, length: r.length }, first + i * RANGE.size);
  const arg = encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, d);
  await dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  return CONTROL.get(arg, 'page_size', FEATURE_DATA);
}

export async function dirtyLoggingStop(dev: VfioDeviceFile): Promise<void> {
  await dev.ioctl(
    VFIO_DEVICE_FEATURE,
    encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP),
  );
}

/** DMA_LOGGING_REPORT of [iova, iova + length): the IOVAs of the pages it names (and clears). */
export async function dirtyReport(
  dev: VfioDeviceFile,
  iova: bigint,
  length: bigint,
  pageSize: bigint,
): Promise<bigint[]> {
  const d = REPORT.encode({ iova, length, page_size: pageSize }, Number(bitmapBytes(length, pageSize)));
  const arg = encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, d);
  await dev.ioctl(VFIO_DEVICE_FEATURE, arg);
  const out: bigint[] = [];
  const bitmap = arg.subarray(FEATURE_DATA + REPORT.offsetOf('bitmap'));
  const pages = Number((length + pageSize - 1n) / pageSize);
  for (let i = 0; i < pages; i++) if (bitmap[i >> 3]! & (1 << (i & 7))) out.push(iova + BigInt(i) * pageSize);
  return out;
}

/** Reads the session until a read gives nothing now, writing each piece to `to`; the bytes moved. */
async function pump(from: MigrationData, to: MigrationData): Promise<number> {
  let moved = 0;
  for (;;) {
    const b = await from.read(MIGRATE_READ_CHUNK);
    if (b.length === 0) return moved;
    await to.write(b);
    moved += b.length;
  }
}

/**
 * Migrates the device behind `source` into the one behind `target` (same device type; the
 * target refuses another's stream with EINVAL and is reset). See the file's header.
 * @throws VfioError: EOPNOTSUPP when either has no migration, or the errno of the step that failed
 */
export async function migrate(
  source: VfioDeviceFile,
  target: VfioDeviceFile,
  opts: MigrateOptions = {},
): Promise<MigrationResult> {
  const S = VfioMigState;
  if (!source.migrationData || !target.migrationData)
    fail(Errno.EOPNOTSUPP, OP, 'a backend without migration');
  const flags = await migrationFlags(source);
  await migrationFlags(target);
  const memory = opts.memory ?? [];
  const maxRounds = opts.maxRounds ?? MIGRATE_MAX_ROUNDS;
  const precopy = (flags & VFIO_MIGRATION_PRE_COPY) !== 0 && maxRounds > 0;
  let logging = false;
  let moved = false;
  try {
    const rfd = await setMigrationState(target, S.RESUMING);
    const into = target.migrationData(rfd);
    let pageSize = MIGRATE_PAGE_SIZE;
    if (memory.length > 0) {
      const ranges = memory.map((m) => ({ iova: m.iova, length: BigInt(m.source.length) }));
      pageSize = await dirtyLoggingStart(source, MIGRATE_PAGE_SIZE, ranges);
      logging = true;
      for (const m of memory) m.target.set(m.source);
    }
    let dirtyPages = 0;
    const copyDirty = async (round: number): Promise<number> => {
      let n = 0;
      for (const m of memory) {
        const iovas = await dirtyReport(source, m.iova, BigInt(m.source.length), pageSize);
        opts.dirty?.(round, iovas);
        for (const iova of iovas) {
          const at = Number(iova - m.iova);
          const end = Math.min(at + Number(pageSize), m.source.length);
          m.target.set(m.source.subarray(at, end), at);
        }
        n += iovas.length;
      }
      dirtyPages += n;
      return n;
    };
    moved = true;
    let fd = -1;
    let rounds = 0;
    let precopyBytes = 0;
    if (precopy) {
      fd = await setMigrationState(source, S.PRE_COPY);
      const from = source.migrationData(fd);
      for (rounds = 1; ; rounds++) {
        const sent = await pump(from, into);
        precopyBytes += sent;
        await opts.round?.(rounds);
        const dirty = await copyDirty(rounds);
        if ((sent === 0 && dirty === 0) || rounds >= maxRounds) break;
      }
    }
    const stopped = performance.now();
    const sfd = await setMigrationState(source, S.STOP_COPY);
    if (sfd >= 0) fd = sfd;
    const rest = await pump(source.migrationData(fd), into);
    if (logging) {
      await copyDirty(rounds + 1);
      await dirtyLoggingStop(source);
      logging = false;
    }
    await setMigrationState(target, S.RUNNING);
    const downtimeMs = performance.now() - stopped;
    await setMigrationState(source, S.STOP);
    return { precopy, rounds, precopyBytes, streamBytes: precopyBytes + rest, dirtyPages, downtimeMs };
  } catch (e) {
    // Cancel (see the header): nothing here may hide the error that brought us here.
    if (logging) await dirtyLoggingStop(source).catch(() => undefined);
    // A source in ERROR takes no arc: only a reset gets it back (vfio.h, "ERROR").
    if (moved)
      await setMigrationState(source, S.RUNNING).catch(() =>
        source.ioctl(VFIO_DEVICE_RESET, new Uint8Array(0)).catch(() => undefined),
      );
    await target.ioctl(VFIO_DEVICE_RESET, new Uint8Array(0)).catch(() => undefined);
    throw e;
  }
}
