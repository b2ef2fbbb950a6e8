/**
 * A vfio-user client process for the kill tests (test/reliability/kill.test.ts):
 *
 *   node dist/test/reliability/client-proc.js <socket> <seed>
 *
 * Connects, negotiates, maps a memfd (DMA_MAP with an fd) and a range without one (the server
 * then reaches it with DMA_READ/DMA_WRITE, which this client never answers), arms INTx, MSI,
 * ERR and REQ with eventfds, then loops for ever: edu DMA from both ranges, register reads,
 * messages sent in two halves with a pause between, DMA_UNMAP/DMA_MAP churn. It prints
 * `connected` and `armed` as it gets there; the test kills it (SIGKILL) at a random moment.
 */
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { eventfdCreate, memfdCreate, sendMsg, unixConnect } from '../../src/native/index.js';
import { RawClient } from '../fuzz/client.js';
import { Rng } from '../fuzz/prng.js';
import { concat, message, u32, u64, versionPayload } from '../fuzz/server.js';

const [path, seedArg] = process.argv.slice(2);
if (!path) {
  console.error('usage: client-proc.js <socket> <seed>');
  process.exit(2);
}
const rng = new Rng(Number(seedArg ?? 1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const fd = unixConnect(path);
const c = new RawClient(fd);
console.log('connected');

/** Sends a message in two sendmsg calls with a pause between (a kill can land in the middle). */
async function sendSplit(bytes: Uint8Array, fds: number[] = []): Promise<void> {
  const cut = 1 + rng.int(bytes.length - 1);
  sendMsg(fd, [bytes.subarray(0, cut)], fds);
  await sleep(rng.int(5));
  sendMsg(fd, [bytes.subarray(cut)]);
}

let id = 1;
const next = () => id++ & 0x7fff;

await sendSplit(message(next(), C.VERSION, versionPayload(rng.chance(0.5) ? 0 : 2)));
await c.next(5000);
const ram = memfdCreate('client-ram', 1 << 20);
const mapFd = concat(u32(32, 3), u64(0n), u64(0x100000n), u64(1n << 20n));
const mapRemote = concat(u32(32, 3), u64(0n), u64(0x200000n), u64(0x1000n));
await c.call(C.DMA_MAP, mapFd, [ram]);
await c.call(C.DMA_MAP, mapRemote);
const efds = [eventfdCreate(), eventfdCreate(), eventfdCreate(), eventfdCreate()];
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, rng.chance(0.5) ? 0 : 1, 0, 1), [efds[0]!]);
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 3, 0, 1), [efds[2]!]);
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 4, 0, 1), [efds[3]!]);
console.log('armed');

const write = (offset: bigint, data: Uint8Array) =>
  message(next(), C.REGION_WRITE, concat(u64(offset), u32(0, data.length), data));
for (;;) {
  const from = rng.chance(0.5) ? 0x100000n : 0x200000n;
  const steps = [
    write(0x80n, u64(from)),
    write(0x88n, u64(0x40000n)),
    write(0x90n, u64(BigInt(1 + rng.int(4096)))),
    write(0x98n, u32(1 | 4)),
    message(next(), C.REGION_READ, concat(u64(0n), u32(0, 4))),
  ];
  for (const m of steps) {
    if (rng.chance(0.3)) await sendSplit(m);
    else sendMsg(fd, [m]);
  }
  if (rng.chance(0.2)) {
    sendMsg(fd, [message(next(), C.DMA_UNMAP, concat(u32(24, 0), u64(0x100000n), u64(1n << 20n)))]);
    sendMsg(fd, [message(next(), C.DMA_MAP, mapFd)], [ram]);
  }
  c.poll();
  // Drop what came back (the server's DMA requests are never answered).
  for (let f = c.framer.next(); !('need' in f); f = c.framer.next()) void f;
  await sleep(rng.int(3));
}
