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
import { checkRange64, checkU32, checkU64, LE, malformed, needBytes, view } from './bytes.js';
import type { MessageType } from './header.js';

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
  const L = vfio_user_device_feature;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const f = { argsz: dv.getUint32(L.argsz, LE), flags: dv.getUint32(L.flags, LE), data: p.subarray(L.data) };
  if (type === 'command' && f.argsz < L.SIZEOF) throw malformed(what, `argsz ${f.argsz} < ${L.SIZEOF}`);
  return f;
}

export function encodeDeviceFeature(f: DeviceFeature): Uint8Array {
  const what = 'VFIO_USER_DEVICE_FEATURE';
  const L = vfio_user_device_feature;
  const out = new Uint8Array(L.SIZEOF + f.data.byteLength);
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', f.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', f.flags), LE);
  out.set(f.data, L.data);
  return out;
}

/** VFIO_DEVICE_FEATURE_MIGRATION data (GET reply): u64 flags, VfioUserMigrationFlags. */
export interface FeatureMigration {
  readonly flags: bigint;
}

export function decodeFeatureMigration(data: Uint8Array): FeatureMigration {
  needBytes('VFIO_DEVICE_FEATURE_MIGRATION data', data, vfio_user_feature_migration.SIZEOF, 'data');
  return { flags: view(data).getBigUint64(vfio_user_feature_migration.flags, LE) };
}

export function encodeFeatureMigration(m: FeatureMigration): Uint8Array {
  const out = new Uint8Array(vfio_user_feature_migration.SIZEOF);
  view(out).setBigUint64(0, checkU64('VFIO_DEVICE_FEATURE_MIGRATION', 'flags', m.flags), LE);
  return out;
}

/** VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data: VfioUserMigState, and data_fd (unused in vfio-user). */
export interface FeatureMigState {
  readonly deviceState: number;
  readonly dataFd: number;
}

export function decodeFeatureMigState(data: Uint8Array): FeatureMigState {
  const L = vfio_user_feature_mig_state;
  needBytes('VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data', data, L.SIZEOF, 'data');
  const dv = view(data);
  return { deviceState: dv.getUint32(L.device_state, LE), dataFd: dv.getUint32(L.data_fd, LE) };
}

export function encodeFeatureMigState(s: FeatureMigState): Uint8Array {
  const what = 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE';
  const L = vfio_user_feature_mig_state;
  const out = new Uint8Array(L.SIZEOF);
  const dv = view(out);
  dv.setUint32(L.device_state, checkU32(what, 'device_state', s.deviceState), LE);
  dv.setUint32(L.data_fd, checkU32(what, 'data_fd', s.dataFd), LE);
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
  const C = vfio_user_dma_logging_control;
  const R = vfio_user_dma_logging_range;
  needBytes(what, data, C.SIZEOF, 'data');
  const dv = view(data);
  const n = dv.getUint32(C.num_ranges, LE);
  if (n > (data.byteLength - C.SIZEOF) / R.SIZEOF) throw malformed(what, `num_ranges ${n} do not fit`);
  const ranges: DmaLoggingRange[] = [];
  for (let i = 0; i < n; i++) {
    const at = C.ranges + i * R.SIZEOF;
    const r = { iova: dv.getBigUint64(at + R.iova, LE), length: dv.getBigUint64(at + R.length, LE) };
    checkRange64(what, r.iova, r.length, `range ${i} iova + length`);
    ranges.push(r);
  }
  return { pageSize: dv.getBigUint64(C.page_size, LE), ranges };
}

