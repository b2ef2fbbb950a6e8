/** The errno a call fails with (VfioError), undefined when it succeeds; anything else rethrows. */
import { VfioError } from '../../src/errors.js';

export function errnoOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
  return undefined;
}
