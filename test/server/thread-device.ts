/**
 * The device module the ThreadedServer tests name (a DeviceModule): the worker imports it and
 * calls an export with a structured-clone argument; it returns a device or a definition, which
 * the worker builds there.
 */
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { type DeviceDefinition, defineDevice } from '../../src/core/define.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName, nvmeDiskDevice } from '../../src/devices/index.js';
import { nativeEnvironment } from '../../src/runtime.js';

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

/**
 * A device whose worker then exits on its own (process.exit in a worker ends the thread), after
 * `exitAfterMs` (50 by default).
 */
export function exitSoon(arg: ThreadDeviceArg & { readonly exitAfterMs?: number }): VfioPciDevice {
  setTimeout(() => process.exit(3), arg.exitAfterMs ?? 50);
  return device(arg);
}

export interface NvmeDiskArg {
  readonly disk: string;
  readonly size: number;
}

/** The nvme device on a file namespace, as `vfio-ts serve --device nvme --disk` makes it (a definition). */
export function nvmeDisk(arg: NvmeDiskArg): Promise<DeviceDefinition> {
  return nvmeDiskDevice({ disk: arg.disk, size: arg.size });
}

export interface SlowCloseArg {
  /** How long the device's close takes before it writes `marker`. */
  readonly ms: number;
  readonly marker: string;
}

/** A device whose close takes `ms` (a disk's flush), then leaves a marker file. */
export function slowClose(arg: SlowCloseArg): DeviceDefinition {
  return defineDevice({
    name: 'slow-close',
    identity: { vendorId: 0x1b36, deviceId: 0x7e58, classCode: 0xff0000 },
    bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'memory' }],
    create: () => ({
      close: async () => {
        await new Promise((r) => setTimeout(r, arg.ms));
        writeFileSync(arg.marker, 'closed');
      },
    }),
  });
}

/**
 * A device whose work is a disk write, as nvme's is: a write of BAR0 defers (a microtask made by
 * a promise, as nvme's doorbell does) a pwrite and an fdatasync of the value to `file` through
 * the thread pool, then raises MSI vector 0. Nothing of it needs another message from the client.
 */
export async function diskEcho(arg: { readonly file: string }): Promise<DeviceDefinition> {
  const fh = await open(arg.file, 'w');
  return defineDevice({
    name: 'disk-echo',
    identity: { vendorId: 0x1b36, deviceId: 0x7e59, classCode: 0xff0000 },
    bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers', maxAccessSize: 4 }],
    msi: { vectors: 1 },
    create: (dev) => ({
      bars: {
        0: {
          read: () => 0n,
          write: (offset, _size, value) => {
            const word = new Uint8Array(new Uint32Array([Number(value)]).buffer);
            void Promise.resolve()
              .then(() => fh.write(word, 0, 4, offset))
              .then(() => fh.datasync())
              .then(() => dev.irq.raise(0));
          },
        },
      },
      close: () => fh.close(),
    }),
  });
}
