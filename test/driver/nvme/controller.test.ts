/**
 * The NVMe driver against the fake controller, in-process and over vfio-user: bring-up and
 * Identify, Read/Write/Flush through PRPs (one page, two, a PRP List, a buffer starting inside a
 * page), submission queues in host memory and in the CMB (write-combining), completions by
 * polling and by MSI-X eventfd, and clean shutdown (queues deleted, CC.SHN, CC.EN cleared,
 * nothing left mapped, no fd leaked).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type DmaBuffer, NvmeController, type NvmeOptions } from '../../../src/driver/nvme/index.js';
import { openFdCount } from '../../../src/native/index.js';
import { FAKE_CMB_BYTES } from './fake-nvme.js';
import { openRig, RIG_TRANSPORTS, type Rig } from './rig.js';

function fillPattern(b: Uint8Array, seed: number): void {
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
}

/** A buffer inside `buf` starting `offset` bytes in (PRP1 with an offset, NVMe 1.4 §4.3). */
function at(buf: DmaBuffer, offset: number): DmaBuffer {
  return { iova: buf.iova + BigInt(offset), bytes: buf.bytes.subarray(offset) };
}

async function withController(
  rig: Rig,
  options: NvmeOptions,
  fn: (c: NvmeController) => Promise<void>,
): Promise<void> {
  const c = await NvmeController.open(rig.dev, options);
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

for (const transport of RIG_TRANSPORTS) {
  describe(`NVMe driver on the fake controller (${transport})`, () => {
    it('brings the controller up (CC/CSTS), identifies it and its namespace', async () => {
      const rig = await openRig(transport, { blocks: 4096, blockBytes: 512 });
      try {
        await withController(rig, {}, async (c) => {
          assert.equal(c.identity.model, 'vfio-ts fake nvme');
          assert.equal(c.identity.serial, 'FAKE0001');
          assert.equal(c.identity.firmware, '1.0');
          assert.equal(c.identity.version, 0x10400);
          assert.equal(c.ioQueuesGranted, 4);
          assert.deepEqual([...c.namespaces.keys()], [1]);
          const ns = c.namespace(1);
          assert.deepEqual([ns.nsze, ns.blockBytes], [4096n, 512]);
          // BAR0 is trapped in this device (no MMAP flag): registers go through pwrite.
          assert.equal(c.regs.route, 'pwrite');
          assert.equal(c.maxTransferBytes, 4096 << 5);
          assert.deepEqual(c.cmbInfo && [c.cmbInfo.bar, c.cmbInfo.offset, c.cmbInfo.size], [
            2,
            0n,
            1n << 20n,
          ]);
          assert.equal(c.cmb, undefined, 'the CMB is found, not mapped, without sq: cmb');
        });
      } finally {
        await rig.close();
      }
    });

    for (const sq of ['host', 'cmb'] as const)
      for (const completions of ['poll', 'interrupt'] as const)
        it(`writes and reads back through PRPs: sq ${sq}, completions by ${completions}`, async () => {
          const rig = await openRig(transport, { blocks: 2048, blockBytes: 512 });
          try {
            await withController(rig, { sq, completions }, async (c) => {
              const qp = await c.createQueuePair({ depth: 8 });
              assert.equal(qp.wc, sq === 'cmb');
              const out = await c.alloc(64 << 10);
              const back = await c.alloc(64 << 10);
              // 1 block, 8 blocks (one page), 16 (two pages: PRP2 a data page), 128 (PRP List),
              // and 24 blocks from 1 KiB into a page (PRP1 offset, three pages).
              const cases: [bigint, number, number][] = [
                [0n, 1, 0],
                [7n, 8, 0],
                [100n, 16, 0],
                [300n, 128, 0],
                [1000n, 24, 1024],
              ];
              for (const [i, [lba, blocks, offset]] of cases.entries()) {
                const src = at(out, offset);
                const dst = at(back, offset);
                fillPattern(src.bytes.subarray(0, blocks * 512), i + 1);
                dst.bytes.fill(0);
                await qp.write(1, lba, blocks, src);
                await qp.read(1, lba, blocks, dst);
                assert.deepEqual(
                  dst.bytes.subarray(0, blocks * 512),
                  src.bytes.subarray(0, blocks * 512),
                  `case ${i}`,
                );
                const disk = rig.fake.disk.subarray(Number(lba) * 512, (Number(lba) + blocks) * 512);
                assert.deepEqual(disk, src.bytes.subarray(0, blocks * 512), `the disk holds case ${i}`);
              }
              await qp.flush(1);
              const io = rig.fake.commands.filter((x) => x.qid > 0);
              assert.equal(io.length, 2 * cases.length + 1);
              assert.ok(
                io.every((x) => x.fromCmb === (sq === 'cmb')),
                `I/O commands fetched ${sq === 'cmb' ? 'from the CMB' : 'from host memory'}`,
              );
              if (sq === 'cmb') {
                assert.equal(c.cmb?.mapping.attribute, 'wc');
                assert.equal(c.cmb?.mapping.via, 'cookie', 'the core offers a WC cookie first');
                assert.equal(c.cmb?.mappedBytes, FAKE_CMB_BYTES);
              }
            });
          } finally {
            await rig.close();
          }
        });

    it('keeps many commands in flight on one queue (more than its depth, waiting for free slots)', async () => {
      const rig = await openRig(transport, { blocks: 4096 });
      try {
        await withController(rig, { sq: 'cmb' }, async (c) => {
          const qp = await c.createQueuePair({ depth: 4 });
          const bufs = await Promise.all(Array.from({ length: 12 }, () => c.alloc(4096)));
          bufs.forEach((b, i) => {
            fillPattern(b.bytes, 100 + i);
          });
          await Promise.all(bufs.map((b, i) => qp.write(1, BigInt(i * 8), 8, b)));
          const back = await Promise.all(bufs.map(() => c.alloc(4096)));
          await Promise.all(back.map((b, i) => qp.read(1, BigInt(i * 8), 8, b)));
          back.forEach((b, i) => {
            assert.deepEqual(b.bytes, bufs[i]!.bytes);
          });
          assert.equal(qp.queue.inFlight, 0);
        });
      } finally {
        await rig.close();
      }
    });

    it('MDTS 10: 4 MiB through chained PRP lists (three list pages from inside a page), the controller walking the chain; 4 MiB + 1 block is EINVAL, not submitted', async () => {
      const rig = await openRig(transport, { mdts: 10, blocks: 10_000 });
      try {
        const c = await NvmeController.open(rig.dev);
        try {
          const qp = await c.createQueuePair({ depth: 4 });
          const length = 4 << 20;
          const buf = await c.alloc(length + 4096);
          const out = { iova: buf.iova + 1024n, bytes: buf.bytes.subarray(1024) };
          for (let i = 0; i < length; i += 512) out.bytes[i] = (i >> 9) & 0xff;
          await qp.write(1, 8n, length / 512, out);
          assert.equal(rig.fake.listPagesRead, 3, 'the walk followed two chain pointers');
          for (let i = 0; i < length; i += 512)
            assert.equal(rig.fake.disk[8 * 512 + i], (i >> 9) & 0xff, `block ${i >> 9}`);
          const submitted = rig.fake.commands.length;
          await assert.rejects(qp.read(1, 0n, length / 512 + 1, out), /EINVAL.*\(MDTS\)/);
          assert.equal(rig.fake.commands.length, submitted);
        } finally {
          await c.close();
        }
      } finally {
        await rig.close();
      }
    });
    it('shuts down cleanly: queues deleted, CC.SHN then CC.EN = 0, DMA unmapped, no fd left', async () => {
      // Counted around the whole rig: a vfio-user client keeps region fds until it closes.
      const fds = openFdCount();
      const rig = await openRig(transport);
      try {
        const c = await NvmeController.open(rig.dev, { sq: 'cmb', completions: 'interrupt' });
        const a = await c.createQueuePair({ depth: 4 });
        await c.createQueuePair({ depth: 4 });
        const buf = await c.alloc(4096);
        await a.write(1, 0n, 8, buf);
        assert.ok(rig.dmaCount() > 0);
        await c.close();
        const admin = rig.fake.commands.filter((x) => x.qid === 0).map((x) => x.opcode);
        // Delete SQ (00h) before Delete CQ (04h), for each queue pair.
        assert.deepEqual(admin.slice(-4), [0x00, 0x04, 0x00, 0x04]);
        const cc = await rig.dev.read32(0, 0x14);
        assert.equal(cc & 1, 0, 'CC.EN cleared');
        assert.equal((cc >> 14) & 3, 1, 'CC.SHN normal shutdown was requested');
        assert.equal((await rig.dev.read32(0, 0x1c)) & 1, 0, 'CSTS.RDY clear');
        assert.equal(rig.dmaCount(), 0, 'every DMA mapping released');
        await assert.rejects(a.read(1, 0n, 1, buf), /EBADF|EIO/);
      } finally {
        await rig.close();
      }
      assert.equal(openFdCount(), fds, 'no fd left open (memfds, eventfds, mappings)');
    });
  });
}

/** BAR2's address as config space shows it (64-bit memory BAR: type bits off). */
async function bar2Address(rig: Rig): Promise<bigint> {
  const b = await rig.dev.readConfig(0x18, 8);
  const dv = new DataView(b.buffer, b.byteOffset);
  return (BigInt(dv.getUint32(4, true)) << 32n) | BigInt((dv.getUint32(0, true) & ~0xf) >>> 0);
}

describe('the CMB, found and programmed as the spec says', () => {
  it('1.4 scheme: CMBLOC/CMBSZ after CMBMSC.CRE, CBA written, SQ address inside the CBA range', async () => {
    const rig = await openRig('in-process');
    try {
      await withController(rig, { sq: 'cmb' }, async (c) => {
        const cmbmsc = (BigInt(await rig.dev.read32(0, 0x54)) << 32n) | BigInt(await rig.dev.read32(0, 0x50));
        assert.equal(cmbmsc & 3n, 3n, 'CRE and CMSE');
        assert.equal(cmbmsc & ~0xfffn, c.cmb!.controllerAddress);
        assert.equal(c.cmb!.controllerAddress, await bar2Address(rig), 'CBA = the PCI address of the CMB');
        const qp = await c.createQueuePair({ depth: 16 });
        await qp.flush(1);
        assert.ok(rig.fake.commands.at(-1)!.fromCmb);
      });
    } finally {
      await rig.close();
    }
  });

  it('legacy scheme (no CAP.CMBS): the controller decodes its BAR address, which the driver reads from config space', async () => {
    const rig = await openRig('in-process', { cmbs: false });
    try {
      await withController(rig, { sq: 'cmb' }, async (c) => {
        assert.equal(c.cmb!.controllerAddress, await bar2Address(rig));
        const qp = await c.createQueuePair({ depth: 4 });
        await qp.flush(1);
        assert.ok(rig.fake.commands.at(-1)!.fromCmb);
      });
    } finally {
      await rig.close();
    }
  });

  it('maps the CMB through whichever WC path the device offers; with none, sq: cmb is EOPNOTSUPP naming why', async () => {
    const none = { rfc: false, cookies: false, alias: false, dmabufWc: false };
    const table: [Partial<typeof none>, string][] = [
      [{ ...none, dmabufWc: true }, 'dma-buf'],
      // VfioDevice.wcPaths offers an alias on a BAR known prefetchable (the RFC's REGION_INFO flag).
      [{ ...none, alias: true, rfc: true }, 'alias-region'],
      [{ ...none, rfc: true }, 'rfc-region-flags'],
    ];
    for (const [extensions, via] of table) {
      const rig = await openRig('in-process', { extensions });
      try {
        await withController(rig, { sq: 'cmb' }, async (c) => {
          assert.deepEqual([c.cmb?.mapping.via, c.cmb?.mapping.attribute], [via, 'wc']);
          const qp = await c.createQueuePair({ depth: 4 });
          await qp.flush(1);
          assert.ok(rig.fake.commands.at(-1)!.fromCmb, via);
        });
      } finally {
        await rig.close();
      }
    }
    const rig = await openRig('in-process', { extensions: none });
    try {
      await assert.rejects(
        NvmeController.open(rig.dev, { sq: 'cmb' }),
        /nvme CMB: EOPNOTSUPP.*need a write-combining mapping of BAR2.*no write-combining path/,
      );
      await withController(rig, { sq: 'host' }, async (c) => {
        assert.equal(c.sqPlacement, 'host');
      });
    } finally {
      await rig.close();
    }
  });

  it('one controller, both placements side by side: a host queue next to a CMB queue; a host-only controller refuses a CMB queue', async () => {
    const rig = await openRig('in-process');
    try {
      await withController(rig, { sq: 'cmb' }, async (c) => {
        const host = await c.createQueuePair({ depth: 4, sq: 'host' });
        const cmb = await c.createQueuePair({ depth: 4 });
        assert.deepEqual([host.wc, cmb.wc], [false, true]);
        await host.flush(1);
        await cmb.flush(1);
        assert.deepEqual(
          rig.fake.commands.slice(-2).map((x) => [x.qid, x.fromCmb]),
          [
            [host.qid, false],
            [cmb.qid, true],
          ],
        );
      });
      await withController(rig, {}, async (c) => {
        await assert.rejects(c.createQueuePair({ sq: 'cmb' }), /EINVAL.*opened with sq: 'cmb'/);
      });
    } finally {
      await rig.close();
    }
  });

  it('sq: cmb on a controller without a CMB is EOPNOTSUPP, and releases what it took', async () => {
    const rig = await openRig('in-process', { cmb: false });
    try {
      const fds = openFdCount();
      await assert.rejects(
        NvmeController.open(rig.dev, { sq: 'cmb' }),
        /EOPNOTSUPP.*no Controller Memory Buffer/,
      );
      assert.equal(rig.dmaCount(), 0);
      assert.equal(openFdCount(), fds);
    } finally {
      await rig.close();
    }
  });
});
