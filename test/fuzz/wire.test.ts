/**
 * Bounded run of the decoder fuzzer (test/fuzz/wire.ts) for CI, fixed seeds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { summary } from './prng.js';
import { corpus, fuzzWire } from './wire.js';

describe('wire decoder and framer fuzz', () => {
  it('has a seed corpus', () => {
    assert.ok(corpus().length >= 20, `${corpus().length} seed messages`);
  });
  for (const seed of [11, 12, 13]) {
    it(`seed ${seed}: only MalformedError escapes; frames and fds are exact`, () => {
      const s = fuzzWire({ seed, iterations: 80000 });
      console.log(summary(s));
      assert.deepEqual(s.crashes, [], s.crashes.join('\n'));
      assert.ok((s.outcomes.get('ok') ?? 0) > 1000, summary(s));
      assert.ok((s.outcomes.get('malformed') ?? 0) > 1000, summary(s));
      assert.ok((s.outcomes.get('framer-error') ?? 0) > 0, summary(s));
    });
  }
});
