/**
 * The x86 PAT list parser (src/kernel/pat.ts) on lines as Linux 6.1 and 7.3 printed them in the
 * guests (test/kernel/in-guest.test.ts): types, overlap, and counted diffs of repeated lines.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePatList, patAdded, patTypeOf } from '../../src/kernel/pat.js';

const BEFORE = `PAT memtype list:
PAT: [mem 0x00000000b0000000-0x00000000c0000000] uncached-minus
PAT: [mem 0x00000000fe000000-0x00000000fe400000] write-combining
PAT: [mem 0x00000000fed00000-0x00000000fed01000] uncached-minus
`;
// 7.3 iomem=relaxed, BAR2 mapped before open: the open's ioremap adds an identical line.
const AFTER = `${BEFORE}PAT: [mem 0x00000000fe000000-0x00000000fe400000] write-combining
PAT: [mem 0x00000000feb11000-0x00000000feb12000] uncached-minus
`;

test('parsePatList: start, exclusive end, type; the title line is skipped', () => {
  const l = parsePatList(BEFORE);
  assert.equal(l.length, 3);
  assert.deepEqual(
    l.map((e) => [e.start, e.end, e.type]),
    [
      [0xb0000000n, 0xc0000000n, 'uncached-minus'],
      [0xfe000000n, 0xfe400000n, 'write-combining'],
      [0xfed00000n, 0xfed01000n, 'uncached-minus'],
    ],
  );
});

test('patTypeOf: the type of whatever overlaps the range, undefined when nothing does', () => {
  const l = parsePatList(BEFORE);
  assert.equal(patTypeOf(l, 0xfe000000n, 0xfe001000n), 'write-combining');
  assert.equal(patTypeOf(l, 0xfe3ff000n, 0xfe401000n), 'write-combining');
  assert.equal(patTypeOf(l, 0xfe400000n, 0xfe401000n), undefined, 'the end is exclusive');
  assert.equal(patTypeOf(l, 0xbfff0000n, 0xc0000000n), 'uncached-minus');
});

test('patAdded counts repeated lines: a second identical entry is an addition', () => {
  const added = patAdded(parsePatList(BEFORE), parsePatList(AFTER));
  assert.deepEqual(
    added.map((e) => e.line),
    [
      'PAT: [mem 0x00000000fe000000-0x00000000fe400000] write-combining',
      'PAT: [mem 0x00000000feb11000-0x00000000feb12000] uncached-minus',
    ],
  );
  assert.deepEqual(patAdded(parsePatList(AFTER), parsePatList(BEFORE)), []);
  assert.deepEqual(patAdded(parsePatList(BEFORE), parsePatList(BEFORE)), []);
});
