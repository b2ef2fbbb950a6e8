/**
 * The NVMe driver against our NVMe controller (src/devices/nvme) on a disk image, in-process and
 * over vfio-user from `vfio-ts serve --device nvme` as a child process: Identify; verified random
 * writes and reads with the submission queue in host memory and in the CMB mapped WC through
 * each write-combining path the backend offers, completions by polling and by MSI-X eventfd; the
 * data on the image file afterwards, and the device's own count of the entries it fetched from
 * its CMB; every PRP shape up to MDTS, and chained PRP lists with a larger MDTS; clean shutdown
 * with nothing left (DMA mappings, fds); the server killed under the driver.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import { NO_EXTENSIONS } from '../../../src/core/wc.js';
import type { WcPath } from '../../../src/driver/device.js';
import {
  type DmaBuffer,
  type IoQueuePair,
  NvmeController,
  type NvmeOptions,
  NvmeStatusError,
} from '../../../src/driver/nvme/index.js';
import { VfioError } from '../../../src/errors.js';
import { openFdCount } from '../../../src/native/index.js';
import { BACKENDS, type Backend, CMB_BYTES, IMAGE_BYTES, type OurNvme, openOurNvme } from './device-rig.js';

const BLOCK = 512;
/** The WC paths the core offers for the CMB BAR on each backend (the RFC's ioctl has no vfio-user command). */
const WC_PATHS: Record<Backend, readonly WcPath[]> = {
  'in-process': ['cookie', 'dma-buf', 'alias-region', 'rfc-region-flags'],
  'vfio-user': ['cookie', 'dma-buf', 'alias-region'],
};

/** A buffer inside `buf` starting `offset` bytes in (PRP1 with an offset, NVMe 1.4 §4.3). */
function at(buf: DmaBuffer, offset: number): DmaBuffer {
  return { iova: buf.iova + BigInt(offset), bytes: buf.bytes.subarray(offset) };
}

function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

async function withRig(
  backend: Backend,
  o: Parameters<typeof openOurNvme>[1],
  fn: (r: OurNvme) => Promise<void>,
) {
  const r = await openOurNvme(backend, o);
  try {
    await fn(r);
  } finally {
    await r.close();
  }
}

/**
 * `count` writes of 1..16 blocks to distinct random 16-block slots, `qd` at a time, from
 * buffers starting 0, 512 or 1024 bytes into a page (one page, two, a PRP List), each extent's
 * bytes its own; then every extent read back into zeroed buffers and compared. Returns what the
 * image must now hold, by LBA.
 */
async function randomWritesAndReads(
  c: NvmeController,
  qp: IoQueuePair,
  count: number,
  qd: number,
  seed: number,
): Promise<Map<number, Uint8Array>> {
  const rnd = xorshift(seed);
  const slots = Number(c.namespace(1).nsze) / 16;
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(rnd() % slots);
  const extents = [...chosen].map((slot, i) => {
    const data = new Uint8Array((1 + (rnd() % 16)) * BLOCK);
    for (let b = 0; b < data.length; b += 4) new DataView(data.buffer).setUint32(b, rnd());
    return { lba: slot * 16, data, offset: (i % 3) * BLOCK };
  });
  const bufs = await Promise.all(Array.from({ length: qd }, () => c.alloc(16 * BLOCK + 2 * BLOCK)));
  const each = async (fn: (buf: DmaBuffer, e: (typeof extents)[number]) => Promise<void>) => {
    let next = 0;
    await Promise.all(
      bufs.map(async (buf) => {
        while (next < extents.length) {
          const e = extents[next++]!;
          await fn(at(buf, e.offset), e);
        }
      }),
    );
  };
  await each(async (b, e) => {
    b.bytes.set(e.data);
    await qp.write(1, BigInt(e.lba), e.data.length / BLOCK, b);
  });
  await each(async (b, e) => {
    b.bytes.fill(0, 0, e.data.length);
    await qp.read(1, BigInt(e.lba), e.data.length / BLOCK, b);
    assert.deepEqual(b.bytes.subarray(0, e.data.length), e.data, `LBA ${e.lba} read back`);
  });
  return new Map(extents.map((e) => [e.lba, e.data]));
}

function assertOnImage(r: OurNvme, written: Map<number, Uint8Array>): void {
  for (const [lba, data] of written)
    assert.deepEqual(r.readImage(lba * BLOCK, data.length), data, `LBA ${lba} on the image file`);
}

