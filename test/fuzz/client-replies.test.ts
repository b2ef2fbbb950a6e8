/**
 * Bounded run of the client fuzzer (test/fuzz/client-replies.ts) for CI: our server's replies
 * and DMA requests mutated on their way to the client, fixed seeds, a count of connections (no
 * time assertions).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzClient } from './client-replies.js';
import { summary } from './prng.js';

describe('vfio-user client fuzz (mutated server replies)', () => {
  for (const [seed, device] of [
    [31, 'edu'],
    [32, 'ivshmem'],
    [33, 'edu'],
    [34, 'ivshmem'],
  ] as const) {
    it(`${device}, seed ${seed}: only VfioError/MalformedError, guards untouched, no fd leak`, async () => {
      const s = await fuzzClient({ seed, iterations: 50, device });
      console.log(summary(s));
      assert.deepEqual(s.crashes, [], s.crashes.join('\n'));
      assert.deepEqual(s.leaks, []);
      assert.ok(s.tried > 20, summary(s));
    });
  }
});
