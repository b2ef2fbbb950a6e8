/**
 * Node runs the project's own tests inside a QEMU guest against the real vfio-pci
 * (test/kernel/on-hardware.ts and on-hardware-iommufd.ts, under `node --test`): Debian's Linux
 * 6.1, 7.3, and 7.3 booted with `iomem=relaxed`, and the two kernels provision.sh builds with
 * iommufd — 7.3-iommufd (group path and device cdev) and 7.3-cdev (the cdev alone, no
 * /dev/vfio/N) — where the backend takes the cdev path; one boot each. The TAP output comes back
 * through the raw output disk (test/kernel/guest.ts); the write-combining and iommufd tests print
 * what they measured, repeated here. Each boot also has a conventional PCI bridge with edu and
 * virtio-rng behind it (one IOMMU group: the non-viable group case); where vfio-pci is a module
 * (Debian's kernels) `vfio-ts bind` runs once with it unloaded.
 * Needs scripts/provision.sh; never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BUILT_KERNEL_LABELS,
  describeBoot,
  type GuestKernelLabel,
  pciBridge,
  provisionedOrSkip,
} from '../harness/index.js';
import { NO_MODULE_OUT, OUT_DEVICE, runKernelGuest } from './guest.js';

/** The on-hardware tests; the run must report at least this many passing. */
export const MIN_GUEST_TESTS = 19;
/** The on-hardware-iommufd tests, which run (and must pass) on the kernels built with iommufd. */
export const MIN_IOMMUFD_TESTS = 6;
/**
 * On-hardware tests that apply to Debian's kernels only and skip on the built ones: the check that
 * there is no device cdev, and `vfio-ts bind` with vfio-pci unloaded (built in there).
 */
export const DEBIAN_ONLY_TESTS = 2;

/** The iommufd tests' measurement lines (on-hardware-iommufd.ts), beside the PAT ones. */
const REPORTED = /PAT-|WC-REFUSED|IOMMUFD-/;

const SCRIPT = `
# vfio-ts bind before vfio-pci is loaded, where it is a module: unload it (nothing is bound yet),
# bind, load it again.
if [ -f /lib/modules/vfio_pci.ko ]; then
  rmmod vfio_pci && { node dist/src/cli/main.js bind "$(pci_find 0x8086 0x10d3)"; echo "status=$?"; } >${NO_MODULE_OUT} 2>&1
  insmod /lib/modules/vfio_pci.ko || echo "insmod vfio_pci failed"
fi
VFIO_TS_GUEST=1 node --test --test-reporter=tap dist/test/kernel/on-hardware.js dist/test/kernel/on-hardware-iommufd.js >/tmp/tap.txt 2>&1
echo "guest-exit=$?" >>/tmp/tap.txt
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${OUT_DEVICE} ] && break; sleep 0.2; done
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/tap.txt)"; cat /tmp/tap.txt; } >${OUT_DEVICE}
sync
grep -E '^# (pass|fail)|PAT-|WC-REFUSED|IOMMUFD-|guest-exit' /tmp/tap.txt
`;

interface Variant {
  label: GuestKernelLabel;
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
  ...BUILT_KERNEL_LABELS.map(
    (label): Variant => ({
      label,
      title: `the cdev path${label === '7.3-cdev' ? ' alone (no /dev/vfio/N)' : ' beside the group path'}: DMA through an iommufd IOAS, DMA_BUF mapped with IOMMU_IOAS_MAP_FILE for peer-to-peer DMA`,
      wc: [
        /WC-REFUSED: map WC: EINVAL .*IO_STRICT_DEVMEM.*iomem=relaxed/,
        /IOMMUFD-P2P: /,
        /IOMMUFD-REVOKE: /,
        /IOMMUFD-UDMABUF: .*EOPNOTSUPP/,
      ],
    }),
  ),
];

describe('the project tests inside a guest, against real vfio-pci', () => {
  for (const v of VARIANTS) {
    const name = `Linux ${v.label}${v.append ? ` ${v.append}` : ''}`;
    it(`${name}: on-hardware tests pass; ${v.title}`, async (t) => {
      const built = (BUILT_KERNEL_LABELS as readonly string[]).includes(v.label);
      const p = provisionedOrSkip(t, { built });
      if (p === undefined) return;
      const run = await runKernelGuest(p, v.label, SCRIPT, {
        ...(v.append ? { append: v.append } : {}),
        args: pciBridge(['edu', 'virtio-rng-pci']),
        modules: ['pci-stub'],
      });
      assert.equal(run.boot.status, 0, describeBoot(run.boot));
      const tap = run.out;
      assert.ok(tap, `no TAP output came back\n${describeBoot(run.boot)}`);
      for (const l of tap.split('\n').filter((x) => REPORTED.test(x)))
        console.log(`${name}: ${l.replace(/^#\s*/, '')}`);
      const pass = Number(/^# pass (\d+)/m.exec(tap)?.[1] ?? -1);
      const fail = Number(/^# fail (\d+)/m.exec(tap)?.[1] ?? -1);
      assert.equal(fail, 0, tap);
      const min = built ? MIN_GUEST_TESTS - DEBIAN_ONLY_TESTS + MIN_IOMMUFD_TESTS : MIN_GUEST_TESTS;
      assert.ok(pass >= min, `${pass} passed, ${min} expected\n${tap}`);
      assert.match(tap, /guest-exit=0/);
      for (const re of v.wc) assert.match(tap, re, tap);
    });
  }
});
