/**
 * What the client knows of the server's regions: learned from DEVICE_GET_REGION_INFO replies,
 * each with the fd that came with it (the BAR's memory, whose offset `fdOffset` is the region's
 * byte 0) and the facts mmap needs (sparse areas, whether it is a WC alias region).
 *
 * A reply is checked before anything is learned from it: the index asked for, at most our argsz
 * of payload and one fd (QEMU hw/vfio-user/device.c takes one), a capability chain that stays
 * inside the bytes (the decoder), an argsz of at least the struct. The fd is kept only for a
 * region with the MMAP flag whose reply fit whole (spec "VFIO_USER_DEVICE_GET_REGION_INFO": the
 * fd is what mmap maps); any other is closed at once. A server that keeps raising the argsz it
 * asks for (the argsz exchange would go on for ever) is EPROTO.
 */
import { Errno } from '../abi/errno.js';
import {
  aliasRegionBar,
  VFIO_PCI_NUM_REGIONS,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  vfio_region_info,
} from '../abi/vfio.js';
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import { fail, VfioError } from '../errors.js';
import { closeFd } from '../native/index.js';
import {
  decodeRegionInfoReply,
  encodeRegionInfoRequest,
  type RegionInfo as WireRegionInfo,
} from '../wire/vfio-user.js';
import { type Connection, closeFds, decodeOrProto } from './connection.js';
import { MAX_REGION_INFO_REPLY } from './limits.js';
import type { ClientOffsets } from './offsets.js';

export interface RegionState {
  readonly index: number;
  readonly size: bigint;
  readonly flags: number;
  /** Sparse mmap areas (undefined: the whole region may be mapped). */
  readonly sparse: readonly { offset: bigint; size: bigint }[] | undefined;
  /** A WC alias region (docs/vfio-user-wc.md §4): type cap PCI_BAR0_WC + bar, subtype ALIAS_WC. */
  readonly alias: boolean;
  fd: number | undefined;
  /** Offset in `fd` of the region's byte 0 (the reply's `offset`). */
  fdOffset: bigint;
}

export class RegionTable {
  readonly #regions = new Map<number, RegionState>();
  /** The argsz each region's last cut-short reply asked for. */
  readonly #demands = new Map<number, number>();

  constructor(
    private readonly conn: Pick<Connection, 'request'>,
    private readonly offsets: ClientOffsets,
  ) {}

  /** Asks the server for region `index` with `argsz`; learns the region and keeps its fd. */
  async fetch(index: number, argsz: number): Promise<{ info: WireRegionInfo; payload: Uint8Array }> {
    const op = 'VFIO_USER_DEVICE_GET_REGION_INFO';
    const r = await this.conn.request(
      C.DEVICE_GET_REGION_INFO,
      [encodeRegionInfoRequest({ argsz, flags: 0, index, capOffset: 0, size: 0n, offset: 0n })],
      [],
      { replyFds: 1, maxReply: argsz },
    );
    let fd: number | undefined;
    try {
      const info = decodeOrProto(op, () => decodeRegionInfoReply(r.payload));
      if (info.index !== index) fail(Errno.EPROTO, op, `asked for region ${index}, got ${info.index}`);
      if (info.argsz < vfio_region_info.size) fail(Errno.EPROTO, op, `argsz ${info.argsz} < 32`);
      const whole = info.argsz <= argsz;
      const demand = this.#demands.get(index);
      if (!whole && demand !== undefined && argsz >= demand)
        fail(Errno.EPROTO, op, `region ${index} asked for argsz ${demand}, then ${info.argsz}`);
      if (whole) this.#demands.delete(index);
      else this.#demands.set(index, info.argsz);
      if (whole && info.flags & VFIO_REGION_INFO_FLAG_MMAP) fd = r.fds[0];
      this.#learn(info, fd);
      return { info, payload: r.payload };
    } finally {
      closeFds(r.fds.filter((x) => x !== fd));
    }
  }

  #learn(info: WireRegionInfo, fd: number | undefined): void {
    let sparse: { offset: bigint; size: bigint }[] | undefined;
    let alias = false;
    for (const c of info.caps) {
      if (c.kind === 'sparse-mmap') sparse = c.areas.map((a) => ({ offset: a.offset, size: a.size }));
      else if (
        c.kind === 'type' &&
        info.index >= VFIO_PCI_NUM_REGIONS &&
        aliasRegionBar(c.type, c.subtype) !== undefined
      )
        alias = true;
    }
    const old = this.#regions.get(info.index);
    // A reply cut short (CAPS set, argsz too small for the chain) says nothing about the caps.
    const capsKnown = !(info.flags & VFIO_REGION_INFO_FLAG_CAPS) || info.caps.length > 0;
    const state: RegionState = {
      index: info.index,
      size: info.size,
      flags: info.flags,
      sparse: capsKnown ? sparse : old?.sparse,
      alias: capsKnown ? alias : (old?.alias ?? false),
      fd: old?.fd,
      fdOffset: old?.fdOffset ?? 0n,
    };
    if (fd !== undefined) {
      if (state.fd !== undefined) closeFd(state.fd);
      state.fd = fd;
      state.fdOffset = info.offset;
    }
    this.#regions.set(info.index, state);
    this.offsets.addRegion(info.index);
  }

  /** The region's state, asking the server when unknown (`withFd`: until its fd is here). */
  async get(index: number, withFd = false): Promise<RegionState> {
    let r = this.#regions.get(index);
    if (!r) {
      await this.fetch(index, vfio_region_info.size);
      r = this.#regions.get(index)!;
    }
    if (withFd && r.fd === undefined && r.flags & VFIO_REGION_INFO_FLAG_MMAP) {
      // The argsz exchange: the fd travels only with a reply that fit whole (vfio-user-wc.md §1).
      const { info } = await this.fetch(index, MAX_REGION_INFO_REPLY);
      if (info.argsz > MAX_REGION_INFO_REPLY)
        fail(Errno.E2BIG, 'VFIO_DEVICE_GET_REGION_INFO', `argsz ${info.argsz}`);
      r = this.#regions.get(index)!;
    }
    return r;
  }

  /** As `get`, a region the server does not have being EINVAL for `op`. */
  async getOrEinval(index: number, op: string, withFd = false): Promise<RegionState> {
    try {
      return await this.get(index, withFd);
    } catch (e) {
      if (e instanceof VfioError && e.errno === Errno.EINVAL) fail(Errno.EINVAL, op, `region ${index}`);
      throw e;
    }
  }

  /** Closes every region fd (the client closes). */
  close(): void {
    for (const r of this.#regions.values()) if (r.fd !== undefined) closeFd(r.fd);
    this.#regions.clear();
  }
}
