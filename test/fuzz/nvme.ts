/**
 * NVMe controller fuzzer: a hostile driver on the fake host (test/devices/nvme/fake-host.ts).
 * Each step does one of: submit a mutated command (valid templates, then bit flips, interesting
 * values in the dwords, PRPs inside and outside host memory, PRP lists of random entries) on the
 * admin or an I/O queue; write a random doorbell (any queue, any value); write a random register
 * (CC toggles, shutdown, AQA/ASQ/ACQ anywhere, CMBMSC); consume completions like a driver; reset
 * (FLR) or set the controller up again.
 *
 * Findings (crashes): an exception out of a register access, an unhandled rejection, an
 * "internal error" the controller logs (a bug, not bad input), a bound broken (commands in
 * flight, completions waiting), or a controller that does not work again after an FLR at the end.
 */
import { MAX_INFLIGHT } from '../../src/devices/nvme/engine.js';
import { MemoryNamespace } from '../../src/devices/nvme/namespace.js';
import { LAYOUT, MEM_BASE, MEM_SIZE, type Rig, rig, type Sqe, turn } from '../devices/nvme/fake-host.js';
import { count, crash, type FuzzStats, newStats, Rng } from './prng.js';

export interface NvmeFuzzOptions {
  readonly seed: number;
  readonly steps: number;
  /** Every DMA a turn of the event loop late (DMA_READ/DMA_WRITE), or immediate (mapped memory). */
  readonly remote?: boolean;
}

const CBA = 0xf000_0000n;
const CMB_SIZE = 4 << 20;

/** Commands worth starting from: every opcode the controller knows, with sensible fields. */
function templates(rng: Rng): Sqe[] {
  const data = LAYOUT.DATA + BigInt(rng.int(64) * 4096);
  const list = LAYOUT.DATA + 0x20_0000n + BigInt(rng.int(16) * 4096);
  const slba = rng.int(4096);
  const nlb = rng.pick([0, 7, 63, 255, 1023]);
  return [
    { opcode: 0x06, prp1: data, cdw10: rng.int(4), nsid: rng.pick([0, 1, 2, 0xffffffff]) },
    {
      opcode: 0x05,
      prp1: LAYOUT.IOCQ + 0x8_0000n,
      cdw10: (rng.int(64) << 16) | rng.int(6),
      cdw11: 3 | (rng.int(70) << 16),
    },
    {
      opcode: 0x01,
      prp1: rng.chance(0.3) ? CBA + 0x1000n : LAYOUT.IOSQ + 0x8_0000n,
      cdw10: (rng.int(64) << 16) | rng.int(6),
      cdw11: 1 | (rng.int(6) << 16),
    },
    { opcode: 0x00, cdw10: rng.int(6) },
    { opcode: 0x04, cdw10: rng.int(6) },
    { opcode: 0x09, cdw10: rng.int(16), cdw11: rng.interesting32() },
    { opcode: 0x0a, cdw10: rng.int(16) | (rng.int(4) << 8), cdw11: rng.interesting32() },
    {
      opcode: 0x02,
      nsid: 0xffffffff,
      prp1: data,
      prp2: list,
      cdw10: (1 + rng.int(3)) | (rng.int(2048) << 16),
      cdw12: rng.int(1024),
    },
    { opcode: 0x0c },
    { opcode: 0x08, cdw10: rng.u32() },
    { opcode: 0x02, nsid: 1, prp1: data, prp2: list, cdw10: slba, cdw12: nlb },
    {
      opcode: 0x01,
      nsid: 1,
      prp1: data,
      prp2: list,
      cdw10: slba,
      cdw12: nlb | (rng.chance(0.2) ? 1 << 30 : 0),
    },
    { opcode: 0x00, nsid: rng.pick([1, 0xffffffff]) },
    { opcode: 0x08, nsid: 1, cdw10: slba, cdw12: rng.u32() & 0x0200ffff },
    { opcode: 0x09, nsid: 1, prp1: data, cdw10: rng.int(256), cdw11: 4 },
  ];
}

