/**
 * vfio-user round trips: REGION_READ and REGION_WRITE of 4 and 64 bytes (ivshmem BAR0, memory
 * backed, and edu BAR0, trapped) from a raw socket client to our server, one request in flight,
 * against the machine's own UNIX-socket ping-pong measured the same way (same client, same
 * message sizes, a peer that echoes every message back) as the ceiling.
 *
 * Two placements: the peer (server or echo) in a child process on the other end of a socketpair
 * (what a VMM sees), and in this process (one event loop serving both ends).
 * Run: `node dist/bench/vfio-user.js`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { VfioUserCommand as C } from '../src/abi/vfio-user.js';
import { createDevice, type DeviceName } from '../src/devices/index.js';
import {
  closeFd,
  type FdWatch,
  MAP_SHARED,
  memfdCreate,
  mmap,
  PROT_READ,
  PROT_WRITE,
  recvMsgInto,
  sendMsg,
  socketPair,
  watchFd,
} from '../src/native/index.js';
import { nativeEnvironment } from '../src/runtime.js';
import { VfioUserServer } from '../src/server/index.js';
import { capabilitiesJson, encodeCommand, encodeVersion } from '../src/wire/vfio-user.js';
import { type BenchRow, isMain, printTable } from './lib.js';

/** One request in flight: send a message, resolve when a whole message has come back. */
class Client {
  #buf = new Uint8Array(1 << 20);
  #have = 0;
  #resolve: ((n: number) => void) | undefined;
  #watch: FdWatch;
  constructor(readonly fd: number) {
    this.#watch = watchFd(fd, { readable: true }, () => this.#read());
  }
  #read(): void {
    for (;;) {
      const r = recvMsgInto(this.fd, this.#buf.subarray(this.#have), 4);
      if (r === null) return;
      for (const f of r.fds) closeFd(f);
      if (r.bytes === 0) return;
      this.#have += r.bytes;
      if (this.#have < 16) continue;
      const size = new DataView(this.#buf.buffer).getUint32(4, true);
      if (this.#have < size) continue;
      this.#have -= size;
      if (this.#have > 0) this.#buf.copyWithin(0, size, size + this.#have);
      const res = this.#resolve;
      this.#resolve = undefined;
      res?.(size);
      if (this.#have === 0) return; // one request in flight: nothing more is coming
    }
  }
  call(msg: Uint8Array): Promise<number> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      if (sendMsg(this.fd, [msg]) !== msg.length) throw new Error('short send in the bench');
    });
  }
  close(): void {
    this.#watch.stop();
    closeFd(this.fd);
  }
}

/** Echoes every byte back (the ceiling: no parsing, no device). */
function echo(fd: number): () => void {
  const buf = new Uint8Array(1 << 20);
  const w = watchFd(fd, { readable: true }, () => {
    for (;;) {
      const r = recvMsgInto(fd, buf, 4);
      if (r === null) return;
      for (const f of r.fds) closeFd(f);
      if (r.bytes === 0) {
        w.stop();
        closeFd(fd);
        return;
      }
      sendMsg(fd, [buf.subarray(0, r.bytes)]);
      if (r.bytes < buf.length) return; // drained (the server stops on a short read too)
    }
  });
  return () => {
    w.stop();
    closeFd(fd);
  };
}

function serveOn(fd: number, name: DeviceName): () => void {
  const device = createDevice(name, { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  server.adopt(fd);
  return () => {
    server.stop();
    device.close();
  };
}

const access = (region: number, offset: bigint, count: number, data?: Uint8Array) => {
  const out = new Uint8Array(16 + (data?.length ?? 0));
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, offset, true);
  dv.setUint32(8, region, true);
  dv.setUint32(12, count, true);
  if (data) out.set(data, 16);
  return out;
};

interface Peer {
  fd: number;
  stop(): Promise<void>;
}

/** The peer in a child process: this script with --peer, the socket as its fd 3. */
/** Where processes run: pinned with taskset when the machine has it and two CPUs. */
const PIN = existsSync('/usr/bin/taskset') && cpus().length >= 2;
const PINNED_ENV = 'VFIO_TS_BENCH_PINNED';

function childPeer(kind: string, cpu: number): Peer {
  const [mine, theirs] = socketPair();
  const argv = [process.execPath, fileURLToPath(import.meta.url), '--peer', kind];
  const [file, ...args] = PIN ? ['/usr/bin/taskset', '-c', String(cpu), ...argv] : argv;
  const child = spawn(file!, args, {
    stdio: ['ignore', 'inherit', 'inherit', theirs],
  });
  closeFd(theirs);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    fd: mine,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function localPeer(kind: string): Peer {
  const [mine, theirs] = socketPair();
  const stop = kind === 'echo' ? echo(theirs) : serveOn(theirs, kind as DeviceName);
  return {
    fd: mine,
    stop: async () => {
      stop();
    },
  };
}

/**
 * Medians of ops measured in interleaved rounds (each round runs every op in turn), so that the
 * ceiling and the server see the same machine conditions: cross-process wake-ups on a shared
 * machine drift by a factor of 4 between runs.
 */
async function interleaved(
  ops: readonly { name: string; fn: () => Promise<unknown> }[],
  perRound = 1000,
  rounds = 15,
): Promise<BenchRow[]> {
  for (const op of ops) for (let i = 0; i < perRound; i++) await op.fn();
  const samples = ops.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    for (const [k, op] of ops.entries()) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < perRound; i++) await op.fn();
      samples[k]!.push(Number(process.hrtime.bigint() - t0) / perRound);
    }
  }
  return ops.map((op, k) => {
    const s = samples[k]!.sort((a, b) => a - b);
    return { name: op.name, medianNs: s[Math.floor(s.length / 2)]!, minNs: s[0]! };
  });
}

type Where = 'same-cpu' | 'other-cpu' | 'local';
const TAG: Record<Where, string> = {
  'same-cpu': 'peer process, same CPU',
  'other-cpu': 'peer process, other CPU',
  local: 'same process',
};
const maker = (where: Where) =>
  where === 'local' ? localPeer : (kind: string) => childPeer(kind, where === 'same-cpu' ? 0 : 1);

async function rows(where: Where): Promise<BenchRow[]> {
  const mk = maker(where);
  const tag = TAG[where];
  const peers: Peer[] = [];
  const clients: Client[] = [];
  const open = async (kind: string) => {
    const p = mk(kind);
    const c = new Client(p.fd);
    peers.push(p);
    clients.push(c);
    if (kind !== 'echo') {
      const version = encodeVersion({
        major: 0,
        minor: 0,
        json: capabilitiesJson({ maxMsgFds: 16, maxDataXferSize: 1 << 20 }),
      });
      await c.call(encodeCommand(0, C.VERSION, version));
    }
    return c;
  };
  const r4 = encodeCommand(1, C.REGION_READ, access(0, 0n, 4));
  const r64 = encodeCommand(2, C.REGION_READ, access(0, 0n, 64));
  const w4 = encodeCommand(3, C.REGION_WRITE, access(0, 4n, 4, new Uint8Array(4)));
  const w64 = encodeCommand(4, C.REGION_WRITE, access(0, 64n, 64, new Uint8Array(64)));
  const echoC = await open('echo');
  const ops: { name: string; fn: () => Promise<unknown> }[] = [
    // Ceiling: request-sized messages echoed back (32 B = a REGION_READ, 96 B = a 64 B write).
    { name: `ping-pong 32 B (${tag}, ceiling)`, fn: () => echoC.call(r4) },
    { name: `ping-pong 96 B (${tag}, ceiling)`, fn: () => echoC.call(w64) },
  ];
  for (const dev of ['ivshmem', 'edu'] as const) {
    const c = await open(dev);
    const what = dev === 'ivshmem' ? 'ivshmem BAR0 memory' : 'edu BAR0 trapped';
    ops.push(
      { name: `REGION_READ 4 B, ${what} (${tag})`, fn: () => c.call(r4) },
      { name: `REGION_READ 64 B, ${what} (${tag})`, fn: () => c.call(r64) },
      { name: `REGION_WRITE 4 B, ${what} (${tag})`, fn: () => c.call(w4) },
      { name: `REGION_WRITE 64 B, ${what} (${tag})`, fn: () => c.call(w64) },
    );
  }
  const out = await interleaved(ops);
  for (const c of clients) c.close();
  for (const p of peers) await p.stop();
  return out;
}

/** Latency percentiles of single round trips (each one timed on its own). */
async function percentiles(where: Where): Promise<void> {
  const mk = maker(where);
  const lines: string[] = [];
  const run = async (label: string, kind: string, msg: Uint8Array, negotiate: boolean) => {
    const p = mk(kind);
    const c = new Client(p.fd);
    if (negotiate) await c.call(encodeCommand(0, C.VERSION, encodeVersion({ major: 0, minor: 0 })));
    const n = 20000;
    for (let i = 0; i < 2000; i++) await c.call(msg);
    const t = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await c.call(msg);
      t[i] = Number(process.hrtime.bigint() - t0) / 1000;
    }
    t.sort();
    const q = (f: number) => t[Math.min(n - 1, Math.floor(f * n))]!.toFixed(1).padStart(8);
    lines.push(`${label.padEnd(44)} ${q(0.5)} ${q(0.9)} ${q(0.99)} ${q(0.999)}`);
    c.close();
    await p.stop();
  };
  const r4 = encodeCommand(1, C.REGION_READ, access(0, 0n, 4));
  const w4 = encodeCommand(2, C.REGION_WRITE, access(0, 4n, 4, new Uint8Array(4)));
  await run('ping-pong 32 B (ceiling)', 'echo', r4, false);
  await run('REGION_READ 4 B, ivshmem BAR0', 'ivshmem', r4, true);
  await run('REGION_WRITE 4 B, ivshmem BAR0', 'ivshmem', w4, true);
  await run('REGION_READ 4 B, edu BAR0 (trapped)', 'edu', r4, true);
  const title = `latency in µs, ${TAG[where]}`;
  console.log(`${title.padEnd(44)}      p50      p90      p99    p99.9`);
  for (const l of lines) console.log(l);
}

