/** Shared bits of the native tests: errno assertions and fd-leak bookkeeping. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { VfioError } from '../../src/errors.js';

/** Asserts that `fn` throws VfioError with exactly `errno` (and `op`, when given). */
export function throwsErrno(fn: () => unknown, errno: number, op?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VfioError, `expected VfioError, got ${String(err)}`);
    assert.equal(err.errno, errno, `errno of ${err.message}`);
    if (op !== undefined) assert.equal(err.op, op);
    return true;
  });
}

/** Lines of /proc/self/maps. */
export function procMaps(): string[] {
  return readFileSync('/proc/self/maps', 'utf8').split('\n').filter(Boolean);
}

/** The /proc/self/maps line of the vma that starts at `address`, if any. */
export function mapsLineAt(address: bigint): string | undefined {
  return procMaps().find((l) => BigInt(`0x${l.slice(0, l.indexOf('-'))}`) === address);
}

let gcFn: (() => void) | undefined;

/** A full garbage collection (turns on --expose-gc at run time). */
export function collectGarbage(): void {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
}

/** Lets FinalizationRegistry callbacks and other queued tasks run. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}
