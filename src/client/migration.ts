/**
 * Live migration from the client's side of vfio-user (spec, "Device Features",
 * "VFIO_USER_MIG_DATA_READ", "VFIO_USER_MIG_DATA_WRITE"; docs/migration.md): the migration
 * features travel as DEVICE_FEATURE like any other (ioctl.ts), with three things of their own,
 * here:
 *
 * - MIG_DEVICE_STATE SET may take as long as the device needs to quiesce: it gets
 *   CLIENT_MIGRATION_TIMEOUT_MS instead of the per-request timeout.
 * - DMA_LOGGING_REPORT: a bitmap larger than the server's max_bitmap_size (VERSION's migration
 *   capability) or than a reply we take (MAX_DIRTY_BITMAP) is asked for in pieces, each a range
 *   whose bitmap fits, and put together; every reply is checked to echo its request.
 * - The data_fd of the kernel is the session's stream here: `migrationData` reads it with
 *   MIG_DATA_READ and writes it with MIG_DATA_WRITE, in pieces of max_data_xfer_size. A reply
 *   with more than asked, or an argsz that does not add up, is EPROTO.
 */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C, vfio_user_dma_logging_report, vfio_user_mig_data } from '../abi/vfio-user.js';
import { bitmapBytes, rangeEnd } from '../core/migration/dirty.js';
import { MIN_LOG_PAGE_SIZE } from '../core/migration/feature.js';
import type { MigrationData } from '../driver/file.js';
import { fail } from '../errors.js';
import { struct } from '../wire/struct.js';
import { deviceFeatureStruct, FEATURE_DATA } from '../wire/vfio.js';
import {
  decodeMigDataReadReply,
  encodeMigDataReadRequest,
  encodeMigDataWriteRequest,
} from '../wire/vfio-user.js';
import { type Connection, decodeOrProto } from './connection.js';
import { MAX_DIRTY_BITMAP } from './limits.js';
import type { ClientNegotiated } from './negotiate.js';

const REPORT = struct(vfio_user_dma_logging_report);
const MIG_DATA = struct(vfio_user_mig_data).offsetOf('data');

/** Largest bitmap one REPORT may carry: the server's max_bitmap_size and ours, whichever is less. */
export function reportLimit(n: ClientNegotiated): number {
  return Math.min(MAX_DIRTY_BITMAP, n.migration?.maxBitmapSize ?? MAX_DIRTY_BITMAP);
}

/**
 * The pieces a REPORT of [iova, iova + length) in `pageSize` pages is asked for in: ranges whose
 * bitmap fits `limit` bytes, each starting at a whole u64 word of the caller's bitmap.
 */
export function reportPieces(
  iova: bigint,
  length: bigint,
  pageSize: bigint,
  limit: number,
): { iova: bigint; length: bigint; at: number }[] {
  const span = BigInt(Math.max(8, limit - (limit % 8))) * 8n * pageSize; // bytes of IOVA per piece
  const out: { iova: bigint; length: bigint; at: number }[] = [];
  for (let done = 0n; done < length; done += span)
    out.push({
      iova: iova + done,
      length: length - done < span ? length - done : span,
      at: Number(bitmapBytes(done, pageSize)),
    });
  return out;
}

