/**
 * Fuzz harness (d): the vfio-user client (src/client) against our own server (src/server) with a
 * mutating proxy in between. Every message the server sends (replies, and its own DMA_READ /
 * DMA_WRITE requests) may be changed on the way: payload bytes mutated (prng.ts), header fields
 * changed (flags, msg_id, command, error), msg_size made to lie, fds dropped, added (a sealed
 * memfd too small, an unsealed one, an eventfd, /dev/null), swapped for those or multiplied, the
 * message dropped,
 * sent twice, sent a byte at a time, or cut off by a hang-up. The client's own messages pass
 * unchanged (the server fuzzer, server.ts, mutates those).
 *
 * Each iteration connects a fresh client (timeout CLIENT_FUZZ_TIMEOUT_MS, unsealed-fd policy
 * chosen at random) and runs a driver's day: VERSION, describeDevice (info, config, every region
 * with its capabilities, the WC paths: cookies, dma-bufs, alias regions), config reads and
 * writes, BAR mappings touched through their bytes (edu has none; ivshmem's BAR0 and, by each WC
 * path, BAR2), edu DMA from message-only memory fenced by guard pages, DMA from memfd memory,
 * eventfds on MSI, a reset, unmaps, close.
 *
 * Checks: only VfioError (a positive errno) or MalformedError escapes a client call; nothing is
 * thrown from the event loop (uncaught exception, unhandled rejection); the guard pages around
 * DMA memory stay zero (no DMA_WRITE lands outside what was mapped); a touched mapping never
 * kills the process (SIGBUS would end the run: a mapping past its file's end); and after each
 * iteration, with the client closed and the server idle, openFdCount() is back to its baseline.
 */
import { createDmaMemory, Eventfd, VfioUserClient } from '../../src/client/index.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { describeDevice } from '../../src/driver/describe.js';
import { VfioDevice, WC_PATH_ORDER } from '../../src/driver/device.js';
import type { DmaMemory } from '../../src/driver/file.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import {
  closeFd,
  eventfdCreate,
  MFD_CLOEXEC,
  memfdCreate,
  O_RDWR,
  openFdCount,
  openPath,
  socketPair,
} from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { SocketChannel } from '../../src/server/channel.js';
import { VfioUserServer } from '../../src/server/index.js';
import type { Frame } from '../../src/wire/vfio-user.js';
import { sealedMemfd } from '../client/fake.js';
import { count, crash, type FuzzStats, mutate, newStats, Rng, toHex } from './prng.js';

export interface ClientFuzzOptions {
  readonly seed: number;
  /** Client connections, each running the whole workload. */
  readonly iterations: number;
  readonly device?: DeviceName;
  /** Chance that one server message is mutated (default 0.06). */
  readonly rate?: number;
  /** Stop early after this many milliseconds (long runs). */
  readonly deadlineMs?: number;
}

/** Short, so that a dropped reply costs little; a timeout drops the connection anyway. */
export const CLIENT_FUZZ_TIMEOUT_MS = 250;
const IOVA = 0x10_0000n;
const PAGE = 4096;
const EDU_BUFFER = 0x40000;

type Mutation =
  | 'bytes'
  | 'header'
  | 'length'
  | 'fds-drop'
  | 'fds-add'
  | 'fds-swap'
  | 'drop'
  | 'twice'
  | 'drip'
  | 'hang-up';
const MUTATIONS: readonly Mutation[] = [
  'bytes',
  'bytes',
  'bytes',
  'header',
  'length',
  'fds-drop',
  'fds-add',
  'fds-swap',
  'fds-swap',
  'drop',
  'twice',
  'drip',
  'hang-up',
];

/** The fds the proxy may add to a message (its own; the kernel dups them in transit). */
interface Spare {
  readonly small: number;
  readonly unsealed: number;
  readonly eventfd: number;
  readonly devNull: number;
}

