/**
 * The NVMe controller's registers and handshakes against a fake host (test/devices/nvme/
 * fake-host.ts): CAP/VS/CC/CSTS, enable with good and bad configurations (CSTS.CFS), reset
 * (CC.EN 1 → 0) with commands in flight, shutdown (CC.SHN → CSTS.SHST), FLR, doorbell errors as
 * asynchronous events, phase tags across wraps and a full CQ, pin-based interrupts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NamespaceBackend } from '../../../src/devices/nvme/host.js';
import { MemoryNamespace } from '../../../src/devices/nvme/namespace.js';
import { GatedNamespace, LAYOUT, ready, rig, turn } from './fake-host.js';

const CC_ENABLE = 0x0046_0001; // EN, IOSQES 6, IOCQES 4, MPS 0, CSS 0
const rd = (r: ReturnType<typeof rig>, o: number) => r.ctl.read(o, 4);

describe('NVMe registers (NVMe 1.4 §3.1)', () => {
  test('CAP, VS, and CMBLOC/CMBSZ hidden until CMBMSC.CRE', () => {
    const r = rig({ controller: { cmb: { bar: 2, size: 16 << 20 } } });
    const cap = r.ctl.read64(0);
    assert.equal(cap & 0xffffn, 1023n, 'MQES');
    assert.equal((cap >> 16n) & 1n, 1n, 'CQR');
    assert.equal((cap >> 24n) & 0xffn, 30n, 'TO');
    assert.equal((cap >> 32n) & 0xfn, 0n, 'DSTRD');
    assert.equal((cap >> 37n) & 0xffn, 1n, 'CSS: NVM');
    assert.equal((cap >> 48n) & 0xfn, 0n, 'MPSMIN');
    assert.equal((cap >> 52n) & 0xfn, 4n, 'MPSMAX');
    assert.equal((cap >> 57n) & 1n, 1n, 'CMBS');
    assert.equal(rd(r, 0x08), 0x10400, 'VS 1.4');
    assert.equal(rd(r, 0x38), 0, 'CMBLOC before CRE');
    assert.equal(rd(r, 0x3c), 0, 'CMBSZ before CRE');
    r.ctl.write(0x50, 4, 1); // CRE
    assert.equal(rd(r, 0x38), 0x0000_000a, 'CMBLOC: BIR 2, CQMMS');
    assert.equal(rd(r, 0x3c), (16 << 12) | (2 << 8) | 1, 'CMBSZ: 16 x 1 MiB, SQS');
    // Sub-dword reads see the register's bytes; sub-dword writes are dropped.
    assert.equal(r.ctl.read(0x08 + 2, 2), 0x0001);
    r.ctl.write(0x24, 2, 0xffff);
    assert.equal(rd(r, 0x24), 0);
  });

  test('a controller without a CMB has CMBS 0 and ignores CMBMSC', () => {
    const r = rig();
    assert.equal((r.ctl.read64(0) >> 57n) & 1n, 0n);
    r.ctl.write(0x50, 4, 3);
    assert.equal(rd(r, 0x50), 0);
    assert.equal(rd(r, 0x3c), 0);
  });

  test('INTMS sets and INTMC clears mask bits; both read the mask', () => {
    const r = rig();
    r.ctl.write(0x0c, 4, 0x5);
    r.ctl.write(0x0c, 4, 0x2);
    assert.equal(rd(r, 0x0c), 0x7);
    r.ctl.write(0x10, 4, 0x1);
    assert.equal(rd(r, 0x10), 0x6);
  });
});

describe('enable (CC.EN 0 → 1, §7.6.1)', () => {
  test('a good configuration sets CSTS.RDY and the admin queue works', async () => {
    const r = rig();
    assert.equal(await r.driver.enable(), 1);
    const c = await r.driver.admin({ opcode: 0x06, prp1: LAYOUT.DATA, cdw10: 1 });
    assert.equal(c.status, 0);
    assert.equal(c.sqid, 0);
    assert.equal(c.sqhd, 1, 'SQ head after one command');
  });

  // [name, AQA entries, CC]: configurations the controller cannot run set CSTS.CFS, not RDY.
  const bad: [string, number, number][] = [
    ['memory page size 128 KiB (MPS 5 > MPSMAX)', 16, CC_ENABLE | (5 << 7)],
    ['I/O command set 1 (not NVM)', 16, CC_ENABLE | (1 << 4)],
    ['arbitration weighted round robin (CAP.AMS 0)', 16, CC_ENABLE | (1 << 11)],
    ['I/O SQ entries of 32 bytes', 16, (CC_ENABLE & ~0xf0000) | (5 << 16)],
    ['admin queues of one entry', 1, CC_ENABLE],
  ];
  for (const [name, size, cc] of bad)
    test(`refused: ${name} → CSTS.CFS`, async () => {
      const r = rig();
      assert.equal(await r.driver.enable(size, cc), 2, 'CFS set, RDY clear');
      assert.match(r.ctl.stats.fatal ?? '', /enable refused/);
      // A reset clears CFS, and a good configuration then enables.
      r.ctl.write(0x14, 4, 0);
      assert.equal(rd(r, 0x1c), 0);
      assert.equal(await r.driver.enable(), 1);
    });

  test('an admin SQ the host cannot DMA from: the fetch fails, CSTS.CFS (§3.1.6)', async () => {
    const r = rig();
    r.ctl.write(0x24, 4, 0x000f000f);
    r.ctl.write(0x28, 4, 0x1000); // ASQ outside host memory
    r.ctl.write(0x30, 4, Number(LAYOUT.ACQ));
    r.ctl.write(0x14, 4, CC_ENABLE);
    r.ctl.write(0x1000, 4, 1);
    for (let i = 0; i < 20 && !(rd(r, 0x1c) & 2); i++) await turn();
    assert.equal(rd(r, 0x1c), 3, 'RDY and CFS');
    assert.match(r.ctl.stats.fatal ?? '', /SQ 0 fetch/);
  });
});

/** A ready controller on a GatedNamespace with one Read held in flight. */
async function readInFlight() {
  const ns = new GatedNamespace(1 << 20);
  const r = await ready({ ns });
  r.driver.place(1, { opcode: 0x02, nsid: 1, prp1: LAYOUT.DATA });
  r.driver.ring(1);
  for (let i = 0; i < 10 && ns.waiting === 0; i++) await turn();
  assert.equal(ns.waiting, 1, 'the read is in flight');
  return { ns, r };
}