/**
 * Device DMA into client memory, as the device sees it (DmaSpace.read/readInto/write): through the
 * client's memfd mapped at DMA_MAP, and through DMA_READ/DMA_WRITE messages for memory mapped
 * without an fd (a client answering from its own buffer, in this process).
 */
export async function dmaBandwidth(): Promise<void> {
  const device = createDevice('edu', { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const [mine, theirs] = socketPair();
  server.adopt(theirs);
  const size = 16 << 20;
  const mfd = memfdCreate('bench-ram', size);
  const ram = mmap(mfd, 0n, size, PROT_READ | PROT_WRITE, MAP_SHARED);
  const remote = new Uint8Array(size);
  // A minimal client: takes VERSION/DMA_MAP replies and serves DMA_READ/DMA_WRITE (spec layout).
  const buf = new Uint8Array(4 << 20);
  let have = 0;
  let onReply: (() => void) | undefined;
  const w = watchFd(mine, { readable: true }, () => {
    for (;;) {
      const r = recvMsgInto(mine, buf.subarray(have), 4);
      if (r === null || r.bytes === 0) return;
      have += r.bytes;
      for (;;) {
        if (have < 16) break;
        const dv = new DataView(buf.buffer);
        const msgSize = dv.getUint32(4, true);
        if (have < msgSize) break;
        const id = dv.getUint16(0, true);
        const cmd = dv.getUint16(2, true);
        const isReply = (dv.getUint32(8, true) & 0xf) === 1;
        if (isReply) onReply?.();
        else if (cmd === C.DMA_READ) {
          const addr = Number(dv.getBigUint64(16, true) - 0x1000_0000n);
          const count = Number(dv.getBigUint64(24, true));
          const head = new Uint8Array(32);
          const hv = new DataView(head.buffer);
          hv.setUint16(0, id, true);
          hv.setUint16(2, cmd, true);
          hv.setUint32(4, 32 + count, true);
          hv.setUint32(8, 1, true);
          head.set(buf.subarray(16, 32), 16);
          sendAll(mine, [head, remote.subarray(addr, addr + count)]);
        } else if (cmd === C.DMA_WRITE) {
          const addr = Number(dv.getBigUint64(16, true) - 0x1000_0000n);
          const count = Number(dv.getBigUint64(24, true));
          remote.set(buf.subarray(32, 32 + count), addr);
          const head = new Uint8Array(32);
          const hv = new DataView(head.buffer);
          hv.setUint16(0, id, true);
          hv.setUint16(2, cmd, true);
          hv.setUint32(4, 32, true);
          hv.setUint32(8, 1, true);
          head.set(buf.subarray(16, 32), 16);
          sendAll(mine, [head]);
        }
        buf.copyWithin(0, msgSize, have);
        have -= msgSize;
      }
    }
  });
  const call = (m: Uint8Array, fds: number[] = []) =>
    new Promise<void>((res) => {
      onReply = res;
      sendMsg(mine, [m], fds);
    });
  await call(encodeCommand(0, C.VERSION, encodeVersion({ major: 0, minor: 1 })));
  const map = (iova: bigint, fds: number[]) => {
    const m = new Uint8Array(32);
    const dv = new DataView(m.buffer);
    dv.setUint32(0, 32, true);
    dv.setUint32(4, 3, true);
    dv.setBigUint64(16, iova, true);
    dv.setBigUint64(24, BigInt(size), true);
    return call(encodeCommand(1, C.DMA_MAP, m), fds);
  };
  await map(0n, [mfd]);
  await map(0x1000_0000n, []);
  const dma = device.dma;
  const lines: string[] = [];
  const measureBw = async (label: string, bytes: number, fn: () => Promise<unknown>) => {
    for (let i = 0; i < 3; i++) await fn();
    const samples: number[] = [];
    for (let r = 0; r < 9; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < 8; i++) await fn();
      samples.push((8 * bytes) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6);
    }
    samples.sort((a, b) => a - b);
    lines.push(`${label.padEnd(52)} ${samples[4]!.toFixed(0).padStart(8)} MB/s`);
  };
  const chunk = new Uint8Array(1 << 20).fill(7);
  const into = new Uint8Array(1 << 20);
  await measureBw('DMA read 1 MiB, client memfd mapped', 1 << 20, () => dma.read(0x1000n, 1 << 20));
  await measureBw('DMA readInto 1 MiB, client memfd mapped', 1 << 20, () => dma.readInto(0x1000n, into));
  await measureBw('DMA write 1 MiB, client memfd mapped', 1 << 20, () => dma.write(0x1000n, chunk));
  await measureBw('DMA read 1 MiB, no fd (DMA_READ messages)', 1 << 20, () =>
    dma.read(0x1000_1000n, 1 << 20),
  );
  await measureBw('DMA write 1 MiB, no fd (DMA_WRITE messages)', 1 << 20, () =>
    dma.write(0x1000_1000n, chunk),
  );
  await measureBw('DMA read 4 KiB, client memfd mapped', 4096, () => dma.read(0x1000n, 4096));
  await measureBw('DMA readInto 4 KiB, client memfd mapped', 4096, () =>
    dma.readInto(0x1000n, into.subarray(0, 4096)),
  );
  await measureBw('DMA write 4 KiB, client memfd mapped', 4096, () =>
    dma.write(0x1000n, chunk.subarray(0, 4096)),
  );
  await measureBw('DMA read 4 KiB, no fd (DMA_READ messages)', 4096, () => dma.read(0x1000_1000n, 4096));
  console.log(`${'device DMA into client memory (same process)'.padEnd(52)}   median`);
  for (const l of lines) console.log(l);
  w.stop();
  server.stop();
  device.close();
  ram.unmap();
  closeFd(mfd);
  closeFd(mine);
}

/**
 * sendmsg of everything; on EAGAIN it yields to the event loop (the server runs in this process
 * and must drain the socket). Sends are chained so that replies never interleave.
 */
let sendChain: Promise<void> = Promise.resolve();
function sendAll(fd: number, chunks: Uint8Array[]): void {
  sendChain = sendChain.then(async () => {
    let rest = chunks;
    for (;;) {
      const total = rest.reduce((n, c) => n + c.length, 0);
      const n = sendMsg(fd, rest) ?? 0;
      if (n === total) return;
      let skip = n;
      const next: Uint8Array[] = [];
      for (const c of rest) {
        if (skip >= c.length) skip -= c.length;
        else {
          next.push(c.subarray(skip));
          skip = 0;
        }
      }
      rest = next;
      await new Promise((r) => setImmediate(r));
    }
  });
}

export async function runVfioUserBench(): Promise<void> {
  const places: Where[] = PIN ? ['other-cpu', 'same-cpu', 'local'] : ['same-cpu', 'local'];
  for (const w of places) {
    printTable(`vfio-user round trips, ${TAG[w]}`, await rows(w));
    console.log('');
  }
  for (const w of places) {
    await percentiles(w);
    console.log('');
  }
  await dmaBandwidth();
  console.log('');
  if (!PIN) console.log('(taskset missing or one CPU: processes not pinned; cross-process figures drift)');
}

if (process.argv[2] === '--peer') {
  const kind = process.argv[3] ?? 'echo';
  const stop = kind === 'echo' ? echo(3) : serveOn(3, kind as DeviceName);
  process.once('SIGTERM', () => {
    stop();
    process.exit(0);
  });
} else if (isMain(import.meta.url)) {
  if (PIN && process.env[PINNED_ENV] === undefined) {
    // Pin this process to CPU 0 (peers go to CPU 0 or 1): cross-process wake-ups cost 15 or
    // 55 us depending on where the scheduler put the two ends, so leave it no choice.
    const r = spawnSync('/usr/bin/taskset', ['-c', '0', process.execPath, fileURLToPath(import.meta.url)], {
      stdio: 'inherit',
      env: { ...process.env, [PINNED_ENV]: '1' },
    });
    process.exitCode = r.status ?? 1;
  } else await runVfioUserBench();
}
