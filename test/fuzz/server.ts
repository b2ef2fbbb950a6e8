/**
 * Fuzz harness (c): a live vfio-user server (src/server) over a socketpair, fed batches of
 * mutated messages: headers with bad sizes, types, flags and ids; mutated payloads of every
 * command (from the recorded vectors and from edu/ivshmem-specific requests); random fds
 * attached (memfds, eventfds, /dev/null), sometimes spread over several sendmsg calls of one
 * message (and floods of 60 on tiny pieces); some batches are sent and processed without our
 * reading any reply (back-pressure). Server-to-client DMA_READ/DMA_WRITE requests are
 * answered correctly, with an error, with garbage, or not at all.
 *
 * After each batch: when every message was framed honestly (msg_size = its length), a good
 * DEVICE_GET_INFO and a REGION_READ of a known register must get correct replies; when a
 * msg_size lied, the server either closed the connection with a framing error or is waiting
 * for bytes we will never send, so we hang up and a fresh client must be served correctly.
 * Checks: no internal error in the server's trace, no uncaught exception or unhandled rejection,
 * and openFdCount() back to its baseline whenever no client is connected.
 */
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { VfioError } from '../../src/errors.js';
import {
  activeWatchCount,
  closeFd,
  eventfdCreate,
  memfdCreate,
  O_RDWR,
  openFdCount,
  openPath,
  recvMsg,
  sendMsg,
  socketPair,
  waitReadable,
} from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import {
  type ServerLimits,
  ThreadedServer,
  type ThreadLoopMode,
  VfioUserServer,
} from '../../src/server/index.js';
import {
  capabilitiesJson,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  encodeVersion,
  type Frame,
  MessageFramer,
} from '../../src/wire/vfio-user.js';
import { count, crash, type FuzzStats, mutate, newStats, Rng, toHex } from './prng.js';
import { corpus } from './wire.js';

export interface ServerFuzzOptions {
  readonly seed: number;
  /** Batches of messages; each ends with the good-request check. */
  readonly batches: number;
  readonly batchSize?: number;
  readonly device?: DeviceName;
  /** Stop early after this many milliseconds (long runs). */
  readonly deadlineMs?: number;
  /** Server limits (small ones exercise back-pressure and the limit checks). */
  readonly limits?: Partial<ServerLimits>;
  /**
   * The server in a worker with this thread loop (ThreadedServer), instead of an in-process
   * VfioUserServer on libuv.
   */
  readonly thread?: ThreadLoopMode;
  /**
   * Per-message trace lines (default true). Tracing turns the fast path off (src/server/fast-path.ts):
   * false fuzzes the fast path.
   */
  readonly verbose?: boolean;
}

/** What the harness uses of a server, in this thread or in a worker. */
interface Served {
  adopt(fd: number): void;
  idle(): Promise<void>;
  readonly lastClose: { readonly kind: string } | undefined;
  readonly limits: ServerLimits;
  stop(): Promise<void>;
}

async function served(name: DeviceName, o: ServerFuzzOptions, log: (line: string) => void): Promise<Served> {
  const options = { ...(o.limits ? { limits: o.limits } : {}), verbose: o.verbose ?? true, log };
  if (o.thread) {
    const s = await ThreadedServer.start(
      { module: new URL('../server/thread-device.js', import.meta.url), export: 'device', arg: { name } },
      { ...options, loop: o.thread, pollIdleMs: 20 },
    );
    return {
      adopt: (fd) => void s.adopt(fd).catch(() => {}),
      idle: () => s.idle(),
      get lastClose() {
        return s.lastClose;
      },
      limits: s.limits,
      stop: () => s.stop(),
    };
  }
  const device: VfioPciDevice = createDevice(name, { env: nativeEnvironment() });
  const s = new VfioUserServer(device, options);
  return {
    adopt: (fd) => void s.adopt(fd),
    idle: () => s.idle(),
    get lastClose() {
      return s.lastClose;
    },
    limits: s.limits,
    stop: async () => {
      s.stop();
      device.close();
    },
  };
}