describe('reset and shutdown (§7.3.2, §7.6.2)', () => {
  test('CC.EN 1 → 0 drops the queues; a command still in flight posts nothing afterwards', async () => {
    const { ns, r } = await readInFlight();
    await r.driver.disable();
    assert.equal(rd(r, 0x1c), 0, 'RDY clear');
    ns.release();
    for (let i = 0; i < 5; i++) await turn();
    const cq1 = r.host.view(LAYOUT.IOCQ + 0x1_0000n, 16);
    assert.equal(cq1.getUint32(12, true), 0, 'no completion written after the reset');
    assert.equal(r.host.dmaCount, 4 + 1, 'no data DMA either (admin: 2 fetches + 2 CQEs; I/O: 1 fetch)');
    assert.equal(r.ctl.sqs.length, 0);
    // Enabled again: admin works, the old I/O queue id is free again.
    assert.equal(await r.driver.enable(), 1);
    const [cq, sq] = await r.driver.createIoQueues(1);
    assert.deepEqual([cq.status, sq.status], [0, 0]);
  });

  test('CC.SHN 01: SHST goes 01 while a command runs, flushes, then 10', async () => {
    const { ns, r } = await readInFlight();
    r.ctl.write(0x14, 4, CC_ENABLE | (1 << 14));
    assert.equal((rd(r, 0x1c) >> 2) & 3, 1, 'shutdown occurring');
    ns.release();
    for (let i = 0; i < 100 && ((rd(r, 0x1c) >> 2) & 3) !== 2; i++)
      await new Promise((t) => setTimeout(t, 2));
    assert.equal((rd(r, 0x1c) >> 2) & 3, 2, 'shutdown complete');
    assert.equal(ns.flushes, 1, 'the namespace was flushed');
    assert.equal((await r.driver.reap(1)).status, 0, 'the command in flight completed');
    // One line says what the session did (Create CQ, Create SQ, the Read; the SQ in host memory).
    assert.match(
      r.host.lines.at(-1)!,
      /^nvme: shutdown complete: 3 commands \(0 fetched from the CMB\), 1 reads, 0 writes, \d+ interrupts$/,
    );
  });

  test('FLR (reset()) returns every register to its power-on value', async () => {
    const r = await ready({ controller: { cmb: { bar: 2, size: 4 << 20 } } });
    r.ctl.write(0x50, 4, 3);
    r.ctl.write(0x0c, 4, 1);
    r.ctl.reset();
    for (const o of [0x0c, 0x14, 0x1c, 0x24, 0x28, 0x30, 0x50, 0x3c])
      assert.equal(rd(r, o), 0, `0x${o.toString(16)}`);
  });
});

