/**
 * Interrupt state of one device, following drivers/vfio/pci/vfio_pci_intrs.c:
 * one active type at a time (none, INTx, MSI or MSI-X), per-vector eventfd triggers, INTx
 * masking (automasked on delivery, unmasked by SET_IRQS UNMASK, or by an unmask eventfd: the
 * virqfd QEMU/KVM use as the resample fd), and the ERR/REQ single
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
import type { CoreEnvironment, EventSignal, EventWatch } from './env.js';

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
  /**
   * INTx was unmasked (by the ioctl or by the unmask eventfd). The device knows whether its line
   * is still asserted and, if so, raises it again (the delivery automasks it once more).
   */
  onIntxUnmasked?(): void;
}

export class IrqState {
  type: IrqType = 'none';
  /**
   * Triggers of the active MSI/MSI-X block by vector: the per-vector contexts (6.1: the
   * vdev->ctx array's `trigger`s; 6.5+: the vdev->ctx xarray, one entry per vector with an fd).
   */
  private vectors = new Map<number, EventSignal>();
  /** Vectors pci_alloc_irq_vectors gave at enable (6.1's num_ctx): 0 .. nvec-1. */
  private nvec = 0;
  /** MSI-X vectors allocated later with pci_msix_alloc_irq_at (dynamic MSI-X, 6.5+). */
  private readonly dynVectors = new Set<number>();
  private intxTrigger: EventSignal | undefined;
  /** The INTx unmask virqfd (ctx->unmask): each signal of its eventfd unmasks INTx. */
  private intxUnmaskFd: EventWatch | undefined;
  intxMasked = false;
  private errTrigger: EventSignal | undefined;
  private reqTrigger: EventSignal | undefined;
  /** Deliveries per index, for tests and the demo. */
  readonly delivered = [0, 0, 0, 0, 0];

  constructor(
    private readonly env: CoreEnvironment,
    private readonly hooks: IrqHooks = {},
  ) {}

  /** Vectors with a trigger in the active MSI/MSI-X block. */
  get vectorCount(): number {
    return this.vectors.size;
  }

  /** Vectors allocated when MSI/MSI-X was enabled (pci_alloc_irq_vectors' nvec); 0 when off. */
  get allocated(): number {
    return this.nvec;
  }

