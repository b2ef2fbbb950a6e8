/**
 * Cost of the native layer's hot calls: median ns per call over several rounds.
 * Run: `npx tsc -p . && node dist/bench/native.js`. Prints figures only; asserts nothing.
 */
import {
  addressNumber,
  closeFd,
  eventfdCreate,
  eventfdRead,
  eventfdSignal,
  getpid,
  MAX_FDS_PER_MSG,
  memfdCreate,
  pread,
  preadInto,
  pwrite,
  recvMsg,
  recvMsgInto,
  SocketIo,
  sendMsg,
  socketPair,
} from '../src/native/index.js';
import { type BenchRow, isMain, measure, printTable } from './lib.js';

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
  // The server's hot path: preallocated msghdrs, addresses as numbers, nothing allocated.
  const ioA = new SocketIo(a, 4096, 0);
  const ioB = new SocketIo(b, 4096, MAX_FDS_PER_MSG);
  const intoAt = addressNumber(into);
  ioA.out.set(hdr);
  ioA.out.set(payload, 16);
  rows.push(
    measure('SocketIo sendOut+recv 80 B', () => {
      ioA.sendOut(80);
      ioB.recv(intoAt, into.length, false);
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

if (isMain(import.meta.url)) printTable('native call', runNativeBench());
