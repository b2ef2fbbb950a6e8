/**
 * The device `vfio-ts serve` serves, made in one place from a plain description (structured-clone
 * safe): in the server's worker thread, where ThreadedServer calls `servedDevice` as the export
 * of a DeviceModule (SERVED_DEVICE_MODULE), or in this thread under `--loop libuv`. Whatever the
 * device holds — a disk image's file handle, BAR memory, its log — lives in the thread that
 * serves it, and closes there: `VfioPciDevice.close()` resolves once an nvme namespace has been
 * flushed (fdatasync) and closed.
 */
import type { KernelProfile } from '../core/description.js';
import type { VfioPciDevice } from '../core/device.js';
import { createDevice, type DeviceName } from '../devices/index.js';
import { openNvmeDevice } from '../devices/nvme.js';
import { nativeEnvironment } from '../runtime.js';
import type { DeviceModule, DeviceModuleContext } from '../server/index.js';

export interface ServedDevice {
  readonly device: DeviceName;
  readonly profile: KernelProfile;
  readonly maxMmapCookies?: number;
  /** nvme: the namespace's file (created sparse with `size` bytes when missing). */
  readonly disk?: string;
  readonly size?: number;
  /** nvme: bytes of Controller Memory Buffer in BAR2 (0 or absent: none). */
  readonly cmbSize?: number;
}

/** Makes the served device; `context.log` is the server's log (relayed from a worker). */
export async function servedDevice(
  d: ServedDevice,
  context: DeviceModuleContext = {},
): Promise<VfioPciDevice> {
  const options = {
    env: nativeEnvironment(),
    profile: d.profile,
    ...(d.maxMmapCookies !== undefined ? { maxMmapCookies: d.maxMmapCookies } : {}),
  };
  if (d.disk === undefined) return createDevice(d.device, options);
  const nvme = {
    disk: d.disk,
    size: d.size,
    cmbSize: d.cmbSize,
    ...(context.log ? { log: context.log } : {}),
  };
  return (await openNvmeDevice(nvme, options)).device;
}

/** `servedDevice` as ThreadedServer names it, with `d` as its argument. */
export function servedDeviceModule(d: ServedDevice): DeviceModule {
  return { module: import.meta.url, export: 'servedDevice', arg: d };
}
