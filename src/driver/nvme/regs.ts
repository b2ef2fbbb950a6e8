/**
 * Every access the driver makes to the controller's registers goes through this class (ixy's
 * rule: a few named helpers that own the barrier). BAR0 is reached through an uncached mmap of
 * the region where the backend allows one (the kernel's vfio-pci, with MSIX_MAPPABLE or a
 * sparse area over the registers and doorbells), else through pread/pwrite of the device fd
 * (trapped registers: a vfio-user server, the in-process core).
 *
 * The doorbell helpers are where the write-combining rule lives: a submission queue doorbell for
 * a queue whose entries sit in WC memory is preceded by a store fence (barrier.ts), so the
 * entries are out of the WC buffers before the controller can see the new tail.
 */
import { Errno } from '../../abi/errno.js';
import { VFIO_REGION_INFO_FLAG_MMAP } from '../../abi/vfio.js';
import { fail, VfioError } from '../../errors.js';
import type { VfioDevice } from '../device.js';
import type { Mapping } from '../file.js';
import type { Fence } from './barrier.js';
import { cqHeadDoorbell, REG_ALL_ONES, REGISTER_PAGE, sqTailDoorbell } from './spec.js';

/** BAR0 bytes mapped for registers and doorbells: the register page and one doorbell page. */
export const REGISTER_MAP_BYTES = 2 * REGISTER_PAGE;
/** BAR0 is region 0 (NVMe 1.4 §2.1.10 MLBAR/MUBAR). */
export const NVME_REGISTER_BAR = 0;

export type RegisterRoute = 'mmap' | 'pwrite';

export class ControllerRegisters {
  /** Doorbell stride (CAP.DSTRD), known once CAP has been read. */
  dstrd = 0;

  private constructor(
    private readonly dev: VfioDevice,
    private readonly mapping: Mapping | undefined,
    private readonly words: Uint32Array | undefined,
    private readonly fence: Fence,
  ) {}

  /**
   * `route` 'auto' maps BAR0 when REGION_INFO says it may be mmapped and the mmap succeeds, and
   * otherwise (or with 'pwrite') uses the device fd.
   */
  static async open(
    dev: VfioDevice,
    route: RegisterRoute | 'auto',
    fence: Fence,
  ): Promise<ControllerRegisters> {
    if (route !== 'pwrite') {
      const info = await dev.regionInfo(NVME_REGISTER_BAR);
      if (info.size < BigInt(REGISTER_MAP_BYTES))
        fail(Errno.ENODEV, 'nvme', `BAR0 is ${info.size} bytes: too small for NVMe registers`);
      if (info.flags & VFIO_REGION_INFO_FLAG_MMAP) {
        try {
          const m = await dev.map(NVME_REGISTER_BAR, { length: REGISTER_MAP_BYTES });
          const words = new Uint32Array(m.bytes.buffer, m.bytes.byteOffset, REGISTER_MAP_BYTES / 4);
          return new ControllerRegisters(dev, m, words, fence);
        } catch (e) {
          if (!(e instanceof VfioError) || route === 'mmap') throw e;
        }
      } else if (route === 'mmap') fail(Errno.EINVAL, 'nvme', 'BAR0 cannot be mmapped on this device');
    }
    return new ControllerRegisters(dev, undefined, undefined, fence);
  }

  get route(): RegisterRoute {
    return this.words ? 'mmap' : 'pwrite';
  }

  async read32(offset: number): Promise<number> {
    if (this.words) return this.words[offset >> 2]!;
    return this.dev.read32(NVME_REGISTER_BAR, offset);
  }

  async write32(offset: number, value: number): Promise<void> {
    if (this.words) this.words[offset >> 2] = value;
    else await this.pwrite32(offset, value);
  }

  /**
   * A 64-bit register as two 32-bit accesses, low dword first, as Linux reads CAP on hosts
   * without readq (drivers/nvme/host/pci.c: lo_hi_readq), and as every backend can do.
   */
  async read64(offset: number): Promise<bigint> {
    const lo = await this.read32(offset);
    const hi = await this.read32(offset + 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /**
   * A 64-bit register written as two dwords. `order` 'lo-hi' is Linux's lo_hi_writeq (ASQ, ACQ:
   * nvme_pci_configure_admin_queue); 'hi-lo' puts the low dword — which holds CMBMSC's enable
   * bits — last, so a controller that acts on the low write sees the whole address (QEMU's
   * nvme_write_bar, NVME_REG_CMBMSC).
   */
  async write64(offset: number, value: bigint, order: 'lo-hi' | 'hi-lo' = 'lo-hi'): Promise<void> {
    const lo = Number(value & 0xffff_ffffn);
    const hi = Number((value >> 32n) & 0xffff_ffffn);
    if (order === 'lo-hi') {
      await this.write32(offset, lo);
      await this.write32(offset + 4, hi);
    } else {
      await this.write32(offset + 4, hi);
      await this.write32(offset, lo);
    }
  }

  /** CSTS, or ENODEV when the device reads all ones (surprise removal, a PCIe master abort). */
  async status(offset: number): Promise<number> {
    const v = await this.read32(offset);
    if (v === REG_ALL_ONES) fail(Errno.ENODEV, 'nvme', 'registers read all ones: the controller is gone');
    return v;
  }

  /**
   * SQ y Tail doorbell (NVMe 1.4 §3.1.24). With `wc` (the queue's entries are in
   * write-combining memory) a store fence comes first: the only path to a submission doorbell,
   * so no doorbell can overtake the entries it announces.
   */
  ringSubmission(qid: number, tail: number, wc: boolean): Promise<void> | undefined {
    if (wc) this.fence();
    return this.doorbell(sqTailDoorbell(qid, this.dstrd), tail);
  }

  /** CQ y Head doorbell (§3.1.25): entries up to `head` are consumed. No fence: CQs are host memory. */
  ringCompletion(qid: number, head: number): Promise<void> | undefined {
    return this.doorbell(cqHeadDoorbell(qid, this.dstrd), head);
  }

  /** A doorbell store: synchronous through the mapping, a pwrite otherwise. */
  private doorbell(offset: number, value: number): Promise<void> | undefined {
    if (this.words && offset < REGISTER_MAP_BYTES) {
      this.words[offset >> 2] = value;
      return undefined;
    }
    return this.pwrite32(offset, value);
  }

  private pwrite32(offset: number, value: number): Promise<void> {
    return this.dev.write32(NVME_REGISTER_BAR, offset, value);
  }

  close(): void {
    this.mapping?.unmap();
  }
}
