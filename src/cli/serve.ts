/**
 * `vfio-ts serve (--device NAME | --module FILE) --socket PATH [options]`
 *
 * Serves one device over vfio-user until SIGINT/SIGTERM (docs/vfio-user-server.md), through
 * serveDevice (src/server/serve-device.ts): the socket is created 0600, a live socket at the path
 * is never replaced, a stale one is, a missing directory is named, and ours is removed on every
 * exit that runs JavaScript. `--module` loads a device written with defineDevice
 * (docs/writing-a-device.md): the module's default export. `--device nvme --disk FILE` puts the
 * controller's namespace on a file (docs/nvme-device.md).
 *
 * Every device, built-in or a module, is named by its module and export (a DeviceModule,
 * src/server/device-module.ts) and built by the thread that serves it: a worker with a loop of
 * its own, blocking in recvmsg (the default) or busy-polling (--poll), or this thread's libuv
 * event loop (--loop libuv); docs/performance.md says why. This thread keeps the signals, the
 * socket's removal and the log.
 *
 * Three pieces, in order: the flag table (SERVE: the parser, `--help` and the usage errors all
 * come from it, src/cli/args.ts), the checked command line (serveArgs: a ServeArgs or a
 * UsageError, nothing built yet), and what it serves (deviceModule, serveOptions).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { KernelProfile } from '../core/description.js';
import { MAX_MMAP_COOKIES } from '../core/wc.js';
import { DEVICE_NAMES, type DeviceName, isDeviceName, type NvmeDiskOptions } from '../devices/index.js';
import { getuid } from '../native/index.js';
import {
  claimSocketPath,
  DEFAULT_POLL_IDLE_MS,
  type DeviceModule,
  type LoopMode,
  resolveLimits,
  type ServeDeviceOptions,
  type ServerLimits,
  serveDevice,
} from '../server/index.js';
import {
  SERVER_MAX_DATA_XFER_SIZE,
  SERVER_MAX_DMA_MAPS,
  SERVER_MAX_MSG_FDS,
  SERVER_MAX_PENDING_BYTES,
  SERVER_MAX_PENDING_REQUESTS,
  SERVER_MESSAGE_STALL_MS,
} from '../server/limits.js';
import {
  byteCount,
  CONSOLE,
  type CommandSpec,
  type FlagSpec,
  flagValue,
  hasFlag,
  type ParsedArgs,
  runCommand,
  UsageError,
} from './args.js';

/** A --max-* flag: the ServerLimits field it sets and the smallest value that works. */
interface LimitFlag extends FlagSpec {
  readonly field: keyof ServerLimits;
  readonly min: number;
}

const LIMIT_FLAGS: readonly LimitFlag[] = [
  {
    name: '--max-message-size',
    value: 'N',
    field: 'maxMessageSize',
    min: 16,
    help: 'largest message in bytes, header included (default: what\n--max-data-xfer-size needs)',
  },
  {
    name: '--max-data-xfer-size',
    value: 'N',
    field: 'maxDataXferSize',
    min: 1,
    help: `largest region or DMA transfer in one message, offered in VERSION\n(default ${SERVER_MAX_DATA_XFER_SIZE})`,
  },
  {
    name: '--max-msg-fds',
    value: 'N',
    field: 'maxMsgFds',
    min: 1,
    help: `fds a client may send in one message (default ${SERVER_MAX_MSG_FDS})`,
  },
  {
    name: '--max-dma-maps',
    value: 'N',
    field: 'maxDmaMaps',
    min: 1,
    help: `DMA regions one client may map (default ${SERVER_MAX_DMA_MAPS})`,
  },
  {
    name: '--max-pending-bytes',
    value: 'N',
    field: 'maxPendingBytes',
    min: 1,
    help: `queued reply bytes at which the server stops reading a client\n(default ${SERVER_MAX_PENDING_BYTES})`,
  },
  {
    name: '--max-pending-requests',
    value: 'N',
    field: 'maxPendingRequests',
    min: 1,
    help: `queued replies at which the server stops reading a client\n(default ${SERVER_MAX_PENDING_REQUESTS})`,
  },
  {
    name: '--message-stall-ms',
    value: 'N',
    field: 'messageStallMs',
    min: 1,
    help: `ms a started message may take to arrive before the client is dropped\n(default ${SERVER_MESSAGE_STALL_MS})`,
  },
];

