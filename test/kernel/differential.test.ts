/**
 * Differential conformance: the same probe sequence (test/kernel/probe-sequence.ts) against the
 * real vfio-pci in a QEMU guest (one boot per kernel and path, all four devices) and against the
 * in-process model of each device with the matching kernel profile. Every differing case is
 * printed; the summary lines are `differential: N cases, M differences` for the group path (Linux
 * 6.1, 7.3, and 7.3-iommufd, built by provision.sh with iommufd) and `differential (iommufd): N
 * cases, M differences` for the device cdev path (7.3-iommufd, and 7.3-cdev, which has no groups).
 * Cases marked `info` (values only the platform knows: firmware-assigned BAR addresses, the
 * interrupt line; register and ROM contents the model does not implement: nvme, e1000e) are
 * printed but not counted; edu's and ivshmem's BAR contents are counted (probe-sequence.ts).
 *
 * Each run also records the path cases (path-probe.ts); the last test compares the two paths of
 * 7.3-iommufd with each other, and 7.3-cdev's cdev path with 7.3-iommufd's, and requires their
 * differences to be exactly PATH_DIFFERENCES (docs/kernel-profiles.md, "The two paths").
 * Needs scripts/provision.sh; never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BUILT_KERNEL_LABELS,
  describeBoot,
  type GuestKernelLabel,
  KERNEL_LABELS,
  kernelOf,
  provisionedOrSkip,
} from '../harness/index.js';
import { OUT_DEVICE, PROBE_DEVICES, runKernelGuest } from './guest.js';
import { MODELLED, type Modelled, modelDevice, modelTarget } from './model.js';
import { type CaseDiff, compareTranscripts, type ProbeCase, runProbe } from './probe-sequence.js';
import { writeRecorded } from './recorded.js';

/** One boot: a kernel and the path openKernelDevice is told to take. */
interface Run {
  label: GuestKernelLabel;
  path: 'group' | 'cdev';
}
const RUNS: readonly Run[] = [
  ...KERNEL_LABELS.map((label): Run => ({ label, path: 'group' })),
  { label: '7.3-iommufd', path: 'group' },
  { label: '7.3-iommufd', path: 'cdev' },
  { label: '7.3-cdev', path: 'cdev' },
];
const runName = (r: Run) => `Linux ${r.label} ${r.path === 'cdev' ? 'iommufd' : 'group'}`;

/**
 * Differences with the model allowed per run; the test fails when more appear. Baseline before
 * the model was fixed: 221 (6.1) and 274 (7.3); none are left (docs/kernel-profiles.md).
 */
export const KNOWN_DIFFERENCES: Readonly<Record<string, number>> = Object.fromEntries(
  RUNS.map((r) => [runName(r), 0]),
);

/**
 * Path cases (path-probe.ts) and probe cases where the cdev path answers otherwise than the group
 * path of the same kernel: name → [group, cdev] (measured on 7.3-iommufd; docs/kernel-profiles.md).
 */
export const PATH_DIFFERENCES: Readonly<Record<string, readonly [string, string]>> = {
  // The iommufd ioctls exist on a cdev fd only; a group fd passes them to vfio-pci (ENOTTY).
  'ATTACH_IOMMUFD_PT pt_id=0': ['errno ENOTTY', 'errno ENOENT'],
  'ATTACH_IOMMUFD_PT unknown flag': ['errno ENOTTY', 'errno EINVAL'],
  DETACH_IOMMUFD_PT: ['errno ENOTTY', 'ok 0'],
  'ATTACH_IOMMUFD_PT the IOAS again': ['errno ENOTTY', 'ok 0'],
  // An empty group list is for cdev-opened devices only, a list of groups for group-opened ones
  // (vfio_pci_ioctl_pci_hot_reset); past that check, no slot or bus reset: ENODEV. The model
  // answers both per path (DeviceOptions.opened), so the per-run differential checks them too.
  'ioctl PCI_HOT_RESET count=0': ['errno EINVAL', 'errno ENODEV'],
  'ioctl PCI_HOT_RESET count=1 fd -1': ['errno ENODEV', 'errno EINVAL'],
  // type1 v2 refuses to split a mapping (EINVAL) and unmaps nothing without complaint (0 bytes);
  // iommufd answers ENOENT to both (iopt_unmap_iova_range, iommufd_ioas_unmap).
  'DMA unmap its 1st page only': ['errno EINVAL', 'errno ENOENT'],
  'DMA unmap its 2nd page only': ['errno EINVAL', 'errno ENOENT'],
  'DMA unmap where nothing is mapped': ['ok 0', 'errno ENOENT'],
  'DMA unmap all that is left': ['ok 0', 'errno ENOENT'],
};

interface GuestTranscript {
  name: string;
  bdf?: string;
  path?: string;
  error?: string;
  cases?: ProbeCase[];
  pathCases?: ProbeCase[];
}

const totals = { group: { cases: 0, differences: 0 }, cdev: { cases: 0, differences: 0 } };
/** What each run answered, by runName: the path comparison reads them. */
const transcripts = new Map<string, GuestTranscript[]>();

async function modelCases(name: Modelled, profile: '6.1' | '7.3', path: Run['path']): Promise<ProbeCase[]> {
  const dev = modelDevice(name, profile, path);
  try {
    return await runProbe(modelTarget(dev));
  } finally {
    dev.close();
  }
}

const diffLines = (diffs: readonly CaseDiff[], left: string, right: string): string[] =>
  diffs.map(
    (d) =>
      `${d.info ? '  (info) ' : '  DIFF '}${d.name}\n      ${left}: ${d.kernel ?? '(absent)'}\n      ${right}:  ${d.model ?? '(absent)'}`,
  );

