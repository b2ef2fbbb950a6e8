/**
 * A vfio-user client process for the kill tests (test/reliability/kill.test.ts):
 *
 *   node dist/test/reliability/client-proc.js <socket> <seed> [mode]
 *
 * mode (default `random`) stops the client at a controlled point, where it prints the mode's
 * name and waits to be killed: `mid-message` (a REGION_WRITE header and half its body sent),
 * `mid-dma` (an edu DMA waiting on the server's DMA_READ to us, never answered), `armed`
 * (every interrupt armed), `held` (ivshmem: mmap cookies and dma-buf fds obtained and held,
 * plus NO_REPLY cookie GETs). `random` runs the loop below until killed.
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

const [path, seedArg, modeArg] = process.argv.slice(2);
const mode = modeArg ?? 'random';
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
const park = async (stage: string): Promise<never> => {
  console.log(stage);
  for (;;) await sleep(1000);
};
if (mode === 'held') {
  // ivshmem BAR2: cookies (GET with reply: the BAR fd comes back and is kept) and dma-bufs.
  const cookie = concat(u32(32, 0x10000 | 0xf001), u32(2, 0), u64(0n), u64(0n));
  const dmabuf = concat(u32(40, 0x10000 | 11), u32(2, 2, 0, 1), u64(0n), u64(0x1000n));
  const held: number[] = [];
  for (let i = 0; i < 8; i++) {
    held.push(...((await c.call(C.DEVICE_FEATURE, cookie, [], true))?.fds ?? []));
    held.push(...((await c.call(C.DEVICE_FEATURE, dmabuf, [], true))?.fds ?? []));
  }
  for (let i = 0; i < 64; i++) sendMsg(fd, [message(next(), C.DEVICE_FEATURE, cookie, 0x10)]);
  // DMA_BUF replies left unread in the socket (their fds in flight to us).
  for (let i = 0; i < 16; i++) sendMsg(fd, [message(next(), C.DEVICE_FEATURE, dmabuf)]);
  await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
  await park(held.length > 0 ? 'held' : 'held-nothing');
}
const ram = memfdCreate('client-ram', 1 << 20);
const mapFd = concat(u32(32, 3), u64(0n), u64(0x100000n), u64(1n << 20n));
const mapRemote = concat(u32(32, 3), u64(0n), u64(0x200000n), u64(0x1000n));
await c.call(C.DMA_MAP, mapFd, [ram]);
await c.call(C.DMA_MAP, mapRemote);
const efds = [eventfdCreate(), eventfdCreate(), eventfdCreate(), eventfdCreate()];
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, rng.chance(0.5) ? 0 : 1, 0, 1), [efds[0]!]);
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 3, 0, 1), [efds[2]!]);
await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 4, 0, 1), [efds[3]!]);
if (mode === 'armed') await park('armed');
if (mode === 'mid-message') {
  const body = new Uint8Array(4096);
  const m = message(next(), C.REGION_WRITE, concat(u64(0x400n), u32(0, body.length), body));
  sendMsg(fd, [m.subarray(0, 16 + (m.length - 16) / 2)]);
  await park('mid-message');
}
if (mode === 'mid-dma') {
  // edu DMA from the range mapped without an fd: the server asks us with DMA_READ; never answered.
  for (const m of [
    message(next(), C.REGION_WRITE, concat(u64(0x80n), u32(0, 8), u64(0x200000n))),
    message(next(), C.REGION_WRITE, concat(u64(0x88n), u32(0, 8), u64(0x40000n))),
    message(next(), C.REGION_WRITE, concat(u64(0x90n), u32(0, 8), u64(64n))),
    message(next(), C.REGION_WRITE, concat(u64(0x98n), u32(0, 4), u32(1))),
  ])
    sendMsg(fd, [m]);
  for (;;) {
    const f = await c.next(5000);
    if (!f) await park('mid-dma-missed');
    if (f && f.header.command === C.DMA_READ && (f.header.flags & 0xf) === 0) await park('mid-dma');
  }
}
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
