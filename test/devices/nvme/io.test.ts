/**
 * NVM commands (NVMe 1.4 §6) and data pointers (§4.3 PRPs) against the fake host: data round
 * trips through PRP lists, every refusal with its status code, Write Zeroes, Dataset Management,
 * Flush / FUA / a disabled write cache reaching the namespace's flush, media errors, and
 * submission queues in the Controller Memory Buffer (§4.7).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryNamespace } from '../../../src/devices/nvme/namespace.js';
import { LAYOUT, MEM_BASE, PAGE, ready, rig, type Sqe } from './fake-host.js';

const DATA = LAYOUT.DATA;
const rw = (opcode: number, slba: number, blocks: number, prp1: bigint, prp2 = 0n, cdw12 = 0): Sqe => ({
  opcode,
  nsid: 1,
  prp1,
  prp2,
  cdw10: slba,
  cdw12: cdw12 | (blocks - 1),
});

/** Writes little-endian u64 PRP entries at `addr` of host memory. */
function prpList(r: Awaited<ReturnType<typeof ready>>, addr: bigint, entries: bigint[]): void {
  const v = r.host.view(addr, entries.length * 8);
  for (const [i, e] of entries.entries()) v.setBigUint64(i * 8, e, true);
}

class CountingNamespace extends MemoryNamespace {
  flushes = 0;
  failReads = false;
  failWrites = false;
  override async flush(): Promise<void> {
    this.flushes++;
  }
  override async read(offset: number, dst: Uint8Array): Promise<void> {
    if (this.failReads) throw new Error('EIO');
    return super.read(offset, dst);
  }
  override async write(offset: number, src: Uint8Array): Promise<void> {
    if (this.failWrites) throw new Error('EIO');
    return super.write(offset, src);
  }
}

