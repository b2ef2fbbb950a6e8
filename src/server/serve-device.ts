/**
 * serveDevice: one call that serves a device over vfio-user at a socket path the way
 * `vfio-ts serve` does (the command line is built on it):
 *
 *   const served = await serveDevice(myDevice, { socket: '/run/my-device.sock' });
 *   await served.stopped; // SIGINT/SIGTERM, or served.stop()
 *
 * Where it runs (docs/performance.md): a device given as an object (a definition, or a built
 * device) is served in this thread, by `loop` as ServerOptions has it ('libuv' by default). A
 * device given as a DeviceModule (src/server/device-module.ts: a module and its export, e.g.
 * `{ module: new URL('./my-device.js', import.meta.url) }`) is imported and built in a worker
 * thread whose loop is `loop`, 'blocking' by default or 'poll' (ThreadedServer, as `vfio-ts
 * serve` runs every device), or in this thread with `loop: 'libuv'`. A device cannot cross
 * threads: only a module can be loaded again in another.
 *
 * - The path is claimed first: nothing there, or a stale socket (nobody accepts: removed). A live
 *   socket (something answers) is EADDRINUSE, anything that is not a socket EEXIST, a missing
 *   directory ENOENT (ENOTDIR when it is a file), each naming the path.
 * - The socket is created 0600 (VfioUserServer.listen).
 * - With `signals` (the default), SIGINT and SIGTERM stop the server; their handlers go in before
 *   the socket exists, so a supervisor that signals as soon as the server is up never meets the
 *   signal's default action (which would leave the socket behind).
 * - Stopping disconnects the client, closes the device (when serveDevice built it), waits for the
 *   device's work to settle, and removes the socket only while the path still holds ours (its
 *   device and inode, recorded after listen): a path another server took over is left alone. A
 *   process that exits without stopping (an uncaught error, process.exit) removes it too, from
 *   the 'exit' event. SIGKILL leaves it; the next start finds it stale and replaces it.
 */
import { lstatSync, type Stats, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { Errno } from '../abi/errno.js';
import type { DeviceDefinition } from '../core/define.js';
import type { DeviceOptions } from '../core/device.js';
import { fail, VfioError } from '../errors.js';
import { closeFd, unixConnect } from '../native/index.js';
import {
  buildDevice,
  type DeviceModule,
  isDeviceModule,
  loadDevice,
  type ServableDevice,
} from './device-module.js';
import type { LoopMode } from './loop.js';
import { type ServerOptions, VfioUserServer } from './server.js';
import { ThreadedServer } from './thread.js';

/** How long claiming the path waits for a live server there to accept. */
export const CLAIM_CONNECT_TIMEOUT_MS = 1000;

export interface ServeDeviceOptions extends ServerOptions {
  /** Where to listen (a UNIX socket path). */
  readonly socket: string;
  /**
   * How to build the device from a definition (profile, extensions, ...). Default: the native
   * environment (memfd memory, eventfds) and the 7.3 profile; `log` defaults to the server's.
   * A worker builds with the native environment and the server's log: `env` and `log` are
   * refused there (EINVAL), and the rest must survive structured clone.
   */
  readonly device?: Partial<DeviceOptions>;
  /**
   * How the client's socket is waited for (ServerOptions.loop, src/server/loop.ts). Default
   * 'libuv' for a device given as an object, 'blocking' (in a worker) for a DeviceModule.
   */
  readonly loop?: LoopMode;
  /** Stop on SIGINT and SIGTERM (default true). */
  readonly signals?: boolean;
}

export interface ServedDevice {
  /** The server: in this thread, or a worker's (ThreadedServer: the same counts and `idle()`). */
  readonly server: VfioUserServer | ThreadedServer;
  /** The device, when it lives in this thread (undefined when a worker serves it). */
  readonly device: ServableDevice | undefined;
  /** Its name: the definition's ('device' for one built by the caller or a module function). */
  readonly name: string;
  readonly socket: string;
  /** Resolves once stopped, with why: 'SIGINT', 'SIGTERM' or stop()'s reason. */
  readonly stopped: Promise<string>;
  /** Stops serving and cleans up (see the header); resolves when the device has settled. */
  stop(reason?: string): Promise<void>;
}

/**
 * Makes `path` free for a socket: nothing there, or a stale socket (removed). A live socket,
 * anything that is not a socket, and a directory that does not exist are refused, each error
 * naming the path (its `op`) and the problem. The errnos are bind(2)'s where it has one: a taken
 * path is EADDRINUSE (net/unix/af_unix.c unix_bind_bsd turns mknod's EEXIST into it), a missing
 * directory ENOENT, a file where a directory should be ENOTDIR (the path walk); a file that is
 * not a socket, which we will not remove, is EEXIST.
 * @throws VfioError EADDRINUSE, EEXIST, ENOENT, ENOTDIR
 */
export function claimSocketPath(path: string): void {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    const dir = dirname(path);
    let dirStat: Stats;
    try {
      dirStat = statSync(dir);
    } catch {
      fail(Errno.ENOENT, path, `cannot create the socket: directory ${dir} does not exist`);
    }
    if (!dirStat.isDirectory())
      fail(Errno.ENOTDIR, path, `cannot create the socket: ${dir} is not a directory`);
    return; // nothing there
  }
  if (!st.isSocket()) fail(Errno.EEXIST, path, 'exists and is not a socket; refusing to replace it');
  let fd: number;
  try {
    fd = unixConnect(path, CLAIM_CONNECT_TIMEOUT_MS);
  } catch (e) {
    if (e instanceof VfioError && (e.errno === Errno.ECONNREFUSED || e.errno === Errno.ENOENT)) {
      unlinkSync(path); // stale: nobody listens
      return;
    }
    throw e;
  }
  closeFd(fd);
  fail(Errno.EADDRINUSE, path, 'a live socket: another server answers there');
}

