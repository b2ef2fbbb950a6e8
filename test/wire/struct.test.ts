/**
 * src/wire/struct.ts: a struct read and written by its layout. Every field type lands at its
 * layout offset in little-endian order, a store truncates like C, a checked encode refuses what
 * does not fit, and a buffer too short for what is asked is EFAULT, never a RangeError.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { bytes, field, layout } from '../../src/abi/layout.js';
import { vfio_device_info, vfio_region_info } from '../../src/abi/vfio.js';
import { VfioError } from '../../src/errors.js';
import { struct } from '../../src/wire/struct.js';
import { regionInfoStruct } from '../../src/wire/vfio.js';

/** Every scalar type at an odd-looking but aligned offset, plus an embedded header and a tail. */
const every = layout('every', 32, 'vfio-ts', {
  hdr: field(0, 'cap'),
  a: field(8, 'u8'),
  b: field(10, 'u16'),
  c: field(12, 'u32'),
  d: field(16, 's32'),
  e: field(24, 'u64'),
  tail: bytes(32),
});
const S = struct(every);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('struct codec', () => {
  test('encode puts each field at its offset, little endian; read gives it back', () => {
    const v = { a: 0xab, b: 0x1234, c: 0xdeadbeef, d: -2, e: 0x0102030405060708n };
    const b = S.encode(v);
    assert.equal(b.length, 32);
    assert.equal(
      hex(b),
      `${'00'.repeat(8)}ab00` + '3412' + 'efbeadde' + 'feffffff' + '00000000' + '0807060504030201',
    );
    assert.deepEqual(S.read(b), v);
  });

  test('get and set address one field, at a base inside a larger buffer', () => {
    const b = new Uint8Array(40);
    S.set(b, 'c', 7, 8);
    assert.equal(b[8 + 12], 7);
    assert.equal(S.get(b, 'c', 8), 7);
    assert.equal(S.get(b, 'e', 8), 0n);
  });

  test('stores truncate like a C assignment (u32 = -1 is 0xffffffff; u64 wraps)', () => {
    const b = S.encode({ a: 0x1ff, b: 0x12345, c: -1, d: 0x80000000, e: -1n });
    assert.deepEqual(S.read(b), { a: 0xff, b: 0x2345, c: 0xffffffff, d: -0x80000000, e: (1n << 64n) - 1n });
  });

  test('write stores only the fields given and needs room only for them', () => {
    const b = new Uint8Array(16).fill(0x55);
    S.write(b, { c: 1 });
    assert.equal(hex(b), `${'55'.repeat(12)}01000000`);
    assert.throws(() => S.write(b, { e: 1n }), { errno: Errno.EFAULT });
  });

  test('a buffer too short is EFAULT (copy_from_user), for get, set and read', () => {
    const short = new Uint8Array(15);
    for (const f of [() => S.get(short, 'c'), () => S.set(short, 'c', 1), () => S.read(new Uint8Array(31))])
      assert.throws(f, (e) => e instanceof VfioError && e.errno === Errno.EFAULT);
    assert.equal(S.get(new Uint8Array(16), 'c'), 0);
  });

  const misfits: [string, object, string][] = [
    ['u8 256', { a: 256 }, 'a 256 is not a u8'],
    ['u16 -1', { b: -1 }, 'b -1 is not a u16'],
    ['u32 2^32', { c: 2 ** 32 }, 'c 4294967296 is not a u32'],
    ['u32 1.5', { c: 1.5 }, 'c 1.5 is not a u32'],
    ['s32 2^31', { d: 2 ** 31 }, 'd 2147483648 is not a s32'],
    ['u64 -1n', { e: -1n }, 'e -1 is not a u64'],
    ['u64 2^64', { e: 1n << 64n }, 'e 18446744073709551616 is not a u64'],
  ];
  for (const [name, value, detail] of misfits)
    test(`writeChecked refuses ${name} (EINVAL, names the field)`, () => {
      const b = new Uint8Array(32);
      assert.throws(() => S.writeChecked(b, value, 'thing'), {
        errno: Errno.EINVAL,
        message: `encode thing: EINVAL (${detail})`,
      });
      assert.equal(hex(b), '00'.repeat(32), 'nothing written');
    });
  test('writeChecked accepts the extremes of every type', () => {
    const v = { a: 255, b: 0xffff, c: 0xffffffff, d: -0x80000000, e: (1n << 64n) - 1n };
    const b = new Uint8Array(32);
    S.writeChecked(b, v, 'thing', 0, 'label ');
    assert.deepEqual(S.read(b), v);
  });

  test("accessors read and write each field at base on a caller's DataView, as get and set do", () => {
    const buf = new Uint8Array(40);
    const dv = new DataView(buf.buffer);
    const v = { a: 0xab, b: 0x1234, c: 0xdeadbeef, d: -2, e: 0x0102030405060708n };
    for (const k of ['a', 'b', 'c', 'd', 'e'] as const) {
      const acc = S.accessor(k);
      assert.equal(acc.offset, S.offsetOf(k));
      (acc.set as (dv: DataView, base: number, x: number | bigint) => void)(dv, 8, v[k]);
      assert.equal(S.get(buf, k, 8), v[k], k);
      assert.equal(acc.get(dv, 8), v[k], k);
    }
    assert.deepEqual(S.read(buf, 8), v);
    // A field outside the view is DataView's RangeError: accessors leave bounds to the caller.
    assert.throws(() => S.accessor('e').get(new DataView(new ArrayBuffer(16)), 0), RangeError);
  });

  test('u64AsNumber: exact below 2^53 without BigInt, -1 from 2^53 up; set writes both halves', () => {
    const buf = new Uint8Array(32);
    const dv = new DataView(buf.buffer);
    const e = S.u64AsNumber('e');
    for (const x of [0, 1, 0xffff_ffff, 0x1_0000_0000, 2 ** 53 - 1]) {
      e.set(dv, 0, x);
      assert.equal(S.get(buf, 'e'), BigInt(x));
      assert.equal(e.get(dv, 0), x);
    }
    for (const x of [2n ** 53n, 2n ** 64n - 1n]) {
      S.set(buf, 'e', x);
      assert.equal(e.get(dv, 0), -1, String(x));
    }
    assert.throws(
      () => S.u64AsNumber('c' as 'e'),
      (err: unknown) => err instanceof VfioError && err.errno === Errno.EINVAL,
    );
  });

  test('offsetOf and endOf follow the layout (the kernel minsz idiom)', () => {
    assert.equal(S.offsetOf('tail'), 32);
    assert.equal(S.endOf('d'), 20);
    assert.equal(struct(vfio_device_info).endOf('num_irqs'), 16);
    assert.equal(regionInfoStruct.offsetOf('offset'), vfio_region_info.fields.offset.offset);
  });

  test('a layout whose field name is not an identifier is refused when its codec is built', () => {
    const bad = layout('bad', 4, 'vfio-ts', { 'a-b': field(0, 'u32') });
    assert.throws(() => struct(bad), { errno: Errno.EINVAL });
  });
});
