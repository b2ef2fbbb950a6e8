/**
 * serveDevice: one call that serves a device over vfio-user at a socket path the way
 * `vfio-ts serve` does (the command line is built on it):
 *
 *   const served = await serveDevice(myDevice, { socket: '/run/my-device.sock' });
 *   await served.stopped; // SIGINT/SIGTERM, or served.stop()
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
import { nativeEnvironment } from '../runtime.js';
import type { DevicePort } from './device-port.js';
import { type ServerOptions, VfioUserServer } from './server.js';

/** How long claiming the path waits for a live server there to accept. */
export const CLAIM_CONNECT_TIMEOUT_MS = 1000;

/** A device the server can serve and serveDevice can close (VfioPciDevice is one). */
export interface ServableDevice extends DevicePort {
  close(): void;
  settled?(): Promise<void>;
}

export interface ServeDeviceOptions extends ServerOptions {
  /** Where to listen (a UNIX socket path). */
  readonly socket: string;
  /**
   * How to build the device from a definition (profile, extensions, ...). Default: the native
   * environment (memfd memory, eventfds) and the 7.3 profile; `log` defaults to the server's.
   */
  readonly device?: Partial<DeviceOptions>;
  /** Stop on SIGINT and SIGTERM (default true). */
  readonly signals?: boolean;
}

export interface ServedDevice {
  readonly server: VfioUserServer;
  readonly device: ServableDevice;
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

/** Serves `device` (a definition, built here, or a device) at `options.socket`. */
export async function serveDevice(
  device: DeviceDefinition | ServableDevice,
  options: ServeDeviceOptions,
): Promise<ServedDevice> {
  const { socket, signals = true } = options;
  claimSocketPath(socket);
  const dev = isDefinition(device)
    ? device.instantiate({
        env: nativeEnvironment(),
        ...(options.log && { log: options.log }),
        ...options.device,
      }).device
    : device;
  const server = new VfioUserServer(dev, options);
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
      server.stop();
      if (dev !== device) dev.close();
      removeSocket();
      try {
        await dev.settled?.();
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
    server.listen(socket);
    const st = lstatSync(socket);
    ours = { dev: st.dev, ino: st.ino };
  } catch (e) {
    detach();
    server.stop();
    if (dev !== device) dev.close();
    throw e;
  }
  // 'exit' runs for an uncaught exception or rejection too (exit status 1), not only for a
  // clean return: the socket goes with us either way.
  process.once('exit', removeSocket);
  return { server, device: dev, socket, stopped, stop };
}
