/** The device as a whole: DEVICE_GET_INFO, DEVICE_RESET, DEVICE_FEATURE (migration's: migration.ts). */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_RESET,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../../abi/vfio.js';
import { VfioUserFeatureFlags, vfio_user_device_info } from '../../abi/vfio-user.js';
import { MIGRATION_FEATURES } from '../../core/migration/feature.js';
import { fail } from '../../errors.js';
import { struct } from '../../wire/struct.js';
import { decodeDeviceFeature, decodeDeviceInfo, type Frame } from '../../wire/vfio-user.js';
import { type ClientContext, EMPTY, type Reply, reply } from '../context.js';
import { cookieOf } from '../cookies.js';
import { migrationFeature } from './migration.js';
import { regionFd } from './region.js';

/** Payload cap of DEVICE_FEATURE: a dma-buf request of up to (64 KiB - 32) / 16 ranges fits. */
export const MAX_FEATURE_PAYLOAD = 64 * 1024;

/** vfio-user's struct is vfio_device_info without cap_offset: 16 bytes (vfio_user_device_info). */
const deviceInfo = struct(vfio_user_device_info);

export function deviceGetInfo(s: ClientContext, f: Frame): Reply {
  decodeDeviceInfo(f.payload, 'command');
  // Ask the core for vfio-user's 16 bytes (argsz 16).
  const arg = deviceInfo.encode({ argsz: deviceInfo.size });
  s.device.ioctl(VFIO_DEVICE_GET_INFO, arg);
  return reply(arg);
}

export function deviceReset(s: ClientContext): Reply {
  s.device.ioctl(VFIO_DEVICE_RESET, new Uint8Array(0));
  return EMPTY;
}

/**
 * DEVICE_FEATURE: the payload is struct vfio_device_feature; the core answers it. The reply is
 * the struct as the core left it. DMA_BUF (11) and the mmap cookie (0xf001) answer with one fd
 * (docs/vfio-user-wc.md).
 */
export function deviceFeature(s: ClientContext, f: Frame): Reply | Promise<Reply> {
  const req = decodeDeviceFeature(f.payload, 'command');
  const feature = req.flags & VfioUserFeatureFlags.MASK;
  // The spec's device features ("The only device features supported by vfio-user are those
  // related to migration") and MIG_DATA_SIZE: migration.ts.
  if (MIGRATION_FEATURES.has(feature)) return migrationFeature(s, f);
  // The core reads and writes the data in place: give it argsz bytes (the payload, zero-padded
  // up to the argsz the client allows for the reply, within the payload cap).
  const size = Math.max(f.payload.length, Math.min(req.argsz, MAX_FEATURE_PAYLOAD));
  const arg = new Uint8Array(size);
  arg.set(f.payload);
  const ret = s.device.ioctl(VFIO_DEVICE_FEATURE, arg);
  const probe = (req.flags & VfioUserFeatureFlags.PROBE) !== 0;
  const get = (req.flags & VfioUserFeatureFlags.GET) !== 0;
  if (feature === VFIO_DEVICE_FEATURE_DMA_BUF && ret > 0) {
    // The ioctl's return value is the new dma-buf fd: it travels with the reply, and our copy is
    // closed once sent. Its offset R is BAR offset R (a dup of the BAR's memfd).
    const fd = ret;
    return { chunks: [arg], fds: [fd], after: () => s.device.closeDmaBuf(fd) };
  }
  if (feature === VFIO_TS_FEATURE_MMAP_COOKIE && !probe) {
    const { bar, cookie } = cookieOf(arg);
    if (!get) {
      s.cookies.delete(cookie);
      return reply(arg);
    }
    s.cookies.add(cookie);
    // One fd: the BAR's memory, fd offset 0 = BAR offset 0 (the cookie stays an opaque handle).
    const src = regionFd(s.device, bar);
    if (src === undefined) fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', `BAR ${bar} has no fd`);
    if (src.offset !== 0n)
      fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', 'BAR does not start at fd offset 0');
    return { chunks: [arg], fds: [src.fd] };
  }
  return reply(arg);
}
