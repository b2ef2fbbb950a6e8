/**
 * Node runs the project's own tests inside a QEMU guest against the real vfio-pci
 * (test/kernel/on-hardware.ts, under `node --test`): Linux 6.1, 7.3, and 7.3 booted with
 * `iomem=relaxed`, one boot each. The TAP output comes back through the raw output disk
 * (test/kernel/guest.ts); the write-combining tests print the PAT lines they measured, repeated
 * here. Each boot also has a conventional PCI bridge with edu and virtio-rng behind it (one
 * IOMMU group: the non-viable group case), and runs `vfio-ts bind` once with vfio-pci unloaded.
 * Needs scripts/provision.sh; never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeBoot, type KernelLabel, pciBridge, provisionedOrSkip } from '../harness/index.js';
import { NO_MODULE_OUT, OUT_DEVICE, runKernelGuest } from './guest.js';

/** The on-hardware tests; the run must report at least this many passing. */
export const MIN_GUEST_TESTS = 19;

const SCRIPT = `
# vfio-ts bind before vfio-pci is loaded: unload it (nothing is bound yet), bind, load it again.
rmmod vfio_pci && { node dist/src/cli/main.js bind "$(pci_find 0x8086 0x10d3)"; echo "status=$?"; } >${NO_MODULE_OUT} 2>&1
insmod /lib/modules/vfio_pci.ko || echo "insmod vfio_pci failed"
VFIO_TS_GUEST=1 node --test --test-reporter=tap dist/test/kernel/on-hardware.js >/tmp/tap.txt 2>&1
echo "guest-exit=$?" >>/tmp/tap.txt
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${OUT_DEVICE} ] && break; sleep 0.2; done
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/tap.txt)"; cat /tmp/tap.txt; } >${OUT_DEVICE}
sync
grep -E '^# (pass|fail)|PAT-|WC-REFUSED|guest-exit' /tmp/tap.txt
`;

interface Variant {
  label: KernelLabel;
  append?: string;
  title: string;
  /** What the write-combining tests must have printed. */
  wc: RegExp[];
}

const VARIANTS: Variant[] = [
  {
    label: '6.1',
    title: 'WC mapping through resource2_wc before the BAR is claimed adds a write-combining PAT entry',
    wc: [/PAT-LINE: PAT: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] write-combining/],
  },
  {
    label: '7.3',
    title: 'no WC mapping of an open device: resource2_wc refused (EINVAL), the reason names iomem=relaxed',
    wc: [/WC-REFUSED: map WC: EINVAL .*IO_STRICT_DEVMEM.*iomem=relaxed/],
  },
  {
    label: '7.3',
    append: 'iomem=relaxed',
    title:
      'iomem=relaxed: BAR2 mapped before open is write-combining while open; mapped after open it would be uncached-minus (refused)',
    wc: [
      /PAT-LINE-WCBARS: PAT: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] write-combining/,
      /WC-REFUSED: map WC: EOPNOTSUPP .*uncached-minus/,
    ],
  },
];

describe('the project tests inside a guest, against real vfio-pci', () => {
  for (const v of VARIANTS) {
    const name = `Linux ${v.label}${v.append ? ` ${v.append}` : ''}`;
    it(`${name}: on-hardware tests pass; ${v.title}`, async (t) => {
      const p = provisionedOrSkip(t);
      if (p === undefined) return;
      const run = await runKernelGuest(p, v.label, SCRIPT, {
        ...(v.append ? { append: v.append } : {}),
        args: pciBridge(['edu', 'virtio-rng-pci']),
        modules: ['pci-stub'],
      });
      assert.equal(run.boot.status, 0, describeBoot(run.boot));
      const tap = run.out;
      assert.ok(tap, `no TAP output came back\n${describeBoot(run.boot)}`);
      for (const l of tap.split('\n').filter((x) => /PAT-|WC-REFUSED/.test(x)))
        console.log(`${name}: ${l.replace(/^#\s*/, '')}`);
      const pass = Number(/^# pass (\d+)/m.exec(tap)?.[1] ?? -1);
      const fail = Number(/^# fail (\d+)/m.exec(tap)?.[1] ?? -1);
      assert.equal(fail, 0, tap);
      assert.ok(pass >= MIN_GUEST_TESTS, `${pass} passed\n${tap}`);
      assert.match(tap, /guest-exit=0/);
      for (const re of v.wc) assert.match(tap, re, tap);
    });
  }
});
