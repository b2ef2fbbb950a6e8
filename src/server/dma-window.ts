/**
 * A window on the DMA_READ / DMA_WRITE requests a session has outstanding with its client, so
 * that the client's replies never have to wait in its socket's send buffer.
 *
 * Why: QEMU 11.1.3 sends each message with one non-blocking writev and takes whatever count
 * comes back as the whole message (hw/vfio-user/proxy.c, vfio_user_send_qio called from
 * vfio_user_send_queued): a reply that does not fit in the socket's free send buffer is cut
 * short, the rest is never sent, and the stream is lost ("unexpected reply" in QEMU, a message
 * that never completes here). QEMU answers our requests from its main loop one after another,
 * so the replies to everything we have outstanding can all be in that buffer at once: their
 * bytes, and the socket's own overhead per message (each is an skb of its own), must fit in
 * QEMU's SO_SNDBUF (net.core.wmem_default: 212992 bytes on Debian). Seen with a Linux guest on
 * the nvme device and plain -m RAM: 256 KiB DMA_READs, or 64 page-sized ones in a burst, broke
 * the connection within seconds; with the window, mke2fs, 8 MiB of writes and reads run clean.
 */
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';

/** The largest DMA_READ / DMA_WRITE sent (below the negotiated max_data_xfer_size). */
export const DMA_CHUNK = 64 * 1024;
/** Reply bytes (data plus REPLY_OVERHEAD each) outstanding at once: well inside 208 KiB. */
export const DMA_WINDOW_BYTES = 128 * 1024;
/** Requests outstanding at once. */
export const DMA_WINDOW_REQUESTS = 32;
/** What one reply costs beyond its data: header, DMA struct, and the skb it travels in. */
export const DMA_REPLY_OVERHEAD = 1024;

export class RequestWindow {
  #bytes = 0;
  #count = 0;
  readonly #waiting: { cost: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  #closed = false;

  constructor(
    readonly maxBytes = DMA_WINDOW_BYTES,
    readonly maxRequests = DMA_WINDOW_REQUESTS,
  ) {}

  /** Waits (in order of arrival) until a request whose reply costs `cost` bytes fits. */
  acquire(cost: number): Promise<void> {
    if (this.#closed) return Promise.reject(new VfioError(Errno.ECONNRESET, 'DMA request', 'session closed'));
    if (this.#waiting.length === 0 && this.#fits(cost)) {
      this.#take(cost);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.#waiting.push({ cost, resolve, reject }));
  }

  /** The reply to a request of `cost` came (or it failed): its room goes to the next in line. */
  release(cost: number): void {
    this.#bytes -= cost;
    this.#count--;
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0]!.cost)) {
      const w = this.#waiting.shift()!;
      this.#take(w.cost);
      w.resolve();
    }
  }

  /** The session ended: everyone waiting fails with ECONNRESET. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiting.splice(0))
      w.reject(new VfioError(Errno.ECONNRESET, 'DMA request', 'session closed'));
  }

  /** Requests outstanding, and waiting for room. */
  get outstanding(): number {
    return this.#count;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** Always room for one request, however large, when none is outstanding. */
  #fits(cost: number): boolean {
    return this.#count === 0 || (this.#count < this.maxRequests && this.#bytes + cost <= this.maxBytes);
  }

  #take(cost: number): void {
    this.#bytes += cost;
    this.#count++;
  }
}
