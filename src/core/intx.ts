/**
 * The device's INTx line as a level (PCI 3.0 §6.8: INTx is level-triggered), and what vfio-pci
 * does with it: the Interrupt Status bit of the virtual config follows the line, an unmask of a
 * line still asserted signals again (vfio_pci_intrs.c: vfio_pci_intx_unmask_handler finds it
 * pending through pci_check_and_unmask_intx).
 */
import type { ConfigSpace } from './config.js';
import type { IrqState } from './irqs.js';

export class IntxLine {
  /** The device asserts INTx (raise with INTx active, until lower). */
  private level = false;

  constructor(
    private readonly config: ConfigSpace,
    private readonly irqs: IrqState,
  ) {}

  /** BehaviourContext.raise: interrupt `vector` of whatever type the driver enabled (INTx: 0). */
  raise(vector: number): boolean {
    if (this.irqs.type !== 'intx') return this.irqs.raise(vector);
    this.level = true;
    if (this.config.intxDisabled) return false;
    this.config.setInterruptStatus(true);
    return this.irqs.raise(vector);
  }

  /** BehaviourContext.lower: the device deasserts its line (QEMU's pci_set_irq(dev, 0)). */
  lower(): void {
    if (!this.level) return;
    this.level = false;
    this.config.setInterruptStatus(false);
  }

  /**
   * INTx is enabled and unmasked. vfio_pci_intx_unmask_handler: a line still asserted is
   * signalled again at once (the delivery automasks it again); a device that lowered its line is
   * quiet and its Interrupt Status bit clears.
   */
  serviced(): void {
    if (this.level) {
      if (!this.config.intxDisabled) this.irqs.raise(0);
    } else this.config.setInterruptStatus(false);
  }

  /**
   * After a SET_IRQS of the INTx index. The Interrupt Status bit stays set from the device's
   * assertion until the interrupt is serviced (unmasked after its automask); drivers that share
   * lines (uio_pci_generic: pci_check_and_mask_intx) read it to claim the interrupt.
   */
  afterSetIrqs(): void {
    if (this.irqs.type === 'intx' && !this.irqs.intxMasked) this.serviced();
    else if (this.irqs.type !== 'intx' && !this.level) this.config.setInterruptStatus(false);
  }
}
