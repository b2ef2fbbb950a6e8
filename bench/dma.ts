/**
 * Through our vfio-user client (src/client), the way a driver sees it:
 *  - edu DMA bandwidth in 4 KiB chunks (edu's whole buffer), RAM -> device and device -> RAM,
 *    with the client's memory passed as a memfd (the server maps it) and without an fd (the
 *    server reaches it with DMA_READ/DMA_WRITE messages). One DMA = one 32-byte REGION_WRITE of
 *    the registers 0x80-0x9c (src, dst, count, command) and REGION_READs of 0x98 until done.
 *  - REGION_READ/REGION_WRITE bandwidth of a whole 4 MiB BAR (1 MiB pieces, several in flight).
 *  - REGION_READ latency percentiles (p50/p90/p99) of 4-byte reads, next to the in-process core
 *    driven through the same driver API.
 * Two placements: the server in this process (a socketpair, one event loop for both ends), and
 * `vfio-ts serve` in a child process on a temporary socket (what a separate driver sees).
 * Run: `node dist/bench/dma.js`.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDmaMemory, createMessageOnlyDmaMemory, VfioUserClient } from '../src/client/index.js';
import { createDevice, type DeviceName } from '../src/devices/index.js';
import { VfioDevice } from '../src/driver/device.js';
import type { DmaMemory } from '../src/driver/file.js';
import { LocalDeviceFile } from '../src/driver/local.js';
import { socketPair } from '../src/native/index.js';
import { nativeEnvironment } from '../src/runtime.js';
import { VfioUserServer } from '../src/server/index.js';
import { isMain } from './lib.js';

const CHUNK = 4096;
const IOVA = 0x10_0000n;
const EDU_BUFFER = 0x40000n;

interface Placement {
  readonly name: string;
  open(device: DeviceName): Promise<{ dev: VfioDevice; close(): Promise<void> }>;
}

const inProcess: Placement = {
  name: 'server in this process',
  async open(device) {
    const core = createDevice(device, { env: nativeEnvironment() });
    const server = new VfioUserServer(core);
    const [a, b] = socketPair();
    server.adopt(a);
    const dev = new VfioDevice(await VfioUserClient.fromFd(b));
    return {
      dev,
      async close() {
        await dev.close();
        await server.idle();
        server.stop();
        core.close();
      },
    };
  },
};

const childProcess: Placement = {
  name: 'vfio-ts serve (child process)',
  async open(device) {
    const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-bench-'));
    const sock = join(dir, 's.sock');
    const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const child = spawn(process.execPath, [main, 'serve', '--device', device, '--socket', sock], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
    const dev = new VfioDevice(await VfioUserClient.connect(sock));
    return {
      dev,
      async close() {
        await dev.close();
        child.kill('SIGTERM');
        await exited;
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

/** src, dst, count and the command in one write (edu's registers 0x80..0x9f, 4-byte pieces). */
function dmaRegs(src: bigint, dst: bigint, toRam: boolean): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, src, true);
  v.setBigUint64(8, dst, true);
  v.setBigUint64(16, BigInt(CHUNK), true);
  v.setUint32(24, 1 | (toRam ? 2 : 0), true);
  return b;
}

async function dmaOnce(dev: VfioDevice, regs: Uint8Array): Promise<void> {
  await dev.write(0, 0x80, regs);
  while ((await dev.read32(0, 0x98)) & 1) {
    /* poll the start bit, as edu's driver does */
  }
}

/** MB/s of `n` back-to-back 4 KiB DMAs (median of `rounds`). */
async function bandwidth(dev: VfioDevice, toRam: boolean, n = 300, rounds = 5): Promise<number> {
  const regs = toRam ? dmaRegs(EDU_BUFFER, IOVA, true) : dmaRegs(IOVA, EDU_BUFFER, false);
  for (let i = 0; i < 50; i++) await dmaOnce(dev, regs);
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await dmaOnce(dev, regs);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push((n * CHUNK) / s / 1e6);
  }
  rates.sort((a, b) => a - b);
  return rates[Math.floor(rates.length / 2)]!;
}

