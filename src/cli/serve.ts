/**
 * `vfio-ts serve --device <edu|ivshmem|nvme> --socket <path> [--verbose] [--profile 6.1|7.3] [--allow-uid U] [--max-*]
 *  [--dma-layout auto|spec|qemu] [--disk PATH [--size BYTES] [--cmb-size BYTES]]
 *  [--loop blocking|poll|libuv] [--poll] [--poll-idle-ms N]`
 *
 * Serves one emulated device over vfio-user until SIGINT/SIGTERM (docs/vfio-user-server.md).
 * The device and its server run in a worker thread with a message loop of their own (blocking in
 * recvmsg, or busy-polling with --poll); --loop libuv serves from this thread's event loop
 * instead (docs/performance.md). This thread keeps the signals and the log either way.
 * The socket is created 0600; a live socket at the path is never replaced (we connect to it
 * first: if something answers, we stop with an error), a stale one is removed. Our own socket is
 * removed on every exit that runs JavaScript (SIGINT/SIGTERM, an uncaught error, process.exit),
 * and only while the path still holds it: the device and inode recorded after listen must match.
 * The device itself is made in one place, src/cli/served-device.ts, by whichever thread serves it.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { Errno } from '../abi/errno.js';
import type { KernelProfile } from '../core/description.js';
import { DEVICE_NAMES, isDeviceName } from '../devices/index.js';
import { VfioError } from '../errors.js';
import { closeFd, getuid, unixConnect } from '../native/index.js';
import {
  type LoopMode,
  resolveLimits,
  type ServerLimits,
  ThreadedServer,
  type ThreadedServerOptions,
  type ThreadLoopMode,
  VfioUserServer,
} from '../server/index.js';
import { type ServedDevice, servedDevice, servedDeviceModule } from './served-device.js';

const USAGE = `usage: vfio-ts serve --device <${DEVICE_NAMES.join('|')}> --socket <path> [--verbose] [--profile 6.1|7.3] [--dma-layout auto|spec|qemu]
  [--allow-uid <uid|self>]... [--max-message-size N] [--max-data-xfer-size N] [--max-msg-fds N]
  [--max-dma-maps N] [--max-pending-bytes N] [--max-pending-requests N] [--message-stall-ms N] [--max-mmap-cookies N]
  [--loop blocking|poll|libuv] [--poll] [--poll-idle-ms N]
  nvme: --disk <file> [--size <bytes>] [--cmb-size <bytes>]  (sizes take K, M, G; docs/nvme-device.md)
  (limits: docs/robustness.md; loops: docs/performance.md)`;

/** The --max-* options and the ServerLimits field each sets, with the smallest value that works. */
const LIMIT_OPTIONS: Record<string, [keyof ServerLimits, number]> = {
  '--max-message-size': ['maxMessageSize', 16],
  '--max-data-xfer-size': ['maxDataXferSize', 1],
  '--max-msg-fds': ['maxMsgFds', 1],
  '--max-dma-maps': ['maxDmaMaps', 1],
  '--max-pending-bytes': ['maxPendingBytes', 1],
  '--max-pending-requests': ['maxPendingRequests', 1],
  '--message-stall-ms': ['messageStallMs', 1],
};

interface Args {
  device: string;
  socket: string;
  verbose: boolean;
  profile: KernelProfile;
  dmaLayout: 'auto' | 'spec' | 'qemu';
  limits: Partial<Record<keyof ServerLimits, number>>;
  allowUids?: number[];
  maxMmapCookies?: number;
  /** nvme: the namespace file, its size when created, the CMB's size. */
  disk?: string;
  size?: number;
  cmbSize?: number;
  loop: LoopMode;
  pollIdleMs?: number;
}