function isDefinition(d: DeviceDefinition | ServableDevice): d is DeviceDefinition {
  return 'instantiate' in d;
}

/** The server and device serveDevice runs, wherever they run. */
interface Running {
  readonly server: VfioUserServer | ThreadedServer;
  readonly device: ServableDevice | undefined;
  readonly name: string;
  listen(path: string): void;
  /** Disconnects the client, stops listening, closes the device if we built it, and waits for its work. */
  stop(): Promise<void>;
}

/** A device object, or a module built in this thread, served by a VfioUserServer here. */
function inThisThread(
  dev: ServableDevice,
  owned: boolean,
  name: string,
  options: ServeDeviceOptions,
): Running {
  const server = new VfioUserServer(dev, options);
  return {
    server,
    device: dev,
    name,
    listen: (path) => server.listen(path),
    stop: async () => {
      server.stop();
      if (owned) dev.close();
      await dev.settled?.();
    },
  };
}

/** A DeviceModule built and served in a worker with a loop of its own. */
async function inWorker(
  ref: DeviceModule,
  loop: 'blocking' | 'poll',
  options: ServeDeviceOptions,
): Promise<Running> {
  const { env, log, ...device } = options.device ?? {};
  if (env !== undefined || log !== undefined)
    fail(
      Errno.EINVAL,
      'serveDevice',
      'a worker builds its device with the native environment and the server log',
    );
  if (options.events !== undefined || options.stopFlag !== undefined)
    fail(
      Errno.EINVAL,
      'serveDevice',
      'events and stopFlag are for a server in this thread; a worker reports to ThreadedServer',
    );
  const server = await ThreadedServer.start(ref, { ...options, loop, device });
  return {
    server,
    device: undefined,
    name: server.deviceName,
    listen: (path) => server.listen(path),
    stop: () => server.stop(),
  };
}

async function start(
  device: DeviceDefinition | ServableDevice | DeviceModule,
  options: ServeDeviceOptions,
): Promise<Running> {
  if (isDeviceModule(device)) {
    const loop = options.loop ?? 'blocking';
    if (loop !== 'libuv') return inWorker(device, loop, options);
    const built = await loadDevice(device, options.device, options.log ? { log: options.log } : {});
    return inThisThread(built.device, true, built.name, options);
  }
  if (!isDefinition(device)) return inThisThread(device, false, 'device', options);
  return inThisThread(buildDevice(device, options.device, options.log), true, device.name, options);
}

/**
 * Serves `device` at `options.socket`: a definition (built here), a device (left open when
 * stopped), or a DeviceModule (built where it is served: a worker, unless `loop` is 'libuv').
 */
export async function serveDevice(
  device: DeviceDefinition | ServableDevice | DeviceModule,
  options: ServeDeviceOptions,
): Promise<ServedDevice> {
  const { socket, signals = true } = options;
  claimSocketPath(socket);
  const running = await start(device, options);
  // The socket we created, by device and inode: a path taken over after us is not ours.
  let ours: { dev: number; ino: number } | undefined;
  const removeSocket = () => {
    const was = ours;
    ours = undefined;
    if (!was) return;
    try {
      const st = lstatSync(socket);
      if (st.isSocket() && st.dev === was.dev && st.ino === was.ino) unlinkSync(socket);
    } catch {
      // already gone
    }
  };
  let resolveStopped: (why: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => {
    resolveStopped = resolve;
  });
  let stopping: Promise<void> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    options.log?.(`${signal}: shutting down`);
    void stop(signal);
  };
  const detach = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', removeSocket);
  };
  const stop = (reason = 'stopped'): Promise<void> => {
    stopping ??= (async () => {
      detach();
      const done = running.stop();
      removeSocket();
      try {
        await done;
      } finally {
        resolveStopped(reason);
      }
    })();
    return stopping;
  };
  if (signals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  try {
    running.listen(socket);
    const st = lstatSync(socket);
    ours = { dev: st.dev, ino: st.ino };
  } catch (e) {
    detach();
    await running.stop();
    throw e;
  }
  // 'exit' runs for an uncaught exception or rejection too (exit status 1), not only for a
  // clean return: the socket goes with us either way.
  process.once('exit', removeSocket);
  const { server, device: dev, name } = running;
  return { server, device: dev, name, socket, stopped, stop };
}
