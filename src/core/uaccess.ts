/**
 * The user buffer of an ioctl, as the kernel reads it: copy_from_user/copy_to_user of more bytes
 * than the buffer holds is EFAULT, and vfio_check_feature's framing of VFIO_DEVICE_FEATURE.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET } from '../abi/vfio.js';
import { fail } from '../errors.js';

/** copy_from_user/copy_to_user of `size` bytes from a buffer that is shorter: EFAULT. */
export function need(buf: Uint8Array, size: number, op: string): void {
  if (buf.length < size) fail(Errno.EFAULT, op, `buffer of ${buf.length} bytes, ${size} needed`);
}

/** A struct codec whose first field is `argsz`, as every vfio ioctl struct's is (vfio.h). */
interface ArgszStruct {
  get(buf: Uint8Array, field: 'argsz'): number;
}

/**
 * The prologue of the vfio ioctls: copy_from_user of `minsz` bytes (EFAULT when the buffer is
 * shorter), then `if (argsz < minsz) return -EINVAL`. Returns argsz.
 */
export function copyArgsz(arg: Uint8Array, S: ArgszStruct, minsz: number, op: string): number {
  need(arg, minsz, op);
  const argsz = S.get(arg, 'argsz');
  if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
  return argsz;
}

/** vfio_check_feature (include/linux/vfio.h): 0 = PROBE answered, 1 = go on; throws otherwise. */
export function checkFeature(flags: number, argsz: number, supported: number, minsz: number): 0 | 1 {
  const op = 'VFIO_DEVICE_FEATURE';
  if (flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supported)
    fail(Errno.EINVAL, op, 'op not supported');
  if (flags & VFIO_DEVICE_FEATURE_PROBE) return 0;
  if (!(flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)))
    fail(Errno.EINVAL, op, 'neither GET nor SET');
  if (argsz < minsz) fail(Errno.EINVAL, op, `argsz ${argsz} < ${minsz}`);
  return 1;
}
