/**
 * A small blocking-style vfio-user client for the fuzz regression and reliability tests: sends
 * raw messages with fds over a socket and waits for the reply with a given msg_id.
 */
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import { VfioError } from '../../src/errors.js';
import { closeFd, recvMsg, sendMsg, waitReadable } from '../../src/native/index.js';
import { type Frame, MessageFramer } from '../../src/wire/vfio-user.js';
import { message, versionPayload } from './server.js';

/** Frames kept for `next` while `call` waits. */
const MAX_BACKLOG = 1024;

export class RawClient {
  readonly framer = new MessageFramer({ maxMessageSize: 64 << 20 });
  eof = false;
  #id = 1;
  /** Frames that arrived while `call` waited for its reply (the server's own requests). */
  #backlog: Frame[] = [];
  constructor(readonly fd: number) {}

  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    let first = true;
    while (off < bytes.length) {
      const n = sendMsg(this.fd, [bytes.subarray(off)], first ? fds : []);
      if (n === null) throw new VfioError(Errno.EAGAIN, 'RawClient.send', 'socket full');
      first = false;
      off += n;
    }
  }

  /** Reads what is there into the framer. */
  poll(): void {
    for (;;) {
      let r: ReturnType<typeof recvMsg>;
      try {
        r = recvMsg(this.fd, 1 << 20, 253);
      } catch (e) {
        if (e instanceof VfioError && e.errno === Errno.ECONNRESET) {
          this.eof = true;
          return;
        }
        throw e;
      }
      if (r === null) return;
      if (r.data.length === 0) {
        for (const fd of r.fds) closeFd(fd);
        this.eof = true;
        return;
      }
      this.framer.push(r.data, r.fds);
    }
  }

  /** The next frame, or undefined on EOF or after `timeoutMs`. The caller owns its fds. */
  async next(timeoutMs = 5000): Promise<Frame | undefined> {
    const early = this.#backlog.shift();
    if (early) return early;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const f = this.framer.next();
      if (!('need' in f)) return f;
      if (this.eof) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await waitReadable(this.fd, Math.min(left, 100));
    }
  }

  /** Sends a command and returns its reply (other frames wait for `next`, the last MAX_BACKLOG). */
  async call(command: number, payload: Uint8Array, fds: readonly number[] = [], keepFds = false) {
    const id = this.#id++ & 0xffff;
    this.send(message(id, command, payload), fds);
    for (;;) {
      const f = await this.#read();
      if (!f) return undefined;
      if (
        f.header.msgId === id &&
        f.header.command === command &&
        f.header.flags & VfioUserFlags.TYPE_REPLY
      ) {
        if (!keepFds) for (const fd of f.fds) closeFd(fd);
        return {
          ...f,
          errno: f.header.flags & VfioUserFlags.ERROR ? f.header.error : 0,
          fds: keepFds ? f.fds : [],
        };
      }
      this.#backlog.push(f);
      if (this.#backlog.length > MAX_BACKLOG) for (const fd of this.#backlog.shift()!.fds) closeFd(fd);
    }
  }

  /** The next frame off the wire (not the backlog). */
  async #read(timeoutMs = 5000): Promise<Frame | undefined> {
    const saved = this.#backlog;
    this.#backlog = [];
    try {
      return await this.next(timeoutMs);
    } finally {
      this.#backlog = [...saved, ...this.#backlog];
    }
  }

  async negotiate(): Promise<void> {
    const r = await this.call(C.VERSION, versionPayload(0));
    if (!r || r.errno) throw new VfioError(r?.errno || Errno.ECONNRESET, 'VERSION');
  }

  close(): void {
    for (const f of this.#backlog) for (const fd of f.fds) closeFd(fd);
    this.#backlog = [];
    for (const fd of this.framer.takeFds()) closeFd(fd);
    closeFd(this.fd);
  }
}