  /** Whether an INTx unmask eventfd (virqfd) is armed. */
  get intxUnmaskArmed(): boolean {
    return this.intxUnmaskFd !== undefined;
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
      // vfio_pci_set_intx_unmask: fd >= 0 is vfio_virqfd_enable(vdev,
      // vfio_pci_intx_unmask_handler, vfio_send_intx_eventfd, ctx, &ctx->unmask, fd); any other
      // fd is vfio_virqfd_disable(&ctx->unmask) (fd -1 and every other negative fd alike).
      const fd = s32(data, 0);
      if (fd < 0) {
        this.intxUnmaskFd?.stop();
        this.intxUnmaskFd = undefined;
        return;
      }
      // drivers/vfio/virqfd.c vfio_virqfd_enable: fdget (EBADF), eventfd_ctx_fileget (EINVAL),
      // then `if (*pvirqfd) ... ret = -EBUSY`: an armed unmask eventfd is not replaced; the user
      // disables it (fd -1) first.
      this.env.eventfd(fd).close();
      if (this.intxUnmaskFd) fail(Errno.EBUSY, OP, 'an INTx unmask eventfd is already armed');
      // virqfd_wakeup → vfio_pci_intx_unmask_handler, then vfio_send_intx_eventfd when the
      // interrupt is still asserted: exactly the ioctl's unmask.
      this.intxUnmaskFd = this.env.watchEventfd(fd, () => {
        if (this.type === 'intx') this.unmaskIntx();
      });
    }
  }

  /**
   * vfio_pci_intx_unmask_handler + vfio_send_intx_eventfd: unmask; an interrupt still asserted
   * (pci_check_and_unmask_intx false) stays masked and is re-sent to the user — the device's
   * onIntxUnmasked hook knows its line and raises it again.
   */
  private unmaskIntx(): void {
    this.intxMasked = false;
    this.hooks.onIntxUnmasked?.();
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
        // vfio_msi_enable(vdev, start + count, msix): pci_alloc_irq_vectors(pdev, 1, nvec, flag)
        this.type = want;
        this.nvec = start + count;
        this.hooks.onMsiChange?.(msix, start + count);
      }
      try {
        this.setBlock(start, count, data);
      } catch (e) {
        // vfio_pci_set_msi_trigger: `ret = vfio_msi_set_block(...); if (ret) vfio_msi_disable(...)`
        if (enabling) this.disableAll();
        throw e;
      }
      return;
    }
    // 6.1: `if (!irq_is(vdev, index) || start + count > vdev->num_ctx) return -EINVAL;`
    // 6.5+: `if (!irq_is(vdev, index)) return -EINVAL;`, then vectors without a ctx are skipped.
    if (this.type !== want || (!this.hooks.vectorLookup && start + count > this.nvec))
      fail(Errno.EINVAL, OP, 'vectors out of range');
    for (let i = start; i < start + count; i++) {
      if (!this.vectors.has(i)) continue;
      if (flags & VFIO_IRQ_SET_DATA_NONE || (flags & VFIO_IRQ_SET_DATA_BOOL && data[i - start]))
        this.deliverVector(i);
    }
  }

  /**
   * vfio_msi_set_block: vectors start .. start+count-1 one by one (vfio_msi_set_vector_signal);
   * on the first failure, `for (i = start; i < j; i++) vfio_msi_set_vector_signal(vdev, i, -1,
   * msix)` clears every vector from start through the failing one (6.1: `for (--j; j >= start;
   * j--)`, the same set), and the error is returned. Vectors after the failing one are untouched.
   * 6.1 checks the whole range first: `if (start >= vdev->num_ctx || start + count >
   * vdev->num_ctx) return -EINVAL;` — 6.5+ has no such check and decides per vector.
   */
  private setBlock(start: number, count: number, data: Uint8Array): void {
    if (!this.hooks.vectorLookup && (start >= this.nvec || start + count > this.nvec))
      fail(Errno.EINVAL, OP, `vectors ${start}+${count} beyond ${this.nvec}`);
    let j = start;
    try {
      for (; j < start + count; j++) this.setVectorSignal(j, s32(data, 4 * (j - start)));
    } catch (e) {
      for (let i = start; i <= j; i++) this.setVectorSignal(i, -1);
      throw e;
    }
  }

  /**
   * vfio_msi_set_vector_signal: drop the vector's trigger; `if (fd < 0) return 0;` (6.5+: also
   * for a vector that was never allocated — nothing to free, nothing to do); 6.1 first checks
   * `vector >= vdev->num_ctx` (EINVAL), which setBlock's range check already covers. 6.5+: a
   * vector without a ctx gets its IRQ from vfio_msi_alloc_irq — pci_irq_vector finds the vectors
   * allocated at enable, dynamic MSI-X (has_dyn_msix) allocates any other one with
   * pci_msix_alloc_irq_at (it then "stays allocated"), MSI or static MSI-X is EINVAL — and only
   * then eventfd_ctx_fdget (EBADF / EINVAL).
   */
  private setVectorSignal(vector: number, fd: number): void {
    this.vectors.get(vector)?.close();
    this.vectors.delete(vector);
    if (fd < 0) return;
    if (vector >= this.nvec && !this.dynVectors.has(vector)) {
      if (!(this.type === 'msix' && this.hooks.dynamicMsix))
        fail(Errno.EINVAL, OP, `vector ${vector} is not allocated (${this.nvec} at enable)`);
      this.dynVectors.add(vector);
    }
    this.vectors.set(vector, this.env.eventfd(fd));
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
      // Masked: INTx is a level the device keeps asserted; the unmask re-sends it.
      if (this.intxMasked) return false;
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
    const sig = this.vectors.get(i);
    if (!sig) return false;
    this.delivered[this.type === 'msix' ? VFIO_PCI_MSIX_IRQ_INDEX : VFIO_PCI_MSI_IRQ_INDEX]!++;
    sig.signal();
    return true;
  }

  /** vfio_intx_disable / vfio_msi_disable; also used on reset and close. */
  disableAll(): void {
    const wasMsi = this.type === 'msi' || this.type === 'msix';
    const msix = this.type === 'msix';
    // vfio_intx_disable / vfio_msi_disable: vfio_virqfd_disable(&ctx->unmask) first.
    this.intxUnmaskFd?.stop();
    this.intxUnmaskFd = undefined;
    for (const v of this.vectors.values()) v.close();
    this.vectors.clear();
    this.nvec = 0;
    this.dynVectors.clear();
    this.intxTrigger?.close();
    this.intxTrigger = undefined;
    this.intxMasked = false;
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