/** The migration data stream over MIG_DATA_READ / MIG_DATA_WRITE. */
export function migrationData(
  conn: Pick<Connection, 'request'>,
  negotiated: () => ClientNegotiated,
): MigrationData {
  return {
    async read(max: number): Promise<Uint8Array> {
      const op = 'VFIO_USER_MIG_DATA_READ';
      const size = Math.min(max, negotiated().maxDataXferSize);
      const r = await conn.request(
        C.MIG_DATA_READ,
        [encodeMigDataReadRequest({ argsz: MIG_DATA + size, size })],
        [],
        {
          maxReply: MIG_DATA + size,
        },
      );
      const d = decodeOrProto(op, () => decodeMigDataReadReply(r.payload));
      if (d.data.length > size) fail(Errno.EPROTO, op, `${d.data.length} bytes for the ${size} asked`);
      if (d.argsz !== MIG_DATA + d.data.length)
        fail(Errno.EPROTO, op, `argsz ${d.argsz} for ${d.data.length} bytes`);
      return d.data.slice();
    },
    async write(data: Uint8Array): Promise<void> {
      const max = negotiated().maxDataXferSize;
      for (let at = 0; at < data.length; at += max) {
        const part = data.subarray(at, at + max);
        await conn.request(C.MIG_DATA_WRITE, [
          encodeMigDataWriteRequest({ argsz: MIG_DATA + part.length, data: part }),
        ]);
      }
    },
  };
}

/**
 * DMA_LOGGING_REPORT in pieces the server can answer (see the header), into the caller's
 * bitmap, whose bits are only ever set ("LOGGING_REPORT will only set bits in the bitmap").
 * vfio_main.c's checks come first, so no piece is sent for a request the kernel would refuse:
 * page_size under 4 KiB or not a power of two EINVAL, iova + length past 2^64 EOVERFLOW, and a
 * bitmap the argsz cannot hold EINVAL.
 */
export async function dirtyReport(
  conn: Pick<Connection, 'request'>,
  negotiated: ClientNegotiated,
  arg: Uint8Array,
  argsz: number,
): Promise<number> {
  const op = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT';
  const cmd = 'VFIO_USER_DEVICE_FEATURE';
  const base = FEATURE_DATA;
  if (arg.length < base + REPORT.size) fail(Errno.EFAULT, op, `buffer of ${arg.length} bytes`);
  const r = REPORT.read(arg, base);
  if (r.page_size < MIN_LOG_PAGE_SIZE || (r.page_size & (r.page_size - 1n)) !== 0n)
    fail(Errno.EINVAL, op, `page_size 0x${r.page_size.toString(16)}`);
  if (rangeEnd(r.iova, r.length) === undefined) fail(Errno.EOVERFLOW, op, 'iova + length passes 2^64');
  const bytes = bitmapBytes(r.length, r.page_size);
  const first = base + REPORT.offsetOf('bitmap');
  if (BigInt(argsz - first) < bytes)
    fail(Errno.EINVAL, op, `argsz leaves no room for ${bytes} bytes of bitmap`);
  if (BigInt(arg.length - first) < bytes) fail(Errno.EFAULT, op, `buffer of ${arg.length} bytes`);
  const flags = deviceFeatureStruct.get(arg, 'flags');
  for (const p of reportPieces(r.iova, r.length, r.page_size, reportLimit(negotiated))) {
    const n = Number(bitmapBytes(p.length, r.page_size));
    // The request is the struct alone, argsz naming the room for the bitmap the reply brings
    // (libvfio-user handle_dma_device_feature_get: argsz >= header + report + bitmap, the reply
    // that long): a large bitmap does not ride on the request.
    const req = deviceFeatureStruct.encode({ argsz: first + n, flags }, REPORT.size);
    REPORT.write(req, { iova: p.iova, length: p.length, page_size: r.page_size }, base);
    const reply = await conn.request(C.DEVICE_FEATURE, [req], [], { maxReply: first + n });
    const got = reply.payload;
    if (got.length !== first + n)
      fail(Errno.EPROTO, cmd, `a report of ${got.length} bytes, ${first + n} expected`);
    const echo = REPORT.read(got, base);
    if (echo.iova !== p.iova || echo.length !== p.length || echo.page_size !== r.page_size)
      fail(Errno.EPROTO, cmd, 'the report is of another range');
    const into = arg.subarray(first + p.at, first + p.at + n);
    const bits = got.subarray(first, first + n);
    for (let i = 0; i < n; i++) into[i]! |= bits[i]!;
  }
  return 0;
}
