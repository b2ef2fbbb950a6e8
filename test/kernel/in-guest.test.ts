/**
 * Node runs the project's own tests inside a QEMU guest against the real vfio-pci
 * (test/kernel/on-hardware.ts, under `node --test`), on Linux 6.1 and 7.3, one boot each. The TAP
 * output comes back through the raw output disk (test/kernel/guest.ts); the write-combining test
 * prints the PAT line that proves ivshmem's BAR2 mapping is write-combining, repeated here.
 * Needs scripts/provision.sh; never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeBoot, KERNEL_LABELS, provisionedOrSkip } from '../harness/index.js';
import { OUT_DEVICE, runKernelGuest } from './guest.js';

/** The on-hardware tests; the run must report at least this many passing. */
export const MIN_GUEST_TESTS = 14;

const SCRIPT = `
VFIO_TS_GUEST=1 node --test --test-reporter=tap dist/test/kernel/on-hardware.js >/tmp/tap.txt 2>&1
echo "guest-exit=$?" >>/tmp/tap.txt
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${OUT_DEVICE} ] && break; sleep 0.2; done
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/tap.txt)"; cat /tmp/tap.txt; } >${OUT_DEVICE}
sync
grep -E '^# (pass|fail)|PAT-LINE|WC-REFUSED|guest-exit' /tmp/tap.txt
`;

describe('the project tests inside a guest, against real vfio-pci', () => {
  for (const label of KERNEL_LABELS) {
    it(`Linux ${label}: on-hardware tests pass; WC mapping shows in the PAT list`, async (t) => {
      const p = provisionedOrSkip(t);
      if (p === undefined) return;
      const run = await runKernelGuest(p, label, SCRIPT);
      assert.equal(run.boot.status, 0, describeBoot(run.boot));
      const tap = run.out;
      assert.ok(tap, `no TAP output came back\n${describeBoot(run.boot)}`);
      const pat = /PAT-LINE: (.*)/.exec(tap)?.[1];
      console.log(`Linux ${label}: ${pat ?? '(no PAT line)'}`);
      const pass = Number(/^# pass (\d+)/m.exec(tap)?.[1] ?? -1);
      const fail = Number(/^# fail (\d+)/m.exec(tap)?.[1] ?? -1);
      assert.equal(fail, 0, tap);
      assert.ok(pass >= MIN_GUEST_TESTS, `${pass} passed\n${tap}`);
      assert.match(tap, /guest-exit=0/);
      if (label === '6.1')
        assert.match(pat ?? '', /^PAT: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] write-combining$/, tap);
      else console.log(`Linux ${label}: ${/WC-REFUSED: (.*)/.exec(tap)?.[1] ?? '(no refusal seen)'}`);
    });
  }
});
