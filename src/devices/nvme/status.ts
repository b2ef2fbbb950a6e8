/**
 * A command's outcome. Handlers return a Completion or throw CommandFailed, which carries the
 * NVMe status (§4.6.1: (SCT << 8) | SC, spec.ts SC) for the completion queue entry.
 */
import { Errno } from '../../abi/errno.js';
import { VfioError } from '../../errors.js';
import { SC } from './spec.js';

export interface Completion {
  /** (SCT << 8) | SC; SC.SUCCESS for success. */
  readonly status: number;
  /** Command specific result, CQE Dword 0. */
  readonly result?: number;
}

export const SUCCESS: Completion = { status: SC.SUCCESS };

/** A command that ends with an NVMe status rather than success (errno EIO for anyone who asks). */
export class CommandFailed extends VfioError {
  constructor(
    readonly status: number,
    detail: string,
  ) {
    super(Errno.EIO, 'nvme command', `status 0x${status.toString(16)}: ${detail}`);
  }
}

/** Throws CommandFailed; keeps call sites to one line. */
export function failCommand(status: number, detail: string): never {
  throw new CommandFailed(status, detail);
}
