/**
 * What the NVMe driver does when things go wrong, each with the errno it gives. On our NVMe
 * device: a command that never completes (its disk hangs: timeout), and bad arguments refused
 * before anything reaches the controller. On the fake controller (fake-nvme.ts), for what our
 * device never does: a completion with any status code (the errno mapping), a fatal status
 * (CSTS.CFS) under I/O, registers reading all ones (a vanished device), CSTS.RDY later than
 * CAP.TO. The server process killed under the driver is in device.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import { NvmeController, NvmeStatusError } from '../../../src/driver/nvme/index.js';
import { buildPrps, PRP_LIST_ENTRIES, type Prps, prpListPages } from '../../../src/driver/nvme/prp.js';
import { VfioError } from '../../../src/errors.js';
import { openOurNvme } from './device-rig.js';
import { openRig } from './rig.js';

/** The errno a promise rejects with (VfioError), undefined when it resolves. */
async function rejection(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
  return undefined;
}

function isErr(errno: number, re: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof VfioError, String(e));
    assert.equal(e.errno, errno, e.message);
    assert.match(e.message, re);
    return true;
  };
}

describe('NVMe driver errors', () => {
  it('an error status completes the command with NvmeStatusError (errno as nvme_error_status maps it); the queue goes on', async () => {
    const rig = await openRig();
    try {
      const c = await NvmeController.open(rig.dev);
      try {
        const q = await c.createQueuePair({ depth: 4 });
        const b = await c.alloc(4096);
        const table: [number, number, number, RegExp][] = [
          [0, 0x80, Errno.EIO, /LBA Out of Range \(SCT 0h SC 80h\)/],
          [0, 0x02, Errno.EOPNOTSUPP, /Invalid Field in Command/],
          [0, 0x81, Errno.ENOSPC, /Capacity Exceeded/],
          [2, 0x81, Errno.EIO, /Media and Data Integrity Error \(SCT 2h SC 81h\)/],
        ];
        for (const [sct, sc, errno, re] of table) {
          rig.fake.statusOnce = { sct, sc };
          await assert.rejects(q.read(1, 0n, 1, b), (e: unknown) => {
            assert.ok(e instanceof NvmeStatusError);
            assert.deepEqual([e.sct, e.sc, e.errno], [sct, sc, errno]);
            assert.match(e.message, re);
            return true;
          });
        }
        await q.read(1, 0n, 1, b);
      } finally {
        await c.close();
      }
    } finally {
      await rig.close();
    }
  });

  it('a command that never completes (our device, its disk hung) fails ETIMEDOUT after ioTimeoutMs; its slot stays held', async () => {
    const r = await openOurNvme('in-process', { faults: true });
    try {
      const c = await NvmeController.open(r.dev, { ioTimeoutMs: 200 });
      try {
        const q = await c.createQueuePair({ depth: 4 });
        const b = await c.alloc(4096);
        r.disk!.hangReads = true;
        const t0 = Date.now();
        await assert.rejects(
          q.read(1, 0n, 1, b),
          isErr(Errno.ETIMEDOUT, /no completion in 200 ms \(queue 1, CID \d\)/),
        );
        assert.ok(Date.now() - t0 >= 190);
        assert.equal(
          q.queue.inFlight,
          1,
          'the timed-out CID is not reused while the controller may still answer it',
        );
        // The disk comes back: the queue goes on, and the late completion, reaped with the next
        // one (a polled queue polls only while it has live commands), frees the CID.
        const stats = r.model!.controller.stats;
        const posted = stats.completions;
        r.disk!.release();
        for (let i = 0; i < 500 && stats.completions === posted; i++)
          await new Promise((res) => setTimeout(res, 10));
        assert.equal(stats.completions, posted + 1, 'the device completed the hung read');
        await q.read(1, 0n, 1, b);
        assert.equal(q.queue.inFlight, 0, 'the late completion released its CID');
      } finally {
        await c.close();
      }
    } finally {
      await r.close();
    }
  });

  for (const completions of ['poll', 'interrupt'] as const)
    it(`a fatal controller status (CSTS.CFS) fails the commands in flight and every later one with EIO (${completions})`, async () => {
      const rig = await openRig();
      try {
        const c = await NvmeController.open(rig.dev, { completions, ioTimeoutMs: 30_000 });
        const q = await c.createQueuePair({ depth: 8 });
        const b = await c.alloc(4096);
        rig.fake.fatalOnIo = true;
        const t0 = Date.now();
        await assert.rejects(q.write(1, 0n, 1, b), isErr(Errno.EIO, /CSTS\.CFS/));
        assert.ok(Date.now() - t0 < 5_000, 'found by the watchdog, long before the 30 s timeout');
        await assert.rejects(q.read(1, 0n, 1, b), isErr(Errno.EIO, /CSTS\.CFS/));
        await assert.rejects(c.createQueuePair(), isErr(Errno.EIO, /CSTS\.CFS/));
        // close skips the commands and resets the controller (CC.EN = 0 clears CFS, §3.1.6).
        await c.close();
        assert.equal((await rig.dev.read32(0, 0x1c)) & 3, 0);
        assert.equal(rig.dmaCount(), 0);
      } finally {
        await rig.close();
      }
    });

  it('a controller whose registers read all ones is gone: ENODEV', async () => {
    const rig = await openRig();
    try {
      const c = await NvmeController.open(rig.dev, { ioTimeoutMs: 30_000 });
      const q = await c.createQueuePair({ depth: 4 });
      const b = await c.alloc(4096);
      rig.fake.stallIo = true;
      const pending = q.read(1, 0n, 1, b);
      rig.fake.gone = true;
      await assert.rejects(pending, isErr(Errno.ENODEV, /all ones/));
      await assert.rejects(c.close(), isErr(Errno.ENODEV, /all ones/));
      assert.equal(rig.dmaCount(), 0, 'memory released all the same');
    } finally {
      await rig.close();
    }
    const rig2 = await openRig();
    try {
      rig2.fake.gone = true;
      await assert.rejects(NvmeController.open(rig2.dev), isErr(Errno.ENODEV, /CAP reads all ones/));
    } finally {
      await rig2.close();
    }
  });

  it('CSTS.RDY late but within CAP.TO is waited for; never ready is ETIMEDOUT naming CAP.TO', async () => {
    const rig = await openRig({ readyDelayMs: 150 });
    try {
      const c = await NvmeController.open(rig.dev);
      await c.close();
    } finally {
      await rig.close();
    }
    const never = await openRig({ readyDelayMs: 5_000 });
    try {
      // The fake's CAP.TO is 2 (1 s).
      await assert.rejects(
        NvmeController.open(never.dev),
        isErr(Errno.ETIMEDOUT, /CSTS\.RDY to become 1.*CAP\.TO/),
      );
      assert.equal(never.dmaCount(), 0);
    } finally {
      await never.close();
    }
  });

  it('bad arguments (our device): EINVAL (or ENOSPC, ENODEV) before anything reaches the controller', async () => {
    const r = await openOurNvme('in-process');
    try {
      const c = await NvmeController.open(r.dev);
      const stats = r.model!.controller.stats;
      try {
        const q = await c.createQueuePair({ depth: 4 });
        const b = await c.alloc(4096);
        const before = stats.commands;
        const end = c.namespace(1).nsze;
        assert.equal(await rejection(q.read(1, end - 4n, 8, b)), Errno.EINVAL, 'beyond the namespace');
        assert.equal(await rejection(q.read(1, 0n, 16, b)), Errno.EINVAL, 'larger than the buffer');
        assert.equal(await rejection(q.read(1, 0n, 0, b)), Errno.EINVAL, 'no blocks');
        assert.equal(await rejection(q.read(2, 0n, 1, b)), Errno.ENODEV, 'no namespace 2');
        const big = await c.alloc(1 << 20);
        assert.equal(await rejection(q.read(1, 0n, 1025, big)), Errno.EINVAL, 'more than MDTS (512 KiB)');
        const odd = { iova: b.iova + 2n, bytes: b.bytes.subarray(2) };
        assert.equal(await rejection(q.read(1, 0n, 1, odd)), Errno.EINVAL, 'PRP1 not dword aligned');
        assert.equal(stats.commands, before, 'none reached the controller');
        assert.equal(await rejection(c.createQueuePair({ depth: 1 })), Errno.EINVAL);
        assert.equal(await rejection(c.createQueuePair({ depth: 5000 })), Errno.EINVAL);
        for (let i = 0; i < 3; i++) await c.createQueuePair({ depth: 2 });
        assert.equal(
          await rejection(c.createQueuePair({ depth: 2 })),
          Errno.ENOSPC,
          'all 4 granted queue pairs in use',
        );
        assert.equal(await rejection(c.alloc(0)), Errno.EINVAL);
      } finally {
        await c.close();
      }
      assert.equal(await rejection(NvmeController.open(r.dev, { ioQueues: 0 })), Errno.EINVAL);
    } finally {
      await r.close();
    }
  });
});