/** Every flag `serve` takes, explained (`vfio-ts serve --help`); the parser reads this table. */
export const SERVE: CommandSpec = {
  name: 'serve',
  synopsis: 'serve (--device NAME | --module FILE) --socket PATH [options]',
  operands: '',
  minOperands: 0,
  maxOperands: 0,
  description: `Serves one PCI device over vfio-user (QEMU docs/interop/vfio-user.rst) on a UNIX socket, one
client at a time, until SIGINT or SIGTERM: a built-in device (--device), or the device a
JavaScript module exports by default (--module; export default defineDevice({...}),
docs/writing-a-device.md). QEMU attaches with
  -device '{"driver":"vfio-user-pci","socket":{"path":"PATH","type":"unix"}}'
The socket is created 0600 and removed on exit; a stale socket at PATH is replaced, a live one
(a server answers) or any other file is refused, and so is a directory that does not exist,
before any device is built (no disk file created, no module run). The device, a --module one
included, is built and served by a worker thread with a message loop of its own (unless --loop
libuv); this thread keeps the signals and the log.`,
  flags: [
    { name: '--device', value: 'NAME', help: `serve a built-in device: ${DEVICE_NAMES.join(', ')}` },
    {
      name: '--module',
      value: 'FILE',
      help: 'serve the device FILE exports by default (JavaScript: compile TypeScript\nfirst)',
    },
    {
      name: '--disk',
      value: 'FILE',
      help: "nvme (required with it): the namespace's file, created sparse when\nmissing (docs/nvme-device.md)",
    },
    {
      name: '--size',
      value: 'BYTES',
      help: 'nvme: the size of a file --disk creates (K, M, G, T suffixes: 64M)',
    },
    {
      name: '--cmb-size',
      value: 'BYTES',
      help: 'nvme: a Controller Memory Buffer in BAR2 (a power of two, 4K or more)',
    },
    { name: '--socket', value: 'PATH', help: 'where to listen (required); its directory must exist' },
    {
      name: '--verbose',
      short: '-v',
      help: 'log every message received and its reply (default: connects and\ndisconnects only)',
    },
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
    ...LIMIT_FLAGS,
    {
      name: '--max-mmap-cookies',
      value: 'N',
      help: `WC mmap cookies a client may hold (default ${MAX_MMAP_COOKIES}; a GET past it is\nENOSPC)`,
    },
    {
      name: '--loop',
      value: 'blocking|poll|libuv',
      help: "how the server waits for its client (docs/performance.md): blocking\n(the default), a worker thread asleep in recvmsg; poll, a worker\nspinning on the socket (a CPU while a client is busy); libuv, this\nthread's event loop",
    },
    { name: '--poll', help: 'the same as --loop poll: lowest latency, at the cost of a core' },
    {
      name: '--poll-idle-ms',
      value: 'N|never',
      help: `poll: spin N ms after the last message, then sleep as blocking does\n(default ${DEFAULT_POLL_IDLE_MS}; never: spin while a client is connected)`,
    },
  ],
  notes:
    'The limits and the errno each breach gets: docs/robustness.md.\nExit status: 0 after SIGINT/SIGTERM, 1 failure (e.g. the socket path is taken), 2 usage.',
};

/** What is served: a built-in device, nvme on a file, or a module's default export. */
export type DeviceSource =
  | { readonly kind: 'named'; readonly name: DeviceName }
  | { readonly kind: 'nvme-disk'; readonly disk: string; readonly size?: number; readonly cmbSize?: number }
  | { readonly kind: 'module'; readonly path: string };

