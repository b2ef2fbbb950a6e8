/**
 * Bounded run of the core ioctl fuzzer (test/fuzz/core.ts) for CI: a fixed seed per case so a
 * failure reproduces with `node dist/test/fuzz/run.js --harness core --seed S`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzCore } from './core.js';
import { summary } from './prng.js';

const CASES = [
  { device: 'edu', env: 'heap', seed: 1, iterations: 6000 },
  { device: 'ivshmem', env: 'heap', seed: 2, iterations: 6000 },
  { device: 'edu', env: 'heap', seed: 3, iterations: 3000, profile: '6.1' },
  { device: 'edu', env: 'native', seed: 4, iterations: 1500 },
  { device: 'ivshmem', env: 'native', seed: 5, iterations: 1500 },
] as const;

describe('core ioctl / pread / pwrite / mmap fuzz', () => {
  for (const c of CASES) {
    it(`${c.device} on the ${c.env} environment, seed ${c.seed}, ${c.iterations} calls`, () => {
      const s = fuzzCore(c);
      console.log(summary(s));
      assert.equal(s.tried, c.iterations);
      assert.deepEqual(s.crashes, [], s.crashes.join('\n'));
      assert.deepEqual(s.leaks, []);
      // The fuzzer must reach past the argument checks: some calls succeed, some fail.
      assert.ok((s.outcomes.get('ok') ?? 0) > c.iterations / 50, summary(s));
      assert.ok((s.outcomes.get('EINVAL') ?? 0) > 0, summary(s));
    });
  }
});