describe('PRPs (NVMe 1.4 §4.3)', () => {
  const LIST = 0x9000_0000n;
  it('one page, two pages, a list, an offset into the first page', () => {
    const table: [bigint, number, bigint, bigint, bigint[]][] = [
      [0x1000n, 512, 0x1000n, 0n, []],
      [0x1000n, 4096, 0x1000n, 0n, []],
      [0x1200n, 3584, 0x1200n, 0n, []],
      [0x1200n, 3585, 0x1200n, 0x2000n, []],
      [0x1000n, 8192, 0x1000n, 0x2000n, []],
      [0x1000n, 8193, 0x1000n, LIST, [0x2000n, 0x3000n]],
      [0x1400n, 12288, 0x1400n, LIST, [0x2000n, 0x3000n, 0x4000n]],
    ];
    for (const [iova, len, p1, p2, list] of table)
      assert.deepEqual(
        buildPrps(iova, len, LIST),
        { prp1: p1, prp2: p2, list },
        `${iova.toString(16)} + ${len}`,
      );
  });

  /**
   * The data pages as a controller reads them (§4.3): PRP1's page, then entries from PRP2 on,
   * the last slot of a list page taken as a pointer to the next page while entries remain.
   */
  function walk(p: Prps, pages: number): bigint[] {
    const out = [p.prp1 & ~0xfffn];
    if (pages === 2) return [...out, p.prp2];
    const entry = (addr: bigint) => p.list[Number((addr - LIST) / 8n)]!;
    let addr = p.prp2;
    for (let left = pages - 1; left > 0; ) {
      if (addr % 4096n === 4096n - 8n && left > 1) addr = entry(addr);
      else {
        out.push(entry(addr));
        addr += 8n;
        left--;
      }
    }
    return out;
  }

  it('lists past one page chain: the last entry of a full page points to the next (1 to 3 list pages)', () => {
    const base = 0x10_0000n;
    // [offset into the first page, pages, list pages]
    const table: [number, number, number][] = [
      [0, 3, 1],
      [0, PRP_LIST_ENTRIES + 1, 1], // 2 MiB + 4 KiB: 512 entries fill one page exactly
      [0, PRP_LIST_ENTRIES + 2, 2], // one more: 511 + the chain pointer, then 2
      [0, 1024, 2], // 4 MiB: 511 + chain, 512
      [1024, 1025, 3], // 4 MiB from 1 KiB into a page: 511 + chain, 511 + chain, 2
    ];
    for (const [offset, pages, listPages] of table) {
      const length = (pages - 1) * 4096 - offset + (offset ? 1 : 4096);
      const p = buildPrps(base + BigInt(offset), length, LIST, 3);
      assert.equal(prpListPages(pages), listPages, `${pages} pages`);
      assert.equal(p.prp2, LIST);
      assert.equal(p.list.length, pages - 1 + (listPages - 1), `${pages} pages: entries and chain pointers`);
      for (let k = 1; k < listPages; k++)
        assert.equal(
          p.list[k * PRP_LIST_ENTRIES - 1],
          LIST + BigInt(k * 4096),
          `chain pointer of list page ${k}`,
        );
      const want = Array.from({ length: pages }, (_, i) => base + BigInt(i * 4096));
      assert.deepEqual(walk(p, pages), want, `${pages} pages from offset ${offset}`);
    }
  });

  it('more list pages than the command has, a list not page aligned, bad lengths and addresses: EINVAL', () => {
    assert.throws(
      () => buildPrps(0x10_0000n, (PRP_LIST_ENTRIES + 2) * 4096, LIST, 1),
      /EINVAL.*514 pages: 2 PRP List pages, more than the 1 this command has/,
    );
    assert.throws(() => buildPrps(0x10_0000n, 3 * 4096, LIST + 8n), /EINVAL.*not page aligned/);
    assert.throws(() => buildPrps(0x1001n, 4, LIST), /EINVAL.*dword/);
    assert.throws(() => buildPrps(0x1000n, 0, LIST), /EINVAL/);
  });
});
