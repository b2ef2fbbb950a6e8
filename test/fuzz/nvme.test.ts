/**
 * Bounded run of the NVMe controller fuzzer (test/fuzz/nvme.ts) for CI: fixed seeds, so a
 * failure reproduces with `node dist/test/fuzz/run.js --harness nvme --seed S`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fuzzNvme } from './nvme.js';
import { summary } from './prng.js';

const CASES = [
  { seed: 1, steps: 8000, remote: false },
  { seed: 2, steps: 4000, remote: true },
  { seed: 3, steps: 8000, remote: false },
] as const;

describe('NVMe controller fuzz: hostile commands, doorbells and registers', () => {
  for (const c of CASES) {
    it(`seed ${c.seed}, ${c.steps} steps, ${c.remote ? 'DMA a turn late' : 'DMA at once'}`, async () => {
      const s = await fuzzNvme(c);
      console.log(summary(s));
      assert.equal(s.tried, c.steps);
      assert.deepEqual(s.crashes, [], s.crashes.join('\n'));
      // The fuzzer reaches past the checks: commands succeed, and fail in several ways.
      assert.ok((s.outcomes.get('status 0x0') ?? 0) > c.steps / 50, summary(s));
      for (const refused of ['status 0x1', 'status 0x2', 'status 0xb'])
        assert.ok((s.outcomes.get(refused) ?? 0) > 0, `${refused} never seen: ${summary(s)}`);
    });
  }
});
