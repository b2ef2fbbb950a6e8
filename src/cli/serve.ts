/**
 * `vfio-ts serve --device <edu|ivshmem> --socket <path> [--verbose] [--profile 6.1|7.3] [--allow-uid U] [--max-*]
 *  [--dma-layout auto|spec|qemu]`
 *
 * Serves one emulated device over vfio-user until SIGINT/SIGTERM (docs/vfio-user-server.md).
 * The socket is created 0600; a live socket at the path is never replaced (we connect to it
 * first: if something answers, we stop with an error), a stale one is removed. Our own socket is
 * removed on every exit that runs JavaScript (SIGINT/SIGTERM, an uncaught error, process.exit),
 * and only while the path still holds it: the device and inode recorded after listen must match.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import { Errno } from '../abi/errno.js';
import type { KernelProfile } from '../core/description.js';
import { MAX_MMAP_COOKIES } from '../core/wc.js';
import { createDevice, DEVICE_NAMES, isDeviceName } from '../devices/index.js';
import { VfioError } from '../errors.js';
import { closeFd, getuid, unixConnect } from '../native/index.js';
import { nativeEnvironment } from '../runtime.js';
import { resolveLimits, type ServerLimits, VfioUserServer } from '../server/index.js';
import {
  SERVER_MAX_DATA_XFER_SIZE,
  SERVER_MAX_DMA_MAPS,
  SERVER_MAX_MSG_FDS,
  SERVER_MAX_PENDING_BYTES,
  SERVER_MAX_PENDING_REQUESTS,
  SERVER_MESSAGE_STALL_MS,
} from '../server/limits.js';
import { type CommandSpec, helpText, UsageError } from './args.js';
import { checkSocketDirectory } from './target.js';

/**
 * Every flag `serve` takes, explained (`vfio-ts serve --help`); parse() below reads them, and
 * test/cli/help.test.ts checks that each one listed here is accepted there.
 */
export const SERVE: CommandSpec = {
  name: 'serve',
  synopsis: 'serve --device NAME --socket PATH [options]',
  operands: '',
  minOperands: 0,
  maxOperands: 0,
  description: `Serves one emulated PCI device over vfio-user (QEMU docs/interop/vfio-user.rst) on a UNIX socket,
one client at a time, until SIGINT or SIGTERM. QEMU attaches with
  -device '{"driver":"vfio-user-pci","socket":{"path":"PATH","type":"unix"}}'
The socket is created 0600 and removed on exit; a stale socket at PATH is replaced, a live one
(a server answers) or any other file is refused.`,
  flags: [
    { name: '--device', value: 'NAME', help: `the device to serve: ${DEVICE_NAMES.join(', ')} (required)` },
    { name: '--socket', value: 'PATH', help: 'where to listen (required); its directory must exist' },
    { name: '--verbose', short: '-v', help: 'log every message received and its reply' },
    {
      name: '--profile',
      value: '6.1|7.3',
      help: "answer like Linux 6.1's or 7.3's vfio-pci (default 7.3;\ndocs/kernel-profiles.md)",
    },
    {
      name: '--dma-layout',
      value: 'auto|spec|qemu',
      help: "DMA_READ/WRITE layout: the spec's (auto, the default, or spec), or\nQEMU's header's, data at byte 12 (qemu; docs/vfio-user-wire.md)",
    },
    {
      name: '--allow-uid',
      value: 'UID|self',
      repeat: true,
      help: "accept only clients running as UID (SO_PEERCRED; repeatable; self:\nour own uid); without it, anyone the socket's 0600 mode lets connect",
    },
    {
      name: '--max-message-size',
      value: 'N',
      help: 'largest message in bytes, header included (default: what\n--max-data-xfer-size needs)',
    },
    {
      name: '--max-data-xfer-size',
      value: 'N',
      help: `largest region or DMA transfer in one message, offered in VERSION\n(default ${SERVER_MAX_DATA_XFER_SIZE})`,
    },
    {
      name: '--max-msg-fds',
      value: 'N',
      help: `fds a client may send in one message (default ${SERVER_MAX_MSG_FDS})`,
    },
    {
      name: '--max-dma-maps',
      value: 'N',
      help: `DMA regions one client may map (default ${SERVER_MAX_DMA_MAPS})`,
    },
    {
      name: '--max-pending-bytes',
      value: 'N',
      help: `queued reply bytes at which the server stops reading a client\n(default ${SERVER_MAX_PENDING_BYTES})`,
    },
    {
      name: '--max-pending-requests',
      value: 'N',
      help: `queued replies at which the server stops reading a client\n(default ${SERVER_MAX_PENDING_REQUESTS})`,
    },
    {
      name: '--message-stall-ms',
      value: 'N',
      help: `ms a started message may take to arrive before the client is dropped\n(default ${SERVER_MESSAGE_STALL_MS})`,
    },
    {
      name: '--max-mmap-cookies',
      value: 'N',
      help: `WC mmap cookies a client may hold (default ${MAX_MMAP_COOKIES})`,
    },
  ],
  notes:
    'The limits and the errno each breach gets: docs/robustness.md.\nExit status: 0 after SIGINT/SIGTERM, 1 failure (e.g. the socket path is taken), 2 usage.',
};

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
}

function parse(args: string[]): Args | string {
  const out: Partial<Args> = { verbose: false, profile: '7.3', dmaLayout: 'auto', limits: {} };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new UsageError('serve', `${a} needs a value`);
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
      case '-h':
      case '--help':
        return '';
      default: {
        const limit = LIMIT_OPTIONS[a];
        if (!limit) return `unknown option '${a}'`;
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
  if (a === '') {
    console.log(helpText(SERVE));
    return 0;
  }
  if (typeof a === 'string') throw new UsageError('serve', a);
  if (!isDeviceName(a.device))
    throw new UsageError('serve', `unknown device ${a.device} (${DEVICE_NAMES.join(', ')})`);
  checkSocketDirectory(a.socket);
  claimSocketPath(a.socket);
  const device = createDevice(a.device, {
    env: nativeEnvironment(),
    profile: a.profile,
    ...(a.maxMmapCookies !== undefined ? { maxMmapCookies: a.maxMmapCookies } : {}),
  });
  const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
  const server = new VfioUserServer(device, {
    log,
    verbose: a.verbose,
    dmaLayout: a.dmaLayout,
    limits: a.limits,
    ...(a.allowUids ? { allowUids: a.allowUids } : {}),
  });
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
  const shutdown = (signal: string) => {
    if (stopped) return;
    stopped = true;
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    log(`${signal}: shutting down`);
    server.stop();
    device.close();
    removeSocket();
    resolveExit(0);
  };
  const onInt = () => shutdown('SIGINT');
  const onTerm = () => shutdown('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    server.listen(a.socket);
  } catch (e) {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    device.close();
    throw e;
  }
  const st = lstatSync(a.socket);
  ours = { dev: st.dev, ino: st.ino };
  // 'exit' runs for an uncaught exception or rejection too (exit status 1), not only for a
  // clean return: the socket goes with us either way. (SIGKILL leaves it: the next start finds
  // it stale and replaces it.)
  process.once('exit', removeSocket);
  log(`serving ${a.device} (profile ${a.profile}) on ${a.socket}`);
  return exited;
}