/** The command line, checked: everything `serve` needs, nothing built or opened yet. */
export interface ServeArgs {
  readonly source: DeviceSource;
  readonly socket: string;
  readonly verbose: boolean;
  readonly profile: KernelProfile;
  readonly dmaLayout: 'auto' | 'spec' | 'qemu';
  readonly limits: Partial<Record<keyof ServerLimits, number>>;
  readonly allowUids?: readonly number[];
  readonly maxMmapCookies?: number;
  readonly loop: LoopMode;
  readonly pollIdleMs?: number;
}

const usage = (problem: string) => new UsageError('serve', problem);

/** `name`'s value as an integer in [min, 2^32), or undefined when not given. */
function integerFlag(p: ParsedArgs, name: string, min: number): number | undefined {
  const v = flagValue(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > 0xffffffff)
    throw usage(`${name} needs an integer >= ${min}, not ${v}`);
  return n;
}

function byteFlag(p: ParsedArgs, name: string): number | undefined {
  const v = flagValue(p, name);
  if (v === undefined) return undefined;
  const n = byteCount(v);
  if (n === undefined) throw usage(`${name} needs a byte count (e.g. 64M), not ${v}`);
  return n;
}

function deviceSource(p: ParsedArgs): DeviceSource {
  const device = flagValue(p, '--device');
  const module = flagValue(p, '--module');
  const disk = flagValue(p, '--disk');
  const size = byteFlag(p, '--size');
  const cmbSize = byteFlag(p, '--cmb-size');
  if (cmbSize !== undefined && (cmbSize < 4096 || (cmbSize & (cmbSize - 1)) !== 0))
    throw usage('--cmb-size must be a power of two, 4K or more');
  if (device === undefined && module === undefined) throw usage('--device NAME or --module FILE is required');
  if (device !== undefined && module !== undefined)
    throw usage('give one of --device and --module, not both');
  if (device !== undefined && !isDeviceName(device))
    throw usage(`unknown device ${device} (${DEVICE_NAMES.join(', ')})`);
  if ((device === 'nvme') !== (disk !== undefined)) throw usage('nvme needs --disk, and only nvme takes it');
  if (disk === undefined && (size ?? cmbSize) !== undefined) throw usage('--size and --cmb-size need --disk');
  if (module !== undefined) return { kind: 'module', path: module };
  if (disk !== undefined)
    return {
      kind: 'nvme-disk',
      disk,
      ...(size !== undefined ? { size } : {}),
      ...(cmbSize !== undefined ? { cmbSize } : {}),
    };
  return { kind: 'named', name: device as DeviceName };
}

/** --loop, --poll and --poll-idle-ms, checked together. */
function loopFlags(p: ParsedArgs): { loop: LoopMode; pollIdleMs?: number } {
  const given = flagValue(p, '--loop');
  if (given !== undefined && given !== 'blocking' && given !== 'poll' && given !== 'libuv')
    throw usage(`--loop must be blocking, poll or libuv, not ${given}`);
  if (hasFlag(p, '--poll') && given !== undefined && given !== 'poll')
    throw usage(`--poll is --loop poll, not --loop ${given}`);
  const loop: LoopMode = hasFlag(p, '--poll') ? 'poll' : (given ?? 'blocking');
  const idle = flagValue(p, '--poll-idle-ms');
  if (idle === undefined) return { loop };
  const n = idle === 'never' ? Number.POSITIVE_INFINITY : Number(idle);
  if (n !== Number.POSITIVE_INFINITY && (!Number.isSafeInteger(n) || n < 0))
    throw usage(`--poll-idle-ms needs an integer >= 0 or never, not ${idle}`);
  if (loop !== 'poll') throw usage('--poll-idle-ms is for --poll (--loop poll) only');
  return { loop, pollIdleMs: n };
}