/** How long the harness waits for the answer to a good request before calling the server stuck. */
export const GOOD_REPLY_TIMEOUT_MS = 5000;
/** Message ids at or above this are the harness's own good requests. */
const CHECK_ID_BASE = 0xff00;
const MEMFD_SIZE = 1 << 20;

export const u32 = (...v: number[]) => {
  const b = new Uint8Array(4 * v.length);
  const dv = new DataView(b.buffer);
  for (const [i, x] of v.entries()) dv.setUint32(4 * i, x >>> 0, true);
  return b;
};
export const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
export const u64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};

export function message(msgId: number, command: number, payload: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(16 + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, msgId, true);
  dv.setUint16(2, command, true);
  dv.setUint32(4, out.length, true);
  dv.setUint32(8, flags, true);
  out.set(payload, 16);
  return out;
}

export function versionPayload(minor = 0): Uint8Array {
  return encodeVersion({
    major: 0,
    minor,
    json: capabilitiesJson({
      maxMsgFds: 16,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096n,
      maxDmaMaps: 65535,
      writeMultiple: true,
      migration: { pgsize: 4096, maxBitmapSize: 256 << 20 },
    }),
  });
}

type FdKind = 'memfd' | 'eventfd' | 'null';
interface Seed {
  readonly command: number;
  readonly payload: Uint8Array;
  readonly fds: readonly FdKind[];
}

