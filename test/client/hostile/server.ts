/**
 * A hostile vfio-user server for the client's tests: one end of a socketpair driven byte by byte.
 * It answers like a small honest device (an edu-sized BAR0 with a sealed memfd, config space,
 * five IRQ indexes) unless a scenario's `answer` takes the command, and it can send anything
 * the wire can carry: lying headers, replies to other ids, fds on any message, a reply one byte
 * per sendmsg, floods, half a message and a hang-up. Nothing here trusts the client either; an
 * exception in our own code lands in `errors`, which the runner asserts empty.
 */
import { Errno } from '../../../src/abi/errno.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../../src/abi/vfio-user.js';
import { VfioError } from '../../../src/errors.js';
import { closeFd, type FdWatch, recvMsg, sendMsg, socketPair, watchFd } from '../../../src/native/index.js';
import {
  type CapabilitiesInput,
  capabilitiesJson,
  decodeRegionInfoRequest,
  decodeRegionReadRequest,
  decodeRegionWriteRequest,
  encodeDeviceInfo,
  encodeEmpty,
  encodeErrorReply,
  encodeIrqInfo,
  encodeMessage,
  encodeRegionInfoReply,
  encodeRegionReadReply,
  encodeRegionWriteReply,
  encodeReply,
  encodeVersion,
  MessageFramer,
} from '../../../src/wire/vfio-user.js';
import { sealedMemfd } from '../fake.js';

/** A message the client sent us (its fds were closed on arrival; `nfds` says how many came). */
export interface Seen {
  readonly msgId: number;
  readonly command: number;
  readonly flags: number;
  readonly error: number;
  readonly payload: Uint8Array;
  readonly nfds: number;
}

/** A scenario's answer to a command: true when it answered (or chose not to). */
export type Answer = (s: Seen, srv: HostileServer) => boolean | Promise<boolean>;

export const BAR0_SIZE = 8192;
export const CONFIG_SIZE = 256;
export const NUM_REGIONS = 9;
export const NUM_IRQS = 5;
/** Config space: edu's IDs (1234:11e8), class 0x00ff00. */
export const VENDOR_ID = 0x1234;
export const DEVICE_ID = 0x11e8;
export const HONEST_CAPS: CapabilitiesInput = {
  maxMsgFds: 16,
  maxDataXferSize: 1 << 20,
  pgsizes: 4096n,
  maxDmaMaps: 65535,
};
const REGION_RW = 1 | 2;
const REGION_RWM = 1 | 2 | 4;
/** How long `send` keeps retrying a full socket before calling the client stuck. */
const SEND_DEADLINE_MS = 5000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const nextTurn = () => new Promise((r) => setImmediate(r));

/** A raw 16-byte header with any field values, lies included. */
export function rawHeader(
  msgId: number,
  command: number,
  msgSize: number,
  flags: number,
  error = 0,
): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint16(0, msgId, true);
  v.setUint16(2, command, true);
  v.setUint32(4, msgSize >>> 0, true);
  v.setUint32(8, flags >>> 0, true);
  v.setUint32(12, error >>> 0, true);
  return b;
}

export class HostileServer {
  readonly fd: number;
  /** The client's end: given to VfioUserClient.fromFd, which owns it from then on. */
  readonly clientFd: number;
  readonly seen: Seen[] = [];
  /** Our own failures (never the client's): the runner asserts there are none. */
  readonly errors: unknown[] = [];
  /** BAR0's memory: a sealed memfd, as our real server's memory is. */
  readonly bar0: number;
  readonly config = new Uint8Array(CONFIG_SIZE);
  caps: CapabilitiesInput = HONEST_CAPS;
  answer: Answer | undefined;
  #framer = new MessageFramer({ maxMessageSize: 64 << 20 });
  #watch: FdWatch | undefined;
  #waiters = new Map<number, (s: Seen) => void>();
  #nextId = 0x8000;
  #closed = false;

  constructor() {
    [this.fd, this.clientFd] = socketPair();
    this.bar0 = sealedMemfd(BAR0_SIZE, 'hostile-bar0');
    const v = new DataView(this.config.buffer);
    v.setUint16(0, VENDOR_ID, true);
    v.setUint16(2, DEVICE_ID, true);
    v.setUint32(8, 0x00ff0010, true);
    this.resume();
  }

  /** Stops reading what the client sends (its replies pile up: back-pressure on its side). */
  pause(): void {
    this.#watch?.stop();
    this.#watch = undefined;
  }

  resume(): void {
    if (this.#closed || this.#watch) return;
    this.#watch = watchFd(this.fd, { readable: true }, () => this.#onReadable());
  }

  #onReadable(): void {
    try {
      for (;;) {
        const r = recvMsg(this.fd, 1 << 20, 253);
        if (r === null) break;
        if (r.data.length === 0) {
          for (const fd of r.fds) closeFd(fd);
          this.pause();
          break;
        }
        this.#framer.push(r.data, r.fds);
        for (;;) {
          const f = this.#framer.next();
          if ('need' in f) break;
          for (const fd of f.fds) closeFd(fd);
          const h = f.header;
          const s: Seen = {
            msgId: h.msgId,
            command: h.command,
            flags: h.flags,
            error: h.error,
            payload: f.payload.slice(),
            nfds: f.fds.length,
          };
          if (h.flags & VfioUserFlags.TYPE_REPLY) {
            const w = this.#waiters.get(h.msgId);
            this.#waiters.delete(h.msgId);
            w?.(s);
          } else {
            this.seen.push(s);
            void this.#dispatch(s);
          }
        }
      }
    } catch (e) {
      // The client went away under us (ECONNRESET) is not our failure; anything else is.
      if (!(e instanceof VfioError && e.errno === Errno.ECONNRESET)) this.errors.push(e);
      this.pause();
    }
  }