/** The parsed flags, checked: a ServeArgs, or a UsageError naming the first problem. */
export function serveArgs(p: ParsedArgs): ServeArgs {
  const profile = flagValue(p, '--profile') ?? '7.3';
  if (profile !== '6.1' && profile !== '7.3') throw usage(`--profile must be 6.1 or 7.3, not ${profile}`);
  const dmaLayout = flagValue(p, '--dma-layout') ?? 'auto';
  if (dmaLayout !== 'auto' && dmaLayout !== 'spec' && dmaLayout !== 'qemu')
    throw usage('--dma-layout must be auto, spec or qemu');
  const allowUids = (p.flags.get('--allow-uid') ?? []).map((v) => {
    const uid = v === 'self' ? getuid() : Number(v);
    if (!Number.isInteger(uid) || uid < 0 || uid > 0xffffffff)
      throw usage(`--allow-uid needs a uid or self, not ${v}`);
    return uid;
  });
  const limits: Partial<Record<keyof ServerLimits, number>> = {};
  for (const f of LIMIT_FLAGS) {
    const n = integerFlag(p, f.name, f.min);
    if (n !== undefined) limits[f.field] = n;
  }
  try {
    resolveLimits(limits); // checked together: a derived message size must fit too
  } catch (e) {
    throw usage(e instanceof Error ? e.message : String(e));
  }
  const maxMmapCookies = integerFlag(p, '--max-mmap-cookies', 1);
  const loop = loopFlags(p);
  const source = deviceSource(p);
  const socket = flagValue(p, '--socket');
  if (socket === undefined) throw usage('--socket is required');
  return {
    source,
    socket,
    verbose: hasFlag(p, '--verbose'),
    profile,
    dmaLayout,
    limits,
    ...(allowUids.length ? { allowUids } : {}),
    ...(maxMmapCookies !== undefined ? { maxMmapCookies } : {}),
    ...loop,
  };
}

/**
 * Where the device `source` names is made, as a DeviceModule: the thread that serves it imports
 * that and builds it there (a disk file opened, a module run), nothing before.
 */
export function deviceModule(source: DeviceSource): DeviceModule {
  const devices = new URL('../devices/index.js', import.meta.url);
  switch (source.kind) {
    case 'named':
      return { module: devices, export: 'namedDevice', arg: source.name };
    case 'nvme-disk': {
      const { kind: _, ...disk } = source;
      return { module: devices, export: 'nvmeDiskDevice', arg: disk satisfies NvmeDiskOptions };
    }
    case 'module':
      return { module: pathToFileURL(resolve(source.path)) };
  }
}

/** serveDevice's options for `a`. */
export function serveOptions(a: ServeArgs, log: (line: string) => void): ServeDeviceOptions {
  return {
    socket: a.socket,
    log,
    verbose: a.verbose,
    dmaLayout: a.dmaLayout,
    limits: a.limits,
    ...(a.allowUids ? { allowUids: a.allowUids } : {}),
    loop: a.loop,
    ...(a.pollIdleMs !== undefined ? { pollIdleMs: a.pollIdleMs } : {}),
    device: {
      profile: a.profile,
      ...(a.maxMmapCookies !== undefined ? { maxMmapCookies: a.maxMmapCookies } : {}),
    },
  };
}

export function run(args: string[]): Promise<number> {
  return runCommand(SERVE, args, CONSOLE, async (p) => {
    const a = serveArgs(p);
    // The path first: nothing (a disk file, a module's side effects) happens for a server that
    // could not listen. serveDevice claims it again and finds it free.
    claimSocketPath(a.socket);
    const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
    const served = await serveDevice(deviceModule(a.source), serveOptions(a, log));
    log(`serving ${served.name} (profile ${a.profile}, ${a.loop} loop) on ${a.socket}`);
    await served.stopped;
    return 0;
  });
}