/** A byte count with an optional binary suffix (K, M, G, T): `16M` is 16 MiB. */
function parseBytes(v: string): number | undefined {
  const m = /^(\d+)([KMGT]?)$/i.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function parse(args: string[]): Args | string {
  const out: Partial<Args> = {
    verbose: false,
    profile: '7.3',
    dmaLayout: 'auto',
    limits: {},
    loop: 'blocking',
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new VfioError(Errno.EINVAL, 'serve', `${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--device':
        out.device = value();
        break;
      case '--socket':
        out.socket = value();
        break;
      case '--verbose':
      case '-v':
        out.verbose = true;
        break;
      case '--profile': {
        const p = value();
        if (p !== '6.1' && p !== '7.3') return `--profile must be 6.1 or 7.3, not ${p}`;
        out.profile = p;
        break;
      }
      case '--dma-layout': {
        const l = value();
        if (l !== 'auto' && l !== 'spec' && l !== 'qemu') return `--dma-layout must be auto, spec or qemu`;
        out.dmaLayout = l;
        break;
      }
      case '--allow-uid': {
        const v = value();
        const uid = v === 'self' ? getuid() : Number(v);
        if (!Number.isInteger(uid) || uid < 0 || uid > 0xffffffff)
          return `--allow-uid needs a uid or self, not ${v}`;
        out.allowUids = [...(out.allowUids ?? []), uid];
        break;
      }
      case '--max-mmap-cookies': {
        const v = value();
        const n = Number(v);
        if (!Number.isSafeInteger(n) || n < 1 || n > 0xffffffff)
          return `--max-mmap-cookies needs an integer >= 1, not ${v}`;
        out.maxMmapCookies = n;
        break;
      }
      case '--disk':
        out.disk = value();
        break;
      case '--size':
      case '--cmb-size': {
        const n = parseBytes(value());
        if (n === undefined) return `${a} needs a byte count (e.g. 64M)`;
        if (a === '--size') out.size = n;
        else if (n < 4096 || (n & (n - 1)) !== 0) return '--cmb-size must be a power of two, 4K or more';
        else out.cmbSize = n;
        break;
      }
      case '--loop': {
        const l = value();
        if (l !== 'blocking' && l !== 'poll' && l !== 'libuv')
          return `--loop must be blocking, poll or libuv`;
        out.loop = l;
        break;
      }
      case '--poll':
        out.loop = 'poll';
        break;
      case '--poll-idle-ms': {
        const v = value();
        const n = v === 'never' ? Number.POSITIVE_INFINITY : Number(v);
        if (n !== Number.POSITIVE_INFINITY && (!Number.isSafeInteger(n) || n < 0))
          return `--poll-idle-ms needs an integer >= 0 or never, not ${v}`;
        out.pollIdleMs = n;
        break;
      }
      case '-h':
      case '--help':
        return '';
      default: {
        const limit = LIMIT_OPTIONS[a];
        if (!limit) return `unknown argument ${a}`;
        const v = value();
        const n = Number(v);
        if (!Number.isSafeInteger(n) || n < limit[1] || n > 0xffffffff)
          return `${a} needs an integer >= ${limit[1]}, not ${v}`;
        out.limits![limit[0]] = n;
      }
    }
  }
  try {
    resolveLimits(out.limits); // checked together: a derived message size must fit too
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (!out.device) return '--device is required';
  if (!out.socket) return '--socket is required';
  if ((out.device === 'nvme') !== (out.disk !== undefined))
    return 'nvme needs --disk, and only nvme takes it';
  if (out.disk === undefined && (out.size ?? out.cmbSize) !== undefined)
    return '--size and --cmb-size need --disk';
  return out as Args;
}

/**
 * Makes `path` free for our socket: nothing there, or a stale socket (removed). A live socket
 * (connect succeeds) or anything that is not a socket is refused.
 */
export function claimSocketPath(path: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new VfioError(Errno.EEXIST, 'serve', `${path} exists and is not a socket`);
  let fd: number;
  try {
    fd = unixConnect(path, 1000);
  } catch (e) {
    if (e instanceof VfioError && (e.errno === Errno.ECONNREFUSED || e.errno === Errno.ENOENT)) {
      unlinkSync(path); // stale: nobody listens
      return;
    }
    throw e;
  }
  closeFd(fd);
  throw new VfioError(Errno.EADDRINUSE, 'serve', `${path} is a live socket: another server answers there`);
}

export async function run(args: string[]): Promise<number> {
  const a = parse(args);
  if (typeof a === 'string') {
    if (a) console.error(`vfio-ts serve: ${a}`);
    console.error(USAGE);
    return a ? 2 : 0;
  }
  if (!isDeviceName(a.device)) {
    console.error(`vfio-ts serve: unknown device ${a.device} (${DEVICE_NAMES.join(', ')})`);
    return 2;
  }
  claimSocketPath(a.socket);
  const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
  const served: ServedDevice = {
    device: a.device,
    profile: a.profile,
    ...(a.maxMmapCookies !== undefined ? { maxMmapCookies: a.maxMmapCookies } : {}),
    ...(a.disk !== undefined ? { disk: a.disk } : {}),
    ...(a.size !== undefined ? { size: a.size } : {}),
    ...(a.cmbSize !== undefined ? { cmbSize: a.cmbSize } : {}),
  };
  const options = {
    log,
    verbose: a.verbose,
    dmaLayout: a.dmaLayout,
    limits: a.limits,
    ...(a.allowUids ? { allowUids: a.allowUids } : {}),
    ...(a.pollIdleMs !== undefined ? { pollIdleMs: a.pollIdleMs } : {}),
  };
  // The signal handlers go in before the socket exists and before the "serving" line: a
  // supervisor that signals us as soon as it reads that line must find them in place, or the
  // signal's default action kills us without removing the socket.
  let stopped = false;
  // The socket we created, by device and inode: a path that a later server (or anything else)
  // took over after us is not ours to remove.
  let ours: { dev: number; ino: number } | undefined;
  const removeSocket = () => {
    const was = ours;
    ours = undefined;
    if (!was) return;
    try {
      const st = lstatSync(a.socket);
      if (st.isSocket() && st.dev === was.dev && st.ino === was.ino) unlinkSync(a.socket);
    } catch {
      // already gone
    }
  };
  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });
  let server: Served | undefined;
  // Making the server (a worker thread, unless --loop libuv) and listening; a signal meanwhile
  // waits for it, then undoes it.
  const starting = (async () => {
    server =
      a.loop === 'libuv' ? await inThisThread(served, options) : await inWorker(served, a.loop, options);
    server.listen(a.socket);
    const st = lstatSync(a.socket);
    ours = { dev: st.dev, ino: st.ino };
    // 'exit' runs for an uncaught exception or rejection too (exit status 1), not only for a
    // clean return: the socket goes with us either way. (SIGKILL leaves it: the next start
    // finds it stale and replaces it.)
    process.once('exit', removeSocket);
  })();
  const shutdown = async (signal: string) => {
    if (stopped) return;
    stopped = true;
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    log(`${signal}: shutting down`);
    await starting.catch(() => {});
    await server?.stop();
    removeSocket();
    resolveExit(0);
  };
  const onInt = () => void shutdown('SIGINT');
  const onTerm = () => void shutdown('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    await starting;
  } catch (e) {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    await server?.stop();
    throw e;
  }
  if (!stopped) log(`serving ${a.device} (profile ${a.profile}, ${a.loop} loop) on ${a.socket}`);
  return exited;
}

interface Served {
  listen(path: string): void;
  /** Disconnects the client, stops listening, closes the device. */
  stop(): Promise<void>;
}

type ServeOptions = ThreadedServerOptions;

/** --loop libuv: the server and the device on this thread's event loop. */
async function inThisThread(d: ServedDevice, options: ServeOptions): Promise<Served> {
  const device = await servedDevice(d, options.log ? { log: options.log } : {});
  const server = new VfioUserServer(device, options);
  return {
    listen: (path) => server.listen(path),
    stop: async () => {
      server.stop();
      await device.close();
    },
  };
}

/** The server and the device in a worker thread with a loop of their own. */
async function inWorker(d: ServedDevice, loop: ThreadLoopMode, options: ServeOptions): Promise<Served> {
  const server = await ThreadedServer.start(servedDeviceModule(d), { ...options, loop });
  return { listen: (path) => server.listen(path), stop: () => server.stop() };
}
