/**
 * A scripted vfio-user server for client unit tests: it answers VERSION (with the capabilities
 * a test gives), records every command (payload and how many fds came with it), and lets the
 * test decide each reply, including none at all, an error, or a hang-up.
 */
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import {
  addSeals,
  closeFd,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  memfdCreate,
  socketPair,
} from '../../src/native/index.js';
import { SocketChannel } from '../../src/server/channel.js';
import {
  type CapabilitiesInput,
  capabilitiesJson,
  decodeVersion,
  encodeErrorReply,
  encodeMessage,
  encodeReply,
  encodeVersion,
  type Frame,
} from '../../src/wire/vfio-user.js';

export interface Seen {
  readonly msgId: number;
  readonly command: number;
  readonly payload: Uint8Array;
  readonly nfds: number;
  readonly flags: number;
}

/** What to do with a command: a payload to reply with, an errno, or nothing (never answer). */
export type Answer =
  | { readonly payload: Uint8Array; readonly fds?: readonly number[] }
  | { readonly errno: number }
  | { readonly ignore: true }
  | { readonly raw: Uint8Array };

export class FakeServer {
  readonly channel: SocketChannel;
  readonly seen: Seen[] = [];
  /** Replies to server-to-client commands. */
  readonly replies: Frame[] = [];
  readonly clientFd: number;
  answer: (s: Seen) => Answer = () => ({ errno: 95 });
  #waiters: ((f: Frame) => void)[] = [];
  #nextId = 0x8000;

  constructor(
    readonly caps: CapabilitiesInput = { maxMsgFds: 16, maxDataXferSize: 1 << 20 },
    readonly versionReply?: (proposedMinor: number) => Uint8Array,
  ) {
    const [a, b] = socketPair();
    this.clientFd = b;
    this.channel = new SocketChannel(a, {
      onFrame: (f) => this.#onFrame(f),
      onClose: () => {},
    });
    this.channel.start();
  }

  #onFrame(f: Frame): void {
    const h = f.header;
    for (const fd of f.fds) closeFd(fd);
    if (h.flags & VfioUserFlags.TYPE_REPLY) {
      const copy = { ...f, payload: f.payload.slice(), bytes: f.bytes.slice(), fds: [] };
      this.replies.push(copy);
      this.#waiters.shift()?.(copy);
      return;
    }
    const s: Seen = {
      msgId: h.msgId,
      command: h.command,
      payload: f.payload.slice(),
      nfds: f.fds.length,
      flags: h.flags,
    };
    this.seen.push(s);
    if (h.command === C.VERSION) {
      const v = decodeVersion(s.payload);
      const body =
        this.versionReply?.(v.minor) ??
        encodeVersion({ major: 0, minor: v.minor, json: capabilitiesJson(this.caps) });
      this.channel.send([encodeReply(h.msgId, h.command, body)]);
      return;
    }
    const a = this.answer(s);
    if ('ignore' in a) return;
    if ('raw' in a) this.channel.send([a.raw]);
    else if ('errno' in a) this.channel.send([encodeErrorReply(h.msgId, h.command, a.errno)]);
    else this.channel.send([encodeReply(h.msgId, h.command, a.payload)], a.fds ?? []);
  }

  /** Sends a command to the client and waits for its reply. */
  call(command: number, payload: Uint8Array): Promise<Frame> {
    const p = new Promise<Frame>((resolve) => this.#waiters.push(resolve));
    this.channel.send([encodeMessage({ msgId: this.#nextId++, command }, payload)]);
    return p;
  }

  /** Sends raw bytes (a reply the client did not ask for, a late one). */
  sendRaw(bytes: Uint8Array): void {
    this.channel.send([bytes]);
  }

  hangUp(): void {
    this.channel.close();
  }
}

/** A memfd of `size` bytes sealed against shrinking and growing, as our server's memory is. */
export function sealedMemfd(size: number, name = 'bar'): number {
  const fd = memfdCreate(name, size, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
  return fd;
}