/** A 64-bit value for a pointer: mostly host memory, some CMB, some anywhere. */
function pointer(rng: Rng): bigint {
  if (rng.chance(0.7))
    return MEM_BASE + BigInt(rng.int(MEM_SIZE)) - (rng.chance(0.8) ? BigInt(rng.int(MEM_SIZE)) % 4096n : 0n);
  if (rng.chance(0.5)) return CBA + BigInt(rng.int(CMB_SIZE));
  return rng.interesting64();
}

function mutateSqe(rng: Rng, sqe: Sqe): Sqe {
  const s = { ...sqe };
  for (let i = rng.int(4); i > 0; i--) {
    switch (rng.int(9)) {
      case 0:
        s.flags = rng.chance(0.5) ? rng.u32() & 0xff : rng.pick([1, 2, 0x40, 0x80]);
        break;
      case 1:
        s.nsid = rng.interesting32();
        break;
      case 2:
        s.prp1 = pointer(rng);
        break;
      case 3:
        s.prp2 = pointer(rng);
        break;
      case 4:
        s.cdw10 = rng.interesting32();
        break;
      case 5:
        s.cdw11 = rng.interesting32();
        break;
      case 6:
        s.cdw12 = rng.interesting32();
        break;
      case 7:
        s.cdw13 = rng.interesting32();
        break;
      default:
        s.opcode = rng.u32() & 0xff;
    }
  }
  return s;
}

/** Enable with admin queues, CMB space on, I/O queue pair 1 (what every run starts from). */
async function setUp(r: Rig): Promise<void> {
  r.ctl.write(0x54, 4, 0);
  r.ctl.write(0x50, 4, Number(CBA) | 3);
  await r.driver.enable();
  await r.driver.createIoQueues(1);
}

/** Random PRP list pages in host memory: entries mostly page-aligned host pages. */
function scribble(rng: Rng, r: Rig): void {
  const page = LAYOUT.DATA + 0x20_0000n + BigInt(rng.int(16) * 4096);
  const v = r.host.view(page, 4096);
  for (let i = 0; i < 512; i++)
    v.setBigUint64(i * 8, rng.chance(0.9) ? LAYOUT.DATA + BigInt(rng.int(256) * 4096) : pointer(rng), true);
}

