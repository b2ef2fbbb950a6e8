/**
 * The mmap cookies one client holds (VFIO_TS_FEATURE_MMAP_COOKIE, docs/vfio-user-wc.md §3). The
 * core hands them out and takes them back through DEVICE_FEATURE; the server records which ones
 * this client has, so that those it never released are released when it goes: a cookie outliving
 * its client would hold the device's offset space (and count against maxMmapCookies) for ever.
 *
 * The two functions at the bottom are the only places the server reads or writes
 * struct vfio_ts_mmap_cookie (src/abi/vfio.ts).
 */
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_TS_FEATURE_MMAP_COOKIE,
  VFIO_TS_MMAP_COOKIE_FLAG_RELEASE,
  vfio_device_feature,
  vfio_ts_mmap_cookie,
} from '../abi/vfio.js';
import type { DevicePort } from './device-port.js';

export class ClientCookies {
  readonly #held = new Set<bigint>();

  /** A cookie the core gave this client (feature GET). */
  add(cookie: bigint): void {
    this.#held.add(cookie);
  }

  /** A cookie the client released itself (feature SET with RELEASE). */
  delete(cookie: bigint): void {
    this.#held.delete(cookie);
  }

  get size(): number {
    return this.#held.size;
  }

  /** The client is gone: every cookie it still holds is released in the core. */
  releaseAll(device: Pick<DevicePort, 'ioctl'>): void {
    for (const cookie of this.#held) {
      try {
        device.ioctl(VFIO_DEVICE_FEATURE, cookieReleaseArg(cookie));
      } catch {
        // already released
      }
    }
    this.#held.clear();
  }
}

const DATA = vfio_device_feature.size;
const C = vfio_ts_mmap_cookie.fields;

/** struct vfio_device_feature + vfio_ts_mmap_cookie: SET with RELEASE of `cookie`. */
export function cookieReleaseArg(cookie: bigint): Uint8Array {
  const arg = new Uint8Array(DATA + vfio_ts_mmap_cookie.size);
  const dv = new DataView(arg.buffer);
  dv.setUint32(vfio_device_feature.fields.argsz.offset, arg.length, true);
  dv.setUint32(
    vfio_device_feature.fields.flags.offset,
    VFIO_DEVICE_FEATURE_SET | VFIO_TS_FEATURE_MMAP_COOKIE,
    true,
  );
  dv.setUint32(DATA + C.flags.offset, VFIO_TS_MMAP_COOKIE_FLAG_RELEASE, true);
  dv.setBigUint64(DATA + C.offset.offset, cookie, true);
  return arg;
}

/** The BAR and cookie (offset) of a VFIO_TS_FEATURE_MMAP_COOKIE argument as the core left it. */
export function cookieOf(arg: Uint8Array): { readonly bar: number; readonly cookie: bigint } {
  const dv = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  return {
    bar: dv.getUint32(DATA + C.region_index.offset, true),
    cookie: dv.getBigUint64(DATA + C.offset.offset, true),
  };
}