describe('differential conformance: real vfio-pci vs the model', () => {
  for (const run of RUNS) {
    const built = (BUILT_KERNEL_LABELS as readonly string[]).includes(run.label);
    it(`${runName(run)}: edu, ivshmem-plain, nvme, e1000e`, async (t) => {
      const p = provisionedOrSkip(t, { built });
      if (p === undefined) return;
      const kernel = kernelOf(p, run.label);
      const boot = await runKernelGuest(
        p,
        run.label,
        `node dist/test/kernel/guest-probe.js --out ${OUT_DEVICE} --paths ${run.path} ${PROBE_DEVICES.join(' ')}`,
      );
      assert.equal(boot.boot.status, 0, describeBoot(boot.boot));
      assert.ok(boot.out, `the guest wrote no transcript\n${describeBoot(boot.boot)}`);
      const got = JSON.parse(boot.out) as GuestTranscript[];
      transcripts.set(runName(run), got);
      // VFIO_TS_RECORD=1 refreshes the recorded transcripts recorded.test.ts checks without QEMU
      // (Debian's kernels; the built kernel answered as Debian's 7.3 on both paths, case for case).
      const debian = KERNEL_LABELS.find((l) => l === kernel.label);
      if (process.env.VFIO_TS_RECORD === '1' && debian) writeRecorded(debian, kernel.release, got);
      let n = 0;
      let m = 0;
      const lines: string[] = [];
      for (const tr of got) {
        assert.ok(tr.cases, `${tr.name}: ${tr.error}`);
        assert.equal(tr.path, run.path, `${tr.name} was opened through ${tr.path}`);
        assert.ok((MODELLED as readonly string[]).includes(tr.name));
        const diffs = compareTranscripts(
          tr.cases,
          await modelCases(tr.name as Modelled, kernel.profile, run.path),
        );
        const counted = diffs.filter((d) => !d.info);
        n += tr.cases.filter((c) => !c.info).length;
        m += counted.length;
        lines.push(
          `--- ${runName(run)} ${tr.name} (${tr.bdf}): ${tr.cases.length} cases, ${counted.length} differences, ${diffs.length - counted.length} info`,
          ...diffLines(diffs, 'kernel', 'model'),
        );
      }
      const total = totals[run.path];
      total.cases += n;
      total.differences += m;
      const tag = run.path === 'cdev' ? 'differential (iommufd)' : 'differential';
      console.log(lines.join('\n'));
      console.log(`Linux ${run.label} (${kernel.release}), ${run.path} path:`);
      console.log(`${tag}: ${n} cases, ${m} differences`);
      if (total.cases > n) {
        console.log(`all kernels, ${run.path} path:`);
        console.log(`${tag}: ${total.cases} cases, ${total.differences} differences`);
      }
      assert.ok(n >= 400, `only ${n} cases`);
      const known = KNOWN_DIFFERENCES[runName(run)] ?? 0;
      assert.ok(m <= known, `${m} differences on ${runName(run)}, ${known} known`);
    });
  }

  it('the group path and the cdev path: the device fd answers alike; the path cases differ only as documented', async (t) => {
    const p = provisionedOrSkip(t, { built: true });
    if (p === undefined) return;
    const group = transcripts.get('Linux 7.3-iommufd group');
    const cdev = transcripts.get('Linux 7.3-iommufd iommufd');
    const cdevOnly = transcripts.get('Linux 7.3-cdev iommufd');
    assert.ok(group && cdev && cdevOnly, 'the 7.3-iommufd and 7.3-cdev runs above did not all finish');
    const lines: string[] = [];
    let count = 0;
    for (const g of group) {
      const c: GuestTranscript | undefined = cdev.find((x) => x.name === g.name);
      const o: GuestTranscript | undefined = cdevOnly.find((x) => x.name === g.name);
      assert.ok(c?.cases && o?.cases && g.cases && g.pathCases && c.pathCases && o.pathCases, g.name);
      const both: CaseDiff[] = [
        ...compareTranscripts(g.cases, c.cases),
        ...compareTranscripts(g.pathCases, c.pathCases),
      ];
      lines.push(
        `--- ${g.name}: group vs cdev (7.3-iommufd); path cases:`,
        ...g.pathCases.map(
          (x) => `  ${x.name}: ${x.result} | ${c.pathCases?.find((y) => y.name === x.name)?.result}`,
        ),
        ...diffLines(both, 'group', 'cdev'),
      );
      const counted: CaseDiff[] = both.filter((x) => !x.info);
      count += counted.length;
      assert.deepEqual(
        Object.fromEntries(counted.map((d) => [d.name, [d.kernel ?? '(absent)', d.model ?? '(absent)']])),
        PATH_DIFFERENCES,
        `${g.name}: the paths differ otherwise than PATH_DIFFERENCES says`,
      );
      // The cdev-only kernel answers as the cdev path of the kernel with groups, case for case.
      const same: CaseDiff[] = [
        ...compareTranscripts(c.cases, o.cases),
        ...compareTranscripts(c.pathCases, o.pathCases),
      ];
      lines.push(
        `--- ${g.name}: 7.3-iommufd cdev vs 7.3-cdev`,
        ...diffLines(same, '7.3-iommufd', '7.3-cdev'),
      );
      assert.deepEqual(
        same.filter((d) => !d.info).map((d) => d.name),
        [],
        `${g.name}: 7.3-cdev answers otherwise than 7.3-iommufd's cdev path`,
      );
    }
    console.log(lines.join('\n'));
    console.log(
      `paths: ${count} answers differ between the group and the cdev path (${group.length} devices)`,
    );
  });
});
