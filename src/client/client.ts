/**
 * VfioUserClient: a VfioDeviceFile (src/driver/file.ts) over a vfio-user server, so that the
 * driver API (src/driver/device.ts) runs on it unchanged. It does what QEMU's vfio-user client
 * does (hw/vfio-user/proxy.c, device.c, container.c): VERSION negotiation, then each device-fd
 * verb translated into a vfio-user command:
 *
 *   ioctl GET_INFO / GET_REGION_INFO / GET_IRQ_INFO / SET_IRQS / RESET / FEATURE
 *                          -> DEVICE_GET_INFO / ..._REGION_INFO / ..._IRQ_INFO / ... / FEATURE
 *   pread / pwrite         -> REGION_READ / REGION_WRITE, split at max_data_xfer_size
 *   mmap                   -> mmap of the fd that came with the region-info (or cookie) reply
 *   dmaMap / dmaUnmap      -> DMA_MAP (with the memory's fd when it has one) / DMA_UNMAP
 *
 * The client's own offset space: region i sits at i << 40 (VFIO_PCI_OFFSET_SHIFT, like every
 * Linux vfio-pci), whatever offset the server's reply names. The reply's `offset` is an offset
 * into the fd that came with it (spec, "VFIO_USER_DEVICE_GET_REGION_INFO"); it is kept with the
 * fd and never shown to the driver. mmap cookies (docs/vfio-user-wc.md §3) get client offsets of
 * their own, packed above the alias windows as the in-process core packs them.
 *
 * Write combining (docs/vfio-user-wc.md): every grant comes with one fd whose offset R is BAR
 * offset R; the client records the attribute it asked for on the mappings it makes. The RFC's
 * SET_REGION_FLAGS has no vfio-user command: ENOTTY, as the kernel answers an unknown ioctl.
 */

import { readlinkSync } from 'node:fs';
import { Errno } from '../abi/errno.js';
import {
  aliasRegionBar,
  PCI_STD_NUM_BARS,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_TS_FEATURE_MMAP_COOKIE,
  vfio_device_info,
  vfio_irq_info,
  vfio_irq_set,
  vfio_region_info,
  vfio_ts_mmap_cookie,
} from '../abi/vfio.js';
import { VfioUserCommand as C, VfioUserDmaMapFlags } from '../abi/vfio-user.js';
import type { MappingPath, MemoryAttribute } from '../core/device.js';
import { OffsetSpace, PAGE_SIZE, roundUp } from '../core/offsets.js';
import type { DmaMemory, Mapping, VfioDeviceFile } from '../driver/file.js';
import { fail, MalformedError, VfioError } from '../errors.js';
import { closeFd, MAP_SHARED, mmap, PROT_READ, PROT_WRITE, unixConnect } from '../native/index.js';
import { decodeVfioIrqSet, putU32, putU64, u32, u64 } from '../wire/vfio.js';
import {
  capabilitiesJson,
  type DmaLayout,
  decodeDeviceInfo,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  decodeIrqInfo,
  decodeRegionInfoReply,
  decodeRegionReadReply,
  decodeRegionWriteReply,
  decodeVersion,
  encodeDeviceInfo,
  encodeDmaMap,
  encodeDmaReadReply,
  encodeDmaUnmap,
  encodeDmaWriteReply,
  encodeIrqInfo,
  encodeIrqSet,
  encodeRegionInfoRequest,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
  encodeVersion,
  type RegionInfo as WireRegionInfo,
} from '../wire/vfio-user.js';
import { Connection, closeFds, type Reply } from './connection.js';

/** What this client proposes: QEMU's values (hw/vfio-user/protocol.h VFIO_USER_MAX_MAX_FDS). */
export const CLIENT_MAX_MSG_FDS = 16;
/** Spec default and QEMU's proposal: 1 MiB per REGION_READ/WRITE and DMA_READ/WRITE. */
export const CLIENT_MAX_DATA_XFER_SIZE = 1024 * 1024;
/** REGION_READ/REGION_WRITE pieces of one pread/pwrite sent before the first reply is needed. */
export const MAX_CHUNKS_IN_FLIGHT = 8;
/** Largest region-info reply asked for (a capability chain this long is refused as EPROTO). */
export const MAX_REGION_INFO_REPLY = 64 * 1024;
/** Regions live in fixed windows below this index; cookies are packed above (as the core does). */
const COOKIE_BASE_INDEX = BigInt(VFIO_PCI_NUM_REGIONS + PCI_STD_NUM_BARS);
const WINDOW = 1n << VFIO_PCI_OFFSET_SHIFT;
const WINDOW_MASK = WINDOW - 1n;