export async function fuzzNvme(o: NvmeFuzzOptions): Promise<FuzzStats> {
  const stats = newStats(`nvme${o.remote ? '/remote' : ''}`, o.seed);
  const rng = new Rng(o.seed);
  const r = rig({
    remote: o.remote ?? false,
    ns: new MemoryNamespace(2 << 20),
    controller: { cmb: { bar: 2, size: CMB_SIZE } },
  });
  r.host.cmbBytes = new Uint8Array(CMB_SIZE);
  let step = '';
  const onRejection = (e: unknown) =>
    crash(stats, `seed ${o.seed} step ${stats.tried} (${step}): unhandled rejection ${e}`);
  process.on('unhandledRejection', onRejection);
  const guard = (what: string, f: () => void) => {
    step = what;
    try {
      f();
    } catch (e) {
      crash(stats, `seed ${o.seed} step ${stats.tried}: ${what} threw ${e instanceof Error ? e.stack : e}`);
    }
  };
  try {
    await setUp(r);
    for (let i = 0; i < o.steps; i++) {
      stats.tried++;
      const k = rng.int(100);
      if (k < 45) {
        const qid = rng.chance(0.4) ? 0 : 1;
        const base = rng.pick(templates(rng));
        const sqe = rng.chance(0.3) ? base : mutateSqe(rng, base);
        if (r.ctl.sqs[qid]) {
          guard(
            `submit q${qid} ${JSON.stringify(sqe, (_, v) => (typeof v === 'bigint' ? v.toString(16) : v))}`,
            () => {
              r.driver.place(qid, sqe);
              r.driver.ring(qid);
            },
          );
          count(stats, 'submit');
        }
      } else if (k < 60) {
        const offset = 0x1000 + (rng.chance(0.9) ? rng.int(0x400) * 4 : rng.int(0x1000));
        const value = rng.chance(0.5) ? rng.int(64) : rng.interesting32();
        guard(`doorbell 0x${offset.toString(16)} = 0x${value.toString(16)}`, () =>
          r.ctl.write(offset, 4, value),
        );
        count(stats, 'doorbell');
      } else if (k < 68) {
        const offset = rng.chance(0.8)
          ? rng.pick([0x0c, 0x10, 0x14, 0x1c, 0x24, 0x28, 0x2c, 0x30, 0x34, 0x50, 0x54])
          : rng.int(0x4000);
        const value = rng.chance(0.5)
          ? rng.interesting32()
          : rng.pick([0x0046_0001, 0x0046_4001, 0x0046_8001, 0, 0x0046_0081]);
        const size = rng.chance(0.9) ? 4 : rng.pick([1, 2] as const);
        guard(`register 0x${offset.toString(16)} = 0x${value.toString(16)} (${size})`, () => {
          r.ctl.write(offset, size, value);
          r.ctl.read(offset & ~(size - 1), size);
          r.ctl.read64(offset & ~7);
        });
        count(stats, 'register');
      } else if (k < 88) {
        // Consume what completed, like a driver's interrupt handler.
        for (const qid of [0, 1]) {
          step = `consume q${qid}`;
          for (let c = r.driver.consume(qid); c; c = r.driver.consume(qid))
            count(stats, `status 0x${c.status.toString(16)}`);
        }
      } else if (k < 93) {
        scribble(rng, r);
      } else if (k < 95) {
        guard('FLR', () => r.ctl.reset());
        count(stats, 'flr');
        if (rng.chance(0.7)) await setUp(r).catch(() => count(stats, 'setup failed'));
      } else if (k < 97) {
        await r.driver.disable();
        await setUp(r).catch(() => count(stats, 'setup failed'));
      } else {
        for (let t = rng.int(20); t > 0; t--) await turn();
      }
      if (rng.chance(0.5)) await turn();
      // Bounds: nothing grows past what the controller admits.
      if (r.ctl.engine.inflight > MAX_INFLIGHT)
        crash(stats, `seed ${o.seed}: ${r.ctl.engine.inflight} commands in flight`);
      for (const cq of r.ctl.cqs)
        if (cq && cq.pending.length > MAX_INFLIGHT + cq.size)
          crash(stats, `seed ${o.seed}: ${cq.pending.length} completions waiting on CQ ${cq.id}`);
    }
    for (let t = 0; t < 50; t++) await turn();
    if (r.ctl.stats.fatal) count(stats, 'fatal at the end');
    for (const l of r.host.lines) if (/internal error/.test(l)) crash(stats, `seed ${o.seed}: ${l}`);
    // Liveness: after an FLR the controller works like new.
    r.ctl.reset();
    await setUp(r);
    const id = await r.driver.admin({ opcode: 0x06, prp1: LAYOUT.DATA, cdw10: 1 });
    if (id.status !== 0)
      crash(stats, `seed ${o.seed}: Identify after FLR: status 0x${id.status.toString(16)}`);
    const io = await r.driver.submit(1, { opcode: 0x02, nsid: 1, prp1: LAYOUT.DATA, cdw12: 7 });
    if (io.status !== 0) crash(stats, `seed ${o.seed}: Read after FLR: status 0x${io.status.toString(16)}`);
  } catch (e) {
    crash(stats, `seed ${o.seed} step ${stats.tried} (${step}): ${e instanceof Error ? e.stack : e}`);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
  return stats;
}
