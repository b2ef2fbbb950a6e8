/**
 * Live migration over vfio-user (spec, "Device Features", "VFIO_USER_MIG_DATA_READ",
 * "VFIO_USER_MIG_DATA_WRITE"; docs/migration.md). The device core is the migration driver
 * (src/core/migration): DEVICE_FEATURE's migration features go to its VFIO_DEVICE_FEATURE with
 * the payload as it came (vfio-user's inline DMA logging ranges and bitmap are the core's
 * in-process layout), and MIG_DATA_READ / MIG_DATA_WRITE read and write the session's stream,
 * the spec's stand-in for the kernel's data_fd.
 *
 * Replies (spec, "VFIO_USER_DEVICE_FEATURE" Reply): SET and PROBE echo the request (DMA_LOGGING_
 * START with the page size the device chose: "unless the page size was changed, in which case
 * this will be reflected in the response"); GET carries the feature's data, argsz its length.
 * MIG_DEVICE_STATE SET waits for the device (the arc into STOP quiesces it): its reply goes when
 * the state is reached ("The state transition must fully complete before the reply is sent").
 *
 * Sizes and errnos follow libvfio-user (lib/migration.c handle_mig_data_read/_write): a size past
 * the negotiated max_data_xfer_size or an argsz that cannot hold the data is EINVAL, as is a read
 * outside PRE_COPY / STOP_COPY or a write outside RESUMING. A device without migration answers
 * EOPNOTSUPP (docs/vfio-user-server.md).
 */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_PROBE,
} from '../../abi/vfio.js';
import {
  VfioUserFeatureFlags,
  vfio_user_dma_logging_report,
  vfio_user_mig_data,
} from '../../abi/vfio-user.js';
import { bitmapBytes } from '../../core/migration/dirty.js';
import { MAX_REPORT_BITMAP } from '../../core/migration/feature.js';
import { fail } from '../../errors.js';
import { struct } from '../../wire/struct.js';
import {
  deviceFeatureStruct,
  FEATURE_DATA,
  migDataSizeStruct,
  migrationStruct,
  migStateStruct,
} from '../../wire/vfio.js';
import {
  type CapabilitiesInput,
  decodeDeviceFeature,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  encodeMigDataReadReply,
  type Frame,
  type MigrationCapability,
} from '../../wire/vfio-user.js';
import { type ClientContext, EMPTY, type Reply, reply, xferMax } from '../context.js';

const REPORT = struct(vfio_user_dma_logging_report);
const MIG_DATA = struct(vfio_user_mig_data).offsetOf('data');

/** The data a GET of these features answers with (REPORT's: its struct and the bitmap asked for). */
const GET_DATA_BYTES: Readonly<Record<number, number>> = {
  [VFIO_DEVICE_FEATURE_MIGRATION]: migrationStruct.size,
  [VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE]: migStateStruct.size,
  [VFIO_DEVICE_FEATURE_MIG_DATA_SIZE]: migDataSizeStruct.size,
};

/** Largest migration feature reply: a DMA_LOGGING_REPORT with the largest bitmap. */
export const MAX_MIGRATION_FEATURE_REPLY = FEATURE_DATA + REPORT.size + MAX_REPORT_BITMAP;

function noMigration(op: string): never {
  // docs/vfio-user-server.md: a device built without migration answers as before, EOPNOTSUPP
  // (libvfio-user says EINVAL when a device has no migration).
  return fail(Errno.EOPNOTSUPP, op, 'this device has no migration');
}

