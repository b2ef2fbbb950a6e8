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
 *   migrationData          -> MIG_DATA_READ / MIG_DATA_WRITE (migration.ts)
 *
 * Offsets are the client's own (offsets.ts): region i at i << 40 whatever the server's reply
 * names, cookies packed above; what the client knows of each region, and its fd, is in
 * regions.ts.
 *
 * Write combining (docs/vfio-user-wc.md): every grant comes with one fd whose offset R is BAR
 * offset R; the client records the attribute it asked for on the mappings it makes.
 *
 * The server is not trusted (docs/robustness.md, "The client"): every reply is checked against
 * the bytes received and the limits of limits.ts, every fd is closed unless the protocol gives
 * it a use, every fd is checked before it is mapped (mappings.ts), and every failure is a
 * VfioError whose `op` names the command (VFIO_USER_...) or call (mmap) that failed.
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../abi/vfio.js';
import { VfioUserCommand as C, vfio_user_region_access } from '../abi/vfio-user.js';
import type { DmaMemory, Mapping, MigrationData, VfioDeviceFile } from '../driver/file.js';
import { fail, VfioError } from '../errors.js';
import { closeFd, unixConnect } from '../native/index.js';
import {
  decodeRegionReadReply,
  decodeRegionWriteReply,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
} from '../wire/vfio-user.js';
import { Connection, decodeOrProto } from './connection.js';
import { ClientDma } from './dma.js';
import { type DmaBuf, type IoctlContext, ioctl } from './ioctl.js';
import {
  CLIENT_REQUEST_TIMEOUT_MS,
  clientMessageSize,
  DEFAULT_UNSEALED_FD_POLICY,
  type UnsealedFdPolicy,
} from './limits.js';
import { ClientMappings } from './mappings.js';
import { migrationData } from './migration.js';
import { type ClientNegotiated, negotiate, proposal, type VersionOptions } from './negotiate.js';
import { ClientOffsets } from './offsets.js';
import { type RegionState, RegionTable } from './regions.js';

/** REGION_READ/REGION_WRITE pieces of one pread/pwrite sent before the first reply is needed. */
export const MAX_CHUNKS_IN_FLIGHT = 8;
/** Longest per-request timeout accepted (setTimeout's limit, 2^31-1 ms). */
export const MAX_TIMEOUT_MS = 0x7fff_ffff;

export interface ClientOptions extends VersionOptions {
  /**
   * Per-request timeout in ms (default CLIENT_REQUEST_TIMEOUT_MS, 10 s). A request without a
   * reply by then fails ETIMEDOUT and the connection is dropped.
   */
  readonly timeoutMs?: number;
  /** connect(2) timeout in ms. */
  readonly connectTimeoutMs?: number;
  /** Region, cookie and dma-buf fds without F_SEAL_SHRINK: refuse to map them (default) or map. */
  readonly unsealedFds?: UnsealedFdPolicy;
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
  readonly #mappings: ClientMappings;
  #closed = false;

  private constructor(conn: Connection, maxDataXferSize: number, unsealed: UnsealedFdPolicy) {
    this.#conn = conn;
    this.#regions = new RegionTable(conn, this.#offsets);
    this.#mappings = new ClientMappings(this.#regions, this.#offsets, this.#dmabufs, unsealed);
    this.#dma = new ClientDma(conn, () => this.#negotiated?.maxDataXferSize ?? maxDataXferSize);
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
    checkOptions(opts);
    const fd = unixConnect(path, opts.connectTimeoutMs);
    return VfioUserClient.fromFd(fd, opts);
  }

