/**
 * A device named by where its code is, not by the object itself: a module and one of its
 * exports. A device is JavaScript objects and cannot cross threads, so this is how a worker
 * (ThreadedServer, src/server/thread.ts) gets one: it imports the module itself and builds the
 * device there. serveDevice (src/server/serve-device.ts) and `vfio-ts serve` name every device
 * they serve this way, built-in ones included (src/cli/serve.ts), and build it in whichever
 * thread serves it, through `loadDevice` here.
 *
 * The export is either a device definition (`export default defineDevice({...})`, what `vfio-ts
 * serve --module` loads), built with the options given, or a function called with `arg` and a
 * DeviceModuleContext that returns a definition, a device (a DevicePort: VfioPciDevice), or a
 * promise of either (`namedDevice`, `nvmeDiskDevice`).
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Errno } from '../abi/errno.js';
import { type DeviceDefinition, isDeviceDefinition } from '../core/define.js';
import type { DeviceOptions } from '../core/device.js';
import { fail, VfioError } from '../errors.js';
import { nativeEnvironment } from '../runtime.js';
import type { DevicePort } from './device-port.js';

export interface DeviceModule {
  /** An ES module: a file: URL (string or URL) or an absolute path. */
  readonly module: string | URL;
  /** The export that makes the device (default 'default'). */
  readonly export?: string;
  /** The function export's argument; copied into a worker by structured clone (no functions). */
  readonly arg?: unknown;
}

/** What a DeviceModule's function gets besides its argument. */
export interface DeviceModuleContext {
  /** The server's log: in a worker, relayed to the parent in order with the server's lines. */
  readonly log?: (line: string) => void;
}

/**
 * How a definition is built in a thread that only has plain data: DeviceOptions without the
 * environment (always the native one: memfd memory, eventfds) and the log (the server's).
 */
export type PlainDeviceOptions = Omit<Partial<DeviceOptions>, 'env' | 'log'>;

/** A device a server can serve and close (VfioPciDevice is one). */
export interface ServableDevice extends DevicePort {
  close(): void;
  /** Resolves when the device's work (a DMA, a command, its close's flush) has settled. */
  settled?(): Promise<void>;
}

export function isDeviceModule(value: unknown): value is DeviceModule {
  if (typeof value !== 'object' || value === null || isDeviceDefinition(value)) return false;
  const m = (value as { module?: unknown }).module;
  return typeof m === 'string' || m instanceof URL;
}

/**
 * `ref.module` as a URL string, and as the path errors name. A relative path would resolve
 * against this file, not the caller's: refused.
 * @throws VfioError EINVAL
 */
export function moduleLocation(ref: DeviceModule): { url: string; name: string } {
  const m = ref.module;
  let url: string;
  if (m instanceof URL) url = m.href;
  else if (m.startsWith('/')) url = pathToFileURL(m).href;
  else if (/^[a-z][a-z0-9+.-]*:/i.test(m)) url = m;
  else return fail(Errno.EINVAL, m, 'a device module is a URL or an absolute path');
  return { url, name: url.startsWith('file:') ? fileURLToPath(url) : url };
}

/**
 * Imports `ref` and builds its device in this thread: `{ device, name }`, the name the
 * definition gives (or 'device' for a function that returns a built device). Every failure is
 * a VfioError naming the module: ENOENT for a module that does not exist, EINVAL for one that
 * cannot load (TypeScript, a syntax error, an error while it runs) or exports no device; a
 * definition's own refusal (defineDevice names the field) passes through.
 * @throws VfioError ENOENT, EINVAL
 */
export async function loadDevice(
  ref: DeviceModule,
  options: Partial<DeviceOptions> = {},
  context: DeviceModuleContext = {},
): Promise<{ device: ServableDevice; name: string }> {
  const { url, name: where } = moduleLocation(ref);
  if (/\.(c|m)?tsx?$/.test(url))
    fail(Errno.EINVAL, where, 'Node runs JavaScript; compile the module first (tsc)');
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof VfioError) throw e; // defineDevice refused the definition: its field is named
    const code = (e as { code?: string }).code;
    const errno = code === 'ERR_MODULE_NOT_FOUND' ? Errno.ENOENT : Errno.EINVAL;
    fail(errno, where, `cannot load it: ${e instanceof Error ? e.message : String(e)}`);
  }
  const name = ref.export ?? 'default';
  let made = await mod[name];
  if (typeof made === 'function') made = await made(ref.arg, context);
  else if (made === undefined)
    fail(
      Errno.EINVAL,
      where,
      name === 'default' ? 'no default export (export default defineDevice({ ... }))' : `no export ${name}`,
    );
  if (isDeviceDefinition(made)) return { device: buildDevice(made, options, context.log), name: made.name };
  if (isDevicePort(made)) return { device: made, name: 'device' };
  return fail(
    Errno.EINVAL,
    where,
    name === 'default'
      ? 'the default export is not a device definition (export default defineDevice({ ... }))'
      : `${name} made no device definition or device`,
  );
}

/**
 * Builds a definition as a server does: the native environment (memfd memory, eventfds) and the
 * server's `log`, unless `options` names its own.
 */
export function buildDevice(
  def: DeviceDefinition,
  options: Partial<DeviceOptions> = {},
  log?: (line: string) => void,
): ServableDevice {
  return def.instantiate({ env: nativeEnvironment(), ...(log ? { log } : {}), ...options }).device;
}

function isDevicePort(v: unknown): v is ServableDevice {
  const d = v as Partial<ServableDevice> | null;
  return (
    typeof d === 'object' &&
    d !== null &&
    typeof d.ioctl === 'function' &&
    typeof d.readRegionInto === 'function' &&
    typeof d.close === 'function'
  );
}