describe('Read and Write through PRPs (§4.3)', () => {
  test('64 KiB from PRP1 at an offset, a PRP list that chains to a second list page, scattered pages', async () => {
    const r = await ready();
    const length = 64 << 10;
    // PRP1 at offset 0x200 of its page: 3584 bytes there, then 16 pages from the list.
    const first = DATA + 0x200n;
    const pages = Array.from({ length: 16 }, (_, i) => DATA + BigInt((40 - 2 * i) * PAGE)); // descending, gaps
    // The list starts 16 bytes before a page end: one data entry, then the chain pointer.
    const list1 = DATA + 0x10_0000n - 16n;
    const list2 = DATA + 0x10_0000n + 0x1000n;
    prpList(r, list1, [pages[0]!, list2]);
    prpList(r, list2, pages.slice(1));
    const src = new Uint8Array(length).map((_, i) => (i * 7 + 1) & 0xff);
    const place = (bytes: Uint8Array) => {
      r.host.memory.set(bytes.subarray(0, 3584), Number(first - MEM_BASE));
      let at = 3584;
      for (const p of pages) {
        const n = Math.min(PAGE, length - at);
        if (n <= 0) break;
        r.host.memory.set(bytes.subarray(at, at + n), Number(p - MEM_BASE));
        at += n;
      }
    };
    place(src);
    assert.equal((await r.driver.submit(1, rw(0x01, 8, 128, first, list1))).status, 0, 'write');
    assert.deepEqual((r.ns as MemoryNamespace).bytes.subarray(8 * 512, 8 * 512 + length), src);
    place(new Uint8Array(length));
    assert.equal((await r.driver.submit(1, rw(0x02, 8, 128, first, list1))).status, 0, 'read');
    const back = new Uint8Array(length);
    back.set(r.host.bytes(first, 3584));
    let at = 3584;
    for (const p of pages) {
      const n = Math.min(PAGE, length - at);
      if (n <= 0) break;
      back.set(r.host.bytes(p, n), at);
      at += n;
    }
    assert.deepEqual(back, src);
  });

  test('a PRP list whose chain pointer points at its own page is read a bounded number of times', async () => {
    const r = await ready();
    const list = DATA + 0x8_0000n;
    // The list begins at the last qword of a page: that entry chains to the page's start, where
    // all 511 + 1 entries (the last one again the chain slot, now read as data) are read once.
    prpList(r, list + 0xff8n, [list]);
    for (let i = 0; i < 511; i++) prpList(r, list + BigInt(i * 8), [DATA + BigInt(i % 64) * 0x1000n]);
    const before = r.host.dmaCount;
    const c = await r.driver.submit(1, rw(0x01, 0, 1024, DATA, list + 0xff8n));
    assert.equal(c.status, 0);
    assert.ok(r.host.dmaCount - before < 200, `${r.host.dmaCount - before} DMAs`);
  });

  test('a controller built with a larger MDTS: Identify says so, 4 MiB through a chained PRP list, one block more is Invalid Field', async () => {
    const ns = new MemoryNamespace(8 << 20);
    const r = await ready({ ns, controller: { mdts: 10 } });
    assert.equal((await r.driver.admin({ opcode: 0x06, prp1: DATA, cdw10: 1 })).status, 0);
    assert.equal(r.host.bytes(DATA, 4096)[77], 10, 'MDTS 10: 4 MiB');
    // 1024 pages: PRP1, then 1023 entries over two list pages (511 and the chain pointer, 512),
    // the data pages taking turns among 16 so that the transfer fits the host's memory.
    const data = (i: number) => DATA + BigInt((i % 16) * PAGE);
    const list1 = DATA + 0x10_0000n;
    const list2 = DATA + 0x20_0000n;
    prpList(r, list1, [...Array.from({ length: 511 }, (_, i) => data(i + 1)), list2]);
    prpList(
      r,
      list2,
      Array.from({ length: 512 }, (_, i) => data(i + 512)),
    );
    for (let p = 0; p < 16; p++) r.host.bytes(data(p), PAGE).fill(p + 1);
    const c = await r.driver.submit(1, rw(0x01, 0, 8192, data(0), list1));
    assert.equal(c.status, 0, 'write 4 MiB');
    const disk = (ns as MemoryNamespace).bytes;
    for (let p = 0; p < 1024; p++) assert.equal(disk[p * PAGE + 7], (p % 16) + 1, `page ${p}`);
    const over = await r.driver.submit(1, rw(0x02, 0, 8193, data(0), list1));
    assert.deepEqual([over.status, over.dnr], [0x002, true], 'more than MDTS');
    assert.throws(() => rig({ controller: { mdts: 11 } }), /EINVAL.*MDTS 11/);
  });

  // [name, command, status]
  const refused: [string, Sqe, number][] = [
    ['LBA past the end', rw(0x02, 2047, 2, DATA), 0x080],
    ['SLBA 2^63', { ...rw(0x02, 0, 1, DATA), cdw11: 0x8000_0000 }, 0x080],
    ['more than MDTS (1025 blocks)', rw(0x02, 0, 1025, DATA, DATA + 0x1000n), 0x002],
    ['namespace 0', { ...rw(0x02, 0, 1, DATA), nsid: 0 }, 0x00b],
    ['namespace 2', { ...rw(0x01, 0, 1, DATA), nsid: 2 }, 0x00b],
    ['Compare (ONCS bit 0 clear)', rw(0x05, 0, 1, DATA), 0x001],
    ['fused', { ...rw(0x02, 0, 1, DATA), flags: 1 }, 0x002],
    ['an SGL (SGLS 0)', { ...rw(0x02, 0, 1, DATA), flags: 0x40 }, 0x002],
    ['PRP1 not dword aligned', rw(0x02, 0, 1, DATA + 1n), 0x013],
    ['PRP2 with an offset (two pages)', rw(0x02, 0, 16, DATA, DATA + 0x2010n), 0x013],
    ['a PRP list not qword aligned', rw(0x02, 0, 24, DATA, DATA + 0x3004n), 0x013],
    ['PRP1 outside host memory', rw(0x02, 0, 1, 0x2000n), 0x004],
    ['the second page outside host memory', rw(0x01, 0, 16, DATA, 0x3000n), 0x004],
    ['a PRP list outside host memory', rw(0x02, 0, 24, DATA, 0x3000n), 0x004],
  ];
  for (const [name, sqe, status] of refused)
    test(`${name} → 0x${status.toString(16)}`, async () => {
      const r = await ready();
      const c = await r.driver.submit(1, sqe);
      assert.deepEqual([c.status, c.dnr], [status, true]);
    });

  test('a PRP list entry with an offset → PRP Offset Invalid', async () => {
    const r = await ready();
    prpList(r, DATA + 0x8000n, [DATA + 0x1000n, DATA + 0x2100n]);
    assert.equal((await r.driver.submit(1, rw(0x02, 0, 24, DATA, DATA + 0x8000n))).status, 0x013);
  });

  test('media errors: a failing read is Unrecovered Read Error, a failing write Write Fault (SCT 2)', async () => {
    const ns = new CountingNamespace(1 << 20);
    const r = await ready({ ns });
    ns.failReads = true;
    assert.equal((await r.driver.submit(1, rw(0x02, 0, 1, DATA))).status, 0x281);
    ns.failWrites = true;
    assert.equal((await r.driver.submit(1, rw(0x01, 0, 1, DATA))).status, 0x280);
    assert.equal(r.ctl.ioStats.mediaErrors, 2);
  });
});

