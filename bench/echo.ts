/**
 * A vfio-user "echo" in Node through src/native and no vfio-ts logic: it answers every command
 * with a reply of the size a server would send (as the C ping-pong does), under each candidate
 * message loop, so that the loop's own cost shows next to the full server's:
 *   libuv     uv_poll (koffi) wakes this thread's event loop, then recvmsg and sendmsg;
 *   blocking  the thread sleeps in recvmsg itself (a blocking socket);
 *   poll      recvmsg with MSG_DONTWAIT in a busy loop (after 1 ms without a message it sleeps
 *             in recvmsg, so that it does not hold a CPU while other servers are measured).
 * Run by bench/vfio-user.ts: `node dist/bench/echo.js MODE SOCKET`. One client at a time.
 */
import { VfioUserCommand as C, VfioUserFlags } from '../src/abi/vfio-user.js';
import {
  addressNumber,
  closeFd,
  POLLIN,
  pollOne,
  SocketIo,
  setNonBlocking,
  setReceiveTimeout,
  unixAccept,
  unixListen,
  watchFd,
} from '../src/native/index.js';

const { REGION_READ, REGION_WRITE, VERSION } = C;
const { NO_REPLY, TYPE_REPLY: REPLY } = VfioUserFlags;
const POLL_IDLE_MS = 1;

const buf = new Uint8Array(1 << 20);
const view = new DataView(buf.buffer);
const at = addressNumber(buf);

/** Answers the whole messages in buf[0..n); returns the bytes used. */
function answer(io: SocketIo, out: DataView, n: number): number {
  let p = 0;
  while (n - p >= 16) {
    const size = view.getUint32(p + 4, true);
    if (size < 16 || n - p < size) break;
    const cmd = view.getUint16(p + 2, true);
    if (!(view.getUint32(p + 8, true) & NO_REPLY)) {
      let len = 16;
      if (cmd === REGION_READ || cmd === REGION_WRITE) {
        for (let i = 0; i < 16; i += 4) out.setUint32(16 + i, view.getUint32(p + 16 + i, true), true);
        len = 32 + (cmd === REGION_READ ? view.getUint32(p + 28, true) : 0);
      } else if (cmd === VERSION) {
        out.setUint32(16, 0, true);
        len = 20;
      }
      out.setUint16(0, view.getUint16(p, true), true);
      out.setUint16(2, cmd, true);
      out.setUint32(4, len, true);
      out.setUint32(8, REPLY, true);
      out.setUint32(12, 0, true);
      io.sendOut(len);
    }
    p += size;
  }
  return p;
}

/** Serves one client; resolves at its EOF. */
async function serve(fd: number, mode: string): Promise<void> {
  const io = new SocketIo(fd, 64 * 1024 + 32, 0);
  const out = new DataView(io.out.buffer);
  let have = 0;
  /** One recvmsg: the bytes (answered), 0 at EOF, -1 for none. */
  const step = (wait: boolean): number => {
    const n = io.recv(at + have, buf.length - have, wait);
    if (n > 0) {
      have += n;
      const used = answer(io, out, have);
      buf.copyWithin(0, used, have);
      have -= used;
    }
    return n;
  };
  if (mode === 'libuv') {
    await new Promise<void>((resolve) => {
      const w = watchFd(fd, { readable: true }, () => {
        if (step(false) === 0) {
          w.stop();
          resolve();
        }
      });
    });
    return;
  }
  setNonBlocking(fd, false);
  setReceiveTimeout(fd, 1000);
  let last = performance.now();
  for (;;) {
    const now = performance.now();
    const spin = mode === 'poll' && now - last < POLL_IDLE_MS;
    const n = step(!spin);
    if (n === 0) return;
    if (n > 0) last = now;
  }
}

const [mode, path] = process.argv.slice(2);
if (!mode || !path || !['libuv', 'blocking', 'poll'].includes(mode)) {
  console.error('usage: node dist/bench/echo.js libuv|blocking|poll SOCKET');
  process.exit(2);
}
// SIGTERM keeps its default action: the blocking modes never return to the event loop that
// would run a handler.
const listenFd = unixListen(path, { mode: 0o600 });
for (;;) {
  pollOne(listenFd, POLLIN, -1);
  const fd = unixAccept(listenFd);
  if (fd === null) continue;
  await serve(fd, mode);
  closeFd(fd);
}