/** Requests a real client sends to edu/ivshmem, valid as they stand. */
function deviceSeeds(): Seed[] {
  const s: Seed[] = [];
  const add = (command: number, payload: Uint8Array, fds: FdKind[] = []) => s.push({ command, payload, fds });
  add(C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
  for (let i = 0; i < 10; i++)
    add(C.DEVICE_GET_REGION_INFO, concat(u32(i === 2 ? 128 : 32, 0, i, 0), u64(0n), u64(0n)));
  for (let i = 0; i < 9; i++) add(C.DEVICE_GET_REGION_IO_FDS, u32(16, 0, i, 0));
  for (let i = 0; i < 5; i++) add(C.DEVICE_GET_IRQ_INFO, u32(16, 0, i, 0));
  // SET_IRQS: INTx and MSI trigger eventfds, unmask, disable.
  add(C.DEVICE_SET_IRQS, u32(20, 0x24, 0, 0, 1), ['eventfd']);
  add(C.DEVICE_SET_IRQS, u32(20, 0x24, 1, 0, 1), ['eventfd']);
  add(C.DEVICE_SET_IRQS, u32(20, 0x21, 1, 0, 0));
  add(C.DEVICE_SET_IRQS, u32(20, 0x11, 0, 0, 1));
  add(C.DEVICE_SET_IRQS, concat(u32(21, 0x22, 0, 0, 1), new Uint8Array([1])));
  // DMA: with an fd (memfd) and without (server-to-client DMA_READ/DMA_WRITE).
  add(C.DMA_MAP, concat(u32(32, 3), u64(0n), u64(0x100000n), u64(BigInt(MEMFD_SIZE))), ['memfd']);
  add(C.DMA_MAP, concat(u32(32, 3), u64(0n), u64(0x200000n), u64(0x1000n)));
  add(C.DMA_MAP, concat(u32(32, 1), u64(0x1000n), u64(0x300000n), u64(0x1000n)), ['memfd']);
  add(C.DMA_UNMAP, concat(u32(24, 0), u64(0x100000n), u64(BigInt(MEMFD_SIZE))));
  add(C.DMA_UNMAP, concat(u32(24, 0), u64(0x200000n), u64(0x1000n)));
  add(C.DMA_UNMAP, concat(u32(24, 2), u64(0n), u64(0n)));
  // Region access: edu's registers (ID, liveness, factorial, DMA) and config space.
  const rw = (region: number, offset: bigint, data: Uint8Array) =>
    add(C.REGION_WRITE, concat(u64(offset), u32(region, data.length), data));
  add(C.REGION_READ, concat(u64(0n), u32(0, 4)));
  add(C.REGION_READ, concat(u64(0n), u32(7, 64)));
  add(C.REGION_READ, concat(u64(0x40000n), u32(0, 4096)));
  add(C.REGION_READ, concat(u64(0n), u32(2, 4096)));
  rw(0, 4n, u32(0x12345678));
  rw(0, 8n, u32(10));
  rw(7, 4n, new Uint8Array([7, 5]));
  rw(2, 0n, new Uint8Array(64).fill(0x5a));
  // edu DMA: source RAM 0x100000 (the memfd) or 0x200000 (no fd) to the buffer, and back.
  rw(0, 0x80n, concat(u64(0x100000n)));
  rw(0, 0x80n, concat(u64(0x200000n)));
  rw(0, 0x88n, concat(u64(0x40000n)));
  rw(0, 0x90n, concat(u64(64n)));
  rw(0, 0x98n, u32(1));
  rw(0, 0x98n, u32(1 | 2 | 4));
  add(
    C.REGION_WRITE_MULTI,
    concat(u64(2n), concat(u64(4n), u32(0, 4), u64(0x11n)), concat(u64(0x60n), u32(0, 4), u64(1n))),
  );
  add(C.DEVICE_RESET, new Uint8Array(0));
  // Features: dma-buf of BAR2, mmap cookie, alias region, probes.
  add(
    C.DEVICE_FEATURE,
    concat(u32(56, 0x1000b, 2, 0, 1 << 28, 2), u64(0n), u64(0x1000n), u64(0x2000n), u64(0x1000n)),
  );
  add(C.DEVICE_FEATURE, concat(u32(32, 0x1f001, 2, 1 << 28), u64(0n), u64(0n)));
  add(C.DEVICE_FEATURE, concat(u32(32, 0x2f001, 0, 1), u64(15n << 40n), u64(0n)));
  add(C.DEVICE_FEATURE, u32(24, 0x1f002, 2, 1 << 28));
  add(C.DEVICE_FEATURE, u32(8, 0x4000b));
  add(C.MIG_DATA_READ, u32(8, 4096));
  add(C.VERSION, versionPayload(2));
  return s;
}

/** Recorded messages from the vectors (test/vectors/vfio-user, and QEMU 11's in test/vectors/fuzz) as commands. */
function corpusSeeds(): Seed[] {
  return corpus()
    .filter((m) => m.length >= 16)
    .map((m) => {
      const command = new DataView(m.buffer, m.byteOffset).getUint16(2, true);
      // Recorded DMA_MAPs and SET_IRQS came with fds (QEMU's RAM memfd, eventfds): give them ours.
      const fds: FdKind[] =
        command === C.DMA_MAP ? ['memfd'] : command === C.DEVICE_SET_IRQS ? ['eventfd'] : [];
      return { command, payload: m.slice(16), fds };
    });
}

interface Conn {
  readonly fd: number;
  readonly framer: MessageFramer;
  eof: boolean;
  /** A msg_size lied or passed the limit: the stream is out of step, only a hang-up ends it cleanly. */
  desync: boolean;
}

export async function fuzzServer(o: ServerFuzzOptions): Promise<FuzzStats> {
  const name = o.device ?? 'edu';
  const stats = newStats(`server/${name}`, o.seed);
  const rng = new Rng(o.seed);
  const batchSize = o.batchSize ?? 24;
  const started = Date.now();
  const internal: string[] = [];
  const onUncaught = (e: unknown) =>
    crash(stats, `seed ${o.seed}: uncaught ${e instanceof Error ? e.stack : String(e)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);

  const server = await served(name, o, (line) => {
    if (line.includes('internal error')) internal.push(line);
  });
  // The harness's own fds: attached to messages (the kernel dups them in transit).
  const memfd = memfdCreate('fuzz-dma', MEMFD_SIZE);
  const eventfds = [eventfdCreate(), eventfdCreate()];
  const devNull = openPath('/dev/null', O_RDWR);
  const fdOf = (k: FdKind) => (k === 'memfd' ? memfd : k === 'eventfd' ? rng.pick(eventfds) : devNull);
  const baseline = openFdCount();
  const watchBaseline = activeWatchCount();
  const seeds = [...deviceSeeds(), ...corpusSeeds()];
  const good = deviceSeeds();

  let conn: Conn | undefined;
  let checkId = CHECK_ID_BASE;

  const connect = async (negotiate: boolean): Promise<Conn> => {
    const [a, b] = socketPair();
    server.adopt(b);
    const c: Conn = {
      fd: a,
      framer: new MessageFramer({ maxMessageSize: 64 << 20 }),
      eof: false,
      desync: false,
    };
    if (negotiate) {
      const r = await call(c, C.VERSION, versionPayload(rng.chance(0.5) ? 0 : 2));
      if (!r || r.header.flags & VfioUserFlags.ERROR)
        crash(stats, `seed ${o.seed}: VERSION refused on a fresh connection`);
    }
    return c;
  };

  const hangUp = async (c: Conn) => {
    for (const fd of c.framer.takeFds()) closeFd(fd);
    closeFd(c.fd);
    await server.idle();
    const now = openFdCount();
    if (now !== baseline)
      stats.leaks.push(`seed ${o.seed}: ${now} fds open with no client, baseline ${baseline}`);
    // A watch left behind on a closed fd makes the next socket with that number unwatchable.
    const watches = activeWatchCount();
    if (watches !== watchBaseline)
      stats.leaks.push(`seed ${o.seed}: ${watches} fd watches with no client, baseline ${watchBaseline}`);
  };

  /**
   * Sends one message. Usually one sendmsg with every fd; sometimes (`split`) the bytes go in
   * several sendmsg calls with the fds spread over them, so fds arrive for a message that is
   * still incomplete (the framer's max_msg_fds cap for a message in flight).
   */
  const send = (c: Conn, bytes: Uint8Array, fds: number[], split = false): boolean => {
    let off = 0;
    let spins = 0;
    const pieces = split && bytes.length > 1 ? Math.min(bytes.length, 2 + rng.int(6)) : 1;
    const cuts: number[] = [];
    for (let i = 1; i < pieces; i++) cuts.push(1 + rng.int(bytes.length - 1));
    cuts.sort((x, y) => x - y);
    cuts.push(bytes.length);
    const fdsFor: number[][] = Array.from({ length: cuts.length }, () => []);
    for (const fd of fds) fdsFor[split ? rng.int(cuts.length) : 0]!.push(fd);
    let piece = 0;
    let pieceFdsSent = false;
    while (off < bytes.length) {
      while (cuts[piece]! <= off) {
        piece++;
        pieceFdsSent = false;
      }
      let n: number | null;
      try {
        n = sendMsg(c.fd, [bytes.subarray(off, cuts[piece])], pieceFdsSent ? [] : fdsFor[piece]!);
      } catch (e) {
        if (e instanceof VfioError && (e.errno === Errno.EPIPE || e.errno === Errno.ECONNRESET)) {
          c.eof = true;
          return false;
        }
        throw e;
      }
      if (n === null) {
        // Socket full: the server is behind; let it run by reading its replies.
        pump(c);
        if (++spins > 10000) return false;
        continue;
      }
      pieceFdsSent = true;
      off += n;
    }
    return true;
  };

  /** Reads what is there; answers the server's DMA requests; keeps our replies. */
  const inbox: Frame[] = [];
  const pump = (c: Conn) => {
    for (;;) {
      let r: ReturnType<typeof recvMsg>;
      try {
        r = recvMsg(c.fd, 1 << 20, 253);
      } catch (e) {
        if (e instanceof VfioError && e.errno === Errno.ECONNRESET) {
          c.eof = true;
          break;
        }
        throw e;
      }
      if (r === null) break;
      if (r.data.length === 0) {
        for (const fd of r.fds) closeFd(fd);
        c.eof = true;
        break;
      }
      c.framer.push(r.data, r.fds);
    }
    for (;;) {
      let f: ReturnType<MessageFramer['next']>;
      try {
        f = c.framer.next();
      } catch (e) {
        crash(stats, `seed ${o.seed}: server sent an unframeable stream: ${String(e)}`);
        c.eof = true;
        return;
      }
      if ('need' in f) return;
      for (const fd of f.fds) closeFd(fd);
      if ((f.header.flags & VfioUserFlags.TYPE_MASK) === VfioUserFlags.TYPE_COMMAND) answerServer(c, f);
      else if (f.header.msgId >= CHECK_ID_BASE)
        inbox.push({ ...f, bytes: f.bytes.slice(), payload: f.payload.slice(), fds: [] });
    }
  };

  const answerServer = (c: Conn, f: Frame) => {
    stats.tried++;
    const h = f.header;
    const roll = rng.int(8);
    if (roll === 0) return; // never answered: the server's timeout and cleanup handle it
    let reply: Uint8Array;
    if (roll === 1)
      reply = message(h.msgId, h.command, new Uint8Array(0), VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR);
    else if (h.command === C.DMA_READ && f.payload.length >= 16) {
      const dv = new DataView(f.payload.buffer, f.payload.byteOffset);
      const address = dv.getBigUint64(0, true);
      const n = Number(dv.getBigUint64(8, true));
      const layout = rng.chance(0.5) ? 'qemu' : 'spec';
      reply = message(
        h.msgId,
        h.command,
        encodeDmaReadReply({ address, data: rng.bytes(Math.min(n, 1 << 20)) }, layout),
        VfioUserFlags.TYPE_REPLY,
      );
    } else if (h.command === C.DMA_WRITE) {
      reply = message(h.msgId, h.command, encodeDmaWriteReply({}, 'qemu'), VfioUserFlags.TYPE_REPLY);
    } else reply = message(h.msgId, h.command, new Uint8Array(0), VfioUserFlags.TYPE_REPLY);
    if (roll === 2) {
      // A garbled payload, honestly framed (a lying msg_size here would be our own desync).
      reply = mutate(rng, reply, 3, 16);
      new DataView(reply.buffer, reply.byteOffset).setUint32(4, reply.length, true);
    }
    send(c, reply, []);
  };

  /** Sends a good request and waits for its reply (undefined: connection closed or timed out). */
  const call = async (c: Conn, command: number, payload: Uint8Array): Promise<Frame | undefined> => {
    const id = checkId;
    checkId = checkId === 0xffff ? CHECK_ID_BASE : checkId + 1;
    if (!send(c, message(id, command, payload), [])) return undefined;
    const deadline = Date.now() + GOOD_REPLY_TIMEOUT_MS;
    for (;;) {
      pump(c);
      const i = inbox.findIndex((f) => f.header.msgId === id && f.header.command === command);
      if (i >= 0) {
        const [f] = inbox.splice(i, 1);
        inbox.length = 0;
        return f;
      }
      if (c.eof) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await waitReadable(c.fd, Math.min(left, 100));
    }
  };

  const check = async (c: Conn): Promise<string | undefined> => {
    // The batch may or may not have negotiated; a second VERSION is refused, which is fine.
    await call(c, C.VERSION, versionPayload(0));
    const info = await call(c, C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
    if (!info) return c.eof ? 'connection closed' : 'no reply to GET_INFO';
    if (info.header.flags & VfioUserFlags.ERROR) return `GET_INFO failed with errno ${info.header.error}`;
    const dv = new DataView(info.payload.buffer, info.payload.byteOffset, info.payload.byteLength);
    if (info.payload.length !== 16 || dv.getUint32(8, true) < 9 || dv.getUint32(12, true) !== 5)
      return `GET_INFO reply ${toHex(info.payload)}`;
    if (name === 'edu') {
      // Memory decode on first (the batch may have cleared it; BAR reads are EIO then).
      await call(c, C.REGION_WRITE, concat(u64(4n), u32(7, 2), new Uint8Array([0x06, 0x00])));
      const r = await call(c, C.REGION_READ, concat(u64(0n), u32(0, 4)));
      if (!r) return 'no reply to REGION_READ';
      if (r.header.flags & VfioUserFlags.ERROR || r.payload.length !== 20)
        return `REGION_READ of edu's ID: ${toHex(r.bytes)}`;
      const id = new DataView(r.payload.buffer, r.payload.byteOffset).getUint32(16, true);
      if (id !== EDU_ID) return `edu ID reads 0x${id.toString(16)}`;
    }
    return undefined;
  };

  try {
    for (let batch = 0; batch < o.batches; batch++) {
      if (o.deadlineMs !== undefined && Date.now() - started > o.deadlineMs) break;
      conn ??= await connect(rng.chance(0.9));
      const c = conn;
      // A non-reading batch: we do not read replies while sending it, then let the server run a
      // while still without reading, so its send queue fills and back-pressure (bytes, queued
      // messages, fds held by queued DMA_BUF replies) is reached.
      const noRead = rng.chance(0.2);
      if (noRead) count(stats, 'no-read batch');
      for (let k = 0; k < batchSize && !c.eof; k++) {
        const fromGood = rng.chance(0.3);
        const s = fromGood ? rng.pick(good) : rng.pick(seeds);
        const command = rng.chance(0.03) ? rng.int(0x10000) : s.command;
        let payload = fromGood && rng.chance(0.5) ? s.payload : mutate(rng, s.payload, 4);
        if (payload.length > 1 << 20) payload = payload.subarray(0, 1 << 20);
        let flags = 0;
        if (rng.chance(0.1)) flags = rng.pick([1, 2, 3, 4, 0x10, 0x20, 0x40, 0x80000000, rng.u32()]);
        const msgId = rng.int(CHECK_ID_BASE);
        let bytes = message(msgId, command & 0xffff, payload, flags);
        if (rng.chance(0.05)) bytes = mutate(rng, bytes, 2); // header too
        const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (bytes.length >= 8 && rng.chance(0.97)) dv.setUint32(4, bytes.length, true);
        // A lying msg_size, or one past the server's message size limit: the server may close.
        if (bytes.length < 16 || dv.getUint32(4, true) !== bytes.length) c.desync = true;
        if (bytes.length > server.limits.maxMessageSize) c.desync = true;
        const fds: number[] = [];
        for (const kind of s.fds) if (rng.chance(0.9)) fds.push(fdOf(kind));
        if (rng.chance(0.05))
          for (let j = 1 + rng.int(rng.chance(0.2) ? 40 : 3); j > 0; j--)
            fds.push(fdOf(rng.pick(['memfd', 'eventfd', 'null'] as const)));
        // fds split across sendmsgs; now and then a flood of them on 1-byte sends.
        const split = rng.chance(0.15);
        if (split && rng.chance(0.2)) for (let j = 0; j < 60; j++) fds.push(fdOf('memfd'));
        stats.tried++;
        if (!send(c, bytes, fds, split)) break;
        if (split) await new Promise((r) => setImmediate(r)); // let the server read the pieces
        if (noRead) {
          if (rng.chance(0.3)) await new Promise((r) => setImmediate(r));
        } else if (rng.chance(0.3)) {
          pump(c);
          await new Promise((r) => setImmediate(r));
        }
      }
      if (noRead) for (let spin = 0; spin < 8; spin++) await new Promise((r) => setImmediate(r));
      // Let the server work through the batch.
      for (let spin = 0; spin < 4; spin++) {
        pump(c);
        await new Promise((r) => setImmediate(r));
      }
      if (c.desync || c.eof) {
        count(stats, c.eof ? `closed:${server.lastClose?.kind ?? 'open'}` : 'desync');
        if (c.eof && !c.desync)
          crash(
            stats,
            `seed ${o.seed} batch ${batch}: server closed an honest connection (${JSON.stringify(server.lastClose)})`,
          );
        await hangUp(c);
        conn = undefined;
        const fresh = await connect(true);
        const bad = await check(fresh);
        if (bad) crash(stats, `seed ${o.seed} batch ${batch}: fresh client after a hang-up: ${bad}`);
        conn = fresh;
        continue;
      }
      const bad = await check(c);
      count(stats, bad ? 'check-failed' : 'check-ok');
      if (bad) {
        crash(stats, `seed ${o.seed} batch ${batch}: ${bad}`);
        await hangUp(c);
        conn = undefined;
      } else if (rng.chance(0.15)) {
        await hangUp(c);
        conn = undefined;
      }
    }
    if (conn) await hangUp(conn);
    for (const line of internal) crash(stats, `seed ${o.seed}: server ${line}`);
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    await server.stop();
    closeFd(memfd);
    for (const fd of eventfds) closeFd(fd);
    closeFd(devNull);
  }
  return stats;
}
