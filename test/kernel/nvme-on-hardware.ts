/**
 * The NVMe driver on the kernel backend, run by Node inside a QEMU guest against QEMU's own
 * `-device nvme,...,cmb_size_mb=16` bound to vfio-pci (intel-iommu, type1 DMA): nvme-guest.test.ts
 * boots Linux 6.1 and 7.3 (the latter with iomem=relaxed) and runs
 * `node --test dist/test/kernel/nvme-on-hardware.js`. Not a `.test.ts` file: on the host it is
 * never picked up; anywhere else it skips (VFIO_TS_GUEST unset).
 *
 * The write-combining proof: /sys/kernel/debug/x86/pat_memtype_list is diffed around the open
 * of the controller with its submission queues in the CMB. vfio-pci's own open may add an entry
 * for BAR2 (Linux 7.3 ioremaps the BARs at open; 6.1 does not), measured first with the
 * submission queues in host memory; with them in the CMB there must be exactly one entry more,
 * write-combining, for exactly the CMB mapping's range (printed as `PAT-CMB: ... cmb ...`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { openTarget } from '../../src/cli/nvme.js';
import type { VfioDevice } from '../../src/driver/device.js';
import { NvmeController } from '../../src/driver/nvme/index.js';
import { type PatEntry, patAdded, patOverlapping, readPatList } from '../../src/kernel/pat.js';
import { bindVfioPci, iomemRelaxed, resourceRange } from '../../src/kernel/sysfs.js';

const IN_GUEST = process.env.VFIO_TS_GUEST === '1';
const RELEASE = IN_GUEST ? readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim() : '';
const KERNEL_MAJOR = Number(RELEASE.split('.')[0] ?? 0);
const QEMU_NVME = { vendor: 0x1b36, device: 0x0010 };

function nvmeBdf(): string {
  for (const d of readdirSync('/sys/bus/pci/devices').sort()) {
    const id = (f: string) => Number(readFileSync(`/sys/bus/pci/devices/${d}/${f}`, 'utf8'));
    if (id('vendor') === QEMU_NVME.vendor && id('device') === QEMU_NVME.device) return d;
  }
  throw new Error('no QEMU NVMe controller (1b36:0010) in this guest');
}

/** The PAT list (debugfs is mounted by the guest's /init). */
function pat(): PatEntry[] {
  return readPatList() ?? assert.fail('/sys/kernel/debug/x86/pat_memtype_list is not readable');
}