describe('doorbells (§3.1, invalid writes as asynchronous events §5.2)', () => {
  test('a doorbell of a queue that does not exist, and a value past the queue: Error events', async () => {
    const r = await ready();
    // Four Asynchronous Event Requests park (AERL 3); a fifth is refused.
    for (let i = 0; i < 4; i++) r.driver.place(0, { opcode: 0x0c });
    r.driver.ring(0);
    const fifth = await r.driver.admin({ opcode: 0x0c });
    assert.equal(fifth.status, 0x105, 'Asynchronous Event Request Limit Exceeded');
    r.ctl.write(0x1000 + 5 * 8, 4, 1); // SQ 5 does not exist
    const e1 = await r.driver.reap(0);
    assert.equal(e1.result, 0x00 | (0x00 << 8) | (0x01 << 16), 'Error, invalid doorbell register, Error log');
    r.ctl.write(0x1000 + 8 + 4, 4, 32); // CQ 1 head 32 in a 32-entry queue
    await turn();
    assert.equal(r.driver.peek(0), undefined, 'Error events masked until the Error log is read');
    // Reading the Error log (RAE clear) unmasks them: the waiting event completes an AER.
    const logCid = r.driver.place(0, { opcode: 0x02, prp1: LAYOUT.DATA, cdw10: 0x01 | (15 << 16) });
    r.driver.ring(0);
    const both = [...(await r.driver.collect(0, 2)).values()];
    const log = both.find((c) => c.cid === logCid)!;
    const e2 = both.find((c) => c.cid !== logCid)!;
    assert.equal(log.status, 0);
    assert.equal(e2.result, 0x00 | (0x01 << 8) | (0x01 << 16), 'invalid doorbell write value');
    assert.equal(r.ctl.stats.invalidDoorbells, 2);
  });

  test('a CQ head moved past the entries the controller wrote is an invalid value', async () => {
    const r = await ready();
    r.driver.place(0, { opcode: 0x0c });
    r.driver.ring(0);
    await turn();
    r.ctl.write(0x1000 + 8 + 4, 4, 3); // CQ 1 is empty: head cannot move
    assert.equal((await r.driver.reap(0)).result >>> 8, 0x101);
  });

  test('doorbells before CSTS.RDY are ignored', () => {
    const r = rig();
    r.ctl.write(0x1000, 4, 1);
    assert.equal(r.ctl.stats.invalidDoorbells, 0);
    assert.equal(r.ctl.stats.commands, 0);
  });
});

