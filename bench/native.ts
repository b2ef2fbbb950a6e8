/**
 * Cost of the native layer's hot calls: median ns per call over several rounds.
 * Run: `npx tsc -p . && node dist/bench/native.js`. Prints figures only; asserts nothing.
 */
import { pathToFileURL } from 'node:url';
import {
  closeFd,
  eventfdCreate,
  eventfdRead,
  eventfdSignal,
  getpid,
  memfdCreate,
  pread,
  preadInto,
  pwrite,
  recvMsg,
  recvMsgInto,
  sendMsg,
  socketPair,
} from '../src/native/index.js';

export interface BenchRow {
  name: string;
  medianNs: number;
  minNs: number;
}

/** Median and minimum ns per call of `fn` over `rounds` rounds of `perRound` calls. */
function measure(name: string, fn: () => void, perRound = 20000, rounds = 15): BenchRow {
  for (let i = 0; i < perRound; i++) fn(); // warm up the JIT and koffi's call paths
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perRound; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / perRound);
  }
  samples.sort((a, b) => a - b);
  return { name, medianNs: samples[Math.floor(samples.length / 2)]!, minNs: samples[0]! };
}

export function runNativeBench(): BenchRow[] {
  const rows: BenchRow[] = [];
  rows.push(measure('getpid (bare koffi call)', () => getpid()));

  const memfd = memfdCreate('bench', 1 << 20);
  pwrite(memfd, new Uint8Array(4096).fill(1), 0n);
  const buf = new Uint8Array(4096);
  rows.push(measure('pread 8 B memfd (new array)', () => pread(memfd, 8, 64n)));
  rows.push(measure('preadInto 8 B memfd', () => preadInto(memfd, buf.subarray(0, 8), 64n)));
  rows.push(measure('preadInto 4 KiB memfd', () => preadInto(memfd, buf, 0n)));

  const efd = eventfdCreate();
  rows.push(
    measure('eventfd signal', () => {
      eventfdSignal(efd);
    }),
  );
  eventfdRead(efd);
  rows.push(
    measure('eventfd signal + read', () => {
      eventfdSignal(efd);
      eventfdRead(efd);
    }),
  );

  const [a, b] = socketPair();
  const hdr = new Uint8Array(16).fill(7);
  const payload = new Uint8Array(64).fill(9);
  rows.push(
    measure('sendMsg+recvMsg 80 B (socketpair)', () => {
      sendMsg(a, [hdr, payload]);
      recvMsg(b, 4096, 8);
    }),
  );
  const into = new Uint8Array(4096);
  rows.push(
    measure('sendMsg+recvMsgInto 80 B', () => {
      sendMsg(a, [hdr, payload]);
      recvMsgInto(b, into, 8);
    }),
  );
  const page = new Uint8Array(4096).fill(3);
  rows.push(
    measure('sendMsg+recvMsgInto 4 KiB', () => {
      sendMsg(a, [hdr, page]);
      recvMsgInto(b, into, 8);
    }),
  );
  rows.push(
    measure(
      'sendMsg+recvMsg 16 B + 1 fd (+close)',
      () => {
        sendMsg(a, [hdr], [memfd]);
        const r = recvMsg(b, 4096, 8);
        for (const fd of r?.fds ?? []) closeFd(fd);
      },
      5000,
    ),
  );

  closeFd(a);
  closeFd(b);
  closeFd(efd);
  closeFd(memfd);
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = runNativeBench();
  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`${'native call'.padEnd(w)}  median ns   min ns`);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(w)}  ${r.medianNs.toFixed(0).padStart(9)}  ${r.minNs.toFixed(0).padStart(7)}`,
    );
  }
}
