/**
 * `runPerf` (the engine of `vfio-ts nvme perf`) on our NVMe device in-process: every mode with
 * verify, the figures it reports, a block its disk corrupted failing the run loudly, and the
 * refusal to write over a partition table or filesystem (signatures.ts) unless forced — an
 * image mke2fs made.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import { NvmeController } from '../../../src/driver/nvme/index.js';
import { Pattern, PERF_MODES, runPerf } from '../../../src/driver/nvme/perf.js';
import { findSignatures, SIGNATURE_PROBE_BYTES } from '../../../src/driver/nvme/signatures.js';
import { VfioError } from '../../../src/errors.js';
import { IMAGE_BYTES, type OurNvme, type OurNvmeOptions, openOurNvme } from './device-rig.js';

/** 1 MiB of the namespace: 256 slots of 4 KiB. */
const SPAN = 1n << 20n;

async function withQueue(
  opts: OurNvmeOptions & { sq?: 'host' | 'cmb' },
  fn: (
    c: NvmeController,
    q: Awaited<ReturnType<NvmeController['createQueuePair']>>,
    rig: OurNvme,
  ) => Promise<void>,
) {
  const rig = await openOurNvme('in-process', opts);
  try {
    const c = await NvmeController.open(rig.dev, { sq: opts.sq ?? 'host' });
    try {
      await fn(c, await c.createQueuePair({ depth: 9 }), rig);
    } finally {
      await c.close();
    }
  } finally {
    await rig.close();
  }
}

