/**
 * What a SocketChannel could not send at once: messages (bytes copied out of the caller's
 * buffers, fds still attached, an `after` hook each) waiting for the socket to take them, in
 * order. The counts are the back-pressure inputs (queued bytes, messages, fds held).
 */
import { sendMsg } from '../native/index.js';

interface Outgoing {
  bytes: Uint8Array;
  fds: readonly number[];
  after: (() => void) | undefined;
}

export class Outbox {
  #queue: Outgoing[] = [];
  #bytes = 0;
  /** Fds attached to queued messages (ours until sent: a queued DMA_BUF reply holds its fd). */
  #fds = 0;

  get length(): number {
    return this.#queue.length;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get fds(): number {
    return this.#fds;
  }

  /**
   * Queues what is left of a message after `sent` of its bytes went out: the rest of `chunks`
   * is copied (the caller's chunks may be scratch buffers), `fds` stay attached only if nothing
   * was sent yet (they travel with the first byte).
   */
  push(chunks: readonly Uint8Array[], sent: number, fds: readonly number[], after?: () => void): void {
    let total = 0;
    for (const c of chunks) total += c.length;
    const rest = new Uint8Array(total - sent);
    let at = 0;
    let skip = sent;
    for (const c of chunks) {
      if (skip >= c.length) {
        skip -= c.length;
        continue;
      }
      rest.set(c.subarray(skip), at);
      at += c.length - skip;
      skip = 0;
    }
    const held = sent === 0 ? fds : [];
    this.#queue.push({ bytes: rest, fds: held, after });
    this.#bytes += rest.length;
    this.#fds += held.length;
  }

  /**
   * Sends queued messages in order until the socket is full or the queue is empty; returns true
   * when it emptied. Throws the socket's error (the caller closes the connection).
   */
  flush(fd: number): boolean {
    while (this.#queue.length > 0) {
      const o = this.#queue[0]!;
      const n = sendMsg(fd, [o.bytes], o.fds);
      if (n === null) return false;
      this.#bytes -= n;
      this.#fds -= o.fds.length; // sent with the first byte
      if (n < o.bytes.length) {
        o.bytes = o.bytes.subarray(n);
        o.fds = [];
        return false;
      }
      this.#queue.shift();
      o.after?.();
    }
    return true;
  }

  /** Forgets every queued message, running each `after` (the connection is closing). */
  drop(): void {
    const queue = this.#queue;
    this.#queue = [];
    this.#bytes = 0;
    this.#fds = 0;
    for (const o of queue) o.after?.();
  }
}
