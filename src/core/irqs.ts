/**
 * Interrupt state of one device, following drivers/vfio/pci/vfio_pci_intrs.c:
 * one active type at a time (none, INTx, MSI or MSI-X), per-vector eventfd triggers, INTx
 * masking (automasked on delivery, unmasked by SET_IRQS UNMASK), and the ERR/REQ single
 * triggers. `SET_IRQS` validation lives in device.ts (vfio_set_irqs_validate_and_prepare);
 * this file is the part after it (vfio_pci_set_irqs_ioctl).
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import type { CoreEnvironment, EventSignal } from './env.js';

const OP = 'VFIO_DEVICE_SET_IRQS';

export type IrqType = 'none' | 'intx' | 'msi' | 'msix';

export interface IrqHooks {
  /**
   * MSI-X vectors can be added while MSI-X is on (vdev->has_dyn_msix, Linux 6.5+): a SET_IRQS for
   * vectors beyond those enabled allocates them instead of failing EINVAL.
   */
  dynamicMsix?: boolean;
  /**
   * Linux 6.5+ keeps MSI/MSI-X vector contexts in an xarray (vfio_irq_ctx_get): a loopback
   * trigger of vectors that were never enabled skips them instead of failing EINVAL (6.1's
   * `start + count > vdev->num_ctx` check is gone).
   */
  vectorLookup?: boolean;
  /** MSI or MSI-X was enabled with `vectors` vectors, or disabled (vectors 0). */
  onMsiChange?(msix: boolean, vectors: number): void;
}

export class IrqState {
  type: IrqType = 'none';
  /** Per-vector triggers of the active MSI/MSI-X block (vfio_pci_core_device.ctx). */
  private vectors: (EventSignal | undefined)[] = [];
  private intxTrigger: EventSignal | undefined;
  intxMasked = false;
  /** A level-triggered INTx the device raised while masked: delivered on unmask. */
  intxPending = false;
  private errTrigger: EventSignal | undefined;
  private reqTrigger: EventSignal | undefined;
  /** Deliveries per index, for tests and the demo. */
  readonly delivered = [0, 0, 0, 0, 0];

  constructor(
    private readonly env: CoreEnvironment,
    private readonly hooks: IrqHooks = {},
  ) {}

  get vectorCount(): number {
    return this.vectors.length;
  }