export function encodeDmaLoggingControl(c: DmaLoggingControl): Uint8Array {
  const what = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_START';
  const C = vfio_user_dma_logging_control;
  const R = vfio_user_dma_logging_range;
  const out = new Uint8Array(C.SIZEOF + c.ranges.length * R.SIZEOF);
  const dv = view(out);
  dv.setBigUint64(C.page_size, checkU64(what, 'page_size', c.pageSize), LE);
  dv.setUint32(C.num_ranges, c.ranges.length, LE);
  c.ranges.forEach((r, i) => {
    dv.setBigUint64(C.ranges + i * R.SIZEOF + R.iova, checkU64(what, 'iova', r.iova), LE);
    dv.setBigUint64(C.ranges + i * R.SIZEOF + R.length, checkU64(what, 'length', r.length), LE);
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
  const L = vfio_user_dma_logging_report;
  needBytes(what, data, L.SIZEOF, 'data');
  const dv = view(data);
  const r = {
    iova: dv.getBigUint64(L.iova, LE),
    length: dv.getBigUint64(L.length, LE),
    pageSize: dv.getBigUint64(L.page_size, LE),
    bitmap: data.subarray(L.bitmap),
  };
  checkRange64(what, r.iova, r.length, 'iova + length');
  return r;
}

export function encodeDmaLoggingReport(r: DmaLoggingReport): Uint8Array {
  const what = 'VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT';
  const L = vfio_user_dma_logging_report;
  const out = new Uint8Array(L.SIZEOF + r.bitmap.byteLength);
  const dv = view(out);
  dv.setBigUint64(L.iova, checkU64(what, 'iova', r.iova), LE);
  dv.setBigUint64(L.length, checkU64(what, 'length', r.length), LE);
  dv.setBigUint64(L.page_size, checkU64(what, 'page_size', r.pageSize), LE);
  out.set(r.bitmap, L.bitmap);
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
  const L = vfio_user_mig_data;
  needBytes('VFIO_USER_MIG_DATA_READ command', p, L.SIZEOF);
  const dv = view(p);
  return { argsz: dv.getUint32(L.argsz, LE), size: dv.getUint32(L.size, LE) };
}

export function encodeMigDataReadRequest(r: MigDataReadRequest): Uint8Array {
  const what = 'VFIO_USER_MIG_DATA_READ';
  const L = vfio_user_mig_data;
  const out = new Uint8Array(L.SIZEOF);
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', r.argsz), LE);
  dv.setUint32(L.size, checkU32(what, 'size', r.size), LE);
  return out;
}

/**
 * MIG_DATA_READ reply / MIG_DATA_WRITE command: argsz, size, then exactly `size` bytes.
 * @throws MalformedError(EINVAL): payload under 8 bytes; data length not equal to size
 * (libvfio-user handle_mig_data_write: "short write").
 */
export function decodeMigData(p: Uint8Array, what: string): MigData {
  const L = vfio_user_mig_data;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const size = dv.getUint32(L.size, LE);
  if (p.byteLength - L.SIZEOF !== size)
    throw malformed(what, `size ${size} but ${p.byteLength - L.SIZEOF} data bytes`);
  return { argsz: dv.getUint32(L.argsz, LE), data: p.subarray(L.data) };
}

export function encodeMigData(m: MigData, what: string): Uint8Array {
  const L = vfio_user_mig_data;
  const out = new Uint8Array(L.SIZEOF + m.data.byteLength);
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', m.argsz), LE);
  dv.setUint32(L.size, checkU32(what, 'size', m.data.byteLength), LE);
  out.set(m.data, L.data);
  return out;
}

export const decodeMigDataReadReply = (p: Uint8Array): MigData =>
  decodeMigData(p, 'VFIO_USER_MIG_DATA_READ reply');
export const encodeMigDataReadReply = (m: MigData): Uint8Array =>
  encodeMigData(m, 'VFIO_USER_MIG_DATA_READ reply');
export const decodeMigDataWriteRequest = (p: Uint8Array): MigData =>
  decodeMigData(p, 'VFIO_USER_MIG_DATA_WRITE command');
export const encodeMigDataWriteRequest = (m: MigData): Uint8Array =>
  encodeMigData(m, 'VFIO_USER_MIG_DATA_WRITE command');
