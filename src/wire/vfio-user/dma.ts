/**
 * DMA_MAP, DMA_UNMAP (client to server) and DMA_READ, DMA_WRITE (server to client).
 *
 * DMA_READ/DMA_WRITE come in two layouts (docs/vfio-user-wire.md, "DMA_READ / DMA_WRITE"):
 * - `spec`: the spec and libvfio-user — address u64, count u64, data at 16;
 * - `qemu`: QEMU's VFIOUserDMARW — address u64, count u32, data at 12, and, the C struct being
 *   padded to 16 bytes, 4 zero bytes after the data, so the payload is 16 + count in both.
 * A DMA_READ *request* is the same 16 bytes in both (QEMU reads the low half of the u64 count).
 */
import {
  VFIO_USER_DMA_WRITE_REPLY_SPEC_TABLE_SIZE,
  VfioUserDmaUnmapFlags,
  vfio_user_dma_map,
  vfio_user_dma_region_access_qemu,
  vfio_user_dma_region_access_spec,
  vfio_user_dma_unmap,
} from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { checkRange64, checkU32, encodeFail, malformed, needBytes, U32_MAX } from './bytes.js';

const MAP_S = struct(vfio_user_dma_map);
const UNMAP_S = struct(vfio_user_dma_unmap);
const RW = { spec: struct(vfio_user_dma_region_access_spec), qemu: struct(vfio_user_dma_region_access_qemu) };

/** Which DMA_READ/DMA_WRITE layout the peer speaks. */
export type DmaLayout = 'spec' | 'qemu';

export interface DmaMap {
  /** Spec: the size of the structure (32); there is no reply payload. */
  readonly argsz: number;
  /** VfioUserDmaMapFlags: READ 1, WRITE 2. */
  readonly flags: number;
  /** Offset into the fd sent with the message; 0 when none is sent. */
  readonly offset: bigint;
  /** Base DMA address (IOVA). */
  readonly address: bigint;
  readonly size: bigint;
}

export interface DmaUnmap {
  readonly argsz: number;
  /** 0 or VfioUserDmaUnmapFlags.ALL. */
  readonly flags: number;
  readonly address: bigint;
  readonly size: bigint;
}

export interface DmaReadRequest {
  readonly address: bigint;
  readonly count: number;
}

/** DMA_READ reply and DMA_WRITE request: count is `data.byteLength`. */
export interface DmaData {
  readonly address: bigint;
  readonly data: Uint8Array;
}

/** DMA_WRITE reply: empty from QEMU; address and count from the spec and libvfio-user. */
export interface DmaWriteReply {
  readonly address?: bigint;
  readonly count?: number;
}

const MAP = 'VFIO_USER_DMA_MAP command';

/**
 * @throws MalformedError(EINVAL): payload under 32 bytes, argsz under 32 (libvfio-user
 * handle_dma_map), address + size past 2^64 (vfio_iommu_type1.c: vfio_dma_do_map).
 */
export function decodeDmaMap(p: Uint8Array): DmaMap {
  needBytes(MAP, p, MAP_S.size);
  const { argsz, flags, offset, address, size } = MAP_S.read(p);
  if (argsz < MAP_S.size) throw malformed(MAP, `argsz ${argsz} < ${MAP_S.size}`);
  checkRange64(MAP, address, size, 'address + size');
  return { argsz, flags, offset, address, size };
}

export function encodeDmaMap(m: DmaMap): Uint8Array {
  const out = new Uint8Array(MAP_S.size);
  MAP_S.writeChecked(out, m, MAP);
  return out;
}

/**
 * Request and reply (the reply echoes the request entry: spec, "DMA_UNMAP ... Reply").
 * @throws MalformedError(EINVAL): payload under 24 bytes; argsz under 24; the dirty-bitmap
 * variant (a struct vfio_bitmap follows; vfio-ts does no dirty tracking and QEMU never sends it);
 * unknown flag bits; ALL with a nonzero address or size (vfio_iommu_type1.c: vfio_dma_do_unmap,
 * libvfio-user is_valid_unmap); address + size past 2^64.
 */
export function decodeDmaUnmap(p: Uint8Array, type: 'command' | 'reply' = 'command'): DmaUnmap {
  const what = `VFIO_USER_DMA_UNMAP ${type}`;
  needBytes(what, p, UNMAP_S.size);
  const { argsz, flags, address, size } = UNMAP_S.read(p);
  const u: DmaUnmap = { argsz, flags, address, size };
  if (u.argsz < UNMAP_S.size) throw malformed(what, `argsz ${u.argsz} < ${UNMAP_S.size}`);
  if (u.flags & VfioUserDmaUnmapFlags.GET_DIRTY_BITMAP) {
    throw malformed(what, 'GET_DIRTY_BITMAP unmap is not supported');
  }
  if ((u.flags & ~VfioUserDmaUnmapFlags.ALL) >>> 0 !== 0) {
    throw malformed(what, `unknown flags 0x${u.flags.toString(16)}`);
  }
  if (u.flags & VfioUserDmaUnmapFlags.ALL && (u.address !== 0n || u.size !== 0n)) {
    throw malformed(what, 'UNMAP_ALL with a nonzero address or size');
  }
  checkRange64(what, u.address, u.size, 'address + size');
  return u;
}

export function encodeDmaUnmap(u: DmaUnmap): Uint8Array {
  const out = new Uint8Array(UNMAP_S.size);
  UNMAP_S.writeChecked(out, u, 'VFIO_USER_DMA_UNMAP');
  return out;
}

