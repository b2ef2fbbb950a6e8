/**
 * DEVICE_FEATURE (spec; vfio.h struct vfio_device_feature), the data of the features the spec
 * lists, and MIG_DATA_READ / MIG_DATA_WRITE (libvfio-user struct vfio_user_mig_data).
 *
 * QEMU 11's vfio-user client does no migration and sends none of these; libvfio-user serves
 * them. vfio-ts decodes them so that a server can answer precisely.
 */
import {
  vfio_user_device_feature,
  vfio_user_dma_logging_control,
  vfio_user_dma_logging_range,
  vfio_user_dma_logging_report,
  vfio_user_feature_mig_state,
  vfio_user_feature_migration,
  vfio_user_mig_data,
} from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { checkRange64, malformed, needBytes } from './bytes.js';
import type { MessageType } from './header.js';

const FEATURE = struct(vfio_user_device_feature);
const MIGRATION = struct(vfio_user_feature_migration);
const MIG_STATE = struct(vfio_user_feature_mig_state);
const LOG_CONTROL = struct(vfio_user_dma_logging_control);
const LOG_RANGE = struct(vfio_user_dma_logging_range);
const LOG_REPORT = struct(vfio_user_dma_logging_report);
const MIG_DATA = struct(vfio_user_mig_data);

export interface DeviceFeature {
  /** Command: the largest reply the client takes. Reply: this payload's size. */
  readonly argsz: number;
  /** Feature index in bits 0-15 (VfioUserFeatureFlags.MASK) | GET / SET / PROBE. */
  readonly flags: number;
  /** Feature-specific; a view into the payload. */
  readonly data: Uint8Array;
}

/**
 * Command and reply: argsz, flags, then the feature's data.
 * @throws MalformedError(EINVAL): payload under 8 bytes; in a command, argsz under 8
 * (vfio_main.c: vfio_ioctl_device_feature's minsz).
 */
export function decodeDeviceFeature(p: Uint8Array, type: MessageType = 'command'): DeviceFeature {
  const what = `VFIO_USER_DEVICE_FEATURE ${type}`;
  needBytes(what, p, FEATURE.size);
  const { argsz, flags } = FEATURE.read(p);
  const f = { argsz, flags, data: p.subarray(FEATURE.offsetOf('data')) };
  if (type === 'command' && f.argsz < FEATURE.size)
    throw malformed(what, `argsz ${f.argsz} < ${FEATURE.size}`);
  return f;
}

export function encodeDeviceFeature(f: DeviceFeature): Uint8Array {
  const out = new Uint8Array(FEATURE.size + f.data.byteLength);
  FEATURE.writeChecked(out, { argsz: f.argsz, flags: f.flags }, 'VFIO_USER_DEVICE_FEATURE');
  out.set(f.data, FEATURE.offsetOf('data'));
  return out;
}

/** VFIO_DEVICE_FEATURE_MIGRATION data (GET reply): u64 flags, VfioUserMigrationFlags. */
export interface FeatureMigration {
  readonly flags: bigint;
}

export function decodeFeatureMigration(data: Uint8Array): FeatureMigration {
  needBytes('VFIO_DEVICE_FEATURE_MIGRATION data', data, MIGRATION.size, 'data');
  return { flags: MIGRATION.get(data, 'flags') };
}

export function encodeFeatureMigration(m: FeatureMigration): Uint8Array {
  const out = new Uint8Array(MIGRATION.size);
  MIGRATION.writeChecked(out, m, 'VFIO_DEVICE_FEATURE_MIGRATION');
  return out;
}

/** VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data: VfioUserMigState, and data_fd (unused in vfio-user). */
export interface FeatureMigState {
  readonly deviceState: number;
  readonly dataFd: number;
}

export function decodeFeatureMigState(data: Uint8Array): FeatureMigState {
  needBytes('VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data', data, MIG_STATE.size, 'data');
  const { device_state, data_fd } = MIG_STATE.read(data);
  return { deviceState: device_state, dataFd: data_fd };
}

