/**
 * The mmap cookies one client holds (VFIO_TS_FEATURE_MMAP_COOKIE, docs/vfio-user-wc.md §3). The
 * core hands them out and takes them back through DEVICE_FEATURE; the server records which ones
 * this client has, so that those it never released are released when it goes: a cookie outliving
 * its client would hold the device's offset space (and count against maxMmapCookies) for ever.
 *
 * The server reads and writes struct vfio_ts_mmap_cookie only through its one codec
 * (src/wire/vfio.ts: encodeMmapCookieRelease, decodeMmapCookie).
 */
import { VFIO_DEVICE_FEATURE } from '../abi/vfio.js';
import { decodeMmapCookie, encodeMmapCookieRelease } from '../wire/vfio.js';
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
        device.ioctl(VFIO_DEVICE_FEATURE, encodeMmapCookieRelease(cookie));
      } catch {
        // already released
      }
    }
    this.#held.clear();
  }
}

/** The BAR and cookie (offset) of a VFIO_TS_FEATURE_MMAP_COOKIE argument as the core left it. */
export function cookieOf(arg: Uint8Array): { readonly bar: number; readonly cookie: bigint } {
  const c = decodeMmapCookie(arg);
  return { bar: c.region_index, cookie: c.offset };
}
