import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  closeFd,
  dupFd,
  fstatSize,
  ftruncate,
  getpid,
  getuid,
  ioctl,
  MAX_OFFSET,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  openFdCount,
  openPath,
  pageSize,
  pread,
  preadInto,
  pwrite,
  readInto,
  sendMsg,
  setNonBlocking,
  socketPair,
  writeFd,
} from '../../src/native/index.js';
import { throwsErrno } from './helpers.js';

pageSize(); // load koffi and libc before counting fds
const fdsAtStart = openFdCount();
const enc = new TextEncoder();

test('memfdCreate sizes the file; pwrite then pread see the same bytes', () => {
  const fd = memfdCreate('fd-test', 4096);
  try {
    assert.equal(fstatSize(fd), 4096n);
    assert.equal(pwrite(fd, enc.encode('hello'), 100n), 5);
    assert.deepEqual(pread(fd, 5, 100n), enc.encode('hello'));
    assert.deepEqual(pread(fd, 3, 4094n), new Uint8Array([0, 0]), 'short read at end of file');
    assert.equal(pread(fd, 0, 0n).length, 0);
    const into = new Uint8Array(16).subarray(4, 9);
    assert.equal(preadInto(fd, into, 100n), 5);
    assert.deepEqual(into, enc.encode('hello'));
    ftruncate(fd, 8192n);
    assert.equal(fstatSize(fd), 8192n);
  } finally {
    closeFd(fd);
  }
});

test('pread/pwrite at large bigint offsets', () => {
  const fd = memfdCreate('fd-offsets', 0);
  try {
    // Sparse shmem file: only the written page costs memory.
    const offsets = [1n << 32n, (1n << 40n) + 3n, (1n << 50n) - 1n];
    for (const off of offsets) {
      const data = enc.encode(`at ${off}`);
      assert.equal(pwrite(fd, data, off), data.length);
      assert.deepEqual(pread(fd, data.length, off), data);
    }
    assert.equal(fstatSize(fd), (1n << 50n) - 1n + BigInt(enc.encode(`at ${(1n << 50n) - 1n}`).length));
    assert.equal(pread(fd, 8, MAX_OFFSET - 8n).length, 0, 'past the end: nothing, no error');
    // The kernel refuses a range that would end past 2^63 - 1 (fs/read_write.c rw_verify_area).
    throwsErrno(() => pread(fd, 8, MAX_OFFSET), Errno.EINVAL, 'pread');
    throwsErrno(() => pread(fd, 1, MAX_OFFSET + 1n), Errno.EINVAL, 'pread');
    throwsErrno(() => pread(fd, 1, -1n), Errno.EINVAL, 'pread');
    throwsErrno(() => pwrite(fd, new Uint8Array(1), -5n), Errno.EINVAL, 'pwrite');
    throwsErrno(() => pread(fd, -1, 0n), Errno.EINVAL, 'pread');
  } finally {
    closeFd(fd);
  }
});