/** DEVICE_FEATURE for MIGRATION, MIG_DEVICE_STATE, DMA_LOGGING_*, MIG_DATA_SIZE. */
export function migrationFeature(s: ClientContext, f: Frame): Reply | Promise<Reply> {
  const op = 'VFIO_USER_DEVICE_FEATURE';
  const req = decodeDeviceFeature(f.payload, 'command');
  const feature = req.flags & VfioUserFeatureFlags.MASK;
  if (!s.device.migration) noMigration(op);
  // The core reads and writes the feature in place: room for the reply the client allows.
  const size = Math.max(f.payload.length, Math.min(req.argsz, MAX_MIGRATION_FEATURE_REPLY));
  const arg = new Uint8Array(size);
  arg.set(f.payload);
  const get = (req.flags & VFIO_DEVICE_FEATURE_GET) !== 0 && !(req.flags & VFIO_DEVICE_FEATURE_PROBE);
  const answer = (): Reply => {
    if (!get)
      return reply(
        feature === VFIO_DEVICE_FEATURE_DMA_LOGGING_START
          ? arg.slice(0, f.payload.length)
          : f.payload.slice(),
      );
    // GET: the feature's data; REPORT's is its struct and the bitmap the request asked for.
    let n = FEATURE_DATA + (GET_DATA_BYTES[feature] ?? 0);
    if (feature === VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT) {
      const r = REPORT.read(arg, FEATURE_DATA);
      n = FEATURE_DATA + REPORT.size + Number(bitmapBytes(r.length, r.page_size));
    }
    const out = arg.slice(0, n);
    deviceFeatureStruct.set(out, 'argsz', n);
    return reply(out);
  };
  return s.device.ioctlAsync(VFIO_DEVICE_FEATURE, arg).then(answer);
}

/** MIG_DATA_READ: up to `size` bytes of the saving stream; a short reply is the end of what there is. */
export function migDataRead(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_MIG_DATA_READ';
  const m = s.device.migration ?? noMigration(op);
  const req = decodeMigDataReadRequest(f.payload);
  if (req.size > xferMax(s)) fail(Errno.EINVAL, op, `size ${req.size} > max_data_xfer_size ${xferMax(s)}`);
  if (req.argsz < MIG_DATA + req.size) fail(Errno.EINVAL, op, `argsz ${req.argsz} < ${MIG_DATA + req.size}`);
  const data = m.read(req.size);
  return reply(encodeMigDataReadReply({ argsz: MIG_DATA + data.length, data }));
}

/** MIG_DATA_WRITE: bytes of the stream for the RESUMING device. */
export function migDataWrite(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_MIG_DATA_WRITE';
  const m = s.device.migration ?? noMigration(op);
  const req = decodeMigDataWriteRequest(f.payload);
  if (req.data.length > xferMax(s))
    fail(Errno.EINVAL, op, `size ${req.data.length} > max_data_xfer_size ${xferMax(s)}`);
  if (req.argsz < MIG_DATA + req.data.length)
    fail(Errno.EINVAL, op, `argsz ${req.argsz} < ${MIG_DATA + req.data.length}`);
  m.write(req.data);
  return EMPTY;
}

/**
 * VERSION's `migration` capability (QEMU protocol.h VFIO_USER_CAP_MIGR; absent from the spec's
 * table, sent by QEMU and libvfio-user): answered when the client proposed it and the device has
 * migration. `pgsize` is the client's when it is a power of two of 4 KiB or more (the report's
 * page size is per request anyway, DMA_LOGGING_REPORT), else VERSION is refused with EINVAL as
 * libvfio-user refuses (migration_set_pgsize); `max_bitmap_size` is no larger than the client's
 * nor than MAX_REPORT_BITMAP.
 */
export function migrationCapability(
  s: ClientContext,
  proposed: MigrationCapability | undefined,
): Pick<CapabilitiesInput, 'migration'> {
  if (!proposed || !s.device.migration) return {};
  const { pgsize, maxBitmapSize } = proposed;
  if (pgsize < 4096 || !Number.isInteger(Math.log2(pgsize)))
    fail(
      Errno.EINVAL,
      'VFIO_USER_VERSION',
      `migration.pgsize ${pgsize} is not a power of two of 4 KiB or more`,
    );
  return { migration: { pgsize, maxBitmapSize: Math.min(maxBitmapSize, MAX_REPORT_BITMAP) } };
}
