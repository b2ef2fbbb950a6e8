/**
 * What keeps a stopped device from touching the outside (vfio.h, RUNNING_P2P -> STOP: "While in
 * STOP the device must stop the operation of the device. The device must not generate
 * interrupts, DMA, or any other change to external state"). The device's context reaches host
 * memory and interrupts through the gate (src/core/device.ts): while it is shut, a DMA waits and
 * an interrupt is held (one per vector: a pending bit), both go on when the device runs again.
 *
 * The arc into STOP quiesces first (the model's `stop`, then the device's in-flight work), so a
 * device the user leaves alone has nothing held. What is held comes from a user touching the
 * device in STOP, which vfio.h allows to go wrong only "within the user context".
 */
import { Errno } from '../../abi/errno.js';
import { VfioError } from '../../errors.js';

interface Waiter {
  resolve(): void;
  reject(e: unknown): void;
}

export class RunGate {
  #open = true;
  #waiters: Waiter[] = [];
  /** Vectors raised while shut, delivered in ascending order on start. */
  readonly #held = new Set<number>();

  get open(): boolean {
    return this.#open;
  }

  /** Held DMA transfers and interrupts (tests). */
  get held(): { dma: number; irqs: number } {
    return { dma: this.#waiters.length, irqs: this.#held.size };
  }

  shut(): void {
    this.#open = false;
  }

  /** A DMA of a stopped device waits here until the device runs again. */
  wait(): Promise<void> {
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** An interrupt of a stopped device: pending until the device runs. */
  hold(vector: number): void {
    this.#held.add(vector);
  }

  /** The device runs again: held interrupts go out through `deliver`, held DMA proceeds. */
  start(deliver: (vector: number) => void): void {
    this.#open = true;
    const vectors = [...this.#held].sort((a, b) => a - b);
    this.#held.clear();
    for (const v of vectors) deliver(v);
    for (const w of this.#waiters.splice(0)) w.resolve();
  }

  /**
   * A device reset: nothing held survives it. Held interrupts are dropped and held DMA fails
   * (EIO), as a reset ends the device's transfers; the gate opens for the reset device.
   */
  reset(): void {
    this.#open = true;
    this.#held.clear();
    const e = new VfioError(Errno.EIO, 'DMA', 'the device was reset while stopped');
    for (const w of this.#waiters.splice(0)) w.reject(e);
  }
}