/** Per-call latency percentiles in µs of `fn`, `n` calls after a warm-up. */
async function percentiles(fn: () => Promise<unknown>, n = 20000): Promise<[number, number, number]> {
  for (let i = 0; i < 2000; i++) await fn();
  const t = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    t[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  t.sort();
  const at = (p: number) => t[Math.min(n - 1, Math.floor(p * n))]!;
  return [at(0.5), at(0.9), at(0.99)];
}

export async function runDmaBench(): Promise<void> {
  console.log('edu DMA, 4 KiB per DMA, through the vfio-user client (MB/s, median of 5 rounds of 300)');
  console.log(
    `${'placement'.padEnd(40)}${'memory'.padEnd(26)}${'RAM->edu'.padStart(10)}${'edu->RAM'.padStart(10)}`,
  );
  for (const p of [inProcess, childProcess]) {
    for (const [kind, make] of [
      ['memfd (server maps it)', () => createDmaMemory(CHUNK)],
      ['no fd (DMA_READ/WRITE)', () => createMessageOnlyDmaMemory(CHUNK)],
    ] as const) {
      const o = await p.open('edu');
      const mem: DmaMemory & { close?: () => void } = make();
      try {
        await o.dev.dmaMap(IOVA, mem);
        const toDev = await bandwidth(o.dev, false);
        const toRam = await bandwidth(o.dev, true);
        await o.dev.dmaUnmap(IOVA, BigInt(CHUNK));
        console.log(
          `${p.name.padEnd(40)}${kind.padEnd(26)}${toDev.toFixed(1).padStart(10)}${toRam.toFixed(1).padStart(10)}`,
        );
      } finally {
        mem.close?.();
        await o.close();
      }
    }
  }

  console.log(
    '\nREGION_READ / REGION_WRITE of the whole 4 MiB ivshmem BAR2 through the client (MB/s, median of 9)',
  );
  for (const p of [inProcess, childProcess]) {
    const o = await p.open('ivshmem');
    try {
      const size = 4 << 20;
      const data = new Uint8Array(size);
      const rate = async (f: () => Promise<unknown>) => {
        const r: number[] = [];
        for (let i = 0; i < 10; i++) {
          const t0 = process.hrtime.bigint();
          await f();
          if (i > 0) r.push(size / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6);
        }
        return r.sort((a, b) => a - b)[4]!;
      };
      const rd = await rate(() => o.dev.read(2, 0, size));
      const wr = await rate(() => o.dev.write(2, 0, data));
      console.log(
        `${p.name.padEnd(40)}${'read'.padEnd(8)}${rd.toFixed(0).padStart(8)}   ${'write'.padEnd(8)}${wr.toFixed(0).padStart(8)}`,
      );
    } finally {
      await o.close();
    }
  }

  console.log('\n4-byte region reads through the driver API (µs per call)');
  console.log(
    `${'backend'.padEnd(40)}${'register'.padEnd(26)}${'p50'.padStart(8)}${'p90'.padStart(8)}${'p99'.padStart(8)}`,
  );
  const local = (name: DeviceName) => {
    const core = createDevice(name, { env: nativeEnvironment() });
    const dev = new VfioDevice(new LocalDeviceFile(core));
    return { name: 'in-process core', dev, close: () => dev.close() };
  };
  for (const [device, label] of [
    ['edu', 'edu BAR0 id (trapped)'],
    ['ivshmem', 'ivshmem BAR0 (memory)'],
  ] as const) {
    const l = local(device);
    const row = async (name: string, dev: VfioDevice) => {
      const [p50, p90, p99] = await percentiles(() => dev.read(0, 0, 4));
      console.log(
        `${name.padEnd(40)}${label.padEnd(26)}${p50.toFixed(1).padStart(8)}${p90.toFixed(1).padStart(8)}${p99.toFixed(1).padStart(8)}`,
      );
    };
    await row(l.name, l.dev);
    await l.close();
    for (const p of [inProcess, childProcess]) {
      const o = await p.open(device);
      try {
        await row(`client, ${p.name}`, o.dev);
      } finally {
        await o.close();
      }
    }
  }
}

if (isMain(import.meta.url)) await runDmaBench();
