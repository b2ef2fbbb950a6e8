/**
 * Live migration over vfio-user (src/driver/migrate.ts between two of our servers in this
 * process, each over a socketpair): downtime (source stop to target RUNNING) and total time of
 * an ivshmem with pre-copy and with stop-and-copy only, and a DMA_LOGGING_REPORT round trip over
 * 1 GiB of IOVA (a 32 KiB bitmap) with 1024 pages dirtied by the device before each. Medians of
 * the runs, and the ratios within one run. Run: `node dist/bench/migration.js`.
 */
import { VfioUserClient } from '../src/client/index.js';
import type { VfioPciDevice } from '../src/core/device.js';
import { createDevice } from '../src/devices/index.js';
import { ivshmemDevice } from '../src/devices/ivshmem.js';
import { dirtyLoggingStart, dirtyLoggingStop, dirtyReport, migrate } from '../src/driver/migrate.js';
import { socketPair } from '../src/native/index.js';
import { nativeEnvironment } from '../src/runtime.js';
import { VfioUserServer } from '../src/server/index.js';
import { isMain } from './lib.js';

interface Served {
  client: VfioUserClient;
  device: VfioPciDevice;
  close(): Promise<void>;
}

async function serve(device: VfioPciDevice): Promise<Served> {
  const server = new VfioUserServer(device);
  const [a, b] = socketPair();
  server.adopt(a);
  const client = await VfioUserClient.fromFd(b);
  return {
    client,
    device,
    async close() {
      await client.close();
      await server.idle();
      server.stop();
      device.close();
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function downtime(size: number, rounds: number, runs: number) {
  const down: number[] = [];
  const total: number[] = [];
  for (let i = 0; i < runs; i++) {
    const env = nativeEnvironment();
    const src = await serve(ivshmemDevice(size).instantiate({ env }).device);
    const dst = await serve(ivshmemDevice(size).instantiate({ env }).device);
    await src.client.pwrite(2n << 40n, new Uint8Array(size).fill(i + 1));
    const t = performance.now();
    const r = await migrate(src.client, dst.client, { maxRounds: rounds });
    total.push(performance.now() - t);
    down.push(r.downtimeMs);
    await src.close();
    await dst.close();
  }
  return { down: median(down), total: median(total) };
}

async function reportRoundTrip(runs: number): Promise<number> {
  const env = nativeEnvironment();
  const s = await serve(createDevice('edu', { env }));
  const GiB = 1n << 30n;
  // 1024 pages spread over the GiB, each mapped (an unmapped DMA fails and writes nothing).
  const pages = Array.from({ length: 1024 }, (_, p) => BigInt(p * 977) * 4096n);
  for (const iova of pages)
    s.device.dma.map(iova, 4096n, { bytes: new Uint8Array(4096), readable: true, writable: true });
  await dirtyLoggingStart(s.client, 4096n, [{ iova: 0n, length: GiB }]);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    for (let p = 0; p < 1024; p++)
      await s.device.dma.write(BigInt(p * 977) * 4096n, new Uint8Array(1)).catch(() => 0);
    const t = performance.now();
    await dirtyReport(s.client, 0n, GiB, 4096n);
    times.push(performance.now() - t);
  }
  await dirtyLoggingStop(s.client);
  await s.close();
  return median(times);
}

export async function runMigrationBench(): Promise<void> {
  console.log('ivshmem over vfio-user, in this process (medians of 5 runs, ms)');
  console.log('BAR2       pre-copy downtime  total   stop-and-copy downtime  total   downtime ratio');
  for (const mib of [4, 64]) {
    const size = mib << 20;
    const pre = await downtime(size, 8, 5);
    const sc = await downtime(size, 0, 5);
    console.log(
      `${`${mib} MiB`.padEnd(10)} ${pre.down.toFixed(1).padStart(17)}  ${pre.total.toFixed(1).padStart(6)}   ${sc.down.toFixed(1).padStart(22)}  ${sc.total.toFixed(1).padStart(6)}   ${(sc.down / pre.down).toFixed(1).padStart(13)}x`,
    );
  }
  const rt = await reportRoundTrip(11);
  console.log(
    `DMA_LOGGING_REPORT of 1 GiB (32 KiB bitmap), 1024 pages dirty: ${rt.toFixed(2)} ms median of 11`,
  );
}

if (isMain(import.meta.url)) await runMigrationBench();
