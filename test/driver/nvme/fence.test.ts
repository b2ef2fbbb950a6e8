/**
 * The write-combining rule: when submission queue entries live in WC memory (the CMB), a store
 * fence comes after the last store to every entry a doorbell publishes and before that doorbell
 * (SPDK: spdk_wmb() before nvme_pcie_qpair_ring_sq_doorbell; Intel SDM Vol. 3A "Buffering of
 * Write Combining Memory Locations"). Proved on our NVMe device in-process, recording: every
 * doorbell write is noted as it reaches the device, with the CMB's bytes at that moment, and the
 * fence the driver calls notes the CMB's bytes when it runs. And what the fence is: V8 compiles it to a
 * locked instruction on x64.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NvmeController, storeFence } from '../../../src/driver/nvme/index.js';
import { openOurNvme } from './device-rig.js';

/** The I/O SQ whose tail doorbell BAR0 `offset` is, if it is one. */
function sqDoorbell(offset: number): number | undefined {
  // SQ y Tail doorbells at 0x1000 + 8y (CAP.DSTRD 0, NVMe 1.4 §3.1.24); y 0 is the admin SQ.
  return offset > 0x1000 && offset < 0x2000 && (offset & 7) === 0 ? (offset - 0x1000) / 8 : undefined;
}

/** Queue pair n's SQ sits at page n - 1 of the CMB (the driver carves it page aligned). */
const SNAPSHOT_BYTES = 2 * 4096;

type Event =
  | { kind: 'fence'; snap: Uint8Array }
  | { kind: 'doorbell'; qid: number; tail: number; snap: Uint8Array };

/**
 * For every I/O SQ doorbell: a fence ran before it, and the entries it publishes (from the
 * queue's previous tail up to the new one) already held their final bytes when the latest fence
 * before the doorbell ran. Every entry the test submits is unique (distinct LBAs), so an entry
 * stored after that fence shows as a difference. Returns the violations.
 */
export function fenceViolations(events: readonly Event[], depth: number): string[] {
  const bad: string[] = [];
  const tails = new Map<number, number>();
  let lastFence: Uint8Array | undefined;
  for (const [i, e] of events.entries()) {
    if (e.kind === 'fence') {
      lastFence = e.snap;
      continue;
    }
    const from = tails.get(e.qid) ?? 0;
    tails.set(e.qid, e.tail);
    if (!lastFence) {
      bad.push(`event ${i}: doorbell of SQ ${e.qid} (tail ${e.tail}) with no fence before it`);
      continue;
    }
    for (let s = from; s !== e.tail; s = (s + 1) % depth) {
      const at = (e.qid - 1) * 4096 + s * 64;
      const fenced = lastFence.subarray(at, at + 64);
      const rung = e.snap.subarray(at, at + 64);
      if (!fenced.every((b, k) => b === rung[k]))
        bad.push(`event ${i}: SQ ${e.qid} slot ${s} was written after the last fence before its doorbell`);
    }
  }
  return bad;
}