for (const backend of BACKENDS) {
  describe(`NVMe driver on our NVMe device (${backend})`, () => {
    it('identify: the controller, its namespace on the image, the CMB and the WC paths to it', async () => {
      await withRig(backend, {}, async (r) => {
        assert.deepEqual(await r.dev.wcPaths(2), WC_PATHS[backend]);
        const c = await NvmeController.open(r.dev);
        try {
          assert.equal(c.identity.model, 'vfio-ts NVMe controller');
          assert.match(
            c.identity.serial,
            backend === 'in-process' ? /^vfio-ts-nvme$/ : /^vfiots-[0-9a-f]{12}$/,
          );
          assert.equal(c.identity.version, 0x10400);
          assert.equal(c.maxTransferBytes, 512 << 10, 'MDTS 7');
          assert.equal(c.ioQueuesGranted, 4);
          assert.equal(c.regs.route, 'pwrite', 'BAR0 is trapped: registers by pread/pwrite');
          const ns = c.namespace(1);
          assert.deepEqual([ns.nsze, ns.blockBytes], [BigInt(IMAGE_BYTES / BLOCK), BLOCK]);
          assert.deepEqual([c.cmbInfo?.bar, c.cmbInfo?.offset, c.cmbInfo?.size], [2, 0n, BigInt(CMB_BYTES)]);
          assert.equal(c.cmb, undefined, 'found, not mapped, without sq: cmb');
        } finally {
          await c.close();
        }
      });
    });

    const placements: { sq: 'host' | 'cmb'; wcPath?: WcPath }[] = [
      { sq: 'host' },
      ...WC_PATHS[backend].map((wcPath) => ({ sq: 'cmb' as const, wcPath })),
    ];
    for (const { sq, wcPath } of placements)
      for (const completions of ['poll', 'interrupt'] as const)
        it(`SQ in ${sq === 'host' ? 'host memory' : `the CMB, WC via ${wcPath}`}, completions by ${completions}: verified random writes and reads, on the image, fetched from ${sq === 'host' ? 'host memory' : 'the CMB'}`, async () => {
          await withRig(backend, {}, async (r) => {
            const options: NvmeOptions = { sq, completions, ...(wcPath && { wcPath }) };
            const c = await NvmeController.open(r.dev, options);
            let written: Map<number, Uint8Array>;
            const count = 48;
            try {
              if (wcPath) assert.deepEqual([c.cmb?.mapping.via, c.cmb?.mapping.attribute], [wcPath, 'wc']);
              const qp = await c.createQueuePair({ depth: 16 });
              assert.equal(qp.wc, sq === 'cmb');
              written = await randomWritesAndReads(c, qp, count, 8, 0x5eed + count);
              await qp.flush(1);
            } finally {
              await c.close();
            }
            assertOnImage(r, written);
            if (wcPath === 'rfc-region-flags') {
              // The driver set BAR2's own offset WC (SET_REGION_FLAGS) and put it back at close.
              const m = await r.dev.map(2, { length: 4096 });
              assert.deepEqual([m.via, m.attribute], ['region', 'uc']);
              m.unmap();
            }
            const n = await r.counts();
            assert.deepEqual([n.writes, n.reads], [count, count]);
            assert.equal(n.sqesFromCmb, sq === 'cmb' ? 2 * count + 1 : 0, 'I/O entries fetched from the CMB');
          });
        });

    it('every PRP shape up to MDTS (512 KiB: a 127-entry list); one block more is EINVAL before anything is submitted', async () => {
      await withRig(backend, {}, async (r) => {
        const c = await NvmeController.open(r.dev);
        const expected: [number, Uint8Array][] = [];
        try {
          const qp = await c.createQueuePair({ depth: 4 });
          const out = await c.alloc((512 << 10) + 4096);
          const back = await c.alloc((512 << 10) + 4096);
          // [LBA, blocks, offset of the buffer in its page]
          const cases: [number, number, number][] = [
            [0, 1, 0],
            [7, 8, 0],
            [100, 16, 0],
            [300, 128, 0],
            [1000, 24, 1024],
            [2048, 1024, 0],
            [4096, 1023, 512],
          ];
          for (const [i, [lba, blocks, offset]] of cases.entries()) {
            const src = at(out, offset).bytes.subarray(0, blocks * BLOCK);
            for (let b = 0; b < src.length; b++) src[b] = (b * 31 + i * 7 + (b >> 9)) & 0xff;
            const dst = at(back, offset);
            dst.bytes.fill(0);
            await qp.write(1, BigInt(lba), blocks, at(out, offset));
            await qp.read(1, BigInt(lba), blocks, dst);
            assert.deepEqual(dst.bytes.subarray(0, blocks * BLOCK), src, `case ${i}`);
            expected.push([lba, src.slice()]);
          }
          const before = r.model?.controller.stats.commands;
          await assert.rejects(qp.read(1, 0n, 1025, out), (e: unknown) => {
            assert.ok(e instanceof VfioError && e.errno === Errno.EINVAL, String(e));
            assert.match(e.message, /524800 bytes exceed the controller's largest transfer, 524288 \(MDTS\)/);
            return true;
          });
          if (r.model) assert.equal(r.model.controller.stats.commands, before, 'nothing submitted');
        } finally {
          await c.close();
        }
        for (const [lba, data] of expected)
          assert.deepEqual(r.readImage(lba * BLOCK, data.length), data, `LBA ${lba} on the image`);
        const n = await r.counts();
        assert.deepEqual([n.writes, n.reads], [7, 7], 'the refused read never reached the device');
      });
    });

    it('shuts down cleanly: CC.SHN then CC.EN = 0, the device says so, no DMA mapping or fd left', async () => {
      // Counted around the whole session over vfio-user (a client keeps region fds until it
      // closes, and the child's pipes go with it); in-process around the driver.
      let fds = openFdCount();
      const r = await openOurNvme(backend);
      try {
        if (backend === 'in-process') fds = openFdCount();
        const c = await NvmeController.open(r.dev, { sq: 'cmb', completions: 'interrupt' });
        const a = await c.createQueuePair({ depth: 4 });
        const b = await c.createQueuePair({ depth: 4, sq: 'host' });
        const buf = await c.alloc(4096);
        await a.write(1, 0n, 8, buf);
        await b.read(1, 0n, 8, buf);
        await c.close();
        const cc = await r.dev.read32(0, 0x14);
        assert.equal(cc & 1, 0, 'CC.EN cleared');
        assert.equal((cc >> 14) & 3, 1, 'CC.SHN normal shutdown was requested');
        assert.equal((await r.dev.read32(0, 0x1c)) & 1, 0, 'CSTS.RDY clear');
        const n = await r.counts();
        assert.deepEqual([n.writes, n.reads, n.sqesFromCmb], [1, 1, 1]);
        if (r.dmaCount) assert.equal(r.dmaCount(), 0, 'every DMA mapping released');
        await assert.rejects(a.read(1, 0n, 1, buf), /EBADF|EIO/);
        if (backend === 'in-process') assert.equal(openFdCount(), fds, 'no fd left open');
      } finally {
        await r.close();
      }
      if (backend === 'vfio-user') assert.equal(openFdCount(), fds, 'no fd left open');
    });
  });
}

describe('NVMe driver on our NVMe device: the CMB, MDTS, the server going away', () => {
  it('CMBMSC: CRE and CMSE with CBA = BAR2 address; two placements side by side, counted by the device', async () => {
    await withRig('in-process', {}, async (r) => {
      const c = await NvmeController.open(r.dev, { sq: 'cmb' });
      try {
        const msc = (BigInt(await r.dev.read32(0, 0x54)) << 32n) | BigInt(await r.dev.read32(0, 0x50));
        assert.equal(msc & 3n, 3n, 'CRE and CMSE');
        const bar = await r.dev.readConfig(0x18, 8);
        const dv = new DataView(bar.buffer, bar.byteOffset);
        const bar2 = (BigInt(dv.getUint32(4, true)) << 32n) | BigInt((dv.getUint32(0, true) & ~0xf) >>> 0);
        assert.equal(msc & ~0xfffn, bar2, 'CBA = the PCI address of the CMB');
        const host = await c.createQueuePair({ depth: 4, sq: 'host' });
        const cmb = await c.createQueuePair({ depth: 4 });
        const stats = r.model!.controller.stats;
        const from = stats.sqesFromCmb;
        await host.flush(1);
        assert.equal(stats.sqesFromCmb, from);
        await cmb.flush(1);
        assert.equal(stats.sqesFromCmb, from + 1);
      } finally {
        await c.close();
      }
    });
  });

  it('no WC path, or no CMB: sq cmb is EOPNOTSUPP naming why, and nothing is left held', async () => {
    for (const [o, re] of [
      [{ extensions: NO_EXTENSIONS }, /nvme CMB: EOPNOTSUPP.*need a write-combining mapping of BAR2/],
      [{ cmbSize: 0 }, /EOPNOTSUPP.*no Controller Memory Buffer/],
    ] as const)
      await withRig('in-process', o, async (r) => {
        const fds = openFdCount();
        await assert.rejects(NvmeController.open(r.dev, { sq: 'cmb' }), re);
        assert.equal(r.dmaCount!(), 0);
        assert.equal(openFdCount(), fds);
      });
  });

  it("over vfio-user the RFC's region flags are no path: asked for explicitly, ENOTTY", async () => {
    await withRig('vfio-user', {}, async (r) => {
      await assert.rejects(
        NvmeController.open(r.dev, { sq: 'cmb', wcPath: 'rfc-region-flags' }),
        /nvme CMB: ENOTTY.*write-combining mapping of BAR2/,
      );
    });
  });

  for (const backend of BACKENDS)
    it(`MDTS 10 (4 MiB), ${backend}: chained PRP lists carry 4 MiB from a buffer 1 KiB into a page (three list pages); 4 MiB + 1 block is EINVAL`, async () => {
      await withRig(backend, { mdts: 10 }, async (r) => {
        const c = await NvmeController.open(r.dev, { sq: 'cmb' });
        const length = 4 << 20;
        const src = new Uint8Array(length);
        for (let b = 0; b < length; b += 4) new DataView(src.buffer).setUint32(b, (b * 2654435761) >>> 0);
        try {
          assert.equal(c.maxTransferBytes, length);
          const qp = await c.createQueuePair({ depth: 4 });
          assert.equal(qp.listPages, 3, 'list pages per command: 4 MiB from inside a page spans 1025 pages');
          const out = at(await c.alloc(length + 4096), 1024);
          const back = at(await c.alloc(length + 4096), 1024);
          out.bytes.set(src);
          await qp.write(1, 0n, length / BLOCK, out);
          await qp.read(1, 0n, length / BLOCK, back);
          assert.ok(Buffer.compare(back.bytes.subarray(0, length), src) === 0, 'read back');
          await assert.rejects(qp.write(1, 0n, length / BLOCK + 1, out), /EINVAL.*\(MDTS\)/);
        } finally {
          await c.close();
        }
        const n = await r.counts();
        assert.deepEqual(
          [n.writes, n.reads, n.sqesFromCmb],
          [1, 1, 2],
          'the device saw one write and one read, both from its CMB: the one over MDTS was never submitted',
        );
        assert.ok(Buffer.compare(r.readImage(0, length), src) === 0, '4 MiB on the image');
      });
    });

  it('close with commands in flight: each ends as the device ended it — done, or Command Aborted due to SQ Deletion for those never fetched', async () => {
    await withRig('in-process', { faults: true }, async (r) => {
      const c = await NvmeController.open(r.dev, { completions: 'interrupt' });
      const qp = await c.createQueuePair({ depth: 128 });
      const buf = await c.alloc(4096);
      r.disk!.hangReads = true;
      // The device takes 64 commands of one SQ at a time (MAX_INFLIGHT_PER_SQ); 6 stay in the SQ.
      const outcomes = Array.from({ length: 70 }, (_, i) =>
        qp.read(1, BigInt(i * 8), 8, buf).then(
          () => 'done',
          (e: unknown) => (e instanceof NvmeStatusError ? `SC ${e.sc}h` : String(e)),
        ),
      );
      const stats = r.model!.controller.stats;
      for (let i = 0; i < 500 && stats.commands < 2 + 2 + 64; i++)
        await new Promise((res) => setTimeout(res, 10));
      const closed = c.close();
      setTimeout(() => r.disk!.release(), 50);
      await closed;
      const counts = new Map<string, number>();
      for (const o of await Promise.all(outcomes)) counts.set(o, (counts.get(o) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(counts), { done: 64, 'SC 8h': 6 });
    });
  });

  it('the server killed under the driver: the command in flight and every later one fail (not a timeout); close returns', async () => {
    await withRig('vfio-user', {}, async (r) => {
      const c = await NvmeController.open(r.dev, { ioTimeoutMs: 60_000 });
      const qp = await c.createQueuePair({ depth: 8 });
      const buf = await c.alloc(4096);
      await qp.write(1, 0n, 8, buf);
      const exited = new Promise((res) => r.server!.once('exit', res));
      r.server!.kill('SIGKILL');
      await exited;
      const caught = (p: Promise<unknown>) =>
        p.then(
          () => assert.fail('resolved'),
          (e: unknown) => e,
        );
      const first = await caught(qp.read(1, 0n, 8, buf));
      assert.ok(first instanceof VfioError && first.errno !== Errno.ETIMEDOUT, String(first));
      console.log(`after SIGKILL: ${first.message}`);
      await assert.rejects(qp.read(1, 0n, 8, buf), (e: unknown) => e instanceof VfioError);
      await c.close().catch(() => {});
    });
  });
});