describe('durability: Flush, FUA and the write cache feature reach the namespace flush', () => {
  test('Flush (NSID 1 and FFFFFFFFh), FUA writes, and writes with the cache off each flush', async () => {
    const ns = new CountingNamespace(1 << 20);
    const r = await ready({ ns });
    assert.equal((await r.driver.submit(1, { opcode: 0x00, nsid: 1 })).status, 0);
    assert.equal((await r.driver.submit(1, { opcode: 0x00, nsid: 0xffffffff })).status, 0);
    assert.equal((await r.driver.submit(1, { opcode: 0x00, nsid: 0 })).status, 0x00b);
    assert.equal(ns.flushes, 2);
    await r.driver.submit(1, rw(0x01, 0, 1, DATA));
    assert.equal(ns.flushes, 2, 'a cached write does not flush');
    await r.driver.submit(1, rw(0x01, 0, 1, DATA, 0n, 1 << 30));
    assert.equal(ns.flushes, 3, 'FUA');
    await r.driver.admin({ opcode: 0x09, cdw10: 0x06, cdw11: 0 });
    await r.driver.submit(1, rw(0x01, 0, 1, DATA));
    assert.equal(ns.flushes, 4, 'write-through with the cache off');
  });
});

describe('Write Zeroes and Dataset Management (§6)', () => {
  test('Write Zeroes with and without DEAC zeroes the range, not past it', async () => {
    const r = await ready();
    const bytes = (r.ns as MemoryNamespace).bytes;
    bytes.fill(0xaa);
    assert.equal((await r.driver.submit(1, { opcode: 0x08, nsid: 1, cdw10: 4, cdw12: 7 })).status, 0);
    assert.ok(bytes.subarray(4 * 512, 12 * 512).every((b) => b === 0));
    assert.deepEqual([bytes[4 * 512 - 1], bytes[12 * 512]], [0xaa, 0xaa]);
    assert.equal(
      (await r.driver.submit(1, { opcode: 0x08, nsid: 1, cdw10: 100, cdw12: (1 << 25) | 0 })).status,
      0,
    );
    assert.equal(bytes[100 * 512], 0);
    assert.equal((await r.driver.submit(1, { opcode: 0x08, nsid: 1, cdw10: 2040, cdw12: 15 })).status, 0x080);
  });

  test('Dataset Management deallocate: every range checked first, then zeroed; without AD nothing changes', async () => {
    const r = await ready();
    const bytes = (r.ns as MemoryNamespace).bytes;
    bytes.fill(0x55);
    const ranges = (list: [number, number][]) => {
      const v = r.host.view(DATA, list.length * 16);
      list.forEach(([slba, nlb], i) => {
        v.setUint32(i * 16 + 4, nlb, true);
        v.setBigUint64(i * 16 + 8, BigInt(slba), true);
      });
    };
    ranges([
      [0, 2],
      [2000, 100],
    ]);
    assert.equal(
      (await r.driver.submit(1, { opcode: 0x09, nsid: 1, prp1: DATA, cdw10: 1, cdw11: 4 })).status,
      0x080,
    );
    assert.equal(bytes[0], 0x55, 'nothing deallocated when one range is out of range');
    ranges([
      [0, 2],
      [10, 1],
      [20, 0],
    ]);
    assert.equal(
      (await r.driver.submit(1, { opcode: 0x09, nsid: 1, prp1: DATA, cdw10: 2, cdw11: 0 })).status,
      0,
    );
    assert.equal(bytes[0], 0x55, 'no AD: a hint only');
    assert.equal(
      (await r.driver.submit(1, { opcode: 0x09, nsid: 1, prp1: DATA, cdw10: 2, cdw11: 4 })).status,
      0,
    );
    assert.ok(bytes.subarray(0, 1024).every((b) => b === 0));
    assert.deepEqual([bytes[1024], bytes[10 * 512], bytes[11 * 512]], [0x55, 0, 0x55]);
  });
});

