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
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { VfioUserCommand as C } from '../src/abi/vfio-user.js';
import { createDevice, type DeviceName } from '../src/devices/index.js';
import { closeFd, type FdWatch, recvMsgInto, sendMsg, socketPair, watchFd } from '../src/native/index.js';
import { nativeEnvironment } from '../src/runtime.js';
import { VfioUserServer } from '../src/server/index.js';
import { capabilitiesJson, encodeCommand, encodeVersion } from '../src/wire/vfio-user.js';
import { type BenchRow, isMain, measureAsync, printTable } from './lib.js';

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
function childPeer(kind: string): Peer {
  const [mine, theirs] = socketPair();
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--peer', kind], {
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

async function rows(where: 'child' | 'local'): Promise<BenchRow[]> {
  const out: BenchRow[] = [];
  const mk = where === 'child' ? childPeer : localPeer;
  const tag = where === 'child' ? 'peer process' : 'same process';
  // Ceiling: request-sized messages echoed back.
  {
    const p = mk('echo');
    const c = new Client(p.fd);
    const small = encodeCommand(1, C.REGION_READ, access(0, 0n, 4));
    const big = encodeCommand(1, C.REGION_WRITE, access(0, 0n, 64, new Uint8Array(64)));
    out.push(await measureAsync(`ping-pong 32 B (${tag}, ceiling)`, () => c.call(small)));
    out.push(await measureAsync(`ping-pong 96 B (${tag}, ceiling)`, () => c.call(big)));
    c.close();
    await p.stop();
  }
  for (const dev of ['ivshmem', 'edu'] as const) {
    const p = mk(dev);
    const c = new Client(p.fd);
    const version = encodeVersion({
      major: 0,
      minor: 0,
      json: capabilitiesJson({ maxMsgFds: 16, maxDataXferSize: 1 << 20 }),
    });
    await c.call(encodeCommand(0, C.VERSION, version));
    const what = dev === 'ivshmem' ? 'ivshmem BAR0 memory' : 'edu BAR0 trapped';
    const r4 = encodeCommand(1, C.REGION_READ, access(0, 0n, 4));
    const r64 = encodeCommand(2, C.REGION_READ, access(0, 0n, 64));
    const w4 = encodeCommand(3, C.REGION_WRITE, access(0, 4n, 4, new Uint8Array(4)));
    const w64 = encodeCommand(4, C.REGION_WRITE, access(0, 64n, 64, new Uint8Array(64)));
    out.push(await measureAsync(`REGION_READ 4 B, ${what} (${tag})`, () => c.call(r4)));
    out.push(await measureAsync(`REGION_READ 64 B, ${what} (${tag})`, () => c.call(r64)));
    out.push(await measureAsync(`REGION_WRITE 4 B, ${what} (${tag})`, () => c.call(w4)));
    out.push(await measureAsync(`REGION_WRITE 64 B, ${what} (${tag})`, () => c.call(w64)));
    c.close();
    await p.stop();
  }
  return out;
}

export async function runVfioUserBench(): Promise<void> {
  printTable('vfio-user round trips, peer in a child process', await rows('child'));
  console.log('');
  printTable('vfio-user round trips, peer in this process', await rows('local'));
}

if (process.argv[2] === '--peer') {
  const kind = process.argv[3] ?? 'echo';
  const stop = kind === 'echo' ? echo(3) : serveOn(3, kind as DeviceName);
  process.once('SIGTERM', () => {
    stop();
    process.exit(0);
  });
} else if (isMain(import.meta.url)) {
  await runVfioUserBench();
}
