/**
 * Get Features and Set Features (NVMe 1.4 §5.13, §5.21), the features Linux's nvme driver asks
 * for and the ones every controller has: Arbitration, Power Management, Temperature Threshold,
 * Error Recovery, Volatile Write Cache, Number of Queues, Interrupt Coalescing, Interrupt Vector
 * Configuration, Write Atomicity Normal, Asynchronous Event Configuration. None is saveable.
 *
 * Values survive a Controller Level Reset (QEMU's nvme keeps them too; Linux sets what it needs
 * after every reset) and go back to their defaults on a Function Level Reset.
 */
import { TEMPERATURE_K, WCTEMP_K } from './identify.js';
import { FEATURE, SC } from './spec.js';
import { type Completion, failCommand } from './status.js';

/** What the features need to know of the controller. */
export interface FeatureContext {
  /** MSI-X vectors (Interrupt Vector Configuration checks against it). */
  readonly vectors: number;
  /** I/O queue pairs the controller can give. */
  readonly maxIoQueues: number;
  /** Whether any I/O queue exists (Number of Queues may change only before). */
  hasIoQueues(): boolean;
  /** A Temperature Threshold now crossed: the SMART / health asynchronous event (§5.2.1). */
  temperatureEvent(): void;
}

/** Get Features SEL (Dword 10 bits 10:8): 000b current, 001b default, 010b saved, 011b capabilities. */
const SEL_CURRENT = 0;
const SEL_SUPPORTED = 3;
/** Supported capabilities (SEL 011b) Dword 0: changeable (bit 2); not saveable, not per namespace. */
const CAPABILITY_CHANGEABLE = 0x4;

export class Features {
  arbitration = 0;
  powerState = 0;
  overTemperature = WCTEMP_K;
  underTemperature = 0;
  errorRecovery = 0;
  writeCache = true;
  /** Number of Queues granted (0-based), or the maximum until the host asks. */
  sqAllocated: number;
  cqAllocated: number;
  coalescing = 0;
  writeAtomicity = 0;
  asyncEvents = 0;
  /** Interrupt Vector Configuration: Coalescing Disable per vector (bit 16 of the value). */
  readonly coalescingDisabled = new Set<number>();

  constructor(private readonly ctx: FeatureContext) {
    this.sqAllocated = this.cqAllocated = ctx.maxIoQueues - 1;
  }

  reset(): void {
    this.arbitration = this.powerState = this.underTemperature = this.errorRecovery = 0;
    this.overTemperature = WCTEMP_K;
    this.writeCache = true;
    this.sqAllocated = this.cqAllocated = this.ctx.maxIoQueues - 1;
    this.coalescing = this.writeAtomicity = this.asyncEvents = 0;
    this.coalescingDisabled.clear();
  }

  /** SMART Critical Warning bit 1: the composite temperature is past a threshold (§5.14.1.2). */
  get temperatureWarning(): boolean {
    return TEMPERATURE_K > this.overTemperature || TEMPERATURE_K < this.underTemperature;
  }

  /** Get Features: Dword 0 of the completion. */
  get(cdw10: number, cdw11: number): Completion {
    const fid = cdw10 & 0xff;
    const sel = (cdw10 >>> 8) & 7;
    if (sel > SEL_SUPPORTED) failCommand(SC.INVALID_FIELD, `SEL ${sel}`);
    const value = this.value(fid, cdw11, sel === SEL_CURRENT);
    return { status: SC.SUCCESS, result: sel === SEL_SUPPORTED ? CAPABILITY_CHANGEABLE : value };
  }

