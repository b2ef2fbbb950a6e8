/**
 * The device module the ThreadedServer tests name (a DeviceModule): the worker imports it and
 * calls `device` with a structured-clone argument to make the device it serves.
 */
import { writeFileSync } from 'node:fs';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
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

/** A device whose worker then exits on its own (process.exit in a worker ends the thread). */
export function exitSoon(arg: ThreadDeviceArg): VfioPciDevice {
  setTimeout(() => process.exit(3), 50);
  return device(arg);
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
