/**
 * What the fake controller (fake-nvme.ts) shows that our NVMe device cannot: a controller of the
 * pre-1.4 CMB scheme (no CAP.CMBS: it decodes CMB addresses at its BAR's address), and chained
 * PRP lists walked by a second, independent controller implementation. Everything else the
 * driver does is tested against our device (device.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NvmeController } from '../../../src/driver/nvme/index.js';
import { openRig } from './rig.js';

describe('NVMe driver on the fake controller', () => {
  it('legacy CMB scheme (no CAP.CMBS): the controller decodes its BAR address, which the driver reads from config space', async () => {
    const rig = await openRig({ cmbs: false });
    try {
      const c = await NvmeController.open(rig.dev, { sq: 'cmb' });
      try {
        const b = await rig.dev.readConfig(0x18, 8);
        const dv = new DataView(b.buffer, b.byteOffset);
        const bar2 = (BigInt(dv.getUint32(4, true)) << 32n) | BigInt((dv.getUint32(0, true) & ~0xf) >>> 0);
        assert.equal(c.cmb!.controllerAddress, bar2);
        const qp = await c.createQueuePair({ depth: 4 });
        await qp.flush(1);
        assert.ok(rig.fake.commands.at(-1)!.fromCmb);
      } finally {
        await c.close();
      }
    } finally {
      await rig.close();
    }
  });

  it('MDTS 10: 4 MiB through chained PRP lists (three list pages from inside a page), the controller walking the chain; 4 MiB + 1 block is EINVAL, not submitted', async () => {
    const rig = await openRig({ mdts: 10, blocks: 10_000 });
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
});
