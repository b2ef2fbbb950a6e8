/**
 * The server's hot path in this process, without sockets: the time and the V8 heap bytes
 * allocated per message of `FastPath.handle` (src/server/fast-path.ts) answering REGION_READ and
 * REGION_WRITE of config space and of a trapped BAR (edu), and the device core's two reads,
 * `readRegion` (a fresh array, a bigint position) against `readRegionInto` (into the caller's
 * bytes). Run: `node dist/bench/fast-path.js`.
 *
 * Bytes per call: the heap's growth over a batch of calls, the median of several batches (a
 * batch in which a scavenge ran shows less than it allocated; most batches run none).
 */
import { getHeapStatistics } from 'node:v8';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../src/abi/vfio.js';
import { VfioUserCommand as C } from '../src/abi/vfio-user.js';
import { heapEnvironment } from '../src/core/env.js';
import { createDevice } from '../src/devices/index.js';
import type { Negotiated } from '../src/server/context.js';
import { FastPath, type FastPathOwner } from '../src/server/fast-path.js';
import { encodeCommand, encodeRegionReadRequest, encodeRegionWriteRequest } from '../src/wire/vfio-user.js';
import { type BenchRow, isMain, measure, printTable } from './lib.js';

const BATCH = 2000;
const BATCHES = 15;

/** Heap bytes `fn` allocates per call (see above). */
function bytesPerCall(fn: () => void): number {
  for (let i = 0; i < BATCH; i++) fn();
  const grew: number[] = [];
  for (let b = 0; b < BATCHES; b++) {
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < BATCH; i++) fn();
    grew.push(getHeapStatistics().used_heap_size - before);
  }
  grew.sort((x, y) => x - y);
  return Math.max(0, grew[Math.floor(BATCHES / 2)]!) / BATCH;
}

interface Row extends BenchRow {
  bytes: number;
}

function row(name: string, fn: () => void): Row {
  return { ...measure(name, fn), bytes: bytesPerCall(fn) };
}

export function runFastPathBench(): Row[] {
  const env = heapEnvironment();
  const edu = createDevice('edu', { env });
  // What the fast path reads of the negotiated capabilities: the transfer limit.
  const negotiated = { maxDataXferSize: 1 << 20 } as Negotiated;
  let sent = 0;
  const owner: FastPathOwner = {
    device: edu,
    negotiated,
    messages: 0,
    failAt: () => {
      throw new Error('the bench sent a message the device refused');
    },
  };
  const fast = new FastPath(owner, {
    replyBuffer: new Uint8Array(64 << 10),
    sendReplyBuffer: (_id, _cmd, payload) => {
      sent += payload;
    },
  });
  const message = (m: Uint8Array) => {
    const v = new DataView(m.buffer, m.byteOffset, m.byteLength);
    return () => {
      if (!fast.handle(m, v, 0, m.length)) throw new Error('the fast path declined the bench message');
    };
  };
  const read = (region: number, offset: bigint, count: number) =>
    message(encodeCommand(1, C.REGION_READ, encodeRegionReadRequest({ offset, region, count })));
  const write = (region: number, offset: bigint, data: Uint8Array, posted: boolean) =>
    message(
      encodeCommand(2, C.REGION_WRITE, encodeRegionWriteRequest({ offset, region, data }), {
        noReply: posted,
      }),
    );
  const cfg = VFIO_PCI_CONFIG_REGION_INDEX;
  const into4 = new Uint8Array(4);
  const rows = [
    row('FastPath REGION_READ 4 B config', read(cfg, 0n, 4)),
    row('FastPath REGION_READ 64 B config', read(cfg, 0n, 64)),
    row('FastPath REGION_READ 4 B edu BAR0 (trapped)', read(0, 4n, 4)),
    row('FastPath REGION_WRITE 4 B edu BAR0', write(0, 4n, Uint8Array.of(1, 2, 3, 4), false)),
    row('FastPath REGION_WRITE 4 B edu BAR0, posted', write(0, 4n, Uint8Array.of(1, 2, 3, 4), true)),
    row('core readRegion 4 B config', () => edu.readRegion(cfg, 0n, 4)),
    row('core readRegionInto 4 B config', () => edu.readRegionInto(cfg, 0, into4)),
    row('core readRegion 4 B edu BAR0', () => edu.readRegion(0, 4n, 4)),
    row('core readRegionInto 4 B edu BAR0', () => edu.readRegionInto(0, 4, into4)),
  ];
  if (sent === 0) throw new Error('the fast path sent no reply');
  edu.close();
  return rows;
}

export function printFastPath(rows: readonly Row[]): void {
  printTable('the server hot path in-process', rows);
  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`\n${'heap bytes allocated per call'.padEnd(w)}  bytes`);
  for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.bytes.toFixed(0).padStart(5)}`);
}

if (isMain(import.meta.url)) printFastPath(runFastPathBench());
