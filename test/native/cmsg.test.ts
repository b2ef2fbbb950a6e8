import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CMSGHDR_SIZE,
  cmsgAlign,
  cmsgLen,
  cmsgSpace,
  IOVEC_SIZE,
  MSGHDR_SIZE,
  parseControl,
  readMsghdr,
  rightsSpace,
  SCM_RIGHTS,
  SOL_SOCKET,
  writeIovec,
  writeMsghdr,
  writeRights,
} from '../../src/native/cmsg.js';

test('struct sizes on x86_64', () => {
  assert.equal(MSGHDR_SIZE, 56);
  assert.equal(IOVEC_SIZE, 16);
  assert.equal(CMSGHDR_SIZE, 16);
});

test('CMSG_ALIGN / CMSG_LEN / CMSG_SPACE match glibc for fd counts', () => {
  // [data bytes, CMSG_ALIGN, CMSG_LEN, CMSG_SPACE] as glibc's macros give them on x86_64.
  const table: [number, number, number, number][] = [
    [0, 0, 16, 16],
    [1, 8, 17, 24],
    [4, 8, 20, 24],
    [8, 8, 24, 24],
    [12, 16, 28, 32],
    [16, 16, 32, 32],
    [253 * 4, 1016, 1028, 1032],
  ];
  for (const [n, align, len, space] of table) {
    assert.equal(cmsgAlign(n), align, `CMSG_ALIGN(${n})`);
    assert.equal(cmsgLen(n), len, `CMSG_LEN(${n})`);
    assert.equal(cmsgSpace(n), space, `CMSG_SPACE(${n})`);
  }
  assert.equal(rightsSpace(0), 0);
  assert.equal(rightsSpace(1), 24);
  assert.equal(rightsSpace(3), 32);
});

test('msghdr round-trips and puts each field at its offset', () => {
  const v = new DataView(new ArrayBuffer(72));
  new Uint8Array(v.buffer).fill(0xee);
  const m = {
    name: 0x1111n,
    namelen: 0x22,
    iov: 0x3333_4444_5555n,
    iovlen: 7,
    control: 0x6666n,
    controllen: 0x1_0000_0010, // above 2^32: both halves of the size_t
    flags: -2,
  };
  writeMsghdr(v, 8, m);
  assert.deepEqual(readMsghdr(v, 8), m);
  assert.equal(v.getBigUint64(8 + 0, true), 0x1111n);
  assert.equal(v.getUint32(8 + 8, true), 0x22);
  assert.equal(v.getUint32(8 + 12, true), 0, 'padding after msg_namelen is zeroed');
  assert.equal(v.getBigUint64(8 + 16, true), 0x3333_4444_5555n);
  assert.equal(v.getBigUint64(8 + 24, true), 7n);
  assert.equal(v.getBigUint64(8 + 32, true), 0x6666n);
  assert.equal(v.getBigUint64(8 + 40, true), 0x1_0000_0010n);
  assert.equal(v.getInt32(8 + 48, true), -2);
  assert.equal(v.getUint32(8 + 52, true), 0, 'tail padding is zeroed');
  assert.equal(v.getUint8(7), 0xee, 'nothing written before');
  assert.equal(v.getUint8(8 + 56), 0xee, 'nothing written after 56 bytes');
});

test('iovec entries are 16 bytes apart', () => {
  const v = new DataView(new ArrayBuffer(48));
  writeIovec(v, 0, 0, 0xaan, 3);
  writeIovec(v, 0, 2, 0xbbn, 5);
  assert.equal(v.getBigUint64(0, true), 0xaan);
  assert.equal(v.getBigUint64(8, true), 3n);
  assert.equal(v.getBigUint64(32, true), 0xbbn);
  assert.equal(v.getBigUint64(40, true), 5n);
});

test('SCM_RIGHTS message layout, and parse reads it back', () => {
  const v = new DataView(new ArrayBuffer(64));
  new Uint8Array(v.buffer).fill(0xff);
  assert.equal(writeRights(v, 0, []), 0);
  const used = writeRights(v, 0, [3, 4, 5]);
  assert.equal(used, 32);
  assert.equal(v.getBigUint64(0, true), 28n, 'cmsg_len = CMSG_LEN(12)');
  assert.equal(v.getInt32(8, true), SOL_SOCKET);
  assert.equal(v.getInt32(12, true), SCM_RIGHTS);
  assert.deepEqual([v.getInt32(16, true), v.getInt32(20, true), v.getInt32(24, true)], [3, 4, 5]);
  assert.equal(v.getInt32(28, true), 0, 'padding zeroed');
  assert.deepEqual(parseControl(v, 0, used), { fds: [3, 4, 5], others: 0, malformed: false });
});

test('parseControl walks several messages and skips other kinds', () => {
  const v = new DataView(new ArrayBuffer(128));
  // SCM_CREDENTIALS (12 bytes of ucred), then SCM_RIGHTS with 2 fds.
  v.setBigUint64(0, BigInt(cmsgLen(12)), true);
  v.setInt32(8, SOL_SOCKET, true);
  v.setInt32(12, 2, true);
  const second = cmsgSpace(12);
  const used = second + writeRights(v, second, [9, 10]);
  assert.deepEqual(parseControl(v, 0, used), { fds: [9, 10], others: 1, malformed: false });
});

test('parseControl on truncated or bogus control data', () => {
  const v = new DataView(new ArrayBuffer(64));
  // Header says 5 fds (CMSG_LEN(20) = 36) but only 24 bytes arrived: the 2 whole fds are kept.
  v.setBigUint64(0, 36n, true);
  v.setInt32(8, SOL_SOCKET, true);
  v.setInt32(12, SCM_RIGHTS, true);
  v.setInt32(16, 7, true);
  v.setInt32(20, 8, true);
  assert.deepEqual(parseControl(v, 0, 24), { fds: [7, 8], others: 0, malformed: true });
  // cmsg_len shorter than a header: stop, nothing read.
  v.setBigUint64(0, 8n, true);
  assert.deepEqual(parseControl(v, 0, 24), { fds: [], others: 0, malformed: true });
  // Fewer bytes than one header: nothing there.
  assert.deepEqual(parseControl(v, 0, 15), { fds: [], others: 0, malformed: false });
});
