/**
 * The Controller Memory Buffer (NVMe 1.4 §4.7): memory of the controller's own, in a BAR the
 * host maps, that the host may hold submission queues in (CMBSZ.SQS; this controller supports
 * nothing else there). With CAP.CMBS set, the host turns the registers on (CMBMSC.CRE) and tells
 * the controller at which address it sees the BAR (CMBMSC.CBA with CMSE, §3.1.16): addresses of
 * queues and data pointers inside [CBA, CBA + size) are then the CMB, not host memory. Linux's
 * nvme_map_cmb writes CMBMSC so, once per probe, with the BAR's bus address.
 */
import { CMBMSC, CMBSTS_CBAI, CMBSZ } from './spec.js';

/** CMBLOC bit 3, CQMMS: a queue in the CMB may pair with a queue in host memory. */
const CMBLOC_CQMMS = 1 << 3;

export class ControllerMemoryBuffer {
  /** CMBMSC as the host wrote it (reserved bits clear). */
  msc = 0n;
  /** CMBSTS. */
  sts = 0;

  constructor(
    readonly bar: number,
    /** Bytes, a multiple of 4 KiB. */
    readonly size: number,
  ) {}

  /** §3.1.11 CMBLOC: BIR and CQMMS, offset 0; 0 until CMBMSC.CRE. */
  get loc(): number {
    return this.msc & CMBMSC.CRE ? this.bar | CMBLOC_CQMMS : 0;
  }

  /** §3.1.12 CMBSZ: SQS; the size in 1 MiB units when it allows, else 4 KiB; 0 until CRE. */
  get sz(): number {
    if (!(this.msc & CMBMSC.CRE)) return 0;
    const [szu, unit] = this.size % (1 << 20) === 0 ? [2, 1 << 20] : [0, 4096];
    return CMBSZ.SQS | (szu << CMBSZ.SZU_SHIFT) | ((this.size / unit) << CMBSZ.SZ_SHIFT);
  }

  /** §3.1.16 / §3.1.17: a CBA that leaves no room for the CMB below 2^64 sets CMBSTS.CBAI. */
  write(v: bigint): void {
    this.msc = v & (CMBMSC.CRE | CMBMSC.CMSE | CMBMSC.CBA_MASK);
    this.sts = (this.msc & CMBMSC.CBA_MASK) + BigInt(this.size) > 1n << 64n ? CMBSTS_CBAI : 0;
  }

  reset(): void {
    this.msc = 0n;
    this.sts = 0;
  }

  /**
   * Where [addr, addr + length) falls: its offset in the CMB when wholly inside, -1 when it
   * straddles the CMB's edge, undefined when it is host memory (also while the controller
   * memory space is off: CMSE clear, or CBA invalid).
   */
  offset(addr: bigint, length: number): number | undefined {
    if (!(this.msc & CMBMSC.CMSE) || this.sts & CMBSTS_CBAI) return undefined;
    const base = this.msc & CMBMSC.CBA_MASK;
    const end = addr + BigInt(length);
    const top = base + BigInt(this.size);
    if (end <= base || addr >= top) return undefined;
    return addr >= base && end <= top ? Number(addr - base) : -1;
  }
}