export interface ClientOptions {
  /** Per-request timeout in ms (default 10 s). */
  readonly timeoutMs?: number;
  /** connect(2) timeout in ms. */
  readonly connectTimeoutMs?: number;
  /**
   * Minor version proposed (major is 0). Default 1: the spec's DMA_READ/DMA_WRITE layout. 0 is
   * what QEMU proposes; our server then speaks QEMU's layout (docs/vfio-user-wire.md).
   */
  readonly minor?: 0 | 1;
  /** DMA_READ/DMA_WRITE layout; default 'spec' (what QEMU 11.1 speaks as a client too). */
  readonly dmaLayout?: DmaLayout;
  readonly maxMsgFds?: number;
  readonly maxDataXferSize?: number;
}

/** What VERSION settled. */
export interface ClientNegotiated {
  readonly major: number;
  readonly minor: number;
  /** min(ours, server's) */
  readonly maxDataXferSize: number;
  /** Most fds the server takes in one message. */
  readonly maxMsgFds: number;
  readonly maxDmaMaps: number;
  readonly pgsizes: bigint;
  readonly writeMultiple: boolean;
  readonly dmaLayout: DmaLayout;
}

interface RegionState {
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

interface Cookie {
  readonly base: bigint;
  readonly size: bigint;
  readonly serverOffset: bigint;
  readonly bar: number;
  readonly attribute: MemoryAttribute;
  readonly fd: number;
  released: boolean;
  mappings: number;
}

interface DmaBuf {
  readonly bar: number;
  readonly ranges: readonly { offset: bigint; length: bigint }[];
  readonly attribute: MemoryAttribute;
}

interface LocalDma {
  readonly iova: bigint;
  readonly size: bigint;
  readonly bytes: Uint8Array;
  readonly read: boolean;
  readonly write: boolean;
}

type Owner = { kind: 'region'; index: number } | { kind: 'cookie'; cookie: Cookie };

export class VfioUserClient implements VfioDeviceFile {
  readonly transport = 'vfio-user' as const;
  readonly offsets = new OffsetSpace<Owner>();
  #conn: Connection;
  #negotiated: ClientNegotiated | undefined;
  #regions = new Map<number, RegionState>();
  #dmabufs = new Map<number, DmaBuf>();
  #dma: LocalDma[] = [];
  #mappings = new Set<Mapping>();
  #cookies = new Set<Cookie>();
  #closed = false;
  readonly #opts: ClientOptions;

  private constructor(conn: Connection, opts: ClientOptions) {
    this.#conn = conn;
    this.#opts = opts;
    conn.onCommand((command, payload) => this.#serverCommand(command, payload));
  }

  /** Connects to the server's socket at `path` and negotiates. */
  static async connect(path: string, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const fd = unixConnect(path, opts.connectTimeoutMs);
    return VfioUserClient.fromFd(fd, opts);
  }

  /** Takes a connected socket (a socketpair end in tests) and negotiates. */
  static async fromFd(fd: number, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const conn = new Connection(fd, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
    const c = new VfioUserClient(conn, opts);
    try {
      await c.#negotiate();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  get negotiated(): ClientNegotiated {
    return this.#negotiated ?? fail(Errno.ENOTCONN, 'VFIO_USER_VERSION', 'not negotiated');
  }

  /** The underlying connection (tests watch it for leaks and stray replies). */
  get connection(): Connection {
    return this.#conn;
  }

  // -------------------------------------------------------------------------------------------
  // VERSION (spec, "VFIO_USER_VERSION")
  // -------------------------------------------------------------------------------------------
  async #negotiate(): Promise<void> {
    const op = 'VFIO_USER_VERSION';
    const minor = this.#opts.minor ?? 1;
    const ours = {
      maxMsgFds: this.#opts.maxMsgFds ?? CLIENT_MAX_MSG_FDS,
      maxDataXferSize: this.#opts.maxDataXferSize ?? CLIENT_MAX_DATA_XFER_SIZE,
      pgsizes: PAGE_SIZE,
      writeMultiple: false,
    };
    const r = await this.#request(C.VERSION, [
      encodeVersion({ major: 0, minor, json: capabilitiesJson(ours) }),
    ]);
    closeFds(r.fds);
    const v = decodeOrProto(op, () => decodeVersion(r.payload));
    // The server keeps our major and answers a minor no higher than ours (spec, "Version").
    if (v.major !== 0 || v.minor > minor)
      fail(Errno.EPROTONOSUPPORT, op, `server answered ${v.major}.${v.minor} to our 0.${minor}`);
    const caps = v.capabilities;
    if (caps.maxDataXferSize < 1) fail(Errno.EPROTO, op, 'max_data_xfer_size 0');
    this.#negotiated = {
      major: v.major,
      minor: v.minor,
      maxDataXferSize: Math.min(ours.maxDataXferSize, caps.maxDataXferSize),
      maxMsgFds: Math.max(1, caps.maxMsgFds),
      maxDmaMaps: caps.maxDmaMaps,
      pgsizes: caps.pgsizes,
      writeMultiple: caps.writeMultiple,
      dmaLayout: this.#opts.dmaLayout ?? 'spec',
    };
  }

