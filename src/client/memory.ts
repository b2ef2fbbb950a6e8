/**
 * What a driver needs next to a device file: memory the device may DMA into, and eventfds to
 * take interrupts on. Both work with every backend; the memfd behind DmaMemory is what a
 * vfio-user DMA_MAP passes to the server (spec, "VFIO_USER_DMA_MAP": the fd travels with the
 * message and the server maps it).
 */
import { Errno } from '../abi/errno.js';
import type { DmaMemory } from '../driver/file.js';
import { fail } from '../errors.js';
import { closeFd, eventfdCreate, eventfdRead, eventfdSignal, waitReadable } from '../native/index.js';
import { allocateShared } from '../runtime.js';

export interface OwnedDmaMemory extends DmaMemory {
  readonly fd: number;
  /** Unmaps and closes the memfd (after dmaUnmap). */
  close(): void;
}

/** `size` bytes of memfd-backed shared memory, mapped here, for dmaMap. */
export function createDmaMemory(size: number, name = 'vfio-ts-dma'): OwnedDmaMemory {
  if (!Number.isSafeInteger(size) || size <= 0) fail(Errno.EINVAL, 'createDmaMemory', `size ${size}`);
  const m = allocateShared(name, size);
  const fd = m.fd ?? fail(Errno.ENOMEM, 'createDmaMemory', 'no memfd');
  return { fd, size: m.size, bytes: m.bytes, close: () => m.close() };
}

/** Memory the server can reach only through DMA_READ/DMA_WRITE messages (no fd to map). */
export function createMessageOnlyDmaMemory(size: number): DmaMemory {
  if (!Number.isSafeInteger(size) || size <= 0)
    fail(Errno.EINVAL, 'createMessageOnlyDmaMemory', `size ${size}`);
  return { fd: undefined, size, bytes: new Uint8Array(size) };
}

/** An eventfd (non-blocking, close-on-exec) to route an interrupt to with setIrqEventfds. */
export class Eventfd {
  #fd: number | undefined;

  constructor() {
    this.#fd = eventfdCreate();
  }

  get fd(): number {
    return this.#fd ?? fail(Errno.EBADF, 'eventfd', 'closed');
  }

  /** Reads and resets the counter; null when it is zero. */
  read(): bigint | null {
    return eventfdRead(this.fd);
  }

  signal(n = 1n): void {
    eventfdSignal(this.fd, n);
  }

  /**
   * Waits until the counter is non-zero (an interrupt came), then reads and resets it. Resolves
   * the count, or null after `timeoutMs`.
   */
  async wait(timeoutMs: number): Promise<bigint | null> {
    const fd = this.fd;
    const now = eventfdRead(fd);
    if (now !== null) return now;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0 || !(await waitReadable(fd, left))) return eventfdRead(fd);
      const n = eventfdRead(fd);
      if (n !== null) return n;
    }
  }

  close(): void {
    if (this.#fd === undefined) return;
    closeFd(this.#fd);
    this.#fd = undefined;
  }
}
