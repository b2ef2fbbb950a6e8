/**
 * The two error classes of vfio-ts.
 *
 * - `VfioError`: an operation failed with an errno, exactly as the kernel (or a vfio-user peer)
 *   would report it. Every layer throws this one class; `op` names the operation
 *   (`VFIO_DEVICE_GET_REGION_INFO`, `mmap`, `REGION_READ`, ...).
 * - `MalformedError`: bytes that cannot be decoded at all (a truncated header, a capability
 *   chain that loops). Decoders throw it; transports turn it into EINVAL/EPROTO replies.
 */
import { Errno, errnoName } from './abi/errno.js';

export class VfioError extends Error {
  override readonly name = 'VfioError';
  constructor(
    readonly errno: number,
    readonly op: string,
    detail?: string,
  ) {
    super(`${op}: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`);
  }

  /** The errno name, e.g. `EINVAL`. */
  get code(): string {
    return errnoName(this.errno);
  }
}

export class MalformedError extends Error {
  override readonly name = 'MalformedError';
  constructor(
    readonly what: string,
    detail: string,
    /** errno a transport replies with when it meets this input */
    readonly errno: number = Errno.EINVAL,
  ) {
    super(`malformed ${what}: ${detail}`);
  }
}

/** Throws `VfioError(errno, op)`; keeps call sites to one line. */
export function fail(errno: number, op: string, detail?: string): never {
  throw new VfioError(errno, op, detail);
}
