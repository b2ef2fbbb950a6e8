/**
 * mmap cookie cleanup: a client leaving with N cookies releases them one by one, in allocation
 * order (Session.cleanup). Before: OffsetSpace.release spliced the sorted array (O(n) each, O(n^2)
 * in all: 60k cookies blocked the event loop 12 s). Now: a tombstone and amortized compaction.
 * The "splice" row re-creates the old release for comparison. Run: `node dist/bench/cookies.js`.
 */
import { OffsetSpace } from '../src/core/offsets.js';
import { isMain } from './lib.js';

function spliceRelease(n: number): number {
  const ranges: { base: bigint; size: bigint }[] = [];
  for (let i = 0; i < n; i++) ranges.push({ base: BigInt(i) * 4096n, size: 4096n });
  const t = performance.now();
  for (let i = 0; i < n; i++) {
    const base = BigInt(i) * 4096n;
    let lo = 0;
    let hi = ranges.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (ranges[mid]!.base <= base) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    ranges.splice(found, 1);
  }
  return performance.now() - t;
}

function tombstoneRelease(n: number): number {
  const s = new OffsetSpace<number>(63);
  const bases: bigint[] = [];
  for (let i = 0; i < n; i++) bases.push(s.allocate(4096n, i).base);
  const t = performance.now();
  for (const b of bases) s.release(b);
  return performance.now() - t;
}

/** Two significant digits: a ratio below 1 (the new release slower at small N) reads 0.37, not 0. */
const ratio = (r: number) => (r >= 100 ? r.toFixed(0) : r.toPrecision(2));

export function runCookieBench(): void {
  console.log('release N cookies in allocation order (ms)');
  console.log('N         splice(before)  tombstone(now)   ratio');
  for (const n of [4096, 60_000]) {
    const before = spliceRelease(n);
    const now = tombstoneRelease(n);
    console.log(
      `${String(n).padEnd(10)}${before.toFixed(1).padStart(14)}  ${now.toFixed(1).padStart(14)}  ${ratio(before / now).padStart(6)}x`,
    );
  }
}

if (isMain(import.meta.url)) runCookieBench();