  /** A feature's current value, or its default (SEL 001b; 010b too, since nothing is saved). */
  private value(fid: number, cdw11: number, current: boolean): number {
    const f = current ? this : new Features(this.ctx);
    switch (fid) {
      case FEATURE.ARBITRATION:
        return f.arbitration;
      case FEATURE.POWER_MANAGEMENT:
        return f.powerState;
      case FEATURE.TEMPERATURE_THRESHOLD:
        return this.underThreshold(cdw11) ? f.underTemperature : f.overTemperature;
      case FEATURE.ERROR_RECOVERY:
        return f.errorRecovery;
      case FEATURE.VOLATILE_WRITE_CACHE:
        return f.writeCache ? 1 : 0;
      case FEATURE.NUMBER_OF_QUEUES:
        return (f.sqAllocated | (f.cqAllocated << 16)) >>> 0;
      case FEATURE.INTERRUPT_COALESCING:
        return f.coalescing;
      case FEATURE.INTERRUPT_VECTOR_CONFIG: {
        const iv = cdw11 & 0xffff;
        if (iv >= this.ctx.vectors) failCommand(SC.INVALID_FIELD, `vector ${iv}`);
        return (iv | (f.coalescingDisabled.has(iv) ? 1 << 16 : 0)) >>> 0;
      }
      case FEATURE.WRITE_ATOMICITY:
        return f.writeAtomicity;
      case FEATURE.ASYNC_EVENT_CONFIG:
        return f.asyncEvents;
    }
    return failCommand(SC.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
  }

  /**
   * Temperature Threshold Dword 11: TMPSEL (19:16) composite (0h) or all sensors (Fh), THSEL
   * (21:20) over (00b) or under (01b). Whether it names the under-temperature threshold.
   */
  private underThreshold(cdw11: number): boolean {
    const sensor = (cdw11 >>> 16) & 0xf;
    const thsel = (cdw11 >>> 20) & 3;
    // Only the composite temperature exists (the SMART log reports no other sensor).
    if ((sensor !== 0 && sensor !== 0xf) || thsel > 1) failCommand(SC.INVALID_FIELD, 'temperature sensor');
    return thsel === 1;
  }

  /** Set Features. */
  set(cdw10: number, cdw11: number): Completion {
    const fid = cdw10 & 0xff;
    if (cdw10 & 0x8000_0000) failCommand(SC.FEATURE_NOT_SAVEABLE, `feature 0x${fid.toString(16)}`);
    let result = 0;
    switch (fid) {
      case FEATURE.ARBITRATION:
        this.arbitration = cdw11 & 0xffff_ff07;
        break;
      case FEATURE.POWER_MANAGEMENT:
        // PS must name a power state Identify describes (NPSS = 0: only state 0).
        if ((cdw11 & 0x1f) !== 0) failCommand(SC.INVALID_FIELD, `power state ${cdw11 & 0x1f}`);
        this.powerState = cdw11 & 0xff;
        break;
      case FEATURE.TEMPERATURE_THRESHOLD: {
        const under = this.underThreshold(cdw11);
        const was = this.temperatureWarning;
        if (under) this.underTemperature = cdw11 & 0xffff;
        else this.overTemperature = cdw11 & 0xffff;
        if (!was && this.temperatureWarning) this.ctx.temperatureEvent();
        break;
      }
      case FEATURE.ERROR_RECOVERY:
        // DULBE (bit 16) needs NSFEAT DAE, which the namespace does not report.
        if (cdw11 & 0x1_0000) failCommand(SC.INVALID_FIELD, 'DULBE unsupported');
        this.errorRecovery = cdw11 & 0xffff;
        break;
      case FEATURE.VOLATILE_WRITE_CACHE:
        this.writeCache = (cdw11 & 1) === 1;
        break;
      case FEATURE.NUMBER_OF_QUEUES: {
        const nsqr = cdw11 & 0xffff;
        const ncqr = cdw11 >>> 16;
        // 65535 would be 65536 queues: "the controller shall return Invalid Field".
        if (nsqr === 0xffff || ncqr === 0xffff) failCommand(SC.INVALID_FIELD, 'NSQR/NCQR 65535');
        // Only during initialization, before any I/O queue exists.
        if (this.ctx.hasIoQueues()) failCommand(SC.COMMAND_SEQUENCE_ERROR, 'I/O queues exist');
        this.sqAllocated = Math.min(nsqr, this.ctx.maxIoQueues - 1);
        this.cqAllocated = Math.min(ncqr, this.ctx.maxIoQueues - 1);
        result = (this.sqAllocated | (this.cqAllocated << 16)) >>> 0;
        break;
      }
      case FEATURE.INTERRUPT_COALESCING:
        this.coalescing = cdw11 & 0xffff;
        break;
      case FEATURE.INTERRUPT_VECTOR_CONFIG: {
        const iv = cdw11 & 0xffff;
        if (iv >= this.ctx.vectors) failCommand(SC.INVALID_FIELD, `vector ${iv}`);
        if (cdw11 & 0x1_0000) this.coalescingDisabled.add(iv);
        else this.coalescingDisabled.delete(iv);
        break;
      }
      case FEATURE.WRITE_ATOMICITY:
        this.writeAtomicity = cdw11 & 1;
        break;
      case FEATURE.ASYNC_EVENT_CONFIG:
        // SMART / health critical warnings (bits 7:0); notices the controller never sends stay 0.
        this.asyncEvents = cdw11 & 0xff;
        break;
      default:
        failCommand(SC.INVALID_FIELD, `feature 0x${fid.toString(16)}`);
    }
    return { status: SC.SUCCESS, result };
  }
}
