/**
 * The Identify data structures the driver reads (NVMe 1.4 §5.15.2): Identify Controller
 * (Figure 247, CNS 01h), Identify Namespace (Figure 245, CNS 00h) and the Active Namespace ID
 * list (CNS 02h). Decoding only; byte offsets as the figures give them.
 */
import { MalformedError } from '../../errors.js';
import { LBADS_MIN } from './spec.js';

export const IDENTIFY_BYTES = 4096;
/** Namespaces the driver looks at (the Active Namespace ID list holds at most 1024). */
export const MAX_NAMESPACES = 1024;

export interface ControllerIdentity {
  readonly vid: number;
  readonly ssvid: number;
  /** Serial Number, Model Number, Firmware Revision: ASCII, space padded (trimmed here). */
  readonly serial: string;
  readonly model: string;
  readonly firmware: string;
  /** Maximum Data Transfer Size: 2^MDTS minimum pages; 0 = no limit. */
  readonly mdts: number;
  readonly cntlid: number;
  /** VER as reported (e.g. 0x10400 for 1.4). */
  readonly version: number;
  /** SQES / CQES: required (bits 3:0) and maximum (7:4) entry sizes, log2. */
  readonly sqes: number;
  readonly cqes: number;
  /** Number of Namespaces (the largest valid NSID). */
  readonly nn: number;
  /** Optional NVM Command Support. */
  readonly oncs: number;
  /** Volatile Write Cache present (bit 0). */
  readonly vwc: number;
}

export interface NamespaceIdentity {
  readonly nsid: number;
  /** Namespace Size / Capacity / Utilization, in logical blocks. */
  readonly nsze: bigint;
  readonly ncap: bigint;
  readonly nuse: bigint;
  /** The LBA format in use (FLBAS bits 3:0) and its data size in bytes (2^LBADS). */
  readonly lbaFormat: number;
  readonly blockBytes: number;
  /** Metadata bytes per block in that format (LBAF.MS). */
  readonly metadataBytes: number;
}

function ascii(b: Uint8Array, from: number, to: number): string {
  let s = '';
  for (let i = from; i < to; i++) s += String.fromCharCode(b[i]!);
  return s.replace(/[\s\0]+$/, '');
}

function view(b: Uint8Array): DataView {
  if (b.length < IDENTIFY_BYTES)
    throw new MalformedError('Identify data', `${b.length} bytes, want ${IDENTIFY_BYTES}`);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function decodeControllerIdentity(b: Uint8Array): ControllerIdentity {
  const dv = view(b);
  return {
    vid: dv.getUint16(0, true),
    ssvid: dv.getUint16(2, true),
    serial: ascii(b, 4, 24),
    model: ascii(b, 24, 64),
    firmware: ascii(b, 64, 72),
    mdts: b[77]!,
    cntlid: dv.getUint16(78, true),
    version: dv.getUint32(80, true),
    sqes: b[512]!,
    cqes: b[513]!,
    nn: dv.getUint32(516, true),
    oncs: dv.getUint16(520, true),
    vwc: b[525]!,
  };
}

export function decodeNamespaceIdentity(nsid: number, b: Uint8Array): NamespaceIdentity {
  const dv = view(b);
  const lbaFormat = b[26]! & 0xf;
  const lbaf = dv.getUint32(128 + 4 * lbaFormat, true);
  const lbads = (lbaf >>> 16) & 0xff;
  if (lbads < LBADS_MIN || lbads > 31)
    throw new MalformedError(
      'Identify Namespace',
      `LBA format ${lbaFormat} has LBADS ${lbads} (a block of 2^${lbads} bytes)`,
    );
  return {
    nsid,
    nsze: dv.getBigUint64(0, true),
    ncap: dv.getBigUint64(8, true),
    nuse: dv.getBigUint64(16, true),
    lbaFormat,
    blockBytes: 2 ** lbads,
    metadataBytes: lbaf & 0xffff,
  };
}

/** NSIDs of the Active Namespace ID list, in increasing order, up to the first 0. */
export function decodeNamespaceList(b: Uint8Array): number[] {
  const dv = view(b);
  const out: number[] = [];
  for (let i = 0; i < MAX_NAMESPACES; i++) {
    const nsid = dv.getUint32(4 * i, true);
    if (nsid === 0) break;
    out.push(nsid);
  }
  return out;
}

/** "1.4.0" from VS/VER (§3.1.2: MJR 31:16, MNR 15:8, TER 7:0). */
export function versionText(v: number): string {
  return `${v >>> 16}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}