export function encodeFeatureMigState(s: FeatureMigState): Uint8Array {
  const out = new Uint8Array(MIG_STATE.size);
  const value = { device_state: s.deviceState, data_fd: s.dataFd };
  MIG_STATE.writeChecked(out, value, 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE');
  return out;
}

export interface DmaLoggingRange {
  readonly iova: bigint;
  readonly length: bigint;
}

/** VFIO_DEVICE_FEATURE_DMA_LOGGING_START data. */
export interface DmaLoggingControl {
  readonly pageSize: bigint;
  readonly ranges: readonly DmaLoggingRange[];
}

/** @throws MalformedError(EINVAL): under 16 bytes; num_ranges entries missing; a range wraps. */
export function decodeDmaLoggingControl(data: Uint8Array): DmaLoggingControl {
  const what = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_START data';
  needBytes(what, data, LOG_CONTROL.size, 'data');
  const { page_size, num_ranges: n } = LOG_CONTROL.read(data);
  if (n > (data.byteLength - LOG_CONTROL.size) / LOG_RANGE.size)
    throw malformed(what, `num_ranges ${n} do not fit`);
  const ranges: DmaLoggingRange[] = [];
  for (let i = 0; i < n; i++) {
    const r = LOG_RANGE.read(data, LOG_CONTROL.offsetOf('ranges') + i * LOG_RANGE.size);
    checkRange64(what, r.iova, r.length, `range ${i} iova + length`);
    ranges.push(r);
  }
  return { pageSize: page_size, ranges };
}

export function encodeDmaLoggingControl(c: DmaLoggingControl): Uint8Array {
  const what = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_START';
  const out = new Uint8Array(LOG_CONTROL.size + c.ranges.length * LOG_RANGE.size);
  LOG_CONTROL.writeChecked(out, { page_size: c.pageSize, num_ranges: c.ranges.length }, what);
  c.ranges.forEach((r, i) => {
    LOG_RANGE.writeChecked(out, r, what, LOG_CONTROL.offsetOf('ranges') + i * LOG_RANGE.size);
  });
  return out;
}

/** VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT data; the reply appends the bitmap. */
export interface DmaLoggingReport {
  readonly iova: bigint;
  readonly length: bigint;
  readonly pageSize: bigint;
  readonly bitmap: Uint8Array;
}

export function decodeDmaLoggingReport(data: Uint8Array): DmaLoggingReport {
  const what = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT data';
  needBytes(what, data, LOG_REPORT.size, 'data');
  const { iova, length, page_size } = LOG_REPORT.read(data);
  const r = { iova, length, pageSize: page_size, bitmap: data.subarray(LOG_REPORT.offsetOf('bitmap')) };
  checkRange64(what, r.iova, r.length, 'iova + length');
  return r;
}

export function encodeDmaLoggingReport(r: DmaLoggingReport): Uint8Array {
  const out = new Uint8Array(LOG_REPORT.size + r.bitmap.byteLength);
  const value = { iova: r.iova, length: r.length, page_size: r.pageSize };
  LOG_REPORT.writeChecked(out, value, 'VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT');
  out.set(r.bitmap, LOG_REPORT.offsetOf('bitmap'));
  return out;
}

// ---------------------------------------------------------------------------------------------
// MIG_DATA_READ / MIG_DATA_WRITE
// ---------------------------------------------------------------------------------------------
export interface MigDataReadRequest {
  readonly argsz: number;
  /** Bytes of migration data asked for. */
  readonly size: number;
}

/** MIG_DATA_READ reply and MIG_DATA_WRITE command: size is `data.byteLength`. */
export interface MigData {
  readonly argsz: number;
  readonly data: Uint8Array;
}

/** @throws MalformedError(EINVAL): payload under 8 bytes (libvfio-user handle_mig_data_read). */
export function decodeMigDataReadRequest(p: Uint8Array): MigDataReadRequest {
  needBytes('VFIO_USER_MIG_DATA_READ command', p, MIG_DATA.size);
  const { argsz, size } = MIG_DATA.read(p);
  return { argsz, size };
}

export function encodeMigDataReadRequest(r: MigDataReadRequest): Uint8Array {
  const out = new Uint8Array(MIG_DATA.size);
  MIG_DATA.writeChecked(out, r, 'VFIO_USER_MIG_DATA_READ');
  return out;
}

/**
 * MIG_DATA_READ reply / MIG_DATA_WRITE command: argsz, size, then exactly `size` bytes.
 * @throws MalformedError(EINVAL): payload under 8 bytes; data length not equal to size
 * (libvfio-user handle_mig_data_write: "short write").
 */
export function decodeMigData(p: Uint8Array, what: string): MigData {
  needBytes(what, p, MIG_DATA.size);
  const { argsz, size } = MIG_DATA.read(p);
  if (p.byteLength - MIG_DATA.size !== size)
    throw malformed(what, `size ${size} but ${p.byteLength - MIG_DATA.size} data bytes`);
  return { argsz, data: p.subarray(MIG_DATA.offsetOf('data')) };
}

export function encodeMigData(m: MigData, what: string): Uint8Array {
  const out = new Uint8Array(MIG_DATA.size + m.data.byteLength);
  MIG_DATA.writeChecked(out, { argsz: m.argsz, size: m.data.byteLength }, what);
  out.set(m.data, MIG_DATA.offsetOf('data'));
  return out;
}

/**
 * MIG_DATA_READ reply: argsz, size, then `size` bytes of data, possibly followed by padding.
 * libvfio-user (lib/migration.c handle_mig_data_read) sizes the reply for the bytes asked
 * (`iov_len = in + req->size`, calloc'ed) and says in `size` how many it read: the bytes past
 * `size` are zeros, not data. The caller bounds the reply to 8 + the size it asked for.
 * @throws MalformedError(EINVAL): payload under 8 bytes, or fewer data bytes than `size`
 */
export function decodeMigDataReadReply(p: Uint8Array): MigData {
  const what = 'VFIO_USER_MIG_DATA_READ reply';
  needBytes(what, p, MIG_DATA.size);
  const { argsz, size } = MIG_DATA.read(p);
  const start = MIG_DATA.offsetOf('data');
  if (p.byteLength - start < size)
    throw malformed(what, `size ${size} but ${p.byteLength - start} data bytes`);
  return { argsz, data: p.subarray(start, start + size) };
}
export const encodeMigDataReadReply = (m: MigData): Uint8Array =>
  encodeMigData(m, 'VFIO_USER_MIG_DATA_READ reply');
export const decodeMigDataWriteRequest = (p: Uint8Array): MigData =>
  decodeMigData(p, 'VFIO_USER_MIG_DATA_WRITE command');
export const encodeMigDataWriteRequest = (m: MigData): Uint8Array =>
  encodeMigData(m, 'VFIO_USER_MIG_DATA_WRITE command');