test('failures carry the real errno and the syscall name', () => {
  const memfd = memfdCreate('fd-errors', 4096);
  const dir = mkdtempSync(join(tmpdir(), 'vfio-native-'));
  const [a, b] = socketPair();
  try {
    const table: [string, () => unknown, number, string][] = [
      ['close(-1)', () => closeFd(-1), Errno.EBADF, 'close'],
      ['close of a never-opened fd', () => closeFd(987654), Errno.EBADF, 'close'],
      ['dup(-1)', () => dupFd(-1), Errno.EBADF, 'fcntl'],
      ['pread on bad fd', () => pread(-1, 4, 0n), Errno.EBADF, 'pread'],
      ['pread on a socket', () => pread(a, 4, 0n), Errno.ESPIPE, 'pread'],
      ['pwrite on bad fd', () => pwrite(-1, new Uint8Array(1), 0n), Errno.EBADF, 'pwrite'],
      ['ioctl with random request on a memfd', () => ioctl(memfd, 0x1234_5678, null), Errno.ENOTTY, 'ioctl'],
      ['ioctl int arg on a memfd', () => ioctl(memfd, 0x1234, 5), Errno.ENOTTY, 'ioctl'],
      ['ioctl string arg on a memfd', () => ioctl(memfd, 0x1234, 'dev'), Errno.ENOTTY, 'ioctl'],
      ['ioctl string arg with NUL', () => ioctl(memfd, 0x1234, 'a\0b'), Errno.EINVAL, 'ioctl'],
      ['ioctl on bad fd', () => ioctl(-1, 0x1234, new Uint8Array(4)), Errno.EBADF, 'ioctl'],
      ['open of a missing file', () => openPath(join(dir, 'missing'), O_RDONLY), Errno.ENOENT, 'open'],
      ['open of a path with NUL', () => openPath('/tmp/a\0b', O_RDONLY), Errno.EINVAL, 'open'],
      ['ftruncate negative', () => ftruncate(memfd, -1), Errno.EINVAL, 'ftruncate'],
      ['ftruncate on a socket', () => ftruncate(a, 0), Errno.EINVAL, 'ftruncate'],
      ['statx on bad fd', () => fstatSize(-1), Errno.EBADF, 'statx'],
      ['memfd name with NUL', () => memfdCreate('x\0y', 0), Errno.EINVAL, 'memfd_create'],
      ['setNonBlocking on bad fd', () => setNonBlocking(-1), Errno.EBADF, 'fcntl'],
    ];
    for (const [what, fn, errno, op] of table) {
      try {
        throwsErrno(fn, errno, op);
      } catch (err) {
        assert.fail(`${what}: ${(err as Error).message}`);
      }
    }
  } finally {
    closeFd(memfd);
    closeFd(a);
    closeFd(b);
    rmSync(dir, { recursive: true });
  }
});

test('ioctl writes land in the caller buffer in place (FIONREAD on a socket)', () => {
  const FIONREAD = 0x541b; // asm-generic/ioctls.h
  const [a, b] = socketPair();
  try {
    assert.equal(sendMsg(a, [enc.encode('12345')]), 5);
    const buf = new Uint8Array(12).fill(0xff);
    const arg = buf.subarray(4, 8); // not at the start of its ArrayBuffer
    assert.equal(ioctl(b, FIONREAD, arg), 0);
    assert.equal(new DataView(buf.buffer).getInt32(4, true), 5);
    assert.deepEqual(
      [...buf.subarray(0, 4), ...buf.subarray(8)],
      new Array(8).fill(0xff),
      'neighbours untouched',
    );
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

test('openPath, dupFd, readInto, writeFd on a real file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-native-'));
  const path = join(dir, 'f');
  writeFileSync(path, 'abcdef');
  const fd = openPath(path, O_RDWR | O_CLOEXEC);
  try {
    const dup = dupFd(fd);
    try {
      assert.notEqual(dup, fd);
      const buf = new Uint8Array(3);
      assert.equal(readInto(fd, buf), 3);
      assert.deepEqual(buf, enc.encode('abc'));
      // A dup shares the file offset.
      assert.equal(readInto(dup, buf), 3);
      assert.deepEqual(buf, enc.encode('def'));
      assert.equal(readInto(dup, buf), 0, 'end of file');
      assert.equal(writeFd(dup, enc.encode('gh')), 2);
      assert.equal(fstatSize(fd), 8n);
    } finally {
      closeFd(dup);
    }
  } finally {
    closeFd(fd);
    rmSync(dir, { recursive: true });
  }
});

test('process facts', () => {
  assert.equal(getpid(), process.pid);
  assert.equal(getuid(), process.getuid?.());
  assert.equal(pageSize(), 4096);
  const before = openFdCount();
  const fd = memfdCreate('count', 0);
  assert.equal(openFdCount(), before + 1);
  closeFd(fd);
  assert.equal(openFdCount(), before);
});

test('no fd leaked by this file', () => {
  assert.equal(openFdCount(), fdsAtStart);
});
