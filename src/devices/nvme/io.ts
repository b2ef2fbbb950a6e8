/**
 * The NVM Command Set commands this controller implements (NVMe 1.4 §6): Flush, Write, Read,
 * Write Zeroes and Dataset Management (deallocate), on the one namespace. Other opcodes are
 * Invalid Command Opcode (Identify Controller ONCS names the optional ones supported).
 *
 * Durability (Identify Controller VWC bit 0: a volatile write cache): a Write completes once the
 * data is in the host kernel's page cache; Flush, a Write or Write Zeroes with FUA, and every
 * write while the Volatile Write Cache feature is off wait for fdatasync(2) before completing.
 */
import type { NvmeController } from './controller.js';
import { NSID } from './identify.js';
import { writeZeroes } from './namespace.js';
import { copyFromHost, copyToHost, prpSegments } from './prp.js';
import type { Command } from './queues.js';
import { NSID_ALL, NVM, SC } from './spec.js';
import { type Completion, failCommand, SUCCESS } from './status.js';

/** Dataset Management range entries: at most 256 (NR is 0-based, 8 bits). */
const DSM_RANGE_SIZE = 16;
/** Command Dword 12 bits: Force Unit Access (30), Deallocate of Write Zeroes (25). */
const FUA = 1 << 30;
const DEAC = 1 << 25;
/** Dataset Management Dword 11 bit 2: Attribute – Deallocate. */
const AD = 1 << 2;

export interface IoStats {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  mediaErrors: number;
}

