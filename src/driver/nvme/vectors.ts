/**
 * MSI-X vectors of the controller routed to eventfds (VFIO_DEVICE_SET_IRQS on
 * VFIO_PCI_MSIX_IRQ_INDEX), one per I/O queue that takes interrupts: vector = queue id, so
 * vector 0 stays the admin queue's (polled). SET_IRQS covers vectors 0..max in one call; Linux
 * 6.1 cannot grow an enabled MSI-X range (drivers/vfio/pci/vfio_pci_intrs.c: vfio_msi_set_block
 * answers EINVAL), so on EINVAL the range is disabled and set again.
 */
import { Errno } from '../../abi/errno.js';
import { VFIO_PCI_MSIX_IRQ_INDEX } from '../../abi/vfio.js';
import { fail, VfioError } from '../../errors.js';
import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, eventfdCreate } from '../../native/index.js';
import type { VfioDevice } from '../device.js';

export class MsixVectors {
  /** Eventfds by vector (-1: unrouted), as last given to SET_IRQS. */
  private fds: number[] = [];

  constructor(private readonly dev: VfioDevice) {}

  /** A new eventfd on vector `vector`, routed. */
  async route(vector: number): Promise<number> {
    const info = await this.dev.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX);
    if (vector >= info.count)
      fail(Errno.ENOSPC, 'nvme', `no MSI-X vector ${vector} (the device has ${info.count})`);
    const efd = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK);
    const next = [...this.fds];
    while (next.length <= vector) next.push(-1);
    next[vector] = efd;
    try {
      await this.set(next);
    } catch (e) {
      closeFd(efd);
      throw e;
    }
    return efd;
  }

  /** Vector `vector` back to unrouted, and its eventfd closed. */
  async unroute(vector: number): Promise<void> {
    const fd = this.fds[vector];
    if (fd === undefined || fd < 0) return;
    const next = [...this.fds];
    next[vector] = -1;
    try {
      await this.set(next);
    } finally {
      this.fds[vector] = -1;
      closeFd(fd);
    }
  }

  private async set(fds: number[]): Promise<void> {
    try {
      await this.dev.setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds);
    } catch (e) {
      if (!(e instanceof VfioError && e.errno === Errno.EINVAL && this.fds.length)) throw e;
      await this.dev.disableIrqs(VFIO_PCI_MSIX_IRQ_INDEX);
      await this.dev.setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds);
    }
    this.fds = fds;
  }

  /** MSI-X off (DATA_NONE, count 0) and every eventfd closed. */
  async close(): Promise<void> {
    if (this.fds.length) await this.dev.disableIrqs(VFIO_PCI_MSIX_IRQ_INDEX).catch(() => {});
    for (const fd of this.fds) if (fd >= 0) closeFd(fd);
    this.fds = [];
  }
}
