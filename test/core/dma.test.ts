/**
 * DmaSpace (src/core/dma.ts): read returns an independent copy (small ones carved from a shared
 * slab, aligned, never overlapping), readInto copies into the caller's buffer, and both fail
 * with EFAULT / EPERM exactly as before for unmapped or write-only memory.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { DMA_SLAB_BYTES, DMA_SLAB_MAX_READ, DmaSpace } from '../../src/core/dma.js';
import { errnoOfAsync } from '../helpers/errno.js';

function space(): { dma: DmaSpace; mem: Uint8Array } {
  const mem = new Uint8Array(64 * 1024).map((_, i) => (i * 13 + 1) & 0xff);
  const dma = new DmaSpace();
  dma.map(0x10000n, BigInt(mem.length), { bytes: mem, readable: true, writable: true });
  dma.map(0x40000n, 0x1000n, { bytes: new Uint8Array(0x1000), readable: false, writable: true });
  return { dma, mem };
}

test('read: copies that do not alias client memory or each other, 8-byte aligned', async () => {
  const { dma, mem } = space();
  const copies: Uint8Array[] = [];
  // Enough small reads to cross a slab boundary, plus sizes around the slab limit.
  const sizes = [1, 3, 8, 4096, DMA_SLAB_MAX_READ, DMA_SLAB_MAX_READ + 1, 5];
  for (let i = 0; i < DMA_SLAB_BYTES / 4096 + 4; i++) sizes.push(4096);
  for (const [i, n] of sizes.entries()) {
    const off = (i * 97) % (mem.length - n);
    const c = await dma.read(0x10000n + BigInt(off), n);
    assert.equal(c.length, n);
    assert.equal(c.byteOffset % 8, 0, `copy ${i} aligned`);
    assert.deepEqual(c, mem.subarray(off, off + n), `copy ${i} holds the bytes`);
    copies.push(c);
  }
  const snapshot = copies.map((c) => Uint8Array.from(c));
  mem.fill(0xee); // the client changes its memory: the copies keep what was read
  for (const c of copies) c.reverse(); // and writing one copy touches no other
  for (const [i, c] of copies.entries()) assert.deepEqual(c, snapshot[i]!.reverse(), `copy ${i}`);
});

test('readInto: the bytes land in the caller buffer; errnos as read', async () => {
  const { dma, mem } = space();
  const dst = new Uint8Array(4096);
  await dma.readInto(0x10100n, dst);
  assert.deepEqual(dst, mem.subarray(0x100, 0x1100));
  const part = new Uint8Array(16).fill(0xaa);
  await dma.readInto(0x10000n + 0xfff0n, part); // the last 16 bytes of the range
  assert.deepEqual(part, mem.subarray(0xfff0));
  const table: [string, bigint, number, number][] = [
    ['past the end of the range', 0x10000n + 0xfff8n, 16, Errno.EFAULT],
    ['nothing mapped', 0x30000n, 4, Errno.EFAULT],
    ['write-only mapping', 0x40000n, 4, Errno.EPERM],
  ];
  for (const [what, iova, n, errno] of table) {
    assert.equal(await errnoOfAsync(dma.readInto(iova, new Uint8Array(n))), errno, `readInto: ${what}`);
    assert.equal(await errnoOfAsync(dma.read(iova, n)), errno, `read: ${what}`);
  }
});

test('readInto through remote memory (DMA_READ messages) copies the reply', async () => {
  const dma = new DmaSpace();
  const asked: [bigint, number][] = [];
  dma.map(0x1000n, 0x1000n, {
    readable: true,
    writable: true,
    remote: {
      read: async (iova, length) => {
        asked.push([iova, length]);
        return new Uint8Array(length).fill(0x5a);
      },
      write: async () => {},
    },
  });
  const dst = new Uint8Array(64);
  await dma.readInto(0x1010n, dst);
  assert.deepEqual(asked, [[0x1010n, 64]]);
  assert.ok(dst.every((b) => b === 0x5a));
});