describe('completion queue phase tags and a full CQ (§4.1, §4.6)', () => {
  test('a 4-entry CQ: entries wait while it is full, the phase inverts on every wrap', async () => {
    const r = rig();
    await r.driver.enable();
    // CQ 1 with 4 entries (3 usable), SQ 1 with 16.
    assert.equal(
      (await r.driver.admin({ opcode: 0x05, prp1: LAYOUT.IOCQ, cdw10: (3 << 16) | 1, cdw11: 3 })).status,
      0,
    );
    assert.equal(
      (await r.driver.admin({ opcode: 0x01, prp1: LAYOUT.IOSQ, cdw10: (15 << 16) | 1, cdw11: 0x10001 }))
        .status,
      0,
    );
    r.driver.track(1, { sqBase: LAYOUT.IOSQ, cqBase: LAYOUT.IOCQ, size: 4, sqSize: 16 });
    const cids: number[] = [];
    for (let i = 0; i < 10; i++) cids.push(r.driver.place(1, { opcode: 0x00, nsid: 1 }));
    r.driver.ring(1);
    for (let i = 0; i < 10; i++) await turn();
    assert.equal(r.ctl.cqs[1]!.used, 3, 'the CQ is full');
    assert.equal(r.ctl.cqs[1]!.pending.length, 7, 'the rest wait');
    const seen: number[] = [];
    const phases: number[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await r.driver.reap(1);
      seen.push(c.cid);
      phases.push(c.phase);
      assert.equal(c.status, 0);
    }
    assert.deepEqual(seen, cids, 'Flushes complete in order here (they finish in order)');
    assert.deepEqual(phases, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]);
  });
});

describe('interrupts (§7.5)', () => {
  test('MSI-X: each CQ sends its own vector', async () => {
    const r = await ready();
    await r.driver.createIoQueues(2, 8, LAYOUT.IOSQ + 0x8000n, 7);
    r.host.vectors.length = 0;
    await r.driver.submit(2, { opcode: 0x00, nsid: 1 });
    await r.driver.submit(1, { opcode: 0x00, nsid: 1 });
    assert.deepEqual(r.host.vectors, [7, 1]);
  });

  test('INTx is a level: up while a CQ holds unconsumed entries, down at the head doorbell; INTMS masks it', async () => {
    const r = rig();
    r.host.interruptMode = 'intx';
    await r.driver.enable();
    r.driver.place(0, { opcode: 0x06, prp1: LAYOUT.DATA, cdw10: 1 });
    r.driver.ring(0);
    const c = await r.driver.reap(0, false);
    assert.equal(c.status, 0);
    assert.equal(r.host.intx, true, 'asserted');
    r.driver.ringHead(0);
    assert.equal(r.host.intx, false, 'deasserted once the host consumed the entry');
    r.ctl.write(0x0c, 4, 1); // INTMS bit 0
    r.driver.place(0, { opcode: 0x06, prp1: LAYOUT.DATA, cdw10: 1 });
    r.driver.ring(0);
    await r.driver.reap(0, false);
    assert.equal(r.host.intx, false, 'masked');
    r.ctl.write(0x10, 4, 1); // INTMC bit 0: the pending entry asserts it now
    assert.equal(r.host.intx, true);
    r.driver.ringHead(0);
    assert.equal(r.host.intx, false);
  });
});

describe('asynchronous DMA (DMA_READ/DMA_WRITE round trips)', () => {
  test('24 reads in flight on a remote host complete, each once, with the right data', async () => {
    const ns: NamespaceBackend = new MemoryNamespace(1 << 20);
    const pattern = new Uint8Array(1 << 20).map((_, i) => (i * 31 + (i >> 9)) & 0xff);
    await ns.write(0, pattern);
    const r = await ready({ remote: true, ns });
    const cids = new Set<number>();
    // 24 of the SQ's 32 entries (a full queue holds 31).
    for (let i = 0; i < 24; i++)
      cids.add(
        r.driver.place(1, {
          opcode: 0x02,
          nsid: 1,
          prp1: LAYOUT.DATA + BigInt(i * 4096),
          cdw10: i * 8,
          cdw12: 7,
        }),
      );
    r.driver.ring(1);
    const got = new Set<number>();
    for (let i = 0; i < 24; i++) {
      const c = await r.driver.reap(1);
      assert.equal(c.status, 0);
      got.add(c.cid);
    }
    assert.deepEqual(got, cids);
    assert.deepEqual(r.host.bytes(LAYOUT.DATA, 24 * 4096), pattern.subarray(0, 24 * 4096));
  });
});

test('writes past the doorbell area (the MSI-X table and PBA at 0x2000) are not doorbells', async () => {
  const r = await ready();
  r.ctl.write(0x3000, 4, 1);
  r.ctl.write(0x1ffc, 4, 1);
  assert.equal(r.ctl.stats.invalidDoorbells, 1, 'only 0x1ffc, a doorbell of a queue that does not exist');
});
