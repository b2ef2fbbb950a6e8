/**
 * DMA from the client's side: DMA_MAP / DMA_UNMAP of the driver's memory (with its memfd when it
 * has one, spec "VFIO_USER_DMA_MAP"), and the server's DMA_READ / DMA_WRITE answered from that
 * memory: the server's only way into memory passed without an fd, and what it may still use for
 * memory that has one.
 *
 * The client is the IOMMU for these messages. Whether a map may overlap another is the
 * server's to answer (libvfio-user: EINVAL; test/driver/cases.ts); an unmap that would split a
 * mapping is refused here, EINVAL, as type1 v2 does (vfio_iommu_type1.c vfio_dma_do_unmap: a
 * range must start and end on mapping boundaries), so a later DMA_WRITE can never land in
 * memory the caller believes unmapped. An unmap forgets
 * its ranges before the request is sent: from then on the server's accesses there are EFAULT,
 * even if the server then fails the unmap. A DMA_READ or DMA_WRITE over the negotiated
 * max_data_xfer_size is E2BIG (QEMU hw/vfio-user/pci.c vfio_user_dma_read).
 */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C, VfioUserDmaMapFlags } from '../abi/vfio-user.js';
import type { DmaMemory } from '../driver/file.js';
import { fail, MalformedError, VfioError } from '../errors.js';
import {
  type DmaLayout,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  encodeDmaMap,
  encodeDmaReadReply,
  encodeDmaUnmap,
  encodeDmaWriteReply,
} from '../wire/vfio-user.js';
import type { Connection } from './connection.js';

interface LocalDma {
  readonly iova: bigint;
  readonly size: bigint;
  readonly bytes: Uint8Array;
  readonly read: boolean;
  readonly write: boolean;
}

const U64_LIMIT = 1n << 64n;

export class ClientDma {
  #ranges: LocalDma[] = [];

  constructor(
    private readonly conn: Pick<Connection, 'request'>,
    /** The negotiated max_data_xfer_size (ours before VERSION has settled). */
    private readonly maxDataXferSize: () => number,
  ) {}

  /** DMA_MAP of `memory` at `iova`; the range is kept for the server's DMA_READ/DMA_WRITE. */
  async map(iova: bigint, memory: DmaMemory, access: { read: boolean; write: boolean }): Promise<void> {
    const op = 'VFIO_USER_DMA_MAP';
    const size = BigInt(memory.size);
    if (size <= 0n || size > BigInt(memory.bytes.length) || iova < 0n || iova + size > U64_LIMIT)
      fail(Errno.EINVAL, op, `0x${iova.toString(16)}+0x${size.toString(16)}`);
    const flags =
      (access.read ? VfioUserDmaMapFlags.READ : 0) | (access.write ? VfioUserDmaMapFlags.WRITE : 0);
    await this.conn.request(
      C.DMA_MAP,
      [encodeDmaMap({ argsz: 32, flags, offset: 0n, address: iova, size })],
      memory.fd === undefined ? [] : [memory.fd],
    );
    this.#ranges.push({ iova, size, bytes: memory.bytes, read: access.read, write: access.write });
  }

  /** DMA_UNMAP of [iova, iova+size): every mapping inside it, none cut in two. */
  async unmap(iova: bigint, size: bigint): Promise<void> {
    const op = 'VFIO_USER_DMA_UNMAP';
    const end = iova + size;
    if (size <= 0n || iova < 0n || end > U64_LIMIT)
      fail(Errno.EINVAL, op, `0x${iova.toString(16)}+0x${size.toString(16)}`);
    const split = this.#ranges.find(
      (d) => (d.iova < iova && iova < d.iova + d.size) || (d.iova < end && end < d.iova + d.size),
    );
    if (split)
      fail(
        Errno.EINVAL,
        op,
        `would split the mapping at 0x${split.iova.toString(16)}+0x${split.size.toString(16)}`,
      );
    this.#ranges = this.#ranges.filter((d) => !(d.iova >= iova && d.iova + d.size <= end));
    await this.conn.request(C.DMA_UNMAP, [encodeDmaUnmap({ argsz: 24, flags: 0, address: iova, size })], [], {
      maxReply: 24,
    });
  }

  /** DMA_READ / DMA_WRITE from the server: answered from the memory the driver mapped. */
  serve(command: number, payload: Uint8Array, layout: DmaLayout): Uint8Array {
    if (command === C.DMA_READ) {
      const op = 'VFIO_USER_DMA_READ';
      const q = decodeCommand(op, () => decodeDmaReadRequest(payload, layout));
      this.#checkSize(op, q.count);
      const { d, off } = this.#find(op, q.address, q.count, false);
      return encodeDmaReadReply({ address: q.address, data: d.bytes.subarray(off, off + q.count) }, layout);
    }
    if (command === C.DMA_WRITE) {
      const op = 'VFIO_USER_DMA_WRITE';
      const q = decodeCommand(op, () => decodeDmaWriteRequest(payload, layout));
      this.#checkSize(op, q.data.length);
      const { d, off } = this.#find(op, q.address, q.data.length, true);
      d.bytes.set(q.data, off);
      return encodeDmaWriteReply({ address: q.address, count: q.data.length }, layout);
    }
    return fail(Errno.EINVAL, `command ${command}`, 'not a server-to-client command');
  }

  #checkSize(op: string, count: number): void {
    const max = this.maxDataXferSize();
    if (count > max) fail(Errno.E2BIG, op, `${count} bytes > max_data_xfer_size ${max}`);
  }

  #find(op: string, iova: bigint, count: number, write: boolean): { d: LocalDma; off: number } {
    const end = iova + BigInt(count);
    const d = this.#ranges.find((x) => iova >= x.iova && end <= x.iova + x.size);
    if (!d) return fail(Errno.EFAULT, op, `0x${iova.toString(16)}+${count} not mapped`);
    if (write ? !d.write : !d.read) fail(Errno.EPERM, op, 'mapping forbids it');
    return { d, off: Number(iova - d.iova) };
  }

  /** Forgets every range (the client closes). */
  clear(): void {
    this.#ranges = [];
  }
}

/** A server command we cannot decode is answered EINVAL, as a server answers a client's. */
function decodeCommand<T>(op: string, decode: () => T): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof MalformedError) throw new VfioError(e.errno, op, e.message);
    throw e;
  }
}