export class IoCommands {
  readonly stats: IoStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, mediaErrors: 0 };

  constructor(private readonly ctl: NvmeController) {}

  async execute(cmd: Command): Promise<Completion> {
    // FUSE (bits 1:0): no fused operations; PSDT (bits 7:6): PRPs only (SGLS is 0).
    if (cmd.flags & 0xc3) failCommand(SC.INVALID_FIELD, `flags 0x${cmd.flags.toString(16)}`);
    switch (cmd.opcode) {
      case NVM.READ:
        return this.read(cmd);
      case NVM.WRITE:
        return this.write(cmd);
      case NVM.FLUSH:
        // Identify Controller VWC bits 2:1 = 11b: the broadcast NSID flushes all namespaces.
        if (cmd.nsid !== NSID && cmd.nsid !== NSID_ALL) failCommand(SC.INVALID_NAMESPACE, `NSID ${cmd.nsid}`);
        await this.flush();
        return SUCCESS;
      case NVM.WRITE_ZEROES:
        return this.writeZeroes(cmd);
      case NVM.DATASET_MANAGEMENT:
        return this.datasetManagement(cmd);
    }
    return failCommand(SC.INVALID_OPCODE, `I/O opcode 0x${cmd.opcode.toString(16)}`);
  }

  private get blocks(): bigint {
    return BigInt(this.ctl.namespace.size / this.ctl.blockSize);
  }

  /**
   * SLBA (Dwords 10-11) and NLB (Dword 12 bits 15:0, 0-based) as a byte range, checked:
   * the namespace, then MDTS for commands that move data (Invalid Field, as QEMU's
   * nvme_check_mdts), then the namespace's size (LBA Out of Range).
   */
  private range(cmd: Command, transfers: boolean): { offset: number; length: number } {
    if (cmd.nsid !== NSID) failCommand(SC.INVALID_NAMESPACE, `NSID ${cmd.nsid}`);
    const slba = BigInt(cmd.cdw10) | (BigInt(cmd.cdw11) << 32n);
    const nlb = (cmd.cdw12 & 0xffff) + 1;
    const length = nlb * this.ctl.blockSize;
    if (transfers && length > this.ctl.maxTransfer) failCommand(SC.INVALID_FIELD, `${length} bytes > MDTS`);
    if (slba + BigInt(nlb) > this.blocks) failCommand(SC.LBA_OUT_OF_RANGE, `LBA ${slba}+${nlb}`);
    return { offset: Number(slba) * this.ctl.blockSize, length };
  }

  /** Read (§6 NVM Command Set). */
  private async read(cmd: Command): Promise<Completion> {
    const { offset, length } = this.range(cmd, true);
    const port = this.ctl.port();
    const segs = await prpSegments(port, cmd.prp1, cmd.prp2, length);
    const buf = Buffer.allocUnsafe(length);
    try {
      await this.ctl.namespace.read(offset, buf);
    } catch (e) {
      this.stats.mediaErrors++;
      failCommand(SC.UNRECOVERED_READ_ERROR, `read at ${offset}: ${e}`);
    }
    await copyToHost(port, segs, buf);
    this.stats.reads++;
    this.stats.bytesRead += length;
    return SUCCESS;
  }

  /** Write (§6). */
  private async write(cmd: Command): Promise<Completion> {
    const { offset, length } = this.range(cmd, true);
    const port = this.ctl.port();
    const segs = await prpSegments(port, cmd.prp1, cmd.prp2, length);
    const buf = Buffer.allocUnsafe(length);
    await copyFromHost(port, segs, buf);
    try {
      await this.ctl.namespace.write(offset, buf);
    } catch (e) {
      this.stats.mediaErrors++;
      failCommand(SC.WRITE_FAULT, `write at ${offset}: ${e}`);
    }
    if (cmd.cdw12 & FUA || !this.ctl.features.writeCache) await this.flush();
    this.stats.writes++;
    this.stats.bytesWritten += length;
    return SUCCESS;
  }

  /** Flush (§6): fdatasync; a failure means acknowledged data may be lost (Write Fault). */
  private async flush(): Promise<void> {
    try {
      await this.ctl.namespace.flush();
    } catch (e) {
      this.stats.mediaErrors++;
      failCommand(SC.WRITE_FAULT, `flush: ${e}`);
    }
  }

  /** Write Zeroes (§6): no data transfer, so no MDTS limit; DEAC deallocates (DLFEAT: reads zero). */
  private async writeZeroes(cmd: Command): Promise<Completion> {
    const { offset, length } = this.range(cmd, false);
    try {
      if (cmd.cdw12 & DEAC) await this.ctl.namespace.deallocate(offset, length);
      else await writeZeroes(this.ctl.namespace, offset, length);
    } catch (e) {
      this.stats.mediaErrors++;
      failCommand(SC.WRITE_FAULT, `write zeroes at ${offset}: ${e}`);
    }
    if (cmd.cdw12 & FUA || !this.ctl.features.writeCache) await this.flush();
    return SUCCESS;
  }

  /**
   * Dataset Management (§6): NR + 1 ranges (context attributes, length in blocks, starting LBA)
   * read from the PRPs. With AD the ranges are deallocated; the other attributes are hints.
   * Every range is checked before any is touched.
   */
  private async datasetManagement(cmd: Command): Promise<Completion> {
    if (cmd.nsid !== NSID) failCommand(SC.INVALID_NAMESPACE, `NSID ${cmd.nsid}`);
    const count = (cmd.cdw10 & 0xff) + 1;
    const port = this.ctl.port();
    const list = new Uint8Array(count * DSM_RANGE_SIZE);
    await copyFromHost(port, await prpSegments(port, cmd.prp1, cmd.prp2, list.length), list);
    if (!(cmd.cdw11 & AD)) return SUCCESS;
    const v = new DataView(list.buffer);
    const ranges: { offset: number; length: number }[] = [];
    for (let i = 0; i < count; i++) {
      const nlb = v.getUint32(i * DSM_RANGE_SIZE + 4, true);
      const slba = v.getBigUint64(i * DSM_RANGE_SIZE + 8, true);
      if (slba + BigInt(nlb) > this.blocks)
        failCommand(SC.LBA_OUT_OF_RANGE, `range ${i}: LBA ${slba}+${nlb}`);
      if (nlb > 0)
        ranges.push({ offset: Number(slba) * this.ctl.blockSize, length: nlb * this.ctl.blockSize });
    }
    try {
      for (const r of ranges) await this.ctl.namespace.deallocate(r.offset, r.length);
    } catch (e) {
      this.stats.mediaErrors++;
      failCommand(SC.WRITE_FAULT, `deallocate: ${e}`);
    }
    return SUCCESS;
  }
}
