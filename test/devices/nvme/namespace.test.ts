/**
 * The file-backed namespace: created sparse, refused with the right errno when the file does not
 * fit, reads and writes at offsets, deallocation as a hole that reads back as zeroes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import { FileNamespace } from '../../../src/devices/nvme/namespace.js';
import { VfioError } from '../../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-ns-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const errno = (n: number) => (e: unknown) => e instanceof VfioError && e.errno === n;

describe('FileNamespace', () => {
  test('a missing file is created sparse with --size: no blocks allocated', async () => {
    const path = join(dir, 'new.img');
    const ns = await FileNamespace.open(path, { size: 64 << 20, blockSize: 512 });
    try {
      const st = statSync(path);
      assert.equal(st.size, 64 << 20);
      assert.equal(st.blocks, 0, 'sparse');
      assert.equal(st.mode & 0o777, 0o600);
      assert.equal(ns.size, 64 << 20);
    } finally {
      await ns.close();
    }
  });

  // [name, file contents or undefined (missing), size option, errno]
  const refused: [string, number | undefined, number | undefined, number][] = [
    ['missing file and no size', undefined, undefined, Errno.ENOENT],
    ['existing file of another size', 1 << 20, 2 << 20, Errno.EINVAL],
    ['size not a multiple of the block size', undefined, 1000, Errno.EINVAL],
    ['size 0', undefined, 0, Errno.EINVAL],
    ['an existing empty file', 0, undefined, Errno.EINVAL],
    ['an existing file of 1000 bytes', 1000, undefined, Errno.EINVAL],
  ];
  for (const [name, existing, size, e] of refused)
    test(`refused: ${name}`, async () => {
      const path = join(dir, `${name.replace(/\W+/g, '-')}.img`);
      if (existing !== undefined) {
        writeFileSync(path, '');
        truncateSync(path, existing);
      }
      await assert.rejects(
        FileNamespace.open(path, { ...(size !== undefined ? { size } : {}), blockSize: 512 }),
        errno(e),
      );
    });

  test('an existing file keeps its size; writes land at their offset; deallocate punches a hole', async () => {
    const path = join(dir, 'rw.img');
    writeFileSync(path, '');
    truncateSync(path, 8 << 20);
    const ns = await FileNamespace.open(path, { blockSize: 4096 });
    try {
      assert.equal(ns.size, 8 << 20);
      const data = new Uint8Array(1 << 20).fill(0x5a);
      await ns.write(1 << 20, data);
      await ns.flush();
      const back = new Uint8Array(4096);
      await ns.read((1 << 20) + 4096, back);
      assert.ok(back.every((b) => b === 0x5a));
      const allocated = statSync(path).blocks;
      assert.ok(allocated >= 2048, `${allocated} blocks after 1 MiB written`);
      await ns.deallocate(1 << 20, 512 << 10);
      assert.ok(statSync(path).blocks < allocated, 'blocks released');
      await ns.read(1 << 20, back);
      assert.ok(
        back.every((b) => b === 0),
        'deallocated blocks read zero',
      );
      await ns.read((1 << 20) + (512 << 10), back);
      assert.ok(
        back.every((b) => b === 0x5a),
        'the rest is untouched',
      );
      // The file shrinks behind our back: what is gone reads as zeroes, not an error.
      truncateSync(path, 4096);
      await ns.read(0, back);
      await ns.read(1 << 20, back);
      assert.ok(back.every((b) => b === 0));
    } finally {
      await ns.close();
    }
  });
});