  /** vfio_pci_set_irqs_ioctl: dispatch on index and action; no handler is ENOTTY. */
  set(index: number, flags: number, start: number, count: number, data: Uint8Array, isPcie: boolean): void {
    const action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    switch (index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_MASK) this.intxMask(flags, start, count, data);
        else if (action === VFIO_IRQ_SET_ACTION_UNMASK) this.intxUnmask(flags, start, count, data);
        else if (action === VFIO_IRQ_SET_ACTION_TRIGGER) this.intxTrigger_(flags, start, count, data);
        else break;
        return;
      case VFIO_PCI_MSI_IRQ_INDEX:
      case VFIO_PCI_MSIX_IRQ_INDEX:
        // "XXX Need masking support exported": MASK/UNMASK fall through to ENOTTY.
        if (action !== VFIO_IRQ_SET_ACTION_TRIGGER) break;
        this.msiTrigger(index === VFIO_PCI_MSIX_IRQ_INDEX, flags, start, count, data);
        return;
      case VFIO_PCI_ERR_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_TRIGGER && isPcie) {
          this.errTrigger = this.singleTrigger(this.errTrigger, flags, start, count, data);
          return;
        }
        break;
      case VFIO_PCI_REQ_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_TRIGGER) {
          this.reqTrigger = this.singleTrigger(this.reqTrigger, flags, start, count, data);
          return;
        }
        break;
    }
    fail(Errno.ENOTTY, OP, `no handler for index ${index} action 0x${action.toString(16)}`);
  }

  // --- INTx (vfio_pci_set_intx_mask / _unmask / _trigger) ------------------------------------
  private intxMask(flags: number, start: number, count: number, data: Uint8Array): void {
    if (this.type !== 'intx' || start !== 0 || count !== 1)
      fail(Errno.EINVAL, OP, 'INTx mask needs INTx enabled, start 0, count 1');
    if (flags & VFIO_IRQ_SET_DATA_NONE) this.intxMasked = true;
    else if (flags & VFIO_IRQ_SET_DATA_BOOL) {
      if (data[0]) this.intxMasked = true;
    } else if (flags & VFIO_IRQ_SET_DATA_EVENTFD) fail(Errno.ENOTTY, OP, 'INTx mask by eventfd');
  }

  private intxUnmask(flags: number, start: number, count: number, data: Uint8Array): void {
    if (this.type !== 'intx' || start !== 0 || count !== 1)
      fail(Errno.EINVAL, OP, 'INTx unmask needs INTx enabled, start 0, count 1');
    if (flags & VFIO_IRQ_SET_DATA_NONE) this.unmaskIntx();
    else if (flags & VFIO_IRQ_SET_DATA_BOOL) {
      if (data[0]) this.unmaskIntx();
    } else if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
      // The kernel arms a virqfd that unmasks when the fd is signalled; the model validates the
      // fd (same errors) and unmasks through the ioctl path only.
      const fd = s32(data, 0);
      if (fd >= 0) this.env.eventfd(fd).close();
    }
  }

  private unmaskIntx(): void {
    this.intxMasked = false;
    if (this.intxPending) {
      this.intxPending = false;
      this.deliverIntx();
    }
  }

  private intxTrigger_(flags: number, start: number, count: number, data: Uint8Array): void {
    if (this.type === 'intx' && count === 0 && flags & VFIO_IRQ_SET_DATA_NONE) {
      this.disableAll();
      return;
    }
    if (!(this.type === 'intx' || this.type === 'none') || start !== 0 || count !== 1)
      fail(Errno.EINVAL, OP, 'INTx trigger needs start 0, count 1');
    if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
      const fd = s32(data, 0);
      const sig = fd >= 0 ? this.env.eventfd(fd) : undefined;
      this.intxTrigger?.close();
      this.intxTrigger = sig;
      if (this.type === 'none') {
        this.type = 'intx';
        this.intxMasked = false;
      }
      return;
    }
    if (this.type !== 'intx') fail(Errno.EINVAL, OP, 'INTx not enabled');
    if (flags & VFIO_IRQ_SET_DATA_NONE || (flags & VFIO_IRQ_SET_DATA_BOOL && data[0])) this.deliverIntx();
  }

  // --- MSI / MSI-X (vfio_pci_set_msi_trigger) -------------------------------------------------
  private msiTrigger(msix: boolean, flags: number, start: number, count: number, data: Uint8Array): void {
    const want: IrqType = msix ? 'msix' : 'msi';
    if (this.type === want && count === 0 && flags & VFIO_IRQ_SET_DATA_NONE) {
      this.disableAll();
      return;
    }
    if (!(this.type === want || this.type === 'none')) fail(Errno.EINVAL, OP, `${this.type} is active`);
    if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
      const enabling = this.type === 'none';
      if (enabling) {
        this.type = want;
        this.vectors = new Array<EventSignal | undefined>(start + count).fill(undefined);
        this.hooks.onMsiChange?.(msix, start + count);
      }
      try {
        this.setBlock(start, count, data);
      } catch (e) {
        if (enabling) this.disableAll();
        throw e;
      }
      return;
    }
    if (this.type !== want || (!this.hooks.vectorLookup && start + count > this.vectors.length))
      fail(Errno.EINVAL, OP, 'vectors out of range');
    for (let i = start; i < start + count; i++) {
      if (!this.vectors[i]) continue;
      if (flags & VFIO_IRQ_SET_DATA_NONE || (flags & VFIO_IRQ_SET_DATA_BOOL && data[i - start]))
        this.deliverVector(i);
    }
  }

  /** vfio_msi_set_block: all-or-nothing for range errors; each fd < 0 clears its vector. */
  private setBlock(start: number, count: number, data: Uint8Array): void {
    if (this.type === 'msix' && this.hooks.dynamicMsix && start + count > this.vectors.length) {
      // vfio_msi_set_vector_signal → vfio_msi_alloc_irq allocates the vector (range already
      // checked against the table size by vfio_set_irqs_validate_and_prepare).
      while (this.vectors.length < start + count) this.vectors.push(undefined);
    }
    if (start >= this.vectors.length || start + count > this.vectors.length)
      fail(Errno.EINVAL, OP, `vectors ${start}+${count} beyond ${this.vectors.length}`);
    for (let i = 0; i < count; i++) {
      const fd = s32(data, 4 * i);
      const sig = fd >= 0 ? this.env.eventfd(fd) : undefined;
      this.vectors[start + i]?.close();
      this.vectors[start + i] = sig;
    }
  }

  // --- ERR / REQ (vfio_pci_set_ctx_trigger_single) --------------------------------------------
  private singleTrigger(
    cur: EventSignal | undefined,
    flags: number,
    start: number,
    count: number,
    data: Uint8Array,
  ): EventSignal | undefined {
    if (start !== 0 || count > 1) fail(Errno.EINVAL, OP, 'single trigger needs start 0, count <= 1');
    if (flags & VFIO_IRQ_SET_DATA_NONE) {
      if (cur) {
        if (count) {
          cur.signal();
          return cur;
        }
        cur.close();
        return undefined;
      }
      // No trigger set: the kernel falls through to its final `return -EINVAL` (seen on 6.1/7.3).
      return fail(Errno.EINVAL, OP, 'DATA_NONE without a trigger');
    }
    if (flags & VFIO_IRQ_SET_DATA_BOOL) {
      if (!count) fail(Errno.EINVAL, OP, 'BOOL with count 0');
      if (data[0] && cur) cur.signal();
      return cur;
    }
    if (flags & VFIO_IRQ_SET_DATA_EVENTFD) {
      if (!count) fail(Errno.EINVAL, OP, 'EVENTFD with count 0');
      const fd = s32(data, 0);
      if (fd === -1) {
        cur?.close();
        return undefined;
      }
      if (fd >= 0) {
        const sig = this.env.eventfd(fd);
        cur?.close();
        return sig;
      }
      return cur;
    }
    return fail(Errno.EINVAL, OP, 'no data type');
  }

  // --- Delivery from the device side ----------------------------------------------------------
  /** The device raises interrupt `vector` of the active type (INTx: vector 0). */
  raise(vector = 0): boolean {
    if (this.type === 'intx') {
      if (this.intxMasked) {
        this.intxPending = true;
        return false;
      }
      this.deliverIntx();
      return true;
    }
    if (this.type === 'msi' || this.type === 'msix') return this.deliverVector(vector);
    return false;
  }

  raiseErr(): void {
    this.errTrigger?.signal();
  }

  raiseReq(): void {
    this.reqTrigger?.signal();
  }

  private deliverIntx(): void {
    // INTx is AUTOMASKED (VFIO_IRQ_INFO_AUTOMASKED): masked on delivery until UNMASK.
    this.intxMasked = true;
    this.delivered[VFIO_PCI_INTX_IRQ_INDEX]!++;
    this.intxTrigger?.signal();
  }

  private deliverVector(i: number): boolean {
    const sig = this.vectors[i];
    if (!sig) return false;
    this.delivered[this.type === 'msix' ? VFIO_PCI_MSIX_IRQ_INDEX : VFIO_PCI_MSI_IRQ_INDEX]!++;
    sig.signal();
    return true;
  }

  /** vfio_intx_disable / vfio_msi_disable; also used on reset and close. */
  disableAll(): void {
    const wasMsi = this.type === 'msi' || this.type === 'msix';
    const msix = this.type === 'msix';
    for (const v of this.vectors) v?.close();
    this.vectors = [];
    this.intxTrigger?.close();
    this.intxTrigger = undefined;
    this.intxMasked = false;
    this.intxPending = false;
    this.type = 'none';
    if (wasMsi) this.hooks.onMsiChange?.(msix, 0);
  }

  /** Drops every eventfd reference, ERR/REQ included (device close). */
  close(): void {
    this.disableAll();
    this.errTrigger?.close();
    this.reqTrigger?.close();
    this.errTrigger = undefined;
    this.reqTrigger = undefined;
  }
}

function s32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getInt32(off, true);
}
