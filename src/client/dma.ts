/**
 * DMA from the client's side: DMA_MAP / DMA_UNMAP of the driver's memory (with its memfd when it
 * has one, spec "VFIO_USER_DMA_MAP"), and the server's DMA_READ / DMA_WRITE answered from that
 * memory: the server's only way into memory passed without an fd, and what it may still use for
 * memory that has one.
 */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C, VfioUserDmaMapFlags } from '../abi/vfio-user.js';
import type { DmaMemory } from '../driver/file.js';
import { fail } from '../errors.js';
import {
  type DmaLayout,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  encodeDmaMap,
  encodeDmaReadReply,
  encodeDmaUnmap,
  encodeDmaWriteReply,
} from '../wire/vfio-user.js';
import { type Connection, closeFds, decodeOrProto } from './connection.js';

interface LocalDma {
  readonly iova: bigint;
  readonly size: bigint;
  readonly bytes: Uint8Array;
  readonly read: boolean;
  readonly write: boolean;
}

export class ClientDma {
  #ranges: LocalDma[] = [];

  constructor(private readonly conn: Pick<Connection, 'request'>) {}

  /** DMA_MAP of `memory` at `iova`; the range is kept for the server's DMA_READ/DMA_WRITE. */
  async map(iova: bigint, memory: DmaMemory, access: { read: boolean; write: boolean }): Promise<void> {
    const flags =
      (access.read ? VfioUserDmaMapFlags.READ : 0) | (access.write ? VfioUserDmaMapFlags.WRITE : 0);
    const size = BigInt(memory.size);
    const r = await this.conn.request(
      C.DMA_MAP,
      [encodeDmaMap({ argsz: 32, flags, offset: 0n, address: iova, size })],
      memory.fd === undefined ? [] : [memory.fd],
    );
    closeFds(r.fds);
    this.#ranges.push({ iova, size, bytes: memory.bytes, read: access.read, write: access.write });
  }

  /** DMA_UNMAP of [iova, iova+size); the ranges inside it are forgotten. */
  async unmap(iova: bigint, size: bigint): Promise<void> {
    const r = await this.conn.request(C.DMA_UNMAP, [
      encodeDmaUnmap({ argsz: 24, flags: 0, address: iova, size }),
    ]);
    closeFds(r.fds);
    const end = iova + size;
    this.#ranges = this.#ranges.filter((d) => !(d.iova >= iova && d.iova + d.size <= end));
  }

  /** DMA_READ / DMA_WRITE from the server: answered from the memory the driver mapped. */
  serve(command: number, payload: Uint8Array, layout: DmaLayout): Uint8Array {
    if (command === C.DMA_READ) {
      const q = decodeOrProto('VFIO_USER_DMA_READ', () => decodeDmaReadRequest(payload, layout));
      const { d, off } = this.#find(q.address, q.count, false);
      return encodeDmaReadReply({ address: q.address, data: d.bytes.subarray(off, off + q.count) }, layout);
    }
    if (command === C.DMA_WRITE) {
      const q = decodeOrProto('VFIO_USER_DMA_WRITE', () => decodeDmaWriteRequest(payload, layout));
      const { d, off } = this.#find(q.address, q.data.length, true);
      d.bytes.set(q.data, off);
      return encodeDmaWriteReply({ address: q.address, count: q.data.length }, layout);
    }
    return fail(Errno.EINVAL, `command ${command}`, 'not a server-to-client command');
  }

  #find(iova: bigint, count: number, write: boolean): { d: LocalDma; off: number } {
    const op = write ? 'VFIO_USER_DMA_WRITE' : 'VFIO_USER_DMA_READ';
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
