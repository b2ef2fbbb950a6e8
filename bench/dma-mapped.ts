/**
 * Device DMA into client memory as the device sees it (DmaSpace.read / readInto / write), the
 * client's memory registered through our server's DMA_MAP: a memfd (sealed, so the server maps
 * it) and, for scale, memory without an fd (every access a DMA_READ / DMA_WRITE message to a
 * client in this process). Each mapped-memory row is set against a plain memcpy of the same
 * size between the same kinds of memory (Uint8Array.set from or to the mapped pages), measured
 * in the same interleaved rounds: the ratio is what the DMA path costs over the copy itself
 * (the goal: at least 0.8x memcpy).
 * Run: `node dist/bench/dma-mapped.js`.
 */
import { VfioUserCommand as C } from '../src/abi/vfio-user.js';
import { createDevice } from '../src/devices/index.js';
import {
  addSeals,
  closeFd,
  F_SEAL_SHRINK,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
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
import { encodeCommand, encodeVersion } from '../src/wire/vfio-user.js';
import { isMain } from './lib.js';

const SIZE = 16 << 20;
const REMOTE = 0x1000_0000n;

/** A minimal client: takes the VERSION/DMA_MAP replies and serves DMA_READ/DMA_WRITE (spec layout). */
function client(fd: number, remote: Uint8Array) {
  const buf = new Uint8Array(4 << 20);
  let have = 0;
  let onReply: (() => void) | undefined;
  const reply = (id: number, cmd: number, head: Uint8Array, data?: Uint8Array) => {
    const h = new Uint8Array(32);
    const v = new DataView(h.buffer);
    v.setUint16(0, id, true);
    v.setUint16(2, cmd, true);
    v.setUint32(4, 32 + (data?.length ?? 0), true);
    v.setUint32(8, 1, true);
    h.set(head, 16);
    sendAll(fd, data ? [h, data] : [h]);
  };
  const w = watchFd(fd, { readable: true }, () => {
    for (;;) {
      const r = recvMsgInto(fd, buf.subarray(have), 4);
      if (r === null || r.bytes === 0) return;
      have += r.bytes;
      for (;;) {
        if (have < 16) break;
        const dv = new DataView(buf.buffer);
        const size = dv.getUint32(4, true);
        if (have < size) break;
        const id = dv.getUint16(0, true);
        const cmd = dv.getUint16(2, true);
        if ((dv.getUint32(8, true) & 0xf) === 1) onReply?.();
        else if (cmd === C.DMA_READ || cmd === C.DMA_WRITE) {
          const at = Number(dv.getBigUint64(16, true) - REMOTE);
          const count = Number(dv.getBigUint64(24, true));
          const head = buf.slice(16, 32);
          if (cmd === C.DMA_READ) reply(id, cmd, head, remote.subarray(at, at + count));
          else {
            remote.set(buf.subarray(32, 32 + count), at);
            reply(id, cmd, head);
          }
        }
        buf.copyWithin(0, size, have);
        have -= size;
      }
    }
  });
  const call = (m: Uint8Array, fds: number[] = []) =>
    new Promise<void>((res) => {
      onReply = res;
      sendMsg(fd, [m], fds);
    });
  return { call, stop: () => w.stop() };
}

/**
 * sendmsg of everything; on EAGAIN it yields to the event loop (the server runs in this thread
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

const dmaMap = (iova: bigint, size: number) => {
  const m = new Uint8Array(32);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, 32, true);
  dv.setUint32(4, 3, true);
  dv.setBigUint64(16, iova, true);
  dv.setBigUint64(24, BigInt(size), true);
  return encodeCommand(1, C.DMA_MAP, m);
};

interface Op {
  readonly name: string;
  readonly bytes: number;
  /** The memcpy row this one is set against. */
  readonly vs?: string;
  run(): Promise<unknown> | unknown;
}