describe('nvme perf engine', () => {
  for (const rw of PERF_MODES)
    it(`${rw} with verify, qd 8, 4 KiB, SQ in the CMB: figures and every block checked`, async () => {
      await withQueue({ sq: 'cmb' }, async (c, q) => {
        const r = await runPerf(c, q, {
          rw,
          bs: 4096,
          qd: 8,
          seconds: 10,
          verify: true,
          size: SPAN,
          maxIos: 300,
        });
        assert.equal(r.ios, 300);
        assert.ok(r.iops > 0 && r.mbPerSec > 0);
        assert.ok(
          r.latencyUs.p50 > 0 && r.latencyUs.p50 <= r.latencyUs.p99 && r.latencyUs.p99 <= r.latencyUs.max,
        );
        // Read modes check every block read; write modes read back every block written.
        if (rw.endsWith('read')) assert.equal(r.verifiedBlocks, 300 * 8);
        else assert.ok(r.verifiedBlocks >= 8 && r.verifiedBlocks <= 300 * 8 && r.verifiedBlocks % 8 === 0);
        if (rw === 'write')
          assert.equal(r.verifiedBlocks, 256 * 8, 'a sequential run wraps over all 256 slots');
      });
    });

  it('a block the disk corrupted fails the run: EIO naming the LBA and byte', async () => {
    await withQueue({ faults: true }, async (c, q, rig) => {
      rig.disk!.corruptLba = 37;
      await assert.rejects(
        runPerf(c, q, { rw: 'write', bs: 4096, qd: 4, seconds: 10, verify: true, size: SPAN, maxIos: 64 }),
        (e: unknown) => {
          assert.ok(e instanceof VfioError);
          assert.equal(e.errno, Errno.EIO);
          assert.match(e.message, /MISMATCH at LBA 37, byte 0/);
          return true;
        },
      );
    });
  });

  it('refuses to write over an ext4 mke2fs made (EPERM naming it) unless forced; reads go ahead', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-perf-'));
    const image = join(dir, 'ext4.img');
    try {
      execFileSync('truncate', ['-s', String(IMAGE_BYTES), image]);
      execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', image]);
      await withQueue({ image }, async (c, q, rig) => {
        const magic = () => [...rig.readImage(1080, 2)];
        assert.deepEqual(magic(), [0x53, 0xef], 'the superblock magic');
        for (const rw of ['write', 'randwrite'] as const)
          await assert.rejects(
            runPerf(c, q, { rw, bs: 4096, qd: 1, seconds: 1, maxIos: 4 }),
            /EPERM.*ext2\/3\/4.*--force/,
          );
        await assert.rejects(
          runPerf(c, q, { rw: 'randread', bs: 4096, qd: 1, seconds: 1, verify: true, maxIos: 4 }),
          /EPERM/,
        );
        assert.equal(rig.model!.controller.ioStats.writes, 0, 'nothing was written');
        const r = await runPerf(c, q, { rw: 'randread', bs: 4096, qd: 2, seconds: 1, maxIos: 10 });
        assert.equal(r.ios, 10);
        const forced = await runPerf(c, q, {
          rw: 'write',
          bs: 4096,
          qd: 1,
          seconds: 1,
          maxIos: 1,
          force: true,
        });
        assert.equal(forced.ios, 1);
        assert.notDeepEqual(magic(), [0x53, 0xef], 'the forced write went over it');
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('bad options: EINVAL', async () => {
    await withQueue({}, async (c, q) => {
      const base = { rw: 'read' as const, bs: 4096, qd: 1, seconds: 1 };
      const table: [object, RegExp][] = [
        [{ bs: 1000 }, /multiple of the 512-byte/],
        [{ qd: 9 }, /holds 1\.\.8/],
        [{ qd: 0 }, /queue depth 0/],
        [{ seconds: 0 }, /seconds 0/],
        [{ size: 1n << 40n }, new RegExp(`the namespace has ${IMAGE_BYTES}`)],
        [{ bs: 16384, qd: 4, size: 32768n }, /fewer than the queue depth/],
      ];
      for (const [o, re] of table) await assert.rejects(runPerf(c, q, { ...base, ...o }), re);
    });
  });
});

describe('the verify pattern', () => {
  it('a stale generation, another LBA, or a flipped byte mismatch; the last write matches', () => {
    const p = new Pattern(512, 16);
    const a = new Uint8Array(1024);
    p.stamp(a, 4, 2);
    const stale = a.slice();
    p.stamp(a, 4, 2);
    p.check(a, 4, 2);
    assert.throws(() => p.check(stale, 4, 2), /MISMATCH at LBA 4, byte 4/);
    assert.throws(() => p.check(a, 6, 2), /MISMATCH at LBA 6/);
    a[700]! ^= 1;
    assert.throws(() => p.check(a, 4, 2), /MISMATCH at LBA 5, byte 188/);
  });
});

describe('partition table and filesystem signatures', () => {
  const put = (b: Uint8Array, at: number, bytes: number[] | string) => {
    b.set(typeof bytes === 'string' ? [...bytes].map((c) => c.charCodeAt(0)) : bytes, at);
    return b;
  };
  const blank = () => new Uint8Array(SIGNATURE_PROBE_BYTES);
  it('finds each, names it, and nothing on a blank or vfio-ts-patterned disk', () => {
    const table: [Uint8Array, number, RegExp][] = [
      [put(blank(), 510, [0x55, 0xaa]), 512, /^MBR/],
      [put(put(blank(), 510, [0x55, 0xaa]), 512, 'EFI PART'), 512, /^GPT.*MBR/],
      [put(blank(), 4096, 'EFI PART'), 4096, /^GPT/],
      [put(blank(), 1080, [0x53, 0xef]), 512, /^ext2\/3\/4/],
      [put(blank(), 0, 'XFSB'), 512, /^XFS/],
      [put(blank(), 0x10040, '_BHRfS_M'), 512, /^btrfs/],
      [put(put(blank(), 82, 'FAT32   '), 510, [0x55, 0xaa]), 512, /^FAT32.*MBR/],
      [put(blank(), 54, 'FAT16   '), 512, /^FAT12\/16/],
      [put(blank(), 0, [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]), 512, /^LUKS/],
      [put(blank(), 4086, 'SWAPSPACE2'), 512, /^Linux swap/],
      [put(blank(), 512, 'LABELONE'), 512, /^LVM2/],
      [put(blank(), 32769, 'CD001'), 512, /^ISO 9660/],
    ];
    for (const [head, bs, re] of table) assert.match(findSignatures(head, bs).join(' + '), re);
    assert.deepEqual(findSignatures(blank(), 512), []);
    const ours = blank();
    new Pattern(512, 256).stamp(ours, 0, 256);
    assert.deepEqual(findSignatures(ours, 512), []);
    assert.deepEqual(findSignatures(new Uint8Array(100), 512), [], 'a short read finds what fits');
  });
});