/**
 * The proxy: the server's messages mutated on their way to the client, the client's passed as
 * they are. Both sides framed by SocketChannel, so fds travel with their message.
 */
class MutatingProxy {
  readonly clientFd: number;
  readonly log: string[] = [];
  #toServer: SocketChannel;
  #toClient: SocketChannel;

  constructor(
    serverFd: number,
    private readonly rng: Rng,
    private readonly rate: number,
    private readonly spare: Spare,
    private readonly stats: FuzzStats,
  ) {
    const [mine, theirs] = socketPair();
    this.clientFd = theirs;
    const limits = { maxMessageSize: 64 << 20 };
    this.#toServer = new SocketChannel(
      serverFd,
      { onFrame: (f) => this.#fromServer(f), onClose: () => this.close() },
      limits,
    );
    this.#toClient = new SocketChannel(
      mine,
      { onFrame: (f) => this.#forward(this.#toServer, f.bytes, f.fds), onClose: () => this.close() },
      limits,
    );
    this.#toServer.start();
    this.#toClient.start();
  }

  #forward(to: SocketChannel, bytes: Uint8Array, fds: readonly number[]): void {
    to.send([bytes], fds, () => {
      for (const fd of fds) closeFd(fd);
    });
  }

  #fromServer(f: Frame): void {
    if (!this.rng.chance(this.rate)) {
      this.#forward(this.#toClient, f.bytes, f.fds);
      return;
    }
    const m = this.rng.pick(MUTATIONS);
    this.stats.tried++;
    count(this.stats, `mutation:${m}`);
    this.log.push(
      `${m} of ${toHex(f.bytes.subarray(0, 48))}${f.bytes.length > 48 ? '...' : ''} fds ${f.fds.length}`,
    );
    const rng = this.rng;
    let bytes: Uint8Array = f.bytes.slice();
    let fds = [...f.fds];
    const extra: number[] = [];
    const honestSize = () => new DataView(bytes.buffer).setUint32(4, bytes.length, true);
    switch (m) {
      case 'bytes':
        bytes = mutate(rng, bytes, 4, 16);
        honestSize();
        break;
      case 'header': {
        const v = new DataView(bytes.buffer);
        const field = rng.pick([0, 2, 8, 12]);
        if (field === 8) v.setUint32(8, rng.pick([0, 1, 2, 3, 0x11, 0x21, 0x40, rng.u32()]), true);
        else if (field === 12) v.setUint32(12, rng.interesting32(), true);
        else v.setUint16(field, rng.u32() & 0xffff, true);
        break;
      }
      case 'length':
        new DataView(bytes.buffer).setUint32(4, rng.interesting32(), true);
        break;
      case 'fds-drop':
        for (const fd of fds) closeFd(fd);
        fds = [];
        break;
      case 'fds-add':
      case 'fds-swap': {
        // Swap: the message's own fds (a region's, a cookie's, a dma-buf's) become spare ones.
        if (m === 'fds-swap') {
          for (const fd of fds) closeFd(fd);
          fds = [];
        }
        const n = m === 'fds-swap' ? Math.max(1, f.fds.length) : rng.pick([1, 1, 2, 17, 60]);
        const s = this.spare;
        for (let i = 0; i < n; i++) extra.push(rng.pick([s.small, s.unsealed, s.eventfd, s.devNull]));
        break;
      }
      case 'drop':
        for (const fd of fds) closeFd(fd);
        return;
      case 'twice':
        this.#toClient.send([bytes], fds);
        break;
      case 'drip':
        for (let at = 0; at < bytes.length; at += 1 + rng.int(8))
          this.#toClient.send(
            [bytes.subarray(at, Math.min(bytes.length, at + 1 + rng.int(8)))],
            at === 0 ? fds : [],
          );
        for (const fd of fds) closeFd(fd);
        return;
      case 'hang-up':
        this.#toClient.send([bytes.subarray(0, rng.int(bytes.length))], fds);
        for (const fd of fds) closeFd(fd);
        this.close();
        return;
    }
    // Spare fds are ours to keep: only the message's own are closed once it is sent.
    this.#toClient.send([bytes], [...fds, ...extra].slice(0, 253), () => {
      for (const fd of fds) closeFd(fd);
    });
  }

  close(): void {
    this.#toServer.close();
    this.#toClient.close();
  }
}

