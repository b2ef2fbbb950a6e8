/**
 * DmaSpace's sorted-array structure (binary search, tombstones on unmap): the same answers as a
 * plain list of ranges for every map/unmap/access, checked against a model over random
 * operations; complexity is measured in bench/dma-maps.ts, not asserted.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { DmaSpace } from '../../src/core/dma.js';
import { VfioError } from '../../src/errors.js';

function errnoOf(fn: () => unknown): number {
  try {
    fn();
    return 0;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}

async function readErrno(d: DmaSpace, iova: bigint, n: number): Promise<number> {
  try {
    await d.read(iova, n);
    return 0;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}

describe('DmaSpace: sorted ranges with binary search', () => {
  it('agrees with a list model over random map/unmap/read (tombstones and compaction included)', async () => {
    const d = new DmaSpace(100_000);
    const model: { iova: bigint; size: bigint }[] = [];
    let x = 7;
    const rnd = (n: number) => {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      return x % n;
    };
    let released = 0;
    for (let step = 0; step < 6000; step++) {
      const page = BigInt(rnd(400));
      const pages = BigInt(1 + rnd(4));
      const iova = page * 4096n;
      const size = pages * 4096n;
      const overlaps = model.some((r) => iova < r.iova + r.size && r.iova < iova + size);
      const op = rnd(4);
      if (op === 3) {
        // DMA_UNMAP's exact match (vfio-user): only a live mapping of exactly this range goes.
        const r = model.find((m) => m.iova === iova && m.size === size);
        const before = released;
        assert.equal(d.unmapExact(iova, size), r !== undefined, `unmapExact 0x${iova.toString(16)}`);
        assert.equal(released - before, r ? 1 : 0);
        if (r) model.splice(model.indexOf(r), 1);
      } else if (op === 0) {
        const e = errnoOf(() =>
          d.map(iova, size, { readable: true, writable: true, release: () => released++ }),
        );
        assert.equal(e, overlaps ? Errno.EEXIST : 0, `map 0x${iova.toString(16)}+0x${size.toString(16)}`);
        if (!e) model.push({ iova, size });
      } else if (op === 1) {
        const hit = model.filter((r) => iova < r.iova + r.size && r.iova < iova + size);
        const splits = hit.some((r) => r.iova < iova || r.iova + r.size > iova + size);
        const before = released;
        let n = -1;
        const e = errnoOf(() => {
          n = d.unmap(iova, size);
        });
        assert.equal(e, splits ? Errno.EINVAL : 0);
        if (!e) {
          assert.equal(n, hit.length);
          assert.equal(released - before, hit.length);
          for (const r of hit) model.splice(model.indexOf(r), 1);
        }
      } else {
        const at = iova + BigInt(rnd(8192));
        const len = 1 + rnd(64);
        const inside = model.some((r) => at >= r.iova && at + BigInt(len) <= r.iova + r.size);
        // Mapped without bytes or remote: a hit gets past the lookup and fails in the access.
        const e = await readErrno(d, at, len).catch(() => -1);
        if (inside) assert.notEqual(e, Errno.EFAULT, `read 0x${at.toString(16)}+${len}`);
        else assert.equal(e, Errno.EFAULT, `read 0x${at.toString(16)}+${len}`);
      }
      assert.equal(d.count, model.length);
    }
    d.unmapAll();
    assert.equal(d.count, 0);
  });

  it('the range last hit is tried first: its bytes at the right offset, dropped with its mapping, exact past 2^53', async () => {
    const d = new DmaSpace();
    const a = new Uint8Array(8192).map((_, i) => i & 0xff);
    const b = new Uint8Array(8192).fill(0xbb);
    const efault = (e: unknown) => e instanceof VfioError && e.errno === Errno.EFAULT;
    d.map(0x1000n, 8192n, { bytes: a, readable: true, writable: true });
    assert.deepEqual([...(await d.read(0x1010n, 4))], [0x10, 0x11, 0x12, 0x13]);
    await assert.rejects(d.read(0x1000n + 8190n, 4), efault); // past the end of the range last hit
    await d.write(0x1001n, Uint8Array.of(0xee));
    assert.equal(a[1], 0xee);
    d.unmap(0x1000n, 8192n);
    await assert.rejects(d.read(0x1010n, 4), efault);
    d.map(0x1000n, 8192n, { bytes: b, readable: true, writable: true });
    assert.deepEqual([...(await d.read(0x1010n, 2))], [0xbb, 0xbb]);
    d.unmapAll();
    await assert.rejects(d.read(0x1010n, 4), efault);
    // Past 2^53 doubles are not exact: such ranges are found and offset in BigInt.
    for (const base of [(1n << 60n) + 0x1000n, (1n << 53n) - 4096n, 0xffff_ffff_ffff_e000n]) {
      d.map(base, 8192n, { bytes: a, readable: true, writable: true });
      assert.deepEqual([...(await d.read(base + 0x11n, 3))], [0x11, 0x12, 0x13], base.toString(16));
      assert.deepEqual([...(await d.read(base + 8189n, 3))], [0xfd, 0xfe, 0xff], base.toString(16));
      await assert.rejects(d.read(base + 8190n, 4), efault);
      await assert.rejects(d.read(base - 1n, 2), efault);
      d.unmapAll();
    }
  });

  it('unmapExact never finds a tombstone: a second unmap of the same range releases nothing', () => {
    const d = new DmaSpace(10);
    let released = 0;
    const t = { readable: true, writable: true, release: () => released++ };
    d.map(0n, 4096n, t);
    d.map(0x10000n, 4096n, t); // keeps the first one from being the trailing entry
    d.unmap(0n, 4096n); // a tombstone now
    assert.equal(d.unmapExact(0n, 4096n), false, 'already unmapped');
    assert.equal(released, 1);
    d.map(0x20000n, 4096n, t);
    assert.equal(d.unmapExact(0x20000n, 4096n), true);
    assert.equal(d.unmapExact(0x20000n, 4096n), false, 'already unmapped');
    assert.equal(d.unmapExact(0x10000n, 8192n), false, 'wrong size');
    assert.deepEqual([released, d.count], [2, 1]);
    d.unmapAll();
    assert.equal(released, 3);
  });

  it('maxMaps counts live ranges only; unmapAll releases each live range once', () => {
    const d = new DmaSpace(3);
    let released = 0;
    const t = { readable: true, writable: false, release: () => released++ };
    for (const p of [0n, 1n, 2n]) d.map(p * 4096n, 4096n, t);
    assert.equal(
      errnoOf(() => d.map(0x10000n, 4096n, t)),
      Errno.ENOSPC,
    );
    d.unmap(4096n, 4096n);
    d.map(0x10000n, 4096n, t);
    d.unmap(0x10000n, 4096n);
    d.map(4096n, 4096n, { readable: true, writable: false }); // over the tombstone
    assert.equal(d.count, 3);
    d.unmapAll();
    assert.equal(released, 4);
  });
});
