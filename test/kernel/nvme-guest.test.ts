/**
 * The userspace NVMe driver on the kernel backend, inside Debian's Linux 6.1 and 7.3 guests
 * (7.3 booted with iomem=relaxed: its route to a WC mapping of a BAR vfio-pci holds is wcBars)
 * against QEMU's own NVMe controller with a 16 MiB CMB, bound to vfio-pci under intel-iommu with
 * type1 DMA. Node runs test/kernel/nvme-on-hardware.ts there; its TAP output comes back through
 * a raw output disk (test/kernel/guest.ts: the serial console drops bytes under load). The PAT
 * line of the CMB's write-combining mapping is repeated here, with `cmb` in it.
 * Needs scripts/provision.sh; never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  describeBoot,
  type KernelLabel,
  makeSparseImage,
  nvme,
  projectTrees,
  provisionedOrSkip,
  runGuest,
  VFIO_MODULES,
} from '../harness/index.js';
import { GUEST_TIMEOUT_MS, OUT_DEVICE, readOut } from './guest.js';

/** The in-guest tests (nvme-on-hardware.ts); the run must report this many passing. */
export const NVME_GUEST_TESTS = 5;
export const CMB_SIZE_MIB = 16;
const IMAGE_MIB = 64;

const SCRIPT = `
VFIO_TS_GUEST=1 node --test --test-reporter=tap dist/test/kernel/nvme-on-hardware.js >/tmp/tap.txt 2>&1
echo "guest-exit=$?" >>/tmp/tap.txt
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${OUT_DEVICE} ] && break; sleep 0.2; done
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/tap.txt)"; cat /tmp/tap.txt; } >${OUT_DEVICE}
sync
grep -E '^# (pass|fail)|PAT-|guest-exit' /tmp/tap.txt
`;

const VARIANTS: { label: KernelLabel; append?: string }[] = [
  { label: '6.1' },
  { label: '7.3', append: 'iomem=relaxed' },
];

describe('the NVMe driver in a guest, SQs in the CMB of QEMU nvme, on real vfio-pci', () => {
  for (const v of VARIANTS) {
    const name = `Linux ${v.label}${v.append ? ` ${v.append}` : ''}`;
    it(`${name}: identify, verified random writes and reads with SQs in the CMB, one write-combining PAT entry for the CMB mapping`, async (t) => {
      const p = provisionedOrSkip(t);
      if (p === undefined) return;
      const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-'));
      try {
        const image = makeSparseImage(join(dir, 'nvme.img'), IMAGE_MIB);
        const outImage = makeSparseImage(join(dir, 'out.img'), 16);
        const boot = await runGuest(p, {
          kernel: p.kernels[v.label],
          node: true,
          trees: projectTrees(),
          modules: [...VFIO_MODULES, 'virtio_pci?', 'virtio_blk'],
          ...(v.append ? { append: v.append } : {}),
          script: `cd /app || exit 90\n${SCRIPT}`,
          args: [
            ...nvme({ image, cmbSizeMiB: CMB_SIZE_MIB }),
            '-drive',
            `file=${outImage},format=raw,if=none,id=vfiotsout`,
            '-device',
            'virtio-blk-pci,drive=vfiotsout',
          ],
          timeoutMs: GUEST_TIMEOUT_MS * 2,
        });
        assert.equal(boot.status, 0, describeBoot(boot));
        const tap = readOut(readFileSync(outImage));
        assert.ok(tap, `no TAP output came back\n${describeBoot(boot)}`);
        for (const l of tap.split('\n').filter((x) => /PAT-|CLI perf/.test(x)))
          console.log(`${name}: ${l.replace(/^#\s*/, '')}`);
        const pass = Number(/^# pass (\d+)/m.exec(tap)?.[1] ?? -1);
        const fail = Number(/^# fail (\d+)/m.exec(tap)?.[1] ?? -1);
        assert.equal(fail, 0, tap);
        assert.equal(pass, NVME_GUEST_TESTS, tap);
        assert.match(tap, /guest-exit=0/);
        assert.match(
          tap,
          /PAT-CMB: .*cmb WC mapping of BAR2 .*: PAT: \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] write-combining/,
          tap,
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
