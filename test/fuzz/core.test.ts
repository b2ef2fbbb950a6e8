/**
 * Bounded run of the core ioctl fuzzer (test/fuzz/core.ts) for CI: a fixed seed per case so a
 * failure reproduces with `node dist/test/fuzz/run.js --harness core --seed S`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { heapEnvironment } from '../../src/core/env.js';
import { createDevice } from '../../src/devices/index.js';
import { fuzzCore } from './core.js';
import { summary } from './prng.js';

const CASES = [
  { device: 'edu', env: 'heap', seed: 1, iterations: 60000 },
  { device: 'ivshmem', env: 'heap', seed: 2, iterations: 60000 },
  { device: 'edu', env: 'heap', seed: 3, iterations: 20000, profile: '6.1' },
  { device: 'edu', env: 'native', seed: 4, iterations: 10000 },
  { device: 'ivshmem', env: 'native', seed: 5, iterations: 10000 },
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

describe('bugs the core fuzzer found', () => {
  it('edu: writing 0xffffffff to the factorial register answers at once (n! mod 2^32 = 0 from 34)', () => {
    const dev = createDevice('edu', { env: heapEnvironment() });
    const reg = dev.regionOffset(0) + 0x08n;
    const value = (n: number) => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, n, true);
      dev.pwrite(reg, b);
      return new DataView(dev.pread(reg, 4).buffer).getUint32(0, true);
    };
    assert.equal(value(0xffffffff), 0);
    assert.equal(value(34), 0);
    assert.equal(value(33), 0x80000000);
    assert.equal(value(5), 120);
    dev.close();
  });
});