describe('submission queues in the Controller Memory Buffer (§4.7)', () => {
  const CBA = 0xf000_0000n;
  const cmbRig = async () => {
    const r = rig({ controller: { cmb: { bar: 2, size: 4 << 20 } } });
    r.host.cmbBytes = new Uint8Array(4 << 20);
    r.ctl.write(0x50, 4, Number(CBA) | 3); // CRE | CMSE | CBA (Linux: hi_lo_writeq)
    r.ctl.write(0x54, 4, 0);
    await r.driver.enable();
    return r;
  };

  test('an I/O SQ in the CMB: entries come from the BAR memory, not by DMA', async () => {
    const r = await cmbRig();
    const cqBase = LAYOUT.IOCQ;
    assert.equal(
      (await r.driver.admin({ opcode: 0x05, prp1: cqBase, cdw10: (31 << 16) | 1, cdw11: 0x10003 })).status,
      0,
    );
    const sq = await r.driver.admin({
      opcode: 0x01,
      prp1: CBA + 0x1000n,
      cdw10: (31 << 16) | 1,
      cdw11: 0x10001,
    });
    assert.equal(sq.status, 0);
    r.driver.track(1, {
      sqBase: CBA + 0x1000n,
      cqBase,
      size: 32,
      sqBytes: r.host.cmbBytes!,
      sqOffset: 0x1000,
    });
    r.host.memory.fill(0x3c, Number(DATA - MEM_BASE), Number(DATA - MEM_BASE) + 4096);
    const dma = r.host.dmaCount;
    for (let i = 0; i < 40; i++) assert.equal((await r.driver.submit(1, rw(0x01, i * 8, 8, DATA))).status, 0);
    assert.equal(r.ctl.stats.sqesFromCmb, 40);
    assert.equal(r.ctl.sqs[1]!.fetchedFromCmb, 40);
    assert.equal(r.host.dmaCount - dma, 80, 'one data read and one CQE write per command, no SQ fetch');
    assert.equal((r.ns as MemoryNamespace).bytes[39 * 4096], 0x3c);
  });

  // [name, command, status]
  const refused: [string, Sqe, number][] = [
    ['a CQ in the CMB (CMBSZ.CQS 0)', { opcode: 0x05, prp1: CBA, cdw10: (15 << 16) | 1, cdw11: 3 }, 0x012],
    [
      'an SQ across the CMB end',
      { opcode: 0x01, prp1: CBA + 0x3f_f000n, cdw10: (127 << 16) | 1, cdw11: 0x10001 },
      0x012,
    ],
  ];
  for (const [name, sqe, status] of refused)
    test(`${name} → 0x${status.toString(16)}`, async () => {
      const r = await cmbRig();
      if (sqe.opcode === 0x01)
        await r.driver.admin({ opcode: 0x05, prp1: LAYOUT.IOCQ, cdw10: (15 << 16) | 1, cdw11: 3 });
      assert.equal((await r.driver.admin(sqe)).status, status);
    });

  test('a data pointer into the CMB (RDS/WDS 0) → Invalid Use of Controller Memory Buffer', async () => {
    const r = await cmbRig();
    await r.driver.createIoQueues(1);
    assert.equal((await r.driver.submit(1, rw(0x02, 0, 1, CBA + 0x8000n))).status, 0x012);
    assert.equal((await r.driver.submit(1, rw(0x02, 0, 24, DATA, CBA))).status, 0x012, 'a PRP list there');
  });

  test('an admin CQ in the CMB: enable refused with CSTS.CFS', async () => {
    const r = rig({ controller: { cmb: { bar: 2, size: 4 << 20 } } });
    r.ctl.write(0x50, 4, Number(LAYOUT.ACQ) | 3);
    r.ctl.write(0x54, 4, 0);
    assert.equal(await r.driver.enable(), 2);
  });

  test('CMBMSC with a CBA that wraps 2^64 sets CMBSTS.CBAI and the space stays off', async () => {
    const r = rig({ controller: { cmb: { bar: 2, size: 4 << 20 } } });
    r.ctl.write(0x54, 4, 0xffff_ffff);
    r.ctl.write(0x50, 4, 0xfff0_0003);
    assert.equal(r.ctl.read(0x58, 4), 1);
    assert.equal(r.ctl.cmbOffset(0xffff_ffff_fff0_0000n, 64), undefined);
  });
});