describe('store fence before every doorbell of a write-combining submission queue', () => {
  it('CMB submission queues: every published entry was fenced before its doorbell (2 queues, 240 commands)', async () => {
    const events: Event[] = [];
    const snapshot = () => rig.model!.controller.host.cmb()!.slice(0, SNAPSHOT_BYTES);
    const rig = await openOurNvme('in-process', {
      onRegisterWrite: (offset, _size, value) => {
        const qid = sqDoorbell(offset);
        if (qid !== undefined) events.push({ kind: 'doorbell', qid, tail: Number(value), snap: snapshot() });
      },
    });
    const fence = () => {
      events.push({ kind: 'fence', snap: snapshot() });
      storeFence();
    };
    try {
      const c = await NvmeController.open(rig.dev, { sq: 'cmb', fence });
      const from = rig.model!.controller.stats.sqesFromCmb;
      try {
        const qps = [await c.createQueuePair({ depth: 8 }), await c.createQueuePair({ depth: 8 })];
        assert.ok(qps.every((q) => q.wc));
        const bufs = await Promise.all(Array.from({ length: 14 }, () => c.alloc(4096)));
        let lba = 0;
        for (let round = 0; round < 20; round++)
          await Promise.all(
            bufs.map(async (b, k) => {
              const q = qps[k % 2]!;
              const mine = lba++;
              if (round % 2) await q.read(1, BigInt(mine), 1, b);
              else await q.write(1, BigInt(mine), 1, b);
            }),
          );
        await Promise.all(qps.map((q) => q.flush(1)));
        assert.equal(rig.model!.controller.stats.sqesFromCmb - from, 282, 'all fetched from the CMB');
      } finally {
        await c.close();
      }
    } finally {
      await rig.close();
    }
    const doorbells = events.filter((e) => e.kind === 'doorbell').length;
    assert.ok(doorbells >= 282, `${doorbells} submission doorbells recorded`);
    assert.deepEqual(fenceViolations(events, 8), []);
    assert.ok(
      events.filter((e) => e.kind === 'fence').length >= doorbells,
      'one fence per doorbell at least',
    );
  });

  it('the check fails a doorbell rung without a fence, or with an entry stored after the fence', () => {
    const zero = new Uint8Array(SNAPSHOT_BYTES);
    const one = zero.slice();
    one[5] = 1; // SQ 1 slot 0 written
    assert.match(fenceViolations([{ kind: 'doorbell', qid: 1, tail: 1, snap: one }], 8)[0]!, /no fence/);
    const stale = fenceViolations(
      [
        { kind: 'fence', snap: zero },
        { kind: 'doorbell', qid: 1, tail: 1, snap: one },
      ],
      8,
    );
    assert.match(stale[0]!, /SQ 1 slot 0 was written after the last fence/);
    assert.deepEqual(
      fenceViolations(
        [
          { kind: 'fence', snap: one },
          { kind: 'doorbell', qid: 1, tail: 1, snap: one },
        ],
        8,
      ),
      [],
    );
  });

  it('host-memory submission queues take no fence (x86 orders ordinary stores before the UC doorbell)', async () => {
    const rig = await openOurNvme('in-process');
    let fences = 0;
    try {
      const c = await NvmeController.open(rig.dev, { sq: 'host', fence: () => fences++ });
      try {
        const q = await c.createQueuePair({ depth: 8 });
        assert.equal(q.wc, false);
        const b = await c.alloc(4096);
        for (let i = 0; i < 10; i++) await q.write(1, BigInt(i), 1, b);
      } finally {
        await c.close();
      }
    } finally {
      await rig.close();
    }
    assert.equal(fences, 0);
  });

  it('V8 on x64 compiles storeFence to a locked instruction (a call of the AtomicsStore builtin, whose Int32 path is XCHG, or an inlined XCHG/LOCK/MFENCE)', (t) => {
    if (process.arch !== 'x64') {
      t.skip(`the fence finding is about x86-64; this is ${process.arch}`);
      return;
    }
    const barrier = fileURLToPath(new URL('../../../src/driver/nvme/barrier.js', import.meta.url));
    const script = `import { storeFence } from ${JSON.stringify(barrier)}; for (let i = 0; i < 300000; i++) storeFence();`;
    const r = spawnSync(
      process.execPath,
      ['--print-opt-code', '--print-opt-code-filter=storeFence', '--input-type=module', '-e', script],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    assert.equal(r.status, 0, r.stderr);
    const code = r.stdout.split('--- Optimized code ---').slice(1).join('\n');
    assert.match(code, /name = storeFence/, 'storeFence was optimized');
    const instr = code.split('\n').filter((l) => /^0x[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s/.test(l));
    const locked = instr.filter((l) => /\b(xchg|lock|mfence|sfence)\b/.test(l) || /\(AtomicsStore\)/.test(l));
    console.log(
      `storeFence on ${process.version}: ${locked.map((l) => l.replace(/\s+/g, ' ').trim()).join(' | ')}`,
    );
    assert.ok(locked.length >= 1, instr.join('\n'));
  });
});
