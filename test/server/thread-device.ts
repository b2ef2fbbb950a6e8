/**
 * The device module the ThreadedServer tests name (a DeviceModule): the worker imports it and
 * calls `device` with a structured-clone argument to make the device it serves.
 */
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { type DeviceBehaviour, type DeviceContext, VfioPciDevice } from '../../src/core/device.js';
import { eduDescription } from '../../src/devices/edu.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { openNvmeDevice } from '../../src/devices/nvme.js';
import { nativeEnvironment } from '../../src/runtime.js';
import type { DeviceModuleContext } from '../../src/server/index.js';

export interface ThreadDeviceArg {
  readonly name: DeviceName;
  readonly profile?: '6.1' | '7.3';
}

export function device(arg: ThreadDeviceArg): VfioPciDevice {
  return createDevice(arg.name, {
    env: nativeEnvironment(),
    ...(arg.profile ? { profile: arg.profile } : {}),
  });
}

/** A device whose worker then exits on its own (process.exit in a worker ends the thread). */
export function exitSoon(arg: ThreadDeviceArg): VfioPciDevice {
  setTimeout(() => process.exit(3), 50);
  return device(arg);
}

export interface NvmeDiskArg {
  readonly disk: string;
  readonly size: number;
}

/** The nvme device on a file namespace, as `vfio-ts serve --device nvme --disk` makes it. */
export async function nvmeDisk(arg: NvmeDiskArg, context: DeviceModuleContext = {}): Promise<VfioPciDevice> {
  const o = { disk: arg.disk, size: arg.size, ...(context.log ? { log: context.log } : {}) };
  return (await openNvmeDevice(o, { env: nativeEnvironment() })).device;
}

export interface SlowCloseArg {
  readonly name: DeviceName;
  /** How long close() takes before it writes `marker`. */
  readonly ms: number;
  readonly marker: string;
}

/** A device whose close() takes `ms` (a disk's flush), then leaves a marker file. */
export function slowClose(arg: SlowCloseArg): VfioPciDevice & { close(): Promise<void> } {
  const d = device({ name: arg.name });
  const close = d.close.bind(d);
  return Object.assign(d, {
    async close() {
      await close();
      await new Promise((r) => setTimeout(r, arg.ms));
      writeFileSync(arg.marker, 'closed');
    },
  });
}

/**
 * A device whose work is a disk write, as nvme's is: a write of BAR0 defers (a microtask made by
 * a promise, as nvme's doorbell does) a pwrite and an fdatasync of the value to `file` through
 * the thread pool, then raises MSI vector 0. Nothing of it needs another message from the client.
 */
export async function diskEcho(arg: { readonly file: string }): Promise<VfioPciDevice> {
  const fh = await open(arg.file, 'w');
  let ctx: DeviceContext | undefined;
  const behaviour: DeviceBehaviour = {
    attach: (c) => {
      ctx = c;
    },
    barRead: () => 0,
    barWrite: (_bar, offset, _size, value) => {
      const word = new Uint8Array(new Uint32Array([value]).buffer);
      void Promise.resolve()
        .then(() => fh.write(word, 0, 4, offset))
        .then(() => fh.datasync())
        .then(() => ctx?.raise(0));
    },
    close: () => fh.close(),
  };
  return new VfioPciDevice(
    { ...eduDescription(), name: 'disk-echo', bars: [{ size: 4096, kind: 'mem32', backing: 'trapped' }] },
    behaviour,
    { env: nativeEnvironment() },
  );
}