  async #dispatch(s: Seen): Promise<void> {
    try {
      if (this.answer && (await this.answer(s, this))) return;
      await this.honest(s);
    } catch (e) {
      if (!this.#closed) this.errors.push(e);
    }
  }

  /** Commands of `command` the client sent. */
  count(command: number): number {
    return this.seen.filter((s) => s.command === command).length;
  }

  /** Sends all of `bytes` (fds on the first piece), waiting out a full socket. */
  async send(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    const deadline = Date.now() + SEND_DEADLINE_MS;
    let at = 0;
    let first = true;
    while (at < bytes.length) {
      const n = this.trySend(bytes.subarray(at), first ? fds : []);
      if (n === null) {
        if (Date.now() > deadline)
          throw new VfioError(Errno.ETIMEDOUT, 'hostile send', 'the client stopped reading');
        await sleep(1);
        continue;
      }
      first = false;
      at += n;
    }
  }

  /** One sendmsg: bytes taken, or null when the socket is full. */
  trySend(bytes: Uint8Array, fds: readonly number[] = []): number | null {
    if (this.#closed) throw new VfioError(Errno.EBADF, 'hostile send', 'closed');
    return sendMsg(this.fd, [bytes], fds);
  }

  /**
   * `bytes` in pieces of `piece` bytes, one sendmsg each with `fds` on every one, yielding to the
   * event loop between them (so the client reads as we go); `each` runs after every piece.
   */
  async trickle(
    bytes: Uint8Array,
    opts: { piece?: number; fds?: readonly number[]; delayMs?: number; each?: () => void } = {},
  ): Promise<void> {
    const piece = opts.piece ?? 1;
    for (let at = 0; at < bytes.length; at += piece) {
      await this.send(bytes.subarray(at, at + piece), opts.fds ?? []);
      if (opts.delayMs) await sleep(opts.delayMs);
      else await nextTurn();
      opts.each?.();
    }
  }

  reply(s: Seen, payload: Uint8Array = encodeEmpty(), fds: readonly number[] = []): Promise<void> {
    return this.send(encodeReply(s.msgId, s.command, payload), fds);
  }

  error(s: Seen, errno: number, fds: readonly number[] = []): Promise<void> {
    return this.send(encodeErrorReply(s.msgId, s.command, errno), fds);
  }

  /** Sends a command to the client and waits for its reply (DMA_READ / DMA_WRITE). */
  call(command: number, payload: Uint8Array, fds: readonly number[] = [], timeoutMs = 5000): Promise<Seen> {
    const id = this.#nextId++ & 0xffff;
    return new Promise<Seen>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(id);
        reject(new VfioError(Errno.ETIMEDOUT, 'hostile call', `no reply to ${command}`));
      }, timeoutMs);
      this.#waiters.set(id, (s) => {
        clearTimeout(timer);
        resolve(s);
      });
      this.send(encodeMessage({ msgId: id, command }, payload), fds).catch(reject);
    });
  }

  /** What our honest device answers. */
  async honest(s: Seen): Promise<void> {
    switch (s.command) {
      case C.VERSION:
        return this.reply(s, encodeVersion({ major: 0, minor: 1, json: capabilitiesJson(this.caps) }));
      case C.DEVICE_GET_INFO:
        return this.reply(
          s,
          encodeDeviceInfo({ argsz: 16, flags: 3, numRegions: NUM_REGIONS, numIrqs: NUM_IRQS }),
        );
      case C.DEVICE_GET_REGION_INFO: {
        const q = decodeRegionInfoRequest(s.payload);
        const r = { argsz: 32, index: q.index, capOffset: 0, offset: 0n, caps: [] };
        if (q.index === 0) {
          const info = encodeRegionInfoReply({ ...r, flags: REGION_RWM, size: BigInt(BAR0_SIZE) });
          return this.reply(s, info, [this.bar0]);
        }
        if (q.index === 7)
          return this.reply(s, encodeRegionInfoReply({ ...r, flags: REGION_RW, size: 256n }));
        if (q.index >= NUM_REGIONS) return this.error(s, Errno.EINVAL);
        return this.reply(s, encodeRegionInfoReply({ ...r, flags: 0, size: 0n }));
      }
      case C.DEVICE_GET_IRQ_INFO: {
        const index = new DataView(s.payload.buffer).getUint32(8, true);
        if (index >= NUM_IRQS) return this.error(s, Errno.EINVAL);
        return this.reply(s, encodeIrqInfo({ argsz: 16, flags: 1, index, count: 1 }));
      }
      case C.REGION_READ: {
        const q = decodeRegionReadRequest(s.payload);
        const data = new Uint8Array(q.count);
        if (q.region === 7) data.set(this.config.subarray(Number(q.offset), Number(q.offset) + q.count));
        return this.reply(s, encodeRegionReadReply({ ...q, data }));
      }
      case C.REGION_WRITE: {
        const q = decodeRegionWriteRequest(s.payload);
        return this.reply(s, encodeRegionWriteReply({ ...q, count: q.data.length }));
      }
      case C.DMA_UNMAP:
        return this.reply(s, s.payload);
      case C.DMA_MAP:
      case C.DEVICE_SET_IRQS:
      case C.DEVICE_RESET:
        return this.reply(s);
      case C.DEVICE_FEATURE:
        return this.error(s, Errno.ENOTTY);
      default:
        return this.error(s, Errno.EINVAL);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.pause();
    for (const w of this.#waiters.values())
      w({ msgId: 0, command: 0, flags: 0, error: 0, payload: new Uint8Array(0), nfds: 0 });
    this.#waiters.clear();
    for (const fd of this.#framer.takeFds()) closeFd(fd);
    closeFd(this.fd);
    closeFd(this.bar0);
  }
}