function cli(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, ['dist/src/cli/main.js', 'nvme', ...args], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Opens the controller as the CLI would, runs `fn`, shuts down and closes; PAT lines added. */
async function withController(
  bdf: string,
  sq: 'host' | 'cmb',
  fn: (c: NvmeController, dev: VfioDevice) => Promise<void>,
): Promise<void> {
  const dev = await openTarget(bdf, sq);
  try {
    const c = await NvmeController.open(dev, { sq });
    try {
      await fn(c, dev);
    } finally {
      await c.close();
    }
  } finally {
    await dev.close();
  }
}

describe('the NVMe driver on real vfio-pci and QEMU nvme (in a QEMU guest)', {
  skip: IN_GUEST ? false : 'runs only inside the QEMU guest',
}, () => {
  let bdf = '';
  let bar2: { start: bigint; end: bigint };
  const cliRuns = new Map<string, { status: number | null; out: string }>();
  before(() => {
    bdf = nvmeBdf();
    bindVfioPci(bdf);
    const r = resourceRange(bdf, 2);
    assert.ok(r, 'BAR2 (the CMB) has a range');
    bar2 = r;
  });
  after(() => {
    for (const [k, v] of cliRuns)
      for (const line of [`status ${v.status}`, ...v.out.trim().split('\n')])
        console.log(`CLI ${k}: ${line.trim()}`);
  });

  it('vfio-ts nvme identify: QEMU NVMe Ctrl, NVMe 1.4, a 16 MiB CMB in BAR2 that takes SQs, WC through sysfs resource2_wc', () => {
    const r = cli(['identify', bdf, '--json']);
    cliRuns.set('identify --json', r);
    assert.equal(r.status, 0, r.out);
    const j = JSON.parse(r.out);
    assert.equal(j.transport, 'kernel');
    assert.equal(j.model, 'QEMU NVMe Ctrl');
    assert.equal(j.version, '1.4.0');
    assert.equal(j.registers, 'mmap', 'BAR0 mapped (MSIX_MAPPABLE)');
    assert.deepEqual([j.cmb.bar, j.cmb.offset, j.cmb.size, j.cmb.sqs], [2, 0, 0x1000000, true]);
    assert.ok(j.cmb.wcPaths.includes('sysfs-resource-wc'), j.cmb.wcPaths);
    assert.deepEqual(
      j.namespaces.map((n: { nsid: number; blockBytes: number }) => [n.nsid, n.blockBytes]),
      [[1, 512]],
    );
  });

  it('the CMB mapping adds exactly one write-combining PAT entry, for exactly its range; entries go at close', async () => {
    // What vfio-pci's own open adds for BAR2, with the submission queues in host memory.
    const base0 = pat();
    let own: PatEntry[] = [];
    await withController(bdf, 'host', async () => {
      own = patOverlapping(patAdded(base0, pat()), bar2);
    });
    console.log(
      `PAT-VFIO-OWN: ${own.map((e) => e.line).join(' | ') || '(none: BAR2 untouched by vfio-pci)'}`,
    );
    assert.equal(own.length, KERNEL_MAJOR >= 7 ? 1 : 0, 'Linux 7.3 ioremaps BAR2 at open, 6.1 does not');
    const base = pat();
    await withController(bdf, 'cmb', async (c) => {
      const cmb = c.cmb!;
      assert.equal(cmb.mapping.attribute, 'wc');
      assert.equal(cmb.mapping.via, 'sysfs-resource-wc');
      const added = patOverlapping(patAdded(base, pat()), bar2);
      const range = [bar2.start + cmb.offset, bar2.start + cmb.offset + BigInt(cmb.mappedBytes)];
      assert.equal(added.length, own.length + 1, added.map((e) => e.line).join('\n'));
      for (const e of added) assert.equal(e.type, 'write-combining', `${e.line}: PAT gives a BAR one type`);
      const mine = added.filter((e) => e.start === range[0] && e.end === range[1]);
      assert.ok(
        mine.length >= 1,
        `an entry for exactly the CMB mapping ${range.map((x) => x!.toString(16))}`,
      );
      console.log(
        `PAT-CMB: Linux ${RELEASE} cmb WC mapping of BAR2 [0x${range[0]!.toString(16)}, 0x${range[1]!.toString(16)}) via ${cmb.mapping.via}${iomemRelaxed() ? ' (wcBars, iomem=relaxed)' : ''}: ${mine[0]!.line}`,
      );
    });
    assert.deepEqual(patOverlapping(patAdded(base0, pat()), bar2), [], 'nothing maps BAR2 once closed');
  });

  it('submission queues in the CMB: commands written there (read back through the WC mapping) are fetched by the controller at the CBA', async () => {
    await withController(bdf, 'cmb', async (c) => {
      const q = await c.createQueuePair({ depth: 16 });
      assert.ok(q.wc);
      const out = await c.alloc(128 << 10);
      const back = await c.alloc(128 << 10);
      for (let i = 0; i < out.bytes.length; i++) out.bytes[i] = (i * 13 + 5) & 0xff;
      // 256 blocks: a PRP List; the queue's own address is the CMB's (no IOVA maps it: the
      // controller can only have read the commands from its CMB).
      await q.write(1, 2048n, 256, out);
      await q.read(1, 2048n, 256, back);
      assert.deepEqual(back.bytes, out.bytes);
      await q.flush(1);
      const sqe = new DataView(c.cmb!.mapping.bytes.buffer, c.cmb!.mapping.bytes.byteOffset, 3 * 64);
      assert.deepEqual(
        [0, 1, 2].map((s) => [sqe.getUint8(s * 64), sqe.getUint32(s * 64 + 4, true)]),
        [
          [0x01, 1],
          [0x02, 1],
          [0x00, 1],
        ],
        'Write, Read, Flush of namespace 1 in slots 0..2 of the CMB queue',
      );
    });
  });

  it('vfio-ts nvme perf: verified random writes, then reads, SQs in the CMB (poll and MSI-X)', () => {
    const common = ['--bs', '4k', '--qd', '8', '--sq', 'cmb', '--verify', '--size', '8m', '--seconds', '3'];
    for (const [rw, completions] of [
      ['randwrite', 'poll'],
      ['randread', 'interrupt'],
    ] as const) {
      const r = cli(['perf', bdf, '--rw', rw, '--completions', completions, ...common]);
      cliRuns.set(`perf ${rw} ${completions}`, r);
      assert.equal(r.status, 0, r.out);
      assert.match(
        r.out,
        new RegExp(`${rw} bs=4096 qd=8 sq=cmb \\(wc via sysfs-resource-wc\\) completions=${completions}`),
      );
      assert.match(r.out, /verify: [1-9]\d* logical blocks checked, all as written/);
    }
  });

  it('perf refuses to write over an MBR signature without --force, and writes with it', async () => {
    await withController(bdf, 'host', async (c) => {
      const q = await c.createQueuePair({ depth: 4 });
      const b = await c.alloc(4096);
      b.bytes[510] = 0x55;
      b.bytes[511] = 0xaa;
      await q.write(1, 0n, 1, b);
    });
    const refused = cli(['perf', bdf, '--rw', 'write', '--seconds', '1']);
    assert.equal(refused.status, 1, refused.out);
    assert.match(refused.out, /EPERM.*MBR partition table.*--force/);
    const forced = cli(['perf', bdf, '--rw', 'write', '--seconds', '1', '--force']);
    assert.equal(forced.status, 0, forced.out);
  });
});
