/**
 * An I/O queue pair as a block device sees it: Read, Write and Flush (NVMe 1.4 §6.9, §6.15,
 * §6.8) of a namespace, with data in DMA buffers described by PRPs (prp.ts). Each command slot
 * owns the PRP List pages its largest transfer (MDTS) needs, chained when there is more than
 * one, so a command never waits for list memory.
 */
import { Errno } from '../../abi/errno.js';
import { fail } from '../../errors.js';
import type { NvmeController } from './controller.js';
import { setAddress } from './controller.js';
import { type DmaBuffer, PAGE } from './dma.js';
import { buildPrps, prpListPages } from './prp.js';
import type { QueuePair } from './queue.js';
import { NVM, SQE } from './spec.js';

/** NLB is a 16-bit 0's based count (§6.9 CDW12): at most 65,536 blocks per command. */
export const MAX_BLOCKS_PER_COMMAND = 0x10000;

export class IoQueuePair {
  private constructor(
    readonly controller: NvmeController,
    readonly queue: QueuePair,
    private readonly prpLists: DmaBuffer,
    private readonly prpEntries: BigUint64Array,
    /** PRP List pages per command slot. */
    readonly listPages: number,
  ) {}

  static async create(controller: NvmeController, queue: QueuePair): Promise<IoQueuePair> {
    // The largest transfer, from a buffer that starts inside a page: one page more.
    const listPages = Math.max(1, prpListPages(controller.maxTransferBytes / PAGE + 1));
    const lists = await controller.alloc((queue.depth - 1) * listPages * PAGE);
    const entries = new BigUint64Array(
      lists.bytes.buffer,
      lists.bytes.byteOffset,
      lists.bytes.byteLength / 8,
    );
    return new IoQueuePair(controller, queue, lists, entries, listPages);
  }

  get qid(): number {
    return this.queue.qid;
  }

  get depth(): number {
    return this.queue.depth;
  }

  /** Are this pair's submission queue entries in write-combining memory (the CMB)? */
  get wc(): boolean {
    return this.queue.wc;
  }

  /** Reads `blocks` logical blocks from `slba` into the start of `buf`. */
  read(nsid: number, slba: bigint, blocks: number, buf: DmaBuffer): Promise<void> {
    return this.rw('nvme read', NVM.READ, nsid, slba, blocks, buf);
  }

  /** Writes `blocks` logical blocks at `slba` from the start of `buf`. */
  write(nsid: number, slba: bigint, blocks: number, buf: DmaBuffer): Promise<void> {
    return this.rw('nvme write', NVM.WRITE, nsid, slba, blocks, buf);
  }

  /** Flush (§6.8): data and metadata in the volatile write cache reach non-volatile media. */
  async flush(nsid: number): Promise<void> {
    this.controller.check();
    this.controller.namespace(nsid);
    await this.queue.submit('nvme flush', NVM.FLUSH, (sqe) => {
      sqe[SQE.NSID] = nsid;
    });
  }

  private async rw(
    op: string,
    opcode: number,
    nsid: number,
    slba: bigint,
    blocks: number,
    buf: DmaBuffer,
  ): Promise<void> {
    this.controller.check();
    const ns = this.controller.namespace(nsid);
    if (!Number.isInteger(blocks) || blocks < 1 || blocks > MAX_BLOCKS_PER_COMMAND)
      fail(Errno.EINVAL, op, `${blocks} blocks: one command moves 1..${MAX_BLOCKS_PER_COMMAND}`);
    if (slba < 0n || slba + BigInt(blocks) > ns.nsze)
      fail(
        Errno.EINVAL,
        op,
        `blocks ${slba}..${slba + BigInt(blocks) - 1n} lie beyond namespace ${nsid} (${ns.nsze} blocks)`,
      );
    const bytes = blocks * ns.blockBytes;
    if (bytes > buf.bytes.length)
      fail(Errno.EINVAL, op, `${bytes} bytes do not fit the ${buf.bytes.length}-byte buffer`);
    if (bytes > this.controller.maxTransferBytes)
      fail(
        Errno.EINVAL,
        op,
        `${bytes} bytes exceed the controller's largest transfer, ${this.controller.maxTransferBytes} (MDTS)`,
      );
    await this.queue.submit(op, opcode, (sqe, cid) => {
      const at = cid * this.listPages * PAGE;
      const prps = buildPrps(buf.iova, bytes, this.prpLists.iova + BigInt(at), this.listPages);
      const first = at / 8;
      for (let i = 0; i < prps.list.length; i++) this.prpEntries[first + i] = prps.list[i]!;
      sqe[SQE.NSID] = nsid;
      setAddress(sqe, SQE.PRP1, prps.prp1);
      setAddress(sqe, SQE.PRP2, prps.prp2);
      setAddress(sqe, SQE.CDW10, slba);
      sqe[SQE.CDW12] = blocks - 1;
    });
  }

  /** Deletes the queue pair on the controller (SQ, then CQ). */
  delete(): Promise<void> {
    return this.controller.deleteQueuePair(this);
  }
}
