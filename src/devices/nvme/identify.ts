/**
 * The data structures the Identify command returns (NVMe 1.4 §5.15): Identify Controller,
 * Identify Namespace (NVM Command Set), the active namespace list and the Namespace
 * Identification Descriptor list. 4096 bytes each, little endian, strings ASCII padded with
 * spaces (§1.5 conventions).
 */
import { createHash } from 'node:crypto';
import { ERROR_LOG_ENTRIES, MAX_OUTSTANDING_AERS } from './events.js';
import { CQES_LOG2, SQES_LOG2 } from './spec.js';

export const IDENTIFY_SIZE = 4096;
/** MDTS: transfers up to 2^7 pages of CAP.MPSMIN (4 KiB): 512 KiB, like QEMU's default. */
export const MDTS = 7;
/**
 * The largest MDTS the controller can be built with (NvmeControllerOptions.mdts): 4 MiB, so the
 * commands in flight (MAX_INFLIGHT, engine.ts) hold at most 128 x 4 MiB of data buffers.
 */
export const MAX_MDTS = 10;
/** Bytes one command may transfer under `mdts` (§5.15.2.1: 2^MDTS units of CAP.MPSMIN). */
export function maxTransfer(mdts: number): number {
  return 4096 * 2 ** mdts;
}
/** The one namespace this controller has (NN = 1). */
export const NSID = 1;
/** Composite temperature the controller reports, in kelvins (SMART log, §5.14.1.2). */
export const TEMPERATURE_K = 310;
/** Identify Controller WCTEMP / CCTEMP: warning and critical composite temperature (kelvins). */
export const WCTEMP_K = 343;
export const CCTEMP_K = 373;
/** Identify Controller VWC: a volatile write cache is present (bit 0); Flush takes NSID FFFFFFFFh (bits 2:1 = 11b). */
export const VWC = 0x07;
/** ONCS: Dataset Management (bit 2) and Write Zeroes (bit 3). */
export const ONCS = 0x0c;
/** DLFEAT: deallocated blocks read as zeroes (bits 2:0 = 001b); Write Zeroes honours DEAC (bit 3). */
export const DLFEAT = 0x09;

export interface IdentityOptions {
  readonly serial: string;
  readonly model: string;
  readonly firmware: string;
  /** Bytes per logical block. */
  readonly blockSize: 512 | 4096;
  /** Namespace size in bytes. */
  readonly size: number;
  /** Identify Controller MDTS. */
  readonly mdts: number;
}

/** An ASCII field: `pad` after the text (spaces for SN/MN/FR, NUL for SUBNQN). */
function ascii(b: Uint8Array, at: number, len: number, s: string, pad = 0x20): void {
  for (let i = 0; i < len; i++) b[at + i] = i < s.length ? s.charCodeAt(i) & 0x7f : pad;
}

/** NVM Subsystem NVMe Qualified Name (§7.9): ours, under a domain we name, keyed by serial. */
export function subsystemNqn(serial: string): string {
  return `nqn.2024-12.dev.vfio-ts:nvme:${serial}`;
}

/** Identify Controller (CNS 01h): the Identify Controller data structure. */
export function identifyController(o: IdentityOptions): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, 0x1b36, true); // VID: Red Hat, as QEMU's nvme (PCI vendor of the function)
  v.setUint16(2, 0x1af4, true); // SSVID
  ascii(b, 4, 20, o.serial);
  ascii(b, 24, 40, o.model);
  ascii(b, 64, 8, o.firmware);
  b[72] = 6; // RAB: arbitration burst 2^6
  b[77] = o.mdts;
  v.setUint16(78, 0, true); // CNTLID
  v.setUint32(80, 0x0001_0400, true); // VER = VS
  b[111] = 1; // CNTRLTYPE: I/O controller
  // OACS 0: no Security, Format, Firmware, Namespace Management, Doorbell Buffer Config.
  b[258] = 3; // ACL: 4 Abort commands (0-based)
  b[259] = MAX_OUTSTANDING_AERS - 1; // AERL, 0-based
  b[260] = 0x03; // FRMW: one slot (bits 3:1 = 1), slot 1 read-only (bit 0)
  b[261] = 0x04; // LPA: extended data for Get Log Page (NUMDU, LPOL/LPOU)
  b[262] = ERROR_LOG_ENTRIES - 1; // ELPE, 0-based
  b[263] = 0; // NPSS: one power state
  v.setUint16(266, WCTEMP_K, true);
  v.setUint16(268, CCTEMP_K, true);
  b[512] = (SQES_LOG2 << 4) | SQES_LOG2; // SQES: required and maximum 2^6
  b[513] = (CQES_LOG2 << 4) | CQES_LOG2; // CQES: 2^4
  v.setUint32(516, 1, true); // NN
  v.setUint16(520, ONCS, true);
  b[525] = VWC;
  b[530] = 1; // NVSCC: vendor specific commands use the standard format
  // SGLS (536) 0: PRPs only.
  ascii(b, 768, 256, subsystemNqn(o.serial), 0); // SUBNQN: a NUL-terminated string
  // PSD0 (2048): 25.00 W maximum, entry/exit latencies not reported.
  v.setUint16(2048, 2500, true);
  return b;
}

/** NGUID and EUI-64 of the namespace: stable for a serial number (Linux compares them on rescan). */
export function namespaceIds(serial: string): { nguid: Uint8Array; eui64: Uint8Array } {
  const h = createHash('sha256').update(`vfio-ts nvme ${serial} ns ${NSID}`).digest();
  return { nguid: new Uint8Array(h.subarray(0, 16)), eui64: new Uint8Array(h.subarray(16, 24)) };
}

/** Identify Namespace (CNS 00h), the NVM Command Set's data structure: one LBA format, no metadata. */
export function identifyNamespace(o: IdentityOptions): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const v = new DataView(b.buffer);
  const blocks = BigInt(o.size / o.blockSize);
  v.setBigUint64(0, blocks, true); // NSZE
  v.setBigUint64(8, blocks, true); // NCAP
  v.setBigUint64(16, blocks, true); // NUSE: not thin provisioned (NSFEAT bit 0 clear)
  b[25] = 0; // NLBAF: one format (0-based)
  b[26] = 0; // FLBAS: format 0, no metadata
  b[33] = DLFEAT;
  const { nguid, eui64 } = namespaceIds(o.serial);
  b.set(nguid, 104);
  b.set(eui64, 120);
  v.setUint32(128, (o.blockSize === 4096 ? 12 : 9) << 16, true); // LBAF0: LBADS, MS 0, RP 0
  return b;
}

/** Active Namespace ID list (CNS 02h): namespaces with an ID greater than `after`. */
export function activeNamespaces(after: number): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  if (after < NSID) new DataView(b.buffer).setUint32(0, NSID, true);
  return b;
}

/** Namespace Identification Descriptor list (CNS 03h): NGUID then EUI-64. */
export function namespaceDescriptors(serial: string): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const { nguid, eui64 } = namespaceIds(serial);
  b[0] = 2; // NIDT: NGUID
  b[1] = 16; // NIDL
  b.set(nguid, 4);
  b[20] = 1; // NIDT: EUI-64
  b[21] = 8;
  b.set(eui64, 24);
  return b;
}
