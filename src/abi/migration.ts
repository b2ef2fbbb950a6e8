/**
 * vfio-ts's migration stream (docs/migration.md, "Stream format"): what a device's saving
 * session emits and a resuming session takes, opaque to the user as vfio.h requires ("The user
 * must consider the migration data stream ... to be opaque"). Ours, so the layouts are
 * origin 'vfio-ts'; src/core/migration/stream.ts reads and writes them.
 *
 *   header   magic, version, header length, PCI identity, a fingerprint of the device's
 *            description, the device's name
 *   sections type, id, length, then `length` bytes:
 *              MEMORY    (id: memory area) u64 offset, then bytes of the area from there
 *              PCI       config space and the INTx line (a state value)
 *              STATE     the device's plain-data `state` (a state value)
 *              MODEL     what the device's model saves besides (a state value)
 *              END       SHA-256 of every byte before it
 * Integers are little endian.
 */
import { bytes, field, layout } from './layout.js';

/** "vfiotsmg": the first 8 bytes of every stream. */
export const MIG_STREAM_MAGIC = new Uint8Array([0x76, 0x66, 0x69, 0x6f, 0x74, 0x73, 0x6d, 0x67]);
/** The stream version this code writes and the only one it reads. */
export const MIG_STREAM_VERSION = 1;

export const vfio_ts_mig_header = layout('vfio_ts_mig_header', 48, 'vfio-ts', {
  magic: bytes(0, 8),
  version: field(8, 'u32'),
  /** Bytes of the header with the name: 48 + name_len. */
  header_len: field(12, 'u32'),
  vendor: field(16, 'u16'),
  device: field(18, 'u16'),
  subsystem_vendor: field(20, 'u16'),
  subsystem: field(22, 'u16'),
  /** Class code << 8 | revision. */
  class_rev: field(24, 'u32'),
  name_len: field(28, 'u16'),
  flags: field(30, 'u16'),
  /** The first 16 bytes of SHA-256 over the device's description and config layout. */
  fingerprint: bytes(32, 16),
  name: bytes(48),
});

export const vfio_ts_mig_section = layout('vfio_ts_mig_section', 16, 'vfio-ts', {
  type: field(0, 'u16'),
  reserved: field(2, 'u16'),
  id: field(4, 'u32'),
  length: field(8, 'u64'),
  data: bytes(16),
});

/** Section types, in the order a stream must carry them (MEMORY repeats; END is last). */
export const MigSection = {
  MEMORY: 1,
  PCI: 2,
  STATE: 3,
  MODEL: 4,
  END: 0xffff,
} as const;

/** Memory area ids: BAR n is n; the model's own areas (DeviceModel.migration.memory) follow. */
export const MIG_MODEL_AREA_BASE = 0x100;

/** Bytes of the END section's payload: a SHA-256 digest. */
export const MIG_DIGEST_SIZE = 32;