  /**
   * Takes a connected socket (a socketpair end in tests) and negotiates. The socket is ours from
   * here on: closed on every failure, options refused included.
   */
  static async fromFd(fd: number, opts: ClientOptions = {}): Promise<VfioUserClient> {
    let ours: ReturnType<typeof proposal>;
    try {
      ours = checkOptions(opts);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    const conn = new Connection(fd, {
      timeoutMs: opts.timeoutMs ?? CLIENT_REQUEST_TIMEOUT_MS,
      maxMessageSize: clientMessageSize(ours.maxDataXferSize),
      maxMsgFds: ours.maxMsgFds,
    });
    const c = new VfioUserClient(conn, ours.maxDataXferSize, opts.unsealedFds ?? DEFAULT_UNSEALED_FD_POLICY);
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

  /** The migration session's stream (MIG_DATA_READ / MIG_DATA_WRITE); one per client, any data_fd. */
  migrationData(_dataFd: number): MigrationData {
    this.#assertOpen('migration data');
    return migrationData(this.#conn, () => this.negotiated);
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
   * matched by msg_id, so their order does not matter). `#span` has already cut the access at
   * the region's end as the kernel does, so every piece lies inside the region: a reply with
   * fewer bytes than asked is the server failing the access (EIO, as a partial vfio_pci_bar_rw
   * is never returned), with more it is breaking the protocol (EPROTO; QEMU
   * hw/vfio-user/device.c vfio_user_device_io_region_read says E2BIG).
   */
  async pread(offset: bigint, length: number): Promise<Uint8Array> {
    this.#assertOpen('pread');
    const op = 'VFIO_USER_REGION_READ';
    const { index, pos, count } = await this.#span(offset, length, false);
    const out = new Uint8Array(count);
    await this.#pieces(count, async (at, n) => {
      const r = await this.#conn.request(
        C.REGION_READ,
        [encodeRegionReadRequest({ offset: pos + BigInt(at), region: index, count: n })],
        [],
        { maxReply: vfio_user_region_access.size + n },
      );
      const d = decodeOrProto(op, () => decodeRegionReadReply(r.payload));
      if (d.data.length !== n)
        fail(
          Errno.EIO,
          op,
          `region ${index} at 0x${(pos + BigInt(at)).toString(16)}: ${d.data.length} of ${n} bytes`,
        );
      out.set(d.data, at);
    });
    return out;
  }

  /** REGION_WRITE in pieces, as pread; a reply counting other than the bytes sent is EIO. */
  async pwrite(offset: bigint, data: Uint8Array): Promise<number> {
    this.#assertOpen('pwrite');
    const op = 'VFIO_USER_REGION_WRITE';
    const { index, pos, count } = await this.#span(offset, data.length, true);
    await this.#pieces(count, async (at, n) => {
      const r = await this.#conn.request(
        C.REGION_WRITE,
        [
          encodeRegionWriteRequest({
            offset: pos + BigInt(at),
            region: index,
            data: data.subarray(at, at + n),
          }),
        ],
        [],
        // QEMU (vfio_user_device_io_region_write) allows the reply as many bytes as the request.
        { maxReply: vfio_user_region_access.size + n },
      );
      const w = decodeOrProto(op, () => decodeRegionWriteReply(r.payload));
      if (w.count !== n)
        fail(
          Errno.EIO,
          op,
          `region ${index} at 0x${(pos + BigInt(at)).toString(16)}: ${w.count} of ${n} bytes`,
        );
    });
    return count;
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
  // Mappings (mappings.ts: every fd is checked before it is mapped)
  // -------------------------------------------------------------------------------------------
  async mmap(offset: bigint, length: number): Promise<Mapping> {
    this.#assertOpen('mmap');
    return this.#mappings.mmap(offset, length);
  }

  async mmapDmaBuf(fd: number, offset: bigint, length: number): Promise<Mapping> {
    this.#assertOpen('mmap dma-buf');
    return this.#mappings.mmapDmaBuf(fd, offset, length);
  }

  /** Live mappings made through this client. */
  get mappingCount(): number {
    return this.#mappings.count;
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
    this.#mappings.close();
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

/** The options checked together before a socket is touched: EINVAL for any out of range. */
function checkOptions(opts: ClientOptions): ReturnType<typeof proposal> {
  const t = opts.timeoutMs;
  if (t !== undefined && (!Number.isInteger(t) || t < 1 || t > MAX_TIMEOUT_MS))
    fail(Errno.EINVAL, 'VfioUserClient', `timeoutMs ${t} outside 1..${MAX_TIMEOUT_MS}`);
  const u = opts.unsealedFds;
  if (u !== undefined && u !== 'refuse' && u !== 'map')
    fail(Errno.EINVAL, 'VfioUserClient', `unsealedFds ${String(u)} is not 'refuse' or 'map'`);
  return proposal(opts);
}
