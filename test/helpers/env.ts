/**
 * Test gating: a test that needs something the machine may lack (QEMU, a guest kernel, root)
 * calls `requireOrSkip`. Outside CI it skips loudly, naming what is missing and how to get it;
 * under `CI=true` a missing requirement is a failure, never a skip.
 */
import type { TestContext } from 'node:test';

export const IN_CI = process.env.CI === 'true';

/** Returns true when the test may go on. */
export function requireOrSkip(t: TestContext, missing: string | undefined, howToGet: string): boolean {
  if (missing === undefined) return true;
  const msg = `NEEDS ${missing}; ${howToGet}`;
  if (IN_CI) throw new Error(`CI=true but ${msg}`);
  console.error(`\n*** SKIPPED: ${t.name}: ${msg} ***\n`);
  t.skip(msg);
  return false;
}
