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
 * A device that holds no fd of its own (an I/O BAR, so no memfd): a worker that dies with it
 * leaves nothing behind that this process cannot close, so fds can be counted across its death.
 */
const fdless = defineDevice({
  name: 'fdless',
  identity: { vendorId: 0x1b36, deviceId: 0x7e5a, classCode: 0xff0000 },
  // An I/O BAR: a memory BAR has a memfd behind it (src/core/regions.ts), even a register one.
  bars: [{ index: 0, kind: 'io', size: 256, backing: 'registers', maxAccessSize: 4 }],
  create: () => ({ bars: { 0: { read: () => 0n, write: () => {} } } }),
});

/** The devices of the modules that die: one of ours, or 'fdless'. */
export interface DyingArg {
  readonly name: DeviceName | 'fdless';
}

const dying = (arg: DyingArg) => (arg.name === 'fdless' ? fdless : device({ name: arg.name }));

/**
 * A device whose worker then exits on its own (process.exit in a worker ends the thread), after
 * `exitAfterMs` (50 by default).
 */
export function exitSoon(
  arg: DyingArg & { readonly exitAfterMs?: number },
): VfioPciDevice | DeviceDefinition {
  setTimeout(() => process.exit(3), arg.exitAfterMs ?? 50);
  return dying(arg);
}

/**
 * A device whose worker, soon after it is built, blocks its thread (no message of the parent is
 * taken meanwhile) and tells the parent so through `gate` (index 0 set to 1); once the parent
 * sets index 1, it exits without turning its event loop again.
 */
export function exitOnGate(
  arg: DyingArg & { readonly gate: SharedArrayBuffer },
): VfioPciDevice | DeviceDefinition {
  const gate = new Int32Array(arg.gate);
  setTimeout(() => {
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    while (Atomics.load(gate, 1) === 0) Atomics.wait(gate, 1, 0, 100);
    process.exit(3);
  }, 20);
  return dying(arg);
}

/** A device whose worker then fails with an uncaught error after `throwAfterMs` (50 by default). */
export function throwSoon(
  arg: DyingArg & { readonly throwAfterMs?: number },
): VfioPciDevice | DeviceDefinition {
  setTimeout(() => {
    throw new Error('the device module failed');
  }, arg.throwAfterMs ?? 50);
  return dying(arg);
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
