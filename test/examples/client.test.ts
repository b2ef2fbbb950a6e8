/**
 * The example devices (examples/, docs/writing-a-device.md) served with serveDevice and driven
 * by the library's own client, as a driver author would: identity from config space, register
 * writes and reads at every width, MSI-X vectors on eventfds, DMA both ways through memory the
 * client maps (memfd) and memory it does not (DMA_READ/DMA_WRITE messages), a DMA fault, and a
 * new client finding the registers reset. QEMU drives the same examples in qemu.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import dmaCopy, { BUFFER_BYTES, CMD, DMA_COPY_ID, REG as DREG, STATUS } from '../../examples/dma-copy.js';
import doorbell, { DOORBELL_ID, DOORBELL_VECTORS, REG } from '../../examples/doorbell.js';
import { VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX } from '../../src/abi/vfio.js';
import {
  createDmaMemory,
  createMessageOnlyDmaMemory,
  Eventfd,
  VfioUserClient,
} from '../../src/client/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { type ServedDevice, serveDevice } from '../../src/server/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-examples-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const CFG = VFIO_PCI_CONFIG_REGION_INDEX;
const WAIT_MS = 5000;

async function open(served: ServedDevice): Promise<VfioDevice> {
  return new VfioDevice(await VfioUserClient.connect(served.socket));
}

async function identity(dev: VfioDevice): Promise<[number, number]> {
  return [await dev.read32(CFG, 0), (await dev.read32(CFG, 8)) >>> 8];
}

const le64 = (v: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
const u64 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);

describe('examples/doorbell.ts over vfio-user', () => {
  test('identity, a 64-bit register at every width, each MSI-X vector on its eventfd, reset for the next client', async () => {
    const served = await serveDevice(doorbell, { socket: join(dir, 'doorbell.sock'), signals: false });
    const efds = Array.from({ length: DOORBELL_VECTORS }, () => new Eventfd());
    try {
      const dev = await open(served);
      assert.deepEqual(await identity(dev), [0x00d01b36, 0xff0000]);
      assert.equal(await dev.read32(0, REG.ID), Number(DOORBELL_ID));
      await dev.write(0, REG.SCRATCH, le64(0x0123456789abcdefn));
      assert.equal(u64(await dev.read(0, REG.SCRATCH, 8)), 0x0123456789abcdefn);
      assert.equal(await dev.read32(0, REG.SCRATCH + 4), 0x01234567, 'the high half');
      await dev.write32(0, REG.SCRATCH + 4, 0xfeedface);
      assert.equal(u64(await dev.read(0, REG.SCRATCH, 8)), 0xfeedface89abcdefn);
      assert.equal((await dev.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX)).count, DOORBELL_VECTORS);
      await dev.setIrqEventfds(
        VFIO_PCI_MSIX_IRQ_INDEX,
        0,
        efds.map((e) => e.fd),
      );
      for (const v of [2, 0, 3]) {
        await dev.write32(0, REG.RING, v);
        assert.equal(await efds[v]!.wait(WAIT_MS), 1n, `vector ${v}`);
      }
      await dev.write32(0, REG.RING, DOORBELL_VECTORS); // no such vector: ignored
      assert.equal(efds[1]!.read(), null, 'vector 1 never rang');
      assert.equal(await dev.read32(0, REG.RINGS), 3);
      await dev.close();
      await served.server.idle();
      const next = await open(served);
      assert.equal(await next.read32(0, REG.RINGS), 0, 'the next client finds the registers reset');
      assert.equal(u64(await next.read(0, REG.SCRATCH, 8)), 0n);
      await next.close();
      await served.server.idle();
    } finally {
      for (const e of efds) e.close();
      await served.stop();
    }
  });
});

describe('examples/dma-copy.ts over vfio-user', () => {
  for (const memory of ['mapped (memfd)', 'messages (DMA_READ/DMA_WRITE)'] as const)
    test(`host -> buffer -> host, each with its MSI-X; memory the device reaches by ${memory}`, async () => {
      const served = await serveDevice(dmaCopy, { socket: join(dir, 'dma.sock'), signals: false });
      const efd = new Eventfd();
      const owned = memory === 'mapped (memfd)' ? createDmaMemory(1 << 20) : undefined;
      const mem = owned ?? createMessageOnlyDmaMemory(1 << 20);
      const iova = 0x4000_0000n;
      try {
        const dev = await open(served);
        assert.deepEqual(await identity(dev), [0x00d11b36, 0xff0000]);
        assert.equal(await dev.read32(0, DREG.ID), Number(DMA_COPY_ID));
        await dev.setIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, [efd.fd]);
        await dev.dmaMap(iova, mem);
        const pattern = Uint8Array.from({ length: 8192 }, (_, i) => (i * 31 + 7) & 0xff);
        mem.bytes.set(pattern, 0x1000);
        const run = async (cmd: bigint, src: bigint, dst: bigint, len: number) => {
          await dev.write(0, DREG.SRC, le64(src));
          await dev.write32(0, DREG.DST, Number(dst & 0xffff_ffffn)); // 4-byte halves work too
          await dev.write32(0, DREG.DST + 4, Number(dst >> 32n));
          await dev.write32(0, DREG.LEN, len);
          await dev.write32(0, DREG.CMD, Number(cmd));
          assert.equal(await efd.wait(WAIT_MS), 1n, 'completion interrupt');
          return BigInt(await dev.read32(0, DREG.STATUS));
        };
        assert.equal(await run(CMD.TO_BUFFER, iova + 0x1000n, 0x100n, pattern.length), STATUS.DONE);
        const bar2 = await dev.map(2);
        assert.deepEqual(bar2.bytes.subarray(0x100, 0x100 + pattern.length), pattern, 'in the buffer');
        assert.equal(await run(CMD.TO_HOST, 0x100n, iova + 0x8000n, pattern.length), STATUS.DONE);
        assert.deepEqual(mem.bytes.subarray(0x8000, 0x8000 + pattern.length), pattern, 'back in host memory');
        // Faults: an address nobody mapped, a range past the buffer, an unknown command.
        assert.equal(await run(CMD.TO_BUFFER, 0x10n, 0n, 16), STATUS.DONE | STATUS.ERROR);
        assert.equal(await run(CMD.TO_HOST, BigInt(BUFFER_BYTES - 8), iova, 16), STATUS.DONE | STATUS.ERROR);
        assert.equal(await run(7n, 0n, iova, 16), STATUS.DONE | STATUS.ERROR);
        bar2.unmap();
        await dev.close();
        await served.server.idle();
        const next = await open(served);
        assert.equal(await next.read32(0, DREG.STATUS), 0);
        assert.deepEqual([...(await next.read(2, 0x100, 4))], [0, 0, 0, 0], "the buffer is reset: 'zero'");
        await next.close();
        await served.server.idle();
      } finally {
        efd.close();
        owned?.close();
        await served.stop();
      }
    });
});
