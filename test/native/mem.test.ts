import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  closeFd,
  MAP_PRIVATE,
  MAP_SHARED,
  MAX_MAPPING_BYTES,
  memfdCreate,
  mmap,
  type NativeMapping,
  openFdCount,
  PROT_READ,
  PROT_WRITE,
  pageSize,
  pread,
  pwrite,
} from '../../src/native/index.js';
import { collectGarbage, mapsLineAt, procMaps, settle, throwsErrno } from './helpers.js';

pageSize();
const fdsAtStart = openFdCount();
const RW = PROT_READ | PROT_WRITE;

test('a write through one mapping is seen by a second mapping and by pread (zero copy)', () => {
  const fd = memfdCreate('mem-zero-copy', 3 * 4096);
  const a = mmap(fd, 0n, 3 * 4096, RW, MAP_SHARED);
  const b = mmap(fd, 4096n, 2 * 4096, RW, MAP_SHARED);
  try {
    assert.notEqual(a.address, b.address);
    assert.equal(a.bytes.length, 3 * 4096);
    assert.equal(a.bytes.byteOffset, 0);
    a.bytes.set([1, 2, 3, 4], 4096 + 10);
    assert.deepEqual([...b.bytes.subarray(10, 14)], [1, 2, 3, 4], 'second mapping sees the write');
    assert.deepEqual(pread(fd, 4, 4096n + 10n), new Uint8Array([1, 2, 3, 4]), 'pread sees the write');
    // And the other way round: pwrite on the fd shows up in both views at once.
    pwrite(fd, new Uint8Array([9, 8]), 2n * 4096n);
    assert.deepEqual([...a.bytes.subarray(2 * 4096, 2 * 4096 + 2)], [9, 8]);
    assert.deepEqual([...b.bytes.subarray(4096, 4096 + 2)], [9, 8]);
    // The view's ArrayBuffer starts at the mapping itself.
    const line = mapsLineAt(a.address);
    assert.ok(line?.includes('/memfd:mem-zero-copy'), `maps line for a: ${line}`);
    assert.ok(line?.includes(' rw-s '), 'shared, read-write');
  } finally {
    a.unmap();
    b.unmap();
    closeFd(fd);
  }
});

test('MAP_PRIVATE writes stay private', () => {
  const fd = memfdCreate('mem-private', 4096);
  const m = mmap(fd, 0n, 4096, RW, MAP_PRIVATE);
  try {
    m.bytes[0] = 77;
    assert.deepEqual(pread(fd, 1, 0n), new Uint8Array([0]));
  } finally {
    m.unmap();
    closeFd(fd);
  }
});

test('the view stays valid while only the view is held, across garbage collections', async () => {
  const fd = memfdCreate('mem-gc-keep', 4096);
  const bytes = ((): Uint8Array => mmap(fd, 0n, 4096, RW, MAP_SHARED).bytes)();
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await settle();
  }
  bytes[123] = 45;
  assert.deepEqual(pread(fd, 1, 123n), new Uint8Array([45]));
  assert.ok(
    procMaps().some((l) => l.includes('/memfd:mem-gc-keep')),
    'still mapped',
  );
  closeFd(fd);
});

test('unmap really removes the mapping; it is idempotent', () => {
  const fd = memfdCreate('mem-unmap', 2 * 4096);
  const m = mmap(fd, 0n, 2 * 4096, RW, MAP_SHARED);
  assert.ok(mapsLineAt(m.address)?.includes('/memfd:mem-unmap'));
  assert.equal(m.mapped, true);
  m.unmap();
  assert.equal(m.mapped, false);
  m.unmap();
  assert.ok(!procMaps().some((l) => l.includes('/memfd:mem-unmap')), 'memfd no longer mapped');
  // What is left at the address is an inaccessible reservation, not the file.
  const line = mapsLineAt(m.address);
  assert.ok(line === undefined || line.includes(' ---p '), `left behind: ${line}`);
  closeFd(fd);
});

test('the reservation left by unmap is released once the view is collected', async () => {
  const fd = memfdCreate('mem-reclaim', 4096);
  let m: NativeMapping | undefined = mmap(fd, 0n, 4096, RW, MAP_SHARED);
  const address = m.address;
  m.unmap();
  closeFd(fd);
  assert.ok(mapsLineAt(address)?.includes(' ---p '), 'reserved until collected');
  m = undefined;
  for (let i = 0; i < 20 && mapsLineAt(address)?.includes(' ---p '); i++) {
    collectGarbage();
    await settle();
  }
  const line = mapsLineAt(address);
  assert.ok(line === undefined || !line.includes(' ---p '), `still reserved: ${line}`);
});

test('touching a view after unmap faults at once (child process)', () => {
  const native = new URL('../../src/native/index.js', import.meta.url).href;
  const script = `
    import { memfdCreate, mmap, PROT_READ, PROT_WRITE, MAP_SHARED } from ${JSON.stringify(native)};
    const fd = memfdCreate('stale', 4096);
    const m = mmap(fd, 0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED);
    m.bytes[0] = 1;
    m.unmap();
    process.stdout.write('unmapped\\n');
    m.bytes[0] = 2;
    process.stdout.write('survived\\n');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.stdout, 'unmapped\n', `stderr: ${r.stderr}`);
  assert.equal(r.signal, 'SIGSEGV');
});

test('mmap failures carry errno', () => {
  const fd = memfdCreate('mem-errors', 4096);
  try {
    throwsErrno(() => mmap(-1, 0n, 4096, PROT_READ, MAP_SHARED), Errno.EBADF, 'mmap');
    throwsErrno(() => mmap(987654, 0n, 4096, PROT_READ, MAP_SHARED), Errno.EBADF, 'mmap');
    throwsErrno(() => mmap(fd, 1n, 4096, PROT_READ, MAP_SHARED), Errno.EINVAL, 'mmap'); // unaligned offset
    throwsErrno(() => mmap(fd, 0n, 4096, PROT_READ, 0), Errno.EINVAL, 'mmap'); // neither shared nor private
    throwsErrno(() => mmap(fd, 0n, 0, PROT_READ, MAP_SHARED), Errno.EINVAL, 'mmap');
    throwsErrno(() => mmap(fd, -4096n, 4096, PROT_READ, MAP_SHARED), Errno.EINVAL, 'mmap');
    throwsErrno(() => mmap(fd, 0n, MAX_MAPPING_BYTES + 1, PROT_READ, MAP_SHARED), Errno.EINVAL, 'mmap');
  } finally {
    closeFd(fd);
  }
});

test('no fd leaked by this file', () => {
  assert.equal(openFdCount(), fdsAtStart);
});
