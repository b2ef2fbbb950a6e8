/**
 * Admin commands (NVMe 1.4 §5) against the fake host: Identify data, the checks of Create /
 * Delete I/O queue with their exact status codes, Get / Set Features, Get Log Page, Abort.
 * Status values are (SCT << 8) | SC.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GatedNamespace, LAYOUT, ready, rig, type Sqe } from './fake-host.js';

const DATA = LAYOUT.DATA;
const ascii = (b: Uint8Array) => Buffer.from(b).toString('latin1');

describe('Identify (CNS 00h-03h)', () => {
  test('Identify Controller: the fields Linux reads', async () => {
    const r = await ready();
    assert.equal((await r.driver.admin({ opcode: 0x06, prp1: DATA, cdw10: 1 })).status, 0);
    const b = r.host.bytes(DATA, 4096);
    const v = new DataView(b.buffer, b.byteOffset, 4096);
    assert.equal(v.getUint16(0, true), 0x1b36, 'VID');
    assert.equal(ascii(b.subarray(4, 24)), 'TESTSERIAL          ', 'SN, space padded');
    assert.equal(b[77], 7, 'MDTS: 512 KiB');
    assert.equal(v.getUint32(80, true), 0x10400, 'VER = VS');
    assert.equal(b[259], 3, 'AERL');
    assert.equal(b[512], 0x66, 'SQES');
    assert.equal(b[513], 0x44, 'CQES');
    assert.equal(v.getUint32(516, true), 1, 'NN');
    assert.equal(v.getUint16(520, true), 0x0c, 'ONCS: DSM and Write Zeroes');
    assert.equal(b[525], 0x07, 'VWC present, broadcast flush');
    assert.equal(v.getUint32(536, true), 0, 'SGLS: none');
    assert.match(ascii(b.subarray(768, 1024)), /^nqn\.2024-12\.dev\.vfio-ts:nvme:TESTSERIAL\0+$/);
  });

  test('Identify Namespace: size, one 512-byte LBA format, DLFEAT, the same ids as the descriptor list', async () => {
    const r = await ready();
    await r.driver.admin({ opcode: 0x06, nsid: 1, prp1: DATA, cdw10: 0 });
    const v = new DataView(r.host.memory.buffer, Number(DATA - 0x1000_0000n), 4096);
    assert.equal(v.getBigUint64(0, true), 2048n, 'NSZE: 1 MiB / 512');
    assert.equal(v.getUint8(25), 0, 'NLBAF');
    assert.equal(v.getUint8(33), 0x09, 'DLFEAT: reads zero, Write Zeroes DEAC');
    assert.equal(v.getUint32(128, true), 9 << 16, 'LBAF0: 2^9 bytes');
    const nguid = r.host.bytes(DATA + 104n, 16).slice();
    await r.driver.admin({ opcode: 0x06, nsid: 1, prp1: DATA, cdw10: 3 });
    const d = r.host.bytes(DATA, 32);
    assert.deepEqual([d[0], d[1]], [2, 16], 'NIDT NGUID, NIDL 16');
    assert.deepEqual(d.subarray(4, 20), nguid);
  });

  test('Active Namespace ID list: NSID 1 after 0, nothing after 1', async () => {
    const r = await ready();
    await r.driver.admin({ opcode: 0x06, nsid: 0, prp1: DATA, cdw10: 2 });
    assert.equal(new DataView(r.host.memory.buffer).getUint32(Number(DATA - 0x1000_0000n), true), 1);
    await r.driver.admin({ opcode: 0x06, nsid: 1, prp1: DATA, cdw10: 2 });
    assert.equal(new DataView(r.host.memory.buffer).getUint32(Number(DATA - 0x1000_0000n), true), 0);
  });

  // [name, command, status]
  const errors: [string, Sqe, number][] = [
    ['namespace 2 does not exist', { opcode: 0x06, nsid: 2, prp1: DATA, cdw10: 0 }, 0x00b],
    [
      'namespace FFFFFFFFh without Namespace Management',
      { opcode: 0x06, nsid: 0xffffffff, prp1: DATA },
      0x00b,
    ],
    ['active list after FFFFFFFEh', { opcode: 0x06, nsid: 0xfffffffe, prp1: DATA, cdw10: 2 }, 0x00b],
    ['CNS 10h (allocated namespaces)', { opcode: 0x06, prp1: DATA, cdw10: 0x10 }, 0x002],
    ['data pointer outside host memory', { opcode: 0x06, prp1: 0x1000n, cdw10: 1 }, 0x004],
    ['PRP1 not dword aligned', { opcode: 0x06, prp1: DATA + 2n, cdw10: 1 }, 0x013],
    ['PRP2 with an offset', { opcode: 0x06, prp1: DATA + 8n, prp2: DATA + 0x2008n, cdw10: 1 }, 0x013],
    ['fused', { opcode: 0x06, flags: 1, prp1: DATA, cdw10: 1 }, 0x002],
    ['an SGL data pointer', { opcode: 0x06, flags: 0x40, prp1: DATA, cdw10: 1 }, 0x002],
    ['opcode 80h (Format NVM; OACS 0)', { opcode: 0x80 }, 0x001],
  ];
  for (const [name, sqe, status] of errors)
    test(`${name} → 0x${status.toString(16)}`, async () => {
      const r = await ready();
      const c = await r.driver.admin(sqe);
      assert.equal(c.status, status);
      assert.equal(c.dnr, true, 'Do Not Retry');
    });
});

describe('Create / Delete I/O queues (§5.3-§5.6)', () => {
  const cq = (qid: number, size: number, cdw11 = 3, prp1 = LAYOUT.IOCQ + 0x8_0000n): Sqe => ({
    opcode: 0x05,
    prp1,
    cdw10: ((size - 1) << 16) | qid,
    cdw11,
  });
  const sq = (qid: number, cqid: number, size = 16, prp1 = LAYOUT.IOSQ + 0x8_0000n): Sqe => ({
    opcode: 0x01,
    prp1,
    cdw10: ((size - 1) << 16) | qid,
    cdw11: (cqid << 16) | 1,
  });
  // [name, command, status] on a controller with I/O queue pair 1 and 4 queues allowed
  const cases: [string, Sqe, number][] = [
    ['CQ id 0', cq(0, 16), 0x101],
    ['CQ id past Number of Queues', cq(5, 16), 0x101],
    ['CQ id that exists', cq(1, 16), 0x101],
    ['CQ of 1 entry', cq(2, 1), 0x102],
    ['CQ of 1025 entries (MQES 1023)', cq(2, 1025), 0x102],
    ['CQ not physically contiguous (CAP.CQR)', cq(2, 16, 2), 0x002],
    ['CQ on interrupt vector 65 (65 vectors)', cq(2, 16, 3 | (65 << 16)), 0x108],
    ['CQ base with a page offset', cq(2, 16, 3, LAYOUT.IOCQ + 0x8_0100n), 0x013],
    ['SQ on CQ 0', sq(2, 0), 0x100],
    ['SQ on a CQ that does not exist', sq(2, 3), 0x100],
    ['SQ id that exists', sq(1, 1), 0x101],
    ['SQ id past Number of Queues', sq(5, 1), 0x101],
    ['SQ of 2000 entries', sq(2, 1, 2000), 0x102],
    ['Delete SQ 0', { opcode: 0x00, cdw10: 0 }, 0x101],
    ['Delete SQ that does not exist', { opcode: 0x00, cdw10: 3 }, 0x101],
    ['Delete CQ 0', { opcode: 0x04, cdw10: 0 }, 0x101],
    ['Delete CQ an SQ still uses', { opcode: 0x04, cdw10: 1 }, 0x10c],
    ['a good CQ', cq(2, 16), 0],
  ];
  for (const [name, sqe, status] of cases)
    test(`${name} → 0x${status.toString(16)}`, async () => {
      const r = rig();
      await r.driver.enable();
      // Number of Queues: 4 SQs and 4 CQs (0-based 3).
      const nq = await r.driver.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0x0003_0003 });
      assert.deepEqual([nq.status, nq.result], [0, 0x0003_0003]);
      await r.driver.createIoQueues(1);
      assert.equal((await r.driver.admin(sqe)).status, status);
    });

  test('Delete SQ with entries it never fetched: they complete as aborted (no DNR), then CQ deletion works', async () => {
    const r = await ready();
    const cids = [1, 2, 3].map(() => r.driver.place(1, { opcode: 0x00, nsid: 1 }));
    // The host's doorbell write, before the controller fetched anything (no fetch scheduled).
    r.ctl.sqs[1]!.tail = 3;
    const del = await r.driver.admin({ opcode: 0x00, cdw10: 1 });
    assert.equal(del.status, 0);
    const aborted = [await r.driver.reap(1), await r.driver.reap(1), await r.driver.reap(1)];
    assert.deepEqual(
      aborted.map((c) => [c.cid, c.status, c.dnr]),
      cids.map((cid) => [cid, 0x008, false]),
    );
    // SQHD: the head when each entry was written, at least past its own command.
    for (const [i, c] of aborted.entries()) assert.ok(c.sqhd >= i + 1 && c.sqhd <= 3, `SQHD ${c.sqhd}`);
    assert.equal(r.ctl.sqs[1], undefined);
    assert.equal((await r.driver.admin({ opcode: 0x04, cdw10: 1 })).status, 0, 'CQ 1 deleted');
  });
});

describe('Get / Set Features (§5.21)', () => {
  // [name, Set Features cdw10, cdw11, status]
  const sets: [string, number, number, number][] = [
    ['Number of Queues 65535', 0x07, 0xffff, 0x002],
    ['Power Management state 1 (NPSS 0)', 0x02, 1, 0x002],
    ['Temperature Threshold of sensor 3', 0x04, (3 << 16) | 300, 0x002],
    ['Temperature Threshold THSEL 10b', 0x04, (2 << 20) | 300, 0x002],
    ['Error Recovery with DULBE', 0x05, 0x1_0000, 0x002],
    ['Interrupt Vector Configuration of vector 65', 0x09, 65, 0x002],
    ['feature 0Ch (APST; APSTA 0)', 0x0c, 0, 0x002],
    ['a saveable Arbitration', 0x8000_0001, 0, 0x10d],
    ['Arbitration', 0x01, 0x0302_0103, 0],
    ['Volatile Write Cache off', 0x06, 0, 0],
    ['Interrupt Coalescing', 0x08, 0x0a05, 0],
    ['Async Event Configuration', 0x0b, 0xff, 0],
  ];
  for (const [name, cdw10, cdw11, status] of sets)
    test(`Set ${name} → 0x${status.toString(16)}`, async () => {
      const r = rig();
      await r.driver.enable();
      assert.equal((await r.driver.admin({ opcode: 0x09, cdw10, cdw11 })).status, status);
      if (status === 0) {
        const got = await r.driver.admin({ opcode: 0x0a, cdw10: cdw10 & 0xff, cdw11 });
        assert.equal(got.result, cdw11, 'Get Features returns what Set stored');
      }
    });

  test('Number of Queues: granted up to 64 pairs; not once I/O queues exist (Command Sequence Error)', async () => {
    const r = rig();
    await r.driver.enable();
    assert.equal(
      (await r.driver.admin({ opcode: 0x0a, cdw10: 0x07 })).result,
      0x003f_003f,
      'default: the maximum',
    );
    assert.equal(
      (await r.driver.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0x00ff_0001 })).result,
      0x003f_0001,
    );
    await r.driver.createIoQueues(1);
    assert.equal((await r.driver.admin({ opcode: 0x09, cdw10: 0x07, cdw11: 0 })).status, 0x00c);
  });

  test('SEL: default and supported capabilities; the temperature threshold and its SMART event', async () => {
    const r = await ready();
    await r.driver.admin({ opcode: 0x09, cdw10: 0x06, cdw11: 0 });
    assert.equal(
      (await r.driver.admin({ opcode: 0x0a, cdw10: 0x06 | (1 << 8) })).result,
      1,
      'default: cache on',
    );
    assert.equal((await r.driver.admin({ opcode: 0x0a, cdw10: 0x06 | (3 << 8) })).result, 0x4, 'changeable');
    assert.equal(
      (await r.driver.admin({ opcode: 0x0a, cdw10: 0x04 })).result,
      343,
      'over-temperature: WCTEMP',
    );
    await r.driver.admin({ opcode: 0x09, cdw10: 0x0b, cdw11: 0x2 }); // temperature events on
    const aer = r.driver.place(0, { opcode: 0x0c });
    r.driver.ring(0);
    const set = r.driver.place(0, { opcode: 0x09, cdw10: 0x04, cdw11: 300 }); // below 310 K
    r.driver.ring(0);
    const done = await r.driver.collect(0, 2);
    assert.equal(done.get(set)?.status, 0);
    assert.equal(done.get(aer)?.result, 0x01 | (0x01 << 8) | (0x02 << 16), 'SMART, temperature, log 02h');
    await r.driver.admin({ opcode: 0x02, prp1: DATA, cdw10: 0x02 | (127 << 16), nsid: 0xffffffff });
    assert.equal(r.host.bytes(DATA, 1)[0], 0x02, 'Critical Warning: temperature');
  });
});

describe('Get Log Page (§5.14)', () => {
  const glp = (lid: number, dwords: number, offset = 0, nsid = 0xffffffff): Sqe => ({
    opcode: 0x02,
    nsid,
    prp1: DATA,
    cdw10: lid | ((dwords - 1) << 16),
    cdw12: offset,
  });
  const cases: [string, Sqe, number][] = [
    ['log 04h (Changed Namespace List; not supported)', glp(0x04, 1024), 0x109],
    ['offset past the log', glp(0x02, 16, 512), 0x002],
    ['offset not dword aligned', glp(0x02, 16, 2), 0x002],
    ['more than MDTS', { opcode: 0x02, prp1: DATA, cdw10: 0x02 | (0xffff << 16), cdw11: 0xffff }, 0x002],
    ['SMART of namespace 7', glp(0x02, 128, 0, 7), 0x00b],
  ];
  for (const [name, sqe, status] of cases)
    test(`${name} → 0x${status.toString(16)}`, async () => {
      const r = await ready();
      assert.equal((await r.driver.admin(sqe)).status, status);
    });

  test('Error Information: the newest failed command first; SMART counts I/O; Firmware Slot', async () => {
    const r = await ready();
    const bad = await r.driver.admin({ opcode: 0x06, nsid: 9, prp1: DATA, cdw10: 0 });
    await r.driver.submit(1, { opcode: 0x01, nsid: 1, prp1: DATA, cdw12: 7 }); // 4 KiB written
    await r.driver.admin(glp(0x01, 16));
    const e = new DataView(r.host.memory.buffer, Number(DATA - 0x1000_0000n), 64);
    assert.equal(e.getBigUint64(0, true), 1n, 'Error Count');
    assert.deepEqual([e.getUint16(8, true), e.getUint16(10, true)], [0, bad.cid], 'SQ and command id');
    assert.equal(e.getUint16(12, true) >> 1, 0x00b | 0x4000, 'Status Field');
    await r.driver.admin(glp(0x02, 128));
    const s = new DataView(r.host.memory.buffer, Number(DATA - 0x1000_0000n), 512);
    assert.equal(s.getUint16(1, true), 310, 'temperature');
    assert.equal(s.getBigUint64(48, true), 1n, 'Data Units Written: 8 blocks round up to 1 thousand');
    assert.equal(s.getBigUint64(80, true), 1n, 'Host Write Commands');
    assert.equal(s.getBigUint64(176, true), 1n, 'Error Information Log Entries');
    await r.driver.admin(glp(0x03, 128));
    assert.equal(r.host.bytes(DATA, 1)[0], 1, 'AFI: slot 1');
    assert.equal(ascii(r.host.bytes(DATA + 8n, 8)), '1.0     ');
  });

  test('a log read at an offset returns the log from there, zeroes past its end', async () => {
    const r = await ready();
    r.host.memory.fill(0xee, Number(DATA - 0x1000_0000n), Number(DATA - 0x1000_0000n) + 1024);
    await r.driver.admin(glp(0x03, 256, 8)); // 1 KiB from byte 8 of a 512-byte log
    assert.equal(ascii(r.host.bytes(DATA, 3)), '1.0');
    assert.ok(r.host.bytes(DATA + 504n, 520).every((b) => b === 0));
  });
});

test('Abort (§5.1): answered "not aborted" (Dword 0 bit 0)', async () => {
  const r = await ready();
  const c = await r.driver.admin({ opcode: 0x08, cdw10: (7 << 16) | 1 });
  assert.deepEqual([c.status, c.result], [0, 1]);
});

test('a reset while Delete I/O SQ waits for its commands leaves nothing waiting for ever', async () => {
  const ns = new GatedNamespace(1 << 20);
  const r = await ready({ ns });
  r.driver.place(1, { opcode: 0x02, nsid: 1, prp1: LAYOUT.DATA });
  r.driver.ring(1);
  for (let i = 0; i < 10 && ns.waiting === 0; i++) await new Promise((t) => setImmediate(t));
  const sq = r.ctl.sqs[1]!;
  let deleted = false;
  void r.ctl.deleteSq(sq).then(() => (deleted = true));
  await new Promise((t) => setImmediate(t));
  assert.equal(deleted, false, 'waiting for the read');
  r.ctl.reset();
  await new Promise((t) => setImmediate(t));
  assert.equal(deleted, true, 'the wait ended with the reset');
  ns.release();
});