/** Reads the count of a DMA_READ/DMA_WRITE payload; a u64 count must fit 32 bits. */
function readCount(what: string, p: Uint8Array, layout: DmaLayout): number {
  if (layout === 'qemu') return RW.qemu.get(p, 'count');
  const c = RW.spec.get(p, 'count');
  if (c > BigInt(U32_MAX)) throw malformed(what, `count 0x${c.toString(16)} does not fit 32 bits`);
  return Number(c);
}

/**
 * DMA_READ command (server to client): 16 bytes in both layouts.
 * @throws MalformedError(EINVAL): payload under 16 bytes (QEMU pci.c: vfio_user_dma_read requires
 * msg_size >= 32); a u64 count past 32 bits; address + count past 2^64.
 */
export function decodeDmaReadRequest(p: Uint8Array, layout: DmaLayout = 'spec'): DmaReadRequest {
  const what = 'VFIO_USER_DMA_READ command';
  needBytes(what, p, RW.spec.size);
  const address = RW.spec.get(p, 'address');
  const count = readCount(what, p, layout);
  checkRange64(what, address, BigInt(count), 'address + count');
  return { address, count };
}

/** The same bytes for both layouts: address u64, count u64 (QEMU reads its low 32 bits). */
export function encodeDmaReadRequest(r: DmaReadRequest): Uint8Array {
  const what = 'VFIO_USER_DMA_READ';
  const out = new Uint8Array(RW.spec.size);
  RW.spec.check({ address: r.address }, what);
  RW.spec.write(out, { address: r.address, count: BigInt(checkU32(what, 'count', r.count)) });
  return out;
}

/**
 * DMA_READ reply or DMA_WRITE command: 16 + count bytes; data at 16 (`spec`) or 12 (`qemu`).
 * @throws MalformedError(EINVAL): payload under 16 bytes or not exactly 16 + count; a u64 count
 * past 32 bits; address + count past 2^64.
 */
export function decodeDmaData(p: Uint8Array, layout: DmaLayout, what: string): DmaData {
  needBytes(what, p, RW.spec.size);
  const address = RW.spec.get(p, 'address');
  const count = readCount(what, p, layout);
  const L = RW[layout];
  if (p.byteLength !== L.size + count) {
    throw malformed(what, `payload is ${p.byteLength} bytes, count ${count} needs ${L.size + count}`);
  }
  checkRange64(what, address, BigInt(count), 'address + count');
  const data = L.offsetOf('data');
  return { address, data: p.subarray(data, data + count) };
}

export function encodeDmaData(d: DmaData, layout: DmaLayout, what: string): Uint8Array {
  const count = d.data.byteLength;
  checkU32(what, 'count', count);
  const L = RW[layout];
  const out = new Uint8Array(L.size + count); // qemu: the 4 bytes after the data stay zero
  RW.spec.check({ address: d.address }, what);
  if (layout === 'qemu') RW.qemu.write(out, { address: d.address, count });
  else RW.spec.write(out, { address: d.address, count: BigInt(count) });
  out.set(d.data, L.offsetOf('data'));
  return out;
}

export const decodeDmaReadReply = (p: Uint8Array, layout: DmaLayout = 'spec'): DmaData =>
  decodeDmaData(p, layout, 'VFIO_USER_DMA_READ reply');
export const encodeDmaReadReply = (d: DmaData, layout: DmaLayout = 'spec'): Uint8Array =>
  encodeDmaData(d, layout, 'VFIO_USER_DMA_READ reply');
export const decodeDmaWriteRequest = (p: Uint8Array, layout: DmaLayout = 'spec'): DmaData =>
  decodeDmaData(p, layout, 'VFIO_USER_DMA_WRITE command');
export const encodeDmaWriteRequest = (d: DmaData, layout: DmaLayout = 'spec'): Uint8Array =>
  encodeDmaData(d, layout, 'VFIO_USER_DMA_WRITE command');

/**
 * DMA_WRITE reply, told apart by length whatever the layout: 0 bytes (QEMU), 12 (the spec's table:
 * address u64, count u32) or 16 and more (libvfio-user: address u64, count u64).
 * @throws MalformedError(EINVAL) for 1..11 bytes or a u64 count past 32 bits.
 */
export function decodeDmaWriteReply(p: Uint8Array): DmaWriteReply {
  const what = 'VFIO_USER_DMA_WRITE reply';
  if (p.byteLength === 0) return {};
  needBytes(what, p, VFIO_USER_DMA_WRITE_REPLY_SPEC_TABLE_SIZE);
  const address = RW.spec.get(p, 'address');
  // 12..15 bytes: the spec table's u32 count, where QEMU's layout keeps its count too.
  const count = p.byteLength < RW.spec.size ? RW.qemu.get(p, 'count') : readCount(what, p, 'spec');
  return { address, count };
}

/** `spec`: 16 bytes (what libvfio-user reads); `qemu`: empty (what QEMU sends). */
export function encodeDmaWriteReply(r: DmaWriteReply, layout: DmaLayout = 'spec'): Uint8Array {
  const what = 'VFIO_USER_DMA_WRITE reply';
  if (layout === 'qemu') return new Uint8Array(0);
  if (r.address === undefined || r.count === undefined) {
    encodeFail(what, 'the spec layout needs address and count');
  }
  const out = new Uint8Array(RW.spec.size);
  RW.spec.check({ address: r.address }, what);
  RW.spec.write(out, { address: r.address, count: BigInt(checkU32(what, 'count', r.count)) });
  return out;
}
