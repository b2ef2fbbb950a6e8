/**
 * VfioUserClient: a VfioDeviceFile (src/driver/file.ts) over a vfio-user server, so that the
 * driver API (src/driver/device.ts) runs on it unchanged. It does what QEMU's vfio-user client
 * does (hw/vfio-user/proxy.c, device.c, container.c): VERSION negotiation (negotiate.ts), then
 * each device-fd verb translated into a vfio-user command:
 *
 *   ioctl                  -> DEVICE_GET_INFO / ..._REGION_INFO / ... / FEATURE (ioctl.ts)
 *   pread / pwrite         -> REGION_READ / REGION_WRITE, split at max_data_xfer_size
 *   mmap                   -> mmap of the fd that came with the region-info (or cookie) reply
 *   dmaMap / dmaUnmap      -> DMA_MAP (with the memory's fd when it has one) / DMA_UNMAP (dma.ts)
 *
 * Offsets are the client's own (offsets.ts): region i at i << 40 whatever the server's reply
 * names, cookies packed above; what the client knows of each region, and its fd, is in
 * regions.ts.
 *
 * Write combining (docs/vfio-user-wc.md): every grant comes with one fd whose offset R is BAR
 * offset R; the client records the attribute it asked for on the mappings it makes.
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../abi/vfio.js';
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import type { MappingPath, MemoryAttribute } from '../core/device.js';
import { PAGE_SIZE, roundUp } from '../core/offsets.js';
import type { DmaMemory, Mapping, VfioDeviceFile } from '../driver/file.js';
import { fail, VfioError } from '../errors.js';
import { closeFd, MAP_SHARED, mmap, PROT_READ, PROT_WRITE, unixConnect } from '../native/index.js';
import {
  decodeRegionReadReply,
  decodeRegionWriteReply,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
} from '../wire/vfio-user.js';
import { Connection, closeFds, decodeOrProto } from './connection.js';
import { ClientDma } from './dma.js';
import { type DmaBuf, type IoctlContext, ioctl } from './ioctl.js';
import { type ClientNegotiated, negotiate, type VersionOptions } from './negotiate.js';
import { ClientOffsets, inRegionWindows } from './offsets.js';
import { type RegionState, RegionTable } from './regions.js';

/** REGION_READ/REGION_WRITE pieces of one pread/pwrite sent before the first reply is needed. */
export const MAX_CHUNKS_IN_FLIGHT = 8;

export interface ClientOptions extends VersionOptions {
  /** Per-request timeout in ms (default 10 s). */
  readonly timeoutMs?: number;
  /** connect(2) timeout in ms. */
  readonly connectTimeoutMs?: number;
}

export class VfioUserClient implements VfioDeviceFile {
  readonly transport = 'vfio-user' as const;
  #conn: Connection;
  #negotiated: ClientNegotiated | undefined;
  readonly #offsets = new ClientOffsets();
  readonly #regions: RegionTable;
  readonly #dmabufs = new Map<number, DmaBuf>();
  readonly #dma: ClientDma;
  readonly #ioctl: IoctlContext;
  #mappings = new Set<Mapping>();
  #closed = false;

  private constructor(conn: Connection) {
    this.#conn = conn;
    this.#regions = new RegionTable(conn, this.#offsets);
    this.#dma = new ClientDma(conn);
    this.#ioctl = {
      conn,
      negotiated: () => this.negotiated,
      regions: this.#regions,
      offsets: this.#offsets,
      dmabufs: this.#dmabufs,
    };
    conn.onCommand((command, payload) =>
      this.#dma.serve(command, payload, this.#negotiated?.dmaLayout ?? 'spec'),
    );
  }

  /** Connects to the server's socket at `path` and negotiates. */
  static async connect(path: string, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const fd = unixConnect(path, opts.connectTimeoutMs);
    return VfioUserClient.fromFd(fd, opts);
  }

  /** Takes a connected socket (a socketpair end in tests) and negotiates. */
  static async fromFd(fd: number, opts: ClientOptions = {}): Promise<VfioUserClient> {
    const conn = new Connection(fd, opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs });
    const c = new VfioUserClient(conn);
    try {
      c.#negotiated = await negotiate(conn, opts);
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

  async ioctl(request: number, arg: Uint8Array): Promise<number> {
    this.#assertOpen('ioctl');
    return ioctl(this.#ioctl, request, arg);
  }

  // -------------------------------------------------------------------------------------------
  // Region access
  // -------------------------------------------------------------------------------------------
  /** Bytes of region `index` from `pos` that one access may touch: the kernel cuts at the end. */
  async #span(
    offset: bigint,
    length: number,
    write: boolean,
  ): Promise<{ index: number; pos: bigint; count: number }> {
    const op = write ? 'pwrite' : 'pread';
    const { index, pos } = this.#offsets.resolve(offset, op);
    let r: RegionState;
    try {
      r = await this.#regions.get(index);
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
      const r = await this.#conn.request(C.REGION_READ, [
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
      const r = await this.#conn.request(C.REGION_WRITE, [
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
    let hit = this.#offsets.lookup(offset);
    if (!hit && inRegionWindows(offset)) {
      await this.#regions.getOrEinval(Number(offset >> VFIO_PCI_OFFSET_SHIFT), op);
      hit = this.#offsets.lookup(offset);
    }
    if (!hit) return fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const pos = offset - hit.base;
    if (hit.owner.kind === 'cookie') {
      const c = hit.owner.cookie;
      if (c.released) fail(Errno.EINVAL, op, 'cookie released');
      if (pos + len > c.size) fail(Errno.EINVAL, op, 'beyond the BAR');
      this.#offsets.mapped(c, 1);
      try {
        // vfio-user-wc.md §3: the cookie's fd offset 0 is BAR offset 0.
        return this.#map(c.fd, pos, length, c.attribute, 'cookie', () => this.#offsets.mapped(c, -1));
      } catch (e) {
        this.#offsets.mapped(c, -1);
        throw e;
      }
    }
    const r = await this.#regions.getOrEinval(hit.owner.index, op, true);
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
    await this.#dma.map(iova, memory, access);
  }

  async dmaUnmap(iova: bigint, size: bigint): Promise<void> {
    this.#assertOpen('dmaUnmap');
    await this.#dma.unmap(iova, size);
  }

  // -------------------------------------------------------------------------------------------
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of [...this.#mappings]) m.unmap();
    this.#regions.close();
    for (const fd of this.#dmabufs.keys()) closeFd(fd);
    this.#dmabufs.clear();
    // Cookies whose mappings were just unmapped freed themselves; the rest still hold an fd.
    this.#offsets.close();
    this.#dma.clear();
    this.#conn.close();
  }

  #assertOpen(op: string): void {
    if (this.#closed) throw new VfioError(Errno.EBADF, op, 'client closed');
  }
}