  // -------------------------------------------------------------------------------------------
  // ioctl
  // -------------------------------------------------------------------------------------------
  async ioctl(request: number, arg: Uint8Array): Promise<number> {
    this.#assertOpen('ioctl');
    switch (request) {
      case VFIO_DEVICE_GET_INFO:
        return this.#getInfo(arg);
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.#getRegionInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO:
        return this.#getIrqInfo(arg);
      case VFIO_DEVICE_SET_IRQS:
        return this.#setIrqs(arg);
      case VFIO_DEVICE_RESET:
        closeFds((await this.#request(C.DEVICE_RESET)).fds);
        return 0;
      case VFIO_DEVICE_FEATURE:
        return this.#feature(arg);
    }
    // VFIO_DEVICE_SET_REGION_FLAGS included: it has no vfio-user command (docs/vfio-user-wc.md §1).
    return fail(Errno.ENOTTY, 'ioctl', `request 0x${request.toString(16)} has no vfio-user command`);
  }

  /** vfio_pci_ioctl_get_info's checks, then DEVICE_GET_INFO (16 bytes: no cap_offset on the wire). */
  async #getInfo(arg: Uint8Array): Promise<number> {
    const op = 'VFIO_DEVICE_GET_INFO';
    const minsz = 16;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
    const out = Math.min(argsz, vfio_device_info.size);
    need(arg, out, op);
    const r = await this.#request(C.DEVICE_GET_INFO, [
      encodeDeviceInfo({ argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 }),
    ]);
    closeFds(r.fds);
    const d = decodeOrProto(op, () => decodeDeviceInfo(r.payload, 'reply'));
    putU32(arg, 4, d.flags);
    putU32(arg, 8, d.numRegions);
    putU32(arg, 12, d.numIrqs);
    if (out >= 20) putU32(arg, 16, 0);
    return 0;
  }

  /**
   * DEVICE_GET_REGION_INFO with the caller's argsz, the reply copied back (capabilities pass
   * through unchanged: cap_offset and next count from the struct's start on both sides) with
   * `offset` rewritten to the region's offset in this client's own space.
   */
  async #getRegionInfo(arg: Uint8Array): Promise<number> {
    const op = 'VFIO_DEVICE_GET_REGION_INFO';
    const minsz = vfio_region_info.size;
    need(arg, minsz, op);
    const argsz = u32(arg, 0);
    if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
    const index = u32(arg, 8);
    const { payload } = await this.#regionInfo(index, Math.min(argsz, MAX_REGION_INFO_REPLY));
    const n = Math.min(payload.length, argsz);
    need(arg, n, op);
    arg.set(payload.subarray(0, n));
    putU64(arg, 24, regionBase(index));
    return 0;
  }

  /** Asks the server for region `index` with `argsz`; learns the region and keeps its fd. */
  async #regionInfo(index: number, argsz: number): Promise<{ info: WireRegionInfo; payload: Uint8Array }> {
    const op = 'VFIO_DEVICE_GET_REGION_INFO';
    const r = await this.#request(C.DEVICE_GET_REGION_INFO, [
      encodeRegionInfoRequest({ argsz, flags: 0, index, capOffset: 0, size: 0n, offset: 0n }),
    ]);
    let fd: number | undefined;
    try {
      if (r.fds.length > 1) fail(Errno.EPROTO, op, `${r.fds.length} fds on one reply`);
      const info = decodeOrProto(op, () => decodeRegionInfoReply(r.payload));
      if (info.index !== index) fail(Errno.EPROTO, op, `asked for region ${index}, got ${info.index}`);
      fd = r.fds[0];
      this.#learnRegion(info, fd);
      return { info, payload: r.payload };
    } finally {
      for (const x of r.fds) if (x !== fd) closeFd(x);
    }
  }

  #learnRegion(info: WireRegionInfo, fd: number | undefined): void {
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
    if (info.index < Number(COOKIE_BASE_INDEX) && !this.offsets.lookup(regionBase(info.index)))
      this.offsets.reserveFixed(regionBase(info.index), WINDOW, { kind: 'region', index: info.index });
  }

  /** The region's state, asking the server when unknown (`withFd`: until its fd is here). */
  async #region(index: number, withFd = false): Promise<RegionState> {
    let r = this.#regions.get(index);
    if (!r) {
      await this.#regionInfo(index, vfio_region_info.size);
      r = this.#regions.get(index)!;
    }
    if (withFd && r.fd === undefined && r.flags & VFIO_REGION_INFO_FLAG_MMAP) {
      // The argsz exchange: the fd travels only with a reply that fit whole (vfio-user-wc.md §1).
      const { info } = await this.#regionInfo(index, MAX_REGION_INFO_REPLY);
      if (info.argsz > MAX_REGION_INFO_REPLY)
        fail(Errno.E2BIG, 'VFIO_DEVICE_GET_REGION_INFO', `argsz ${info.argsz}`);
      r = this.#regions.get(index)!;
    }
    return r;
  }

  async #getIrqInfo(arg: Uint8Array): Promise<number> {
    const op = 'VFIO_DEVICE_GET_IRQ_INFO';
    const minsz = vfio_irq_info.size;
    need(arg, minsz, op);
    if (u32(arg, 0) < minsz) fail(Errno.EINVAL, op, 'argsz');
    const index = u32(arg, 8);
    const r = await this.#request(C.DEVICE_GET_IRQ_INFO, [
      encodeIrqInfo({ argsz: minsz, flags: 0, index, count: 0 }),
    ]);
    closeFds(r.fds);
    const q = decodeOrProto(op, () => decodeIrqInfo(r.payload, 'reply'));
    putU32(arg, 4, q.flags);
    putU32(arg, 12, q.count);
    return 0;
  }

  /**
   * SET_IRQS. DATA_EVENTFD: the s32 fds of the data array travel as SCM_RIGHTS fds, in order,
   * never in the payload. Like QEMU (hw/vfio-user/device.c: vfio_user_device_io_set_irqs) the
   * array is sent in runs of at most max_msg_fds valid fds, and runs of -1 (unassign) as
   * messages without fds (libvfio-user device_set_irqs_validate: nr_fds is 0 or count).
   */
  async #setIrqs(arg: Uint8Array): Promise<number> {
    const op = 'VFIO_DEVICE_SET_IRQS';
    const minsz = vfio_irq_set.size;
    need(arg, minsz, op);
    const { argsz, flags, index, start, count } = decodeVfioIrqSet(arg);
    // vfio_set_irqs_validate_and_prepare
    const one = (v: number) => v !== 0 && (v & (v - 1)) === 0;
    if (
      argsz < minsz ||
      flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) ||
      !one(flags & VFIO_IRQ_SET_DATA_TYPE_MASK) ||
      !one(flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) ||
      count >= 0xffffffff - start
    )
      fail(Errno.EINVAL, op, 'header');
    const head = (s: number, n: number, data?: Uint8Array) =>
      encodeIrqSet({
        argsz: minsz + (data?.length ?? 0),
        flags,
        index,
        start: s,
        count: n,
        ...(data ? { data } : {}),
      });
    const dataType = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    if (dataType === VFIO_IRQ_SET_DATA_BOOL) {
      if (argsz - minsz < count) fail(Errno.EINVAL, op, 'argsz too small for data');
      need(arg, minsz + count, op);
      closeFds(
        (await this.#request(C.DEVICE_SET_IRQS, [head(start, count, arg.slice(minsz, minsz + count))])).fds,
      );
      return 0;
    }
    if (dataType !== VFIO_IRQ_SET_DATA_EVENTFD || count === 0) {
      closeFds((await this.#request(C.DEVICE_SET_IRQS, [head(start, count)])).fds);
      return 0;
    }
    if (argsz - minsz < count * 4) fail(Errno.EINVAL, op, 'argsz too small for data');
    need(arg, minsz + count * 4, op);
    const dv = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    const fds: number[] = [];
    for (let i = 0; i < count; i++) {
      const fd = dv.getInt32(minsz + 4 * i, true);
      // eventfd_ctx_fdget: a closed fd is EBADF (sendmsg would say so too, less clearly).
      if (fd >= 0 && !isOpenFd(fd)) fail(Errno.EBADF, op, `fd ${fd}`);
      fds.push(fd < 0 ? -1 : fd);
    }
    const max = this.negotiated.maxMsgFds;
    for (let i = 0; i < count; ) {
      const valid = fds[i]! >= 0;
      let n = 1;
      while (i + n < count && fds[i + n]! >= 0 === valid && (!valid || n < max)) n++;
      const r = await this.#request(
        C.DEVICE_SET_IRQS,
        [head(start + i, n)],
        valid ? fds.slice(i, i + n) : [],
      );
      closeFds(r.fds);
      i += n;
    }
    return 0;
  }

  /**
   * DEVICE_FEATURE: the payload is struct vfio_device_feature itself. The replies of the WC
   * paths carry one fd (docs/vfio-user-wc.md §2-3), which the client keeps.
   */
  async #feature(arg: Uint8Array): Promise<number> {
    const op = 'VFIO_DEVICE_FEATURE';
    need(arg, 8, op);
    const argsz = u32(arg, 0);
    const flags = u32(arg, 4);
    if (argsz < 8) fail(Errno.EINVAL, op, 'argsz');
    const feature = flags & VFIO_DEVICE_FEATURE_MASK;
    const probe = (flags & VFIO_DEVICE_FEATURE_PROBE) !== 0;
    const get = (flags & VFIO_DEVICE_FEATURE_GET) !== 0;
    const set = (flags & VFIO_DEVICE_FEATURE_SET) !== 0;
    const payload = arg.slice(0, Math.min(argsz, arg.length));
    let release: Cookie | undefined;
    if (feature === VFIO_TS_FEATURE_MMAP_COOKIE && set && !probe && !get) {
      // Our cookie offsets are our own: name the server's cookie instead (vfio-user-wc.md §3).
      need(arg, 8 + vfio_ts_mmap_cookie.size, op);
      const at = u64(arg, 8 + 8);
      const hit = this.offsets.lookup(at);
      if (hit?.owner.kind !== 'cookie' || hit.base !== at || hit.owner.cookie.released)
        fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', 'no such cookie');
      release = hit.owner.cookie;
      putU64(payload, 8 + 8, release.serverOffset);
    }
    const r = await this.#request(C.DEVICE_FEATURE, [payload]);
    let kept: number | undefined;
    try {
      if (r.fds.length > 1) fail(Errno.EPROTO, op, `${r.fds.length} fds on one reply`);
      if (r.payload.length < 8) fail(Errno.EPROTO, op, `reply of ${r.payload.length} bytes`);
      const data = r.payload.subarray(8);
      const room = arg.subarray(8);
      room.set(data.subarray(0, Math.min(data.length, room.length)));
      if (release) {
        putU64(arg, 8 + 8, release.base);
        release.released = true;
        if (release.mappings === 0) this.#freeCookie(release);
        return 0;
      }
      if (probe || !get) return 0;
      if (feature === VFIO_DEVICE_FEATURE_DMA_BUF) {
        kept = r.fds[0] ?? fail(Errno.EPROTO, op, 'DMA_BUF reply without an fd');
        this.#dmabufs.set(kept, parseDmaBuf(arg.subarray(8)));
        return kept;
      }
      if (feature === VFIO_TS_FEATURE_MMAP_COOKIE) {
        kept = r.fds[0] ?? fail(Errno.EPROTO, op, 'MMAP_COOKIE reply without an fd');
        need(arg, 8 + vfio_ts_mmap_cookie.size, op);
        const bar = u32(arg, 8);
        const attr = u32(arg, 12) & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK;
        const size = u64(arg, 8 + 16);
        const cookie: Cookie = {
          base: 0n,
          size: roundUp(size, PAGE_SIZE),
          serverOffset: u64(arg, 8 + 8),
          bar,
          attribute: attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC ? 'wc' : 'uc',
          fd: kept,
          released: false,
          mappings: 0,
        };
        const range = this.offsets.allocate(
          cookie.size,
          { kind: 'cookie', cookie },
          COOKIE_BASE_INDEX << VFIO_PCI_OFFSET_SHIFT,
        );
        (cookie as { base: bigint }).base = range.base;
        this.#cookies.add(cookie);
        putU64(arg, 8 + 8, range.base);
        return 0;
      }
      return 0;
    } catch (e) {
      kept = undefined;
      throw e;
    } finally {
      for (const x of r.fds) if (x !== kept) closeFd(x);
    }
  }

  #freeCookie(c: Cookie): void {
    if (!this.#cookies.delete(c)) return;
    this.offsets.release(c.base);
    closeFd(c.fd);
  }

  // -------------------------------------------------------------------------------------------
  // Region access
  // -------------------------------------------------------------------------------------------
  /** Region index and position for a pread/pwrite offset; cookies are not readable (EINVAL). */
  #resolve(offset: bigint, op: string): { index: number; pos: bigint } {
    const index = offset >> VFIO_PCI_OFFSET_SHIFT;
    if (offset < 0n || index >= COOKIE_BASE_INDEX) fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    return { index: Number(index), pos: offset & WINDOW_MASK };
  }

  /** Bytes of region `index` from `pos` that one access may touch: the kernel cuts at the end. */
  async #span(
    offset: bigint,
    length: number,
    write: boolean,
  ): Promise<{ index: number; pos: bigint; count: number }> {
    const op = write ? 'pwrite' : 'pread';
    const { index, pos } = this.#resolve(offset, op);
    let r: RegionState;
    try {
      r = await this.#region(index);
    } catch (e) {
      if (e instanceof VfioError && e.errno !== Errno.ECONNRESET && e.errno !== Errno.ETIMEDOUT)
        fail(Errno.EINVAL, op, `region ${index}: ${e.code}`);
      throw e;
    }
    const need = write ? VFIO_REGION_INFO_FLAG_WRITE : VFIO_REGION_INFO_FLAG_READ;
    if (!(r.flags & need))
      fail(Errno.EINVAL, op, `region ${index} is not ${write ? 'writable' : 'readable'}`);
    // vfio_pci_config_rw: the whole access must fit in config space, else EFAULT.
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (pos + BigInt(length) > r.size)
        fail(Errno.EFAULT, op, `config 0x${pos.toString(16)}+${length} outside 0x${r.size.toString(16)}`);
      return { index, pos, count: length };
    }
    // vfio_pci_bar_rw: a start at or past the end is EINVAL; an access crossing it is cut short.
    if (pos >= r.size) fail(Errno.EINVAL, op, `region ${index} at 0x${pos.toString(16)}`);
    const left = r.size - pos;
    return { index, pos, count: BigInt(length) < left ? length : Number(left) };
  }

  /**
   * REGION_READ in pieces of max_data_xfer_size, up to MAX_CHUNKS_IN_FLIGHT at once (replies are
   * matched by msg_id, so their order does not matter). A short piece ends the read there.
   */
  async pread(offset: bigint, length: number): Promise<Uint8Array> {
    this.#assertOpen('pread');
    const op = 'VFIO_USER_REGION_READ';
    const { index, pos, count } = await this.#span(offset, length, false);
    const out = new Uint8Array(count);
    let end = count;
    await this.#pieces(count, async (at, n) => {
      const r = await this.#request(C.REGION_READ, [
        encodeRegionReadRequest({ offset: pos + BigInt(at), region: index, count: n }),
      ]);
      closeFds(r.fds);
      const d = decodeOrProto(op, () => decodeRegionReadReply(r.payload));
      if (d.data.length > n) fail(Errno.EPROTO, op, `${d.data.length} bytes for ${n}`);
      out.set(d.data, at);
      if (d.data.length < n) end = Math.min(end, at + d.data.length);
    });
    return end === count ? out : out.subarray(0, end);
  }

  /** REGION_WRITE in pieces, as pread; returns the bytes written up to the first short piece. */
  async pwrite(offset: bigint, data: Uint8Array): Promise<number> {
    this.#assertOpen('pwrite');
    const op = 'VFIO_USER_REGION_WRITE';
    const { index, pos, count } = await this.#span(offset, data.length, true);
    let end = count;
    await this.#pieces(count, async (at, n) => {
      const r = await this.#request(C.REGION_WRITE, [
        encodeRegionWriteRequest({
          offset: pos + BigInt(at),
          region: index,
          data: data.subarray(at, at + n),
        }),
      ]);
      closeFds(r.fds);
      const w = decodeOrProto(op, () => decodeRegionWriteReply(r.payload));
      if (w.count > n) fail(Errno.EPROTO, op, `${w.count} bytes for ${n}`);
      if (w.count < n) end = Math.min(end, at + w.count);
    });
    return end;
  }

  /** Runs `piece(at, n)` over [0, count) in max_data_xfer_size steps, a bounded number at once. */
  async #pieces(count: number, piece: (at: number, n: number) => Promise<void>): Promise<void> {
    const max = this.negotiated.maxDataXferSize;
    if (count <= max) {
      await piece(0, count);
      return;
    }
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const at = next;
        const n = Math.min(max, count - at);
        next += n;
        await piece(at, n);
      }
    };
    const workers = Math.min(MAX_CHUNKS_IN_FLIGHT, Math.ceil(count / max));
    await Promise.all(Array.from({ length: workers }, worker));
  }

  // -------------------------------------------------------------------------------------------
  // Mappings
  // -------------------------------------------------------------------------------------------
  async mmap(offset: bigint, length: number): Promise<Mapping> {
    const op = 'mmap';
    this.#assertOpen(op);
    if (!Number.isSafeInteger(length) || length <= 0 || offset < 0n || offset % PAGE_SIZE)
      fail(Errno.EINVAL, op, 'length 0 or offset not page aligned');
    const len = roundUp(BigInt(length), PAGE_SIZE);
    let hit = this.offsets.lookup(offset);
    if (!hit && offset >> VFIO_PCI_OFFSET_SHIFT < COOKIE_BASE_INDEX) {
      await this.#regionOrEinval(Number(offset >> VFIO_PCI_OFFSET_SHIFT), op);
      hit = this.offsets.lookup(offset);
    }
    if (!hit) return fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const pos = offset - hit.base;
    if (hit.owner.kind === 'cookie') {
      const c = hit.owner.cookie;
      if (c.released) fail(Errno.EINVAL, op, 'cookie released');
      if (pos + len > c.size) fail(Errno.EINVAL, op, 'beyond the BAR');
      c.mappings++;
      try {
        // vfio-user-wc.md §3: the cookie's fd offset 0 is BAR offset 0.
        return this.#map(c.fd, pos, length, c.attribute, 'cookie', () => {
          if (--c.mappings === 0 && c.released) this.#freeCookie(c);
        });
      } catch (e) {
        c.mappings--;
        throw e;
      }
    }
    const r = await this.#regionOrEinval(hit.owner.index, op, true);
    if (!(r.flags & VFIO_REGION_INFO_FLAG_MMAP) || r.fd === undefined)
      fail(Errno.EINVAL, op, `region ${r.index} cannot be mapped`);
    if (pos + len > roundUp(r.size, PAGE_SIZE)) fail(Errno.EINVAL, op, 'beyond the region');
    if (r.sparse && !r.sparse.some((a) => pos >= a.offset && pos + len <= a.offset + a.size))
      fail(Errno.EINVAL, op, 'outside the sparse mmap areas');
    return this.#map(
      r.fd,
      r.fdOffset + pos,
      length,
      r.alias ? 'wc' : 'uc',
      r.alias ? 'alias-region' : 'region',
    );
  }

  async #regionOrEinval(index: number, op: string, withFd = false): Promise<RegionState> {
    try {
      return await this.#region(index, withFd);
    } catch (e) {
      if (e instanceof VfioError && e.errno === Errno.EINVAL) fail(Errno.EINVAL, op, `region ${index}`);
      throw e;
    }
  }

  async mmapDmaBuf(fd: number, offset: bigint, length: number): Promise<Mapping> {
    const op = 'mmap dma-buf';
    this.#assertOpen(op);
    const d = this.#dmabufs.get(fd) ?? fail(Errno.EBADF, op, `fd ${fd}`);
    if (!Number.isSafeInteger(length) || length <= 0 || offset < 0n || offset % PAGE_SIZE)
      fail(Errno.EINVAL, op, 'alignment');
    // vfio-user-wc.md §2: dma-buf offset X inside range k is fd offset ranges[k].offset + (X - L(k)).
    let at = offset;
    for (const r of d.ranges) {
      if (at < r.length) {
        if (at + BigInt(length) > r.length) fail(Errno.EINVAL, op, 'mapping spans two ranges');
        return this.#map(fd, r.offset + at, length, d.attribute, 'dma-buf');
      }
      at -= r.length;
    }
    return fail(Errno.EINVAL, op, 'beyond the dma-buf');
  }

  #map(
    fd: number,
    fdOffset: bigint,
    length: number,
    attribute: MemoryAttribute,
    via: MappingPath,
    onUnmap?: () => void,
  ): Mapping {
    const m = mmap(fd, fdOffset, length, PROT_READ | PROT_WRITE, MAP_SHARED);
    let live = true;
    const mapping: Mapping = {
      bytes: m.bytes,
      length,
      attribute,
      via,
      unmap: () => {
        if (!live) return;
        live = false;
        m.unmap();
        this.#mappings.delete(mapping);
        onUnmap?.();
      },
    };
    this.#mappings.add(mapping);
    return mapping;
  }

  /** Live mappings made through this client. */
  get mappingCount(): number {
    return this.#mappings.size;
  }

  async closeFd(fd: number): Promise<void> {
    if (this.#dmabufs.delete(fd)) closeFd(fd);
  }

  // -------------------------------------------------------------------------------------------
  // DMA
  // -------------------------------------------------------------------------------------------
  async dmaMap(iova: bigint, memory: DmaMemory, access = { read: true, write: true }): Promise<void> {
    this.#assertOpen('dmaMap');
    const flags =
      (access.read ? VfioUserDmaMapFlags.READ : 0) | (access.write ? VfioUserDmaMapFlags.WRITE : 0);
    const size = BigInt(memory.size);
    const r = await this.#request(
      C.DMA_MAP,
      [encodeDmaMap({ argsz: 32, flags, offset: 0n, address: iova, size })],
      memory.fd === undefined ? [] : [memory.fd],
    );
    closeFds(r.fds);
    // Kept for DMA_READ/DMA_WRITE (the server's only way into memory passed without an fd).
    this.#dma.push({ iova, size, bytes: memory.bytes, read: access.read, write: access.write });
  }

  async dmaUnmap(iova: bigint, size: bigint): Promise<void> {
    this.#assertOpen('dmaUnmap');
    const r = await this.#request(C.DMA_UNMAP, [
      encodeDmaUnmap({ argsz: 24, flags: 0, address: iova, size }),
    ]);
    closeFds(r.fds);
    const end = iova + size;
    this.#dma = this.#dma.filter((d) => !(d.iova >= iova && d.iova + d.size <= end));
  }

  /** DMA_READ / DMA_WRITE from the server: answered from the memory the driver mapped. */
  #serverCommand(command: number, payload: Uint8Array): Uint8Array {
    const layout = this.#negotiated?.dmaLayout ?? 'spec';
    if (command === C.DMA_READ) {
      const q = decodeOrProto('VFIO_USER_DMA_READ', () => decodeDmaReadRequest(payload, layout));
      const { d, off } = this.#dmaFind(q.address, q.count, false);
      return encodeDmaReadReply({ address: q.address, data: d.bytes.subarray(off, off + q.count) }, layout);
    }
    if (command === C.DMA_WRITE) {
      const q = decodeOrProto('VFIO_USER_DMA_WRITE', () => decodeDmaWriteRequest(payload, layout));
      const { d, off } = this.#dmaFind(q.address, q.data.length, true);
      d.bytes.set(q.data, off);
      return encodeDmaWriteReply({ address: q.address, count: q.data.length }, layout);
    }
    return fail(Errno.EINVAL, `command ${command}`, 'not a server-to-client command');
  }

  #dmaFind(iova: bigint, count: number, write: boolean): { d: LocalDma; off: number } {
    const op = write ? 'VFIO_USER_DMA_WRITE' : 'VFIO_USER_DMA_READ';
    const end = iova + BigInt(count);
    const d = this.#dma.find((x) => iova >= x.iova && end <= x.iova + x.size);
    if (!d) return fail(Errno.EFAULT, op, `0x${iova.toString(16)}+${count} not mapped`);
    if (write ? !d.write : !d.read) fail(Errno.EPERM, op, 'mapping forbids it');
    return { d, off: Number(iova - d.iova) };
  }

  // -------------------------------------------------------------------------------------------
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of [...this.#mappings]) m.unmap();
    for (const r of this.#regions.values()) if (r.fd !== undefined) closeFd(r.fd);
    this.#regions.clear();
    for (const fd of this.#dmabufs.keys()) closeFd(fd);
    this.#dmabufs.clear();
    // Cookies whose mappings were just unmapped freed themselves; the rest still hold an fd.
    for (const c of [...this.#cookies]) this.#freeCookie(c);
    this.#dma = [];
    this.#conn.close();
  }

  #assertOpen(op: string): void {
    if (this.#closed) throw new VfioError(Errno.EBADF, op, 'client closed');
  }

  #request(
    command: number,
    payload: readonly Uint8Array[] = [],
    fds: readonly number[] = [],
  ): Promise<Reply> {
    return this.#conn.request(command, payload, fds);
  }
}

function regionBase(index: number): bigint {
  return BigInt(index) << VFIO_PCI_OFFSET_SHIFT;
}

/** copy_from_user/copy_to_user of more than the buffer holds: EFAULT. */
function need(buf: Uint8Array, size: number, op: string): void {
  if (buf.length < size) fail(Errno.EFAULT, op, `buffer of ${buf.length} bytes, ${size} needed`);
}

/** A reply we cannot decode is the server breaking the protocol: EPROTO. */
function decodeOrProto<T>(op: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof MalformedError) throw new VfioError(Errno.EPROTO, op, e.message);
    throw e;
  }
}

/** struct vfio_device_feature_dma_buf as sent: the ranges and attribute the fd stands for. */
function parseDmaBuf(data: Uint8Array): DmaBuf {
  const nr = u32(data, 12);
  const ranges: { offset: bigint; length: bigint }[] = [];
  for (let i = 0; i < nr && 32 + 16 * i <= data.length; i++)
    ranges.push({ offset: u64(data, 16 + 16 * i), length: u64(data, 24 + 16 * i) });
  const attr = u32(data, 8) & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK;
  return { bar: u32(data, 0), ranges, attribute: attr === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC ? 'wc' : 'uc' };
}

function isOpenFd(fd: number): boolean {
  try {
    readlinkSync(`/proc/self/fd/${fd}`);
    return true;
  } catch {
    return false;
  }
}