/** Only VfioError with a real errno, or MalformedError, may leave a client call. */
function documented(e: unknown): boolean {
  if (e instanceof MalformedError) return true;
  return e instanceof VfioError && Number.isInteger(e.errno) && e.errno > 0 && e.errno <= 4096;
}

/** Memory for DMA without an fd, between two guard pages that must stay zero. */
function guarded(size: number): { memory: DmaMemory; guards: () => boolean } {
  const all = new Uint8Array(size + 2 * PAGE);
  const bytes = all.subarray(PAGE, PAGE + size);
  const clean = (b: Uint8Array) => b.every((v) => v === 0);
  return {
    memory: { fd: undefined, size, bytes },
    guards: () => clean(all.subarray(0, PAGE)) && clean(all.subarray(PAGE + size)),
  };
}

export async function fuzzClient(o: ClientFuzzOptions): Promise<FuzzStats> {
  const name = o.device ?? 'edu';
  const stats = newStats(`client/${name}`, o.seed);
  const rng = new Rng(o.seed);
  const rate = o.rate ?? 0.06;
  const started = Date.now();
  let current = '';
  const onUncaught = (e: unknown) =>
    crash(stats, `seed ${o.seed} ${current}: uncaught ${e instanceof Error ? e.stack : String(e)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const device: VfioPciDevice = createDevice(name, { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const spare: Spare = {
    small: sealedMemfd(PAGE, 'fuzz-small'),
    unsealed: memfdCreate('fuzz-unsealed', 1 << 20, MFD_CLOEXEC),
    eventfd: eventfdCreate(),
    devNull: openPath('/dev/null', O_RDWR),
  };
  const baseline = openFdCount();
  try {
    for (let i = 0; i < o.iterations; i++) {
      if (o.deadlineMs !== undefined && Date.now() - started > o.deadlineMs) break;
      current = `iteration ${i}`;
      const [s, p] = socketPair();
      server.adopt(s);
      const proxy = new MutatingProxy(p, rng, rate, spare, stats);
      const call = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
        try {
          return await fn();
        } catch (e) {
          if (documented(e)) {
            count(stats, e instanceof VfioError ? e.code : 'malformed');
            return undefined;
          }
          crash(
            stats,
            `seed ${o.seed} ${current} ${what}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n  after: ${proxy.log.join('\n  ')}`,
          );
          return undefined;
        }
      };
      const policy = rng.chance(0.5) ? 'refuse' : 'map';
      const client = await call('connect', () =>
        VfioUserClient.fromFd(proxy.clientFd, { timeoutMs: CLIENT_FUZZ_TIMEOUT_MS, unsealedFds: policy }),
      );
      if (client) {
        await workload(
          new VfioDevice(client),
          name,
          rng,
          call,
          (why) => crash(stats, `seed ${o.seed} ${current}: ${why}\n  after: ${proxy.log.join('\n  ')}`),
          (outcome) => count(stats, outcome),
        );
        await client.close();
      }
      proxy.close();
      await server.idle();
      const now = openFdCount();
      if (now !== baseline) {
        stats.leaks.push(
          `seed ${o.seed} ${current}: ${now} fds open, baseline ${baseline}\n  after: ${proxy.log.join('\n  ')}`,
        );
        break;
      }
    }
  } finally {
    server.stop();
    device.close();
    for (const fd of Object.values(spare)) closeFd(fd);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  return stats;
}

type Call = <T>(what: string, fn: () => Promise<T>) => Promise<T | undefined>;

/** A driver's day on `dev`; every call's failure is counted by `call`, invariants by `bad`. */
async function workload(
  dev: VfioDevice,
  name: DeviceName,
  rng: Rng,
  call: Call,
  bad: (why: string) => void,
  note: (outcome: string) => void,
) {
  await call('describeDevice', () => describeDevice(dev));
  await call('readConfig', () => dev.readConfig(0, 64));
  await call('writeConfig', () => dev.writeConfig(4, Uint8Array.of(6, 0)));
  const touch = async (what: string, map: () => Promise<{ bytes: Uint8Array; unmap(): void }>) => {
    const m = await call(what, map);
    if (!m) return;
    // Reading and writing every page: a page past the file's end would be SIGBUS here.
    for (let at = 0; at < m.bytes.length; at += PAGE) m.bytes[at] = (m.bytes[at] ?? 0) ^ 0;
    m.unmap();
  };
  if (name === 'ivshmem') {
    await touch('map BAR0', () => dev.map(0));
    for (const path of WC_PATH_ORDER.slice(0, 3))
      await touch(`map BAR2 ${path}`, () => dev.map(2, { attribute: 'wc', path, length: 2 * PAGE }));
  } else {
    // A mutated reply may make it say anything; counted, not judged.
    const id = await call('edu id', () => dev.read32(0, 0));
    note(id === undefined ? 'edu-id-failed' : id === EDU_ID ? 'edu-id-ok' : 'edu-id-changed');
  }
  const { memory, guards } = guarded(4 * PAGE);
  const fdMemory = rng.chance(0.5) ? createDmaMemory(4 * PAGE) : undefined;
  if (await call('dmaMap', () => dev.dmaMap(IOVA, memory).then(() => true))) {
    memory.bytes.fill(0x5a, 0, PAGE);
    if (name === 'edu') {
      await call('edu DMA in', () => eduDma(dev, IOVA, EDU_BUFFER, PAGE, false));
      await call('edu DMA out', () => eduDma(dev, EDU_BUFFER, IOVA + BigInt(PAGE), 2 * PAGE, true));
      // Past the mapping: the device's DMA fails; our memory beyond must stay as it was.
      await call('edu DMA past the end', () =>
        eduDma(dev, EDU_BUFFER, IOVA + BigInt(3 * PAGE), 2 * PAGE, true),
      );
    }
    await call('partial dmaUnmap', () => dev.dmaUnmap(IOVA, BigInt(PAGE)));
    await call('dmaUnmap', () => dev.dmaUnmap(IOVA, BigInt(memory.size)));
  }
  if (!guards()) bad('a DMA_WRITE landed outside the mapped memory (guard page written)');
  if (fdMemory) {
    await call('dmaMap memfd', () => dev.dmaMap(IOVA * 2n, fdMemory));
    await call('dmaUnmap memfd', () => dev.dmaUnmap(IOVA * 2n, BigInt(fdMemory.size)));
    fdMemory.close();
  }
  const e = new Eventfd();
  await call('setIrqEventfds', () => dev.setIrqEventfds(1, 0, [e.fd]));
  await call('disableIrqs', () => dev.disableIrqs(1));
  e.close();
  await call('reset', () => dev.reset());
}

/** edu's DMA engine (src/devices/edu.ts: 0x80 src, 0x88 dst, 0x90 count, 0x98 command). */
async function eduDma(
  dev: VfioDevice,
  src: bigint | number,
  dst: bigint | number,
  n: number,
  toRam: boolean,
) {
  const reg64 = async (off: number, v: bigint | number) => {
    const b = BigInt(v);
    await dev.write32(0, off, Number(b & 0xffffffffn));
    await dev.write32(0, off + 4, Number(b >> 32n));
  };
  await reg64(0x80, src);
  await reg64(0x88, dst);
  await dev.write32(0, 0x90, n);
  await dev.write32(0, 0x98, 1 | (toRam ? 2 : 0));
  for (let i = 0; i < 50 && (await dev.read32(0, 0x98)) & 1; i++) await new Promise((r) => setTimeout(r, 2));
}
