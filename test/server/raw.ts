/**
 * A raw vfio-user peer for the server tests: packs messages by hand (through the wire codec's
 * header writer), sends them with fds over a socketpair or a real socket, and reads frames back.
 */
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { closeFd, recvMsg, sendMsg, socketPair, waitReadable } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { type ServerOptions, VfioUserServer } from '../../src/server/index.js';
import {
  capabilitiesJson,
  encodeCommand,
  encodeVersion,
  type Frame,
  MessageFramer,
  writeHeader,
} from '../../src/wire/vfio-user.js';

export interface RawPeer {
  readonly fd: number;
  /** Sends bytes as one sendmsg with `fds`. */
  send(bytes: Uint8Array, fds?: readonly number[]): void;
  /** Sends bytes, waiting while the socket is full (large messages). */
  sendAll(bytes: Uint8Array, fds?: readonly number[]): Promise<void>;
  /** The next frame from the server (rejects after `timeoutMs`). */
  recv(timeoutMs?: number): Promise<Frame>;
  /** Sends a command and waits for the frame answering it. */
  call(command: number, payload?: Uint8Array, fds?: readonly number[]): Promise<Frame>;
  /** True once the server closed its end (a read returned 0). */
  readonly eof: boolean;
  close(): void;
}

let nextId = 1;

export function rawPeer(fd: number): RawPeer {
  const framer = new MessageFramer({ maxMessageSize: 64 << 20 });
  let eof = false;
  let open = true;
  const peer: RawPeer = {
    fd,
    get eof() {
      return eof;
    },
    send(bytes, fds = []) {
      let off = 0;
      let first = true;
      while (off < bytes.length) {
        const n = sendMsg(fd, [bytes.subarray(off)], first ? fds : []);
        if (n === null) throw new Error('socket full in a test');
        first = false;
        off += n;
      }
    },
    async sendAll(bytes, fds = []) {
      let off = 0;
      let first = true;
      while (off < bytes.length) {
        const n = sendMsg(fd, [bytes.subarray(off)], first ? fds : []);
        if (n === null) {
          await new Promise((r) => setTimeout(r, 1));
          continue;
        }
        first = false;
        off += n;
      }
    },
    async recv(timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const f = framer.next();
        if (!('need' in f)) return f;
        if (eof) throw new Error('server closed the connection');
        const left = deadline - Date.now();
        if (left <= 0 || !(await waitReadable(fd, left))) throw new Error('no reply in time');
        for (;;) {
          const r = recvMsg(fd, 1 << 20, 253);
          if (r === null) break;
          if (r.data.length === 0) {
            eof = true;
            for (const x of r.fds) closeFd(x);
            break;
          }
          framer.push(r.data, r.fds);
        }
      }
    },
    async call(command, payload = new Uint8Array(0), fds = []) {
      const id = nextId++ & 0xffff;
      peer.send(encodeCommand(id, command, payload), fds);
      for (;;) {
        const f = await peer.recv();
        if (f.header.msgId === id && f.header.command === command) return f;
        for (const x of f.fds) closeFd(x);
      }
    },
    close() {
      if (!open) return;
      open = false;
      for (const x of framer.takeFds()) closeFd(x);
      closeFd(fd);
    },
  };
  return peer;
}

/** A message with arbitrary header fields (for malformed input). */
export function packRaw(h: {
  msgId?: number;
  command: number;
  flags?: number;
  error?: number;
  msgSize?: number;
  payload?: Uint8Array;
}): Uint8Array {
  const payload = h.payload ?? new Uint8Array(0);
  const out = new Uint8Array(16 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, h.msgId ?? nextId++ & 0xffff, true);
  dv.setUint16(2, h.command, true);
  dv.setUint32(4, h.msgSize ?? out.length, true);
  dv.setUint32(8, h.flags ?? 0, true);
  dv.setUint32(12, h.error ?? 0, true);
  out.set(payload, 16);
  return out;
}

export { writeHeader };

/** The errno of an error reply, or 0 for a success reply. */
export function errnoOf(f: Frame): number {
  return f.header.flags & VfioUserFlags.ERROR ? f.header.error : 0;
}

export function isReplyFrame(f: Frame): boolean {
  return (f.header.flags & VfioUserFlags.TYPE_MASK) === VfioUserFlags.TYPE_REPLY;
}

/** QEMU 11's VERSION proposal (hw/vfio-user/proxy.c: caps as QEMU sends them). */
export function qemuVersionPayload(opts: { writeMultiple?: boolean; minor?: number } = {}): Uint8Array {
  return encodeVersion({
    major: 0,
    minor: opts.minor ?? 0,
    json: capabilitiesJson({
      maxMsgFds: 16,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096n,
      maxDmaMaps: 65535,
      ...(opts.writeMultiple === false ? {} : { writeMultiple: true }),
      migration: { pgsize: 4096, maxBitmapSize: 256 << 20 },
    }),
  });
}

export interface Rig {
  readonly device: VfioPciDevice;
  readonly server: VfioUserServer;
  readonly log: string[];
  /** A new client over a socketpair (the server adopts the other end). */
  connect(): RawPeer;
  /** A client that has negotiated the version already. */
  negotiated(opts?: { writeMultiple?: boolean }): Promise<RawPeer>;
  close(): void;
}

export function rig(
  name: DeviceName = 'edu',
  opts: ServerOptions & { profile?: '6.1' | '7.3'; migration?: false } = {},
): Rig {
  const device = createDevice(name, {
    env: nativeEnvironment(),
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(opts.migration === false ? { migration: false } : {}),
  });
  const log: string[] = [];
  const server = new VfioUserServer(device, { log: (l) => log.push(l), ...opts });
  const r: Rig = {
    device,
    server,
    log,
    connect() {
      const [a, b] = socketPair();
      server.adopt(b);
      return rawPeer(a);
    },
    async negotiated(o = {}) {
      const p = r.connect();
      const f = await p.call(C.VERSION, qemuVersionPayload(o));
      if (errnoOf(f) !== 0) throw new Error(`VERSION failed: ${errnoOf(f)}`);
      return p;
    },
    close() {
      server.stop();
      device.close();
    },
  };
  return r;
}

export const le = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function u32s(...v: number[]): Uint8Array {
  const out = new Uint8Array(v.length * 4);
  v.forEach((x, i) => {
    le(out).setUint32(i * 4, x >>> 0, true);
  });
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** REGION_READ/WRITE access struct: offset u64, region u32, count u32. */
export function access(region: number, offset: bigint, count: number, data?: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + (data?.length ?? 0));
  le(out).setBigUint64(0, offset, true);
  le(out).setUint32(8, region, true);
  le(out).setUint32(12, count, true);
  if (data) out.set(data, 16);
  return out;
}