export async function runDmaMappedBench(): Promise<void> {
  const device = createDevice('edu', { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const [mine, theirs] = socketPair();
  server.adopt(theirs);
  // Sealed against shrinking, as QEMU's guest RAM is: the server maps it (dma-memory.ts; an
  // unsealed fd is reached with pread/pwrite instead).
  const mfd = memfdCreate('bench-ram', SIZE, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  addSeals(mfd, F_SEAL_SHRINK);
  const ram = mmap(mfd, 0n, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED);
  const remote = new Uint8Array(SIZE);
  const c = client(mine, remote);
  await c.call(encodeCommand(0, C.VERSION, encodeVersion({ major: 0, minor: 0 })));
  await c.call(dmaMap(0n, SIZE), [mfd]);
  await c.call(dmaMap(REMOTE, SIZE));
  const dma = device.dma;
  const ops: Op[] = [];
  for (const bytes of [4096, 64 << 10, 1 << 20]) {
    const label = bytes >= 1 << 20 ? `${bytes >> 20} MiB` : `${bytes >> 10} KiB`;
    const into = new Uint8Array(bytes);
    const data = new Uint8Array(bytes).fill(7);
    const src = ram.bytes.subarray(4096, 4096 + bytes);
    ops.push(
      { name: `memcpy ${label}, client pages -> buffer`, bytes, run: () => into.set(src) },
      {
        name: `  DMA readInto ${label} (device reads client memory)`,
        bytes,
        vs: `memcpy ${label}, client pages -> buffer`,
        run: () => dma.readInto(4096n, into),
      },
      {
        name: `  DMA read ${label} (a fresh copy)`,
        bytes,
        vs: `memcpy ${label}, client pages -> buffer`,
        run: () => dma.read(4096n, bytes),
      },
      { name: `memcpy ${label}, buffer -> client pages`, bytes, run: () => src.set(data) },
      {
        name: `  DMA write ${label} (device writes client memory)`,
        bytes,
        vs: `memcpy ${label}, buffer -> client pages`,
        run: () => dma.write(4096n, data),
      },
    );
  }
  const msg: Op[] = [
    { name: 'DMA read 4 KiB, no fd (DMA_READ messages)', bytes: 4096, run: () => dma.read(REMOTE, 4096) },
    {
      name: 'DMA read 1 MiB, no fd (DMA_READ messages)',
      bytes: 1 << 20,
      run: () => dma.read(REMOTE, 1 << 20),
    },
    {
      name: 'DMA write 1 MiB, no fd (DMA_WRITE messages)',
      bytes: 1 << 20,
      run: () => dma.write(REMOTE, remote.subarray(0, 1 << 20)),
    },
  ];
  const rate = new Map<string, number[]>();
  const measure = async (set: Op[], rounds: number) => {
    for (const op of set) for (let i = 0; i < 3; i++) await op.run();
    for (let r = 0; r < rounds; r++) {
      for (const op of set) {
        // About 8 MiB of copying per sample (at least 16 calls).
        const k = Math.max(16, Math.floor((8 << 20) / op.bytes));
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < k; i++) await op.run();
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        rate.set(op.name, [...(rate.get(op.name) ?? []), (k * op.bytes) / s / 1e6]);
      }
    }
  };
  await measure(ops, 15);
  await measure(msg, 5);
  const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(`${'device DMA into client memory (same process)'.padEnd(56)}${'MB/s'.padStart(9)}  vs memcpy`);
  for (const op of [...ops, ...msg]) {
    const m = med(rate.get(op.name)!);
    const vs = op.vs ? `${(m / med(rate.get(op.vs)!)).toFixed(2)}x` : '';
    console.log(`${op.name.padEnd(56)}${m.toFixed(0).padStart(9)}  ${vs}`);
  }
  c.stop();
  server.stop();
  device.close();
  ram.unmap();
  closeFd(mfd);
  closeFd(mine);
}

if (isMain(import.meta.url)) await runDmaMappedBench();
