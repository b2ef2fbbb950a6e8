/**
 * `vfio-ts serve (--device <edu|ivshmem|nvme> | --module <file.js>) --socket <path> [options]`
 *
 * Serves one device over vfio-user until SIGINT/SIGTERM (docs/vfio-user-server.md), through
 * serveDevice (src/server/serve-device.ts): the socket is created 0600, a live socket at the path
 * is never replaced, a stale one is, and ours is removed on every exit that runs JavaScript.
 * `--module` loads a device written with defineDevice (docs/writing-a-device.md): the module's
 * default export. `--device nvme --disk FILE` puts the controller's namespace on a file
 * (docs/nvme-device.md).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Errno } from '../abi/errno.js';
import { type DeviceDefinition, isDeviceDefinition } from '../core/define.js';
import type { KernelProfile } from '../core/description.js';
import { DEVICE_NAMES, isDeviceName, namedDevice, nvmeDiskDevice } from '../devices/index.js';
import { VfioError } from '../errors.js';
import { getuid } from '../native/index.js';
import { claimSocketPath, resolveLimits, type ServerLimits, serveDevice } from '../server/index.js';

const USAGE = `usage: vfio-ts serve (--device <${DEVICE_NAMES.join('|')}> | --module <file.js>) --socket <path> [options]

  --device NAME            serve a built-in device: ${DEVICE_NAMES.join(', ')}
  --disk FILE              nvme: the namespace's file (created sparse when missing; docs/nvme-device.md)
  --size BYTES             nvme: the size of a file --disk creates (K, M, G, T suffixes: 64M)
  --cmb-size BYTES         nvme: a Controller Memory Buffer in BAR2 (a power of two, 4K or more)
  --module FILE            serve the device a JavaScript module exports by default
                           (export default defineDevice({...}); docs/writing-a-device.md)
  --socket PATH            where to listen: a UNIX socket, created mode 0600; a stale socket
                           there is replaced, a live one or any other file is refused
  --verbose, -v            log one line per message (default: connects and disconnects only)
  --profile 6.1|7.3        which Linux vfio-pci to answer like (default 7.3; docs/kernel-profiles.md)
  --dma-layout auto|spec|qemu
                           DMA_READ/DMA_WRITE layout (default auto: the spec's)
  --allow-uid UID|self     accept only peers with this uid (repeatable; default: any the 0600
                           socket lets in)
  --max-mmap-cookies N     live mmap cookies per device (a GET past it is ENOSPC)
  --max-message-size N, --max-data-xfer-size N, --max-msg-fds N, --max-dma-maps N,
  --max-pending-bytes N, --max-pending-requests N, --message-stall-ms N
                           per-client limits (docs/robustness.md)
  --help, -h               this text`;

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
  device?: string;
  module?: string;
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
}

/** A byte count with an optional binary suffix (K, M, G, T): `16M` is 16 MiB. */
function parseBytes(v: string): number | undefined {
  const m = /^(\d+)([KMGT]?)$/i.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function parse(args: string[]): Args | string {
  const out: Partial<Args> = { verbose: false, profile: '7.3', dmaLayout: 'auto', limits: {} };
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
      case '--module':
        out.module = value();
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
  if ((out.device === undefined) === (out.module === undefined)) return 'give one of --device and --module';
  if ((out.device === 'nvme') !== (out.disk !== undefined))
    return 'nvme needs --disk, and only nvme takes it';
  if (out.disk === undefined && (out.size ?? out.cmbSize) !== undefined)
    return '--size and --cmb-size need --disk';
  if (!out.socket) return '--socket is required';
  return out as Args;
}

/** The default export of the module at `path` (relative to the working directory). */
async function loadModule(path: string): Promise<DeviceDefinition> {
  if (/\.(c|m)?tsx?$/.test(path))
    throw new VfioError(
      Errno.EINVAL,
      'serve',
      `${path}: Node runs JavaScript; compile the module first (tsc)`,
    );
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(resolve(path)).href)) as { default?: unknown };
  } catch (e) {
    if (e instanceof VfioError) throw e; // defineDevice refused the definition: its field is named
    const code = (e as { code?: string }).code;
    const errno = code === 'ERR_MODULE_NOT_FOUND' ? Errno.ENOENT : Errno.EINVAL;
    throw new VfioError(errno, 'serve', `cannot load ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const def = await mod.default;
  if (!isDeviceDefinition(def))
    throw new VfioError(
      Errno.EINVAL,
      'serve',
      `${path}: the default export is not a device definition (export default defineDevice({ ... }))`,
    );
  return def;
}

export async function run(args: string[]): Promise<number> {
  const a = parse(args);
  if (typeof a === 'string') {
    if (a) console.error(`vfio-ts serve: ${a}`);
    (a ? console.error : console.log)(USAGE);
    return a ? 2 : 0;
  }
  if (a.device !== undefined && !isDeviceName(a.device)) {
    console.error(`vfio-ts serve: unknown device ${a.device} (${DEVICE_NAMES.join(', ')})`);
    return 2;
  }
  // The path first: nothing (a disk file, a module's side effects) happens for a server that
  // could not listen. serveDevice claims it again, finding it free.
  claimSocketPath(a.socket);
  const definition =
    a.module !== undefined
      ? await loadModule(a.module)
      : a.disk !== undefined
        ? await nvmeDiskDevice({ disk: a.disk, size: a.size, cmbSize: a.cmbSize })
        : namedDevice(a.device as 'edu');
  const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
  const served = await serveDevice(definition, {
    socket: a.socket,
    log,
    verbose: a.verbose,
    dmaLayout: a.dmaLayout,
    limits: a.limits,
    ...(a.allowUids ? { allowUids: a.allowUids } : {}),
    device: {
      profile: a.profile,
      ...(a.maxMmapCookies !== undefined ? { maxMmapCookies: a.maxMmapCookies } : {}),
    },
  });
  log(`serving ${definition.name} (profile ${a.profile}) on ${a.socket}`);
  await served.stopped;
  return 0;
}
