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

/** The errno a promise rejects with (VfioError), 0 when it resolves; anything else rethrows. */
export async function errnoOfAsync(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}
