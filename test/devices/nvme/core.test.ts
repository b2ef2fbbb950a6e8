/**
 * The NVMe device through the device core and the driver API (src/driver): in-process
 * (LocalDeviceFile), and over vfio-user (our client and server on a socketpair) with DMA both
 * through mapped memfds and through DMA_READ/DMA_WRITE messages. A small user-space NVMe driver
 * programs BAR0, takes MSI-X interrupts on eventfds, moves data, puts an I/O SQ in the CMB
 * (BAR2, mapped), and resets the function.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP } from '../../../src/abi/vfio.js';
import { createDmaMemory, createMessageOnlyDmaMemory, Eventfd } from '../../../src/client/memory.js';
import { MemoryNamespace } from '../../../src/devices/nvme/namespace.js';
import { type NvmeModel, nvmeDevice as nvmeDefinition } from '../../../src/devices/nvme.js';
import { VfioDevice } from '../../../src/driver/device.js';
import type { DmaMemory } from '../../../src/driver/file.js';
import { LocalDeviceFile } from '../../../src/driver/local.js';
import { nativeEnvironment } from '../../../src/runtime.js';
import { servedClient } from '../../client/rig.js';
import { type Cqe, decodeCqe, encodeSqe, type Sqe } from './fake-host.js';

const IOVA = 0x8000_0000n;
const MEM = 4 << 20;
const ASQ = 0x0000;
const ACQ = 0x1000;
const IOSQ = 0x2000;
const IOCQ = 0x3000;
const DATA = 0x10_0000;
/** The bus address the "guest" gives BAR2 (CMBMSC.CBA). */
const CBA = 0xe000_0000n;
const CMB_SIZE = 2 << 20;

/** A user-space NVMe driver over the driver API: registers by pread/pwrite, MSI-X on eventfds. */
class VfioNvme {
  private readonly tails = new Map<number, number>();
  private readonly heads = new Map<number, { head: number; phase: number; base: number }>();
  private cid = 1;
  readonly vectors = [new Eventfd(), new Eventfd()];
  cmb: Uint8Array | undefined;
  sqInCmb = false;

  constructor(
    readonly dev: VfioDevice,
    readonly mem: DmaMemory,
  ) {}

  async start(): Promise<void> {
    await this.dev.writeConfig(4, new Uint8Array([0x06, 0x00])); // memory space, bus master
    await this.dev.dmaMap(IOVA, this.mem);
    await this.dev.setIrqEventfds(
      VFIO_PCI_MSIX_IRQ_INDEX,
      0,
      this.vectors.map((e) => e.fd),
    );
    await this.dev.write32(0, 0x24, (15 << 16) | 15);
    await this.dev.write32(0, 0x28, Number(IOVA) + ASQ);
    await this.dev.write32(0, 0x2c, 0);
    await this.dev.write32(0, 0x30, Number(IOVA) + ACQ);
    await this.dev.write32(0, 0x34, 0);
    await this.dev.write32(0, 0x14, 0x0046_0001);
    assert.equal(await this.dev.read32(0, 0x1c), 1, 'CSTS.RDY');
    this.tails.set(0, 0);
    this.heads.set(0, { head: 0, phase: 1, base: ACQ });
  }

  /** CMBMSC with CRE | CMSE and CBA, then the BAR mapped: the SQ of queue 1 will live there. */
  async useCmb(): Promise<void> {
    await this.dev.write32(0, 0x54, Number(CBA >> 32n));
    await this.dev.write32(0, 0x50, Number(CBA & 0xffff_ffffn) | 3);
    this.cmb = (await this.dev.map(2)).bytes;
    this.sqInCmb = true;
  }

  async createQueues(): Promise<void> {
    assert.equal(
      (
        await this.submit(0, {
          opcode: 0x05,
          prp1: IOVA + BigInt(IOCQ),
          cdw10: (63 << 16) | 1,
          cdw11: 0x10003,
        })
      ).status,
      0,
    );
    const sqBase = this.sqInCmb ? CBA : IOVA + BigInt(IOSQ);
    assert.equal(
      (await this.submit(0, { opcode: 0x01, prp1: sqBase, cdw10: (63 << 16) | 1, cdw11: 0x10001 })).status,
      0,
    );
    this.tails.set(1, 0);
    this.heads.set(1, { head: 0, phase: 1, base: IOCQ });
  }

  async submit(qid: number, sqe: Sqe): Promise<Cqe> {
    const size = qid === 0 ? 16 : 64;
    const tail = this.tails.get(qid)!;
    const entry = encodeSqe(sqe, this.cid++ & 0xffff);
    if (qid === 1 && this.sqInCmb) this.cmb!.set(entry, tail * 64);
    else this.mem.bytes.set(entry, (qid === 0 ? ASQ : IOSQ) + tail * 64);
    this.tails.set(qid, (tail + 1) % size);
    await this.dev.write32(0, 0x1000 + qid * 8, (tail + 1) % size);
    const h = this.heads.get(qid)!;
    for (let i = 0; i < 5000; i++) {
      const c = decodeCqe(
        new DataView(this.mem.bytes.buffer, this.mem.bytes.byteOffset + h.base + h.head * 16, 16),
      );
      if (c.phase === h.phase) {
        h.head = (h.head + 1) % size;
        if (h.head === 0) h.phase ^= 1;
        await this.dev.write32(0, 0x1000 + qid * 8 + 4, h.head);
        assert.ok((await this.vectors[qid]!.wait(5000)) !== null, `MSI-X vector ${qid}`);
        return c;
      }
      await new Promise((r) => setTimeout(r, i < 100 ? 0 : 1));
    }
    throw new Error(`no completion on queue ${qid}`);
  }

  close(): void {
    for (const e of this.vectors) e.close();
  }
}

/** Writes 256 KiB at LBA 64 through a PRP list, reads it back into other pages, compares. */
async function roundTrip(n: VfioNvme): Promise<void> {
  const length = 256 << 10;
  const pages = length / 4096;
  const list = DATA; // the PRP list page, then data pages from DATA + 0x1000
  const data = (i: number) => IOVA + BigInt(DATA + 0x1000 * (i + 1));
  const lv = new DataView(n.mem.bytes.buffer, n.mem.bytes.byteOffset + list, 4096);
  for (let i = 1; i < pages; i++) lv.setBigUint64((i - 1) * 8, data(i), true);
  const src = new Uint8Array(length).map((_, i) => (i * 13 + 5) & 0xff);
  n.mem.bytes.set(src, DATA + 0x1000);
  const rw = (opcode: number): Sqe => ({
    opcode,
    nsid: 1,
    prp1: data(0),
    prp2: IOVA + BigInt(list),
    cdw10: 64,
    cdw12: length / 512 - 1,
  });
  assert.equal((await n.submit(1, rw(0x01))).status, 0, 'write');
  n.mem.bytes.fill(0, DATA + 0x1000, DATA + 0x1000 + length);
  assert.equal((await n.submit(1, rw(0x02))).status, 0, 'read');
  assert.deepEqual(n.mem.bytes.subarray(DATA + 0x1000, DATA + 0x1000 + length), src);
  assert.equal((await n.submit(1, { opcode: 0x00, nsid: 1 })).status, 0, 'flush');
}

function nvmeDevice(cmbSize = 0) {
  const definition = nvmeDefinition({ namespace: new MemoryNamespace(8 << 20), cmbSize });
  const { device, model } = definition.instantiate({ env: nativeEnvironment() });
  return { behaviour: model, device };
}

describe('NVMe through the core, in-process', () => {
  test('regions: BAR0 trapped registers (no mmap), BAR2 the CMB, 64-bit prefetchable', async () => {
    const { device } = nvmeDevice(CMB_SIZE);
    const dev = new VfioDevice(new LocalDeviceFile(device));
    try {
      const bar0 = await dev.regionInfo(0);
      assert.equal(bar0.size, 16n << 10n);
      assert.equal(bar0.flags & VFIO_REGION_INFO_FLAG_MMAP, 0, 'registers are trapped');
      const bar2 = await dev.regionInfo(2);
      assert.equal(bar2.size, BigInt(CMB_SIZE));
      assert.ok(bar2.flags & VFIO_REGION_INFO_FLAG_MMAP);
      const bar = new DataView((await dev.readConfig(0x18, 4)).buffer).getUint32(0, true);
      assert.equal(bar & 0xf, 0xc, '64-bit prefetchable memory');
    } finally {
      await dev.close();
    }
  });

  /** The device in-process behind the driver API, a VfioNvme started on memfd memory. */
  async function inProcess(cmbSize: number, run: (n: VfioNvme, behaviour: NvmeModel) => Promise<void>) {
    const { device, behaviour } = nvmeDevice(cmbSize);
    const dev = new VfioDevice(new LocalDeviceFile(device));
    const mem = createDmaMemory(MEM);
    const n = new VfioNvme(dev, mem);
    try {
      await n.start();
      await run(n, behaviour);
    } finally {
      n.close();
      await dev.close();
      mem.close();
    }
  }

  test('enable, queues, 256 KiB through a PRP list, MSI-X per queue; VFIO_DEVICE_RESET resets the controller', () =>
    inProcess(0, async (n, behaviour) => {
      await n.createQueues();
      await roundTrip(n);
      assert.equal(behaviour.controller.ioStats.bytesWritten, 256 << 10);
      await n.dev.reset(); // FLR
      assert.deepEqual([await n.dev.read32(0, 0x14), await n.dev.read32(0, 0x1c)], [0, 0], 'CC and CSTS');
    }));

  test('an I/O SQ in the CMB, written through the BAR2 mapping', () =>
    inProcess(CMB_SIZE, async (n, behaviour) => {
      await n.useCmb();
      assert.equal(await n.dev.read32(0, 0x3c), (2 << 12) | (2 << 8) | 1, 'CMBSZ: 2 MiB, SQS');
      await n.createQueues();
      await roundTrip(n);
      assert.equal(behaviour.controller.stats.sqesFromCmb, 3);
    }));
});

describe('NVMe over vfio-user (our client and server)', () => {
  const cases: [string, () => DmaMemory, number][] = [
    ['DMA through the mapped memfd', () => createDmaMemory(MEM), 0],
    ['DMA through DMA_READ / DMA_WRITE messages', () => createMessageOnlyDmaMemory(MEM), 0],
    ['the SQ in the CMB, DMA by messages', () => createMessageOnlyDmaMemory(MEM), CMB_SIZE],
  ];
  for (const [name, memory, cmb] of cases)
    test(name, async () => {
      const { device, behaviour } = nvmeDevice(cmb);
      const s = await servedClient(() => device);
      const dev = new VfioDevice(s.client);
      const mem = memory();
      const n = new VfioNvme(dev, mem);
      try {
        await n.start();
        if (cmb) await n.useCmb();
        await n.createQueues();
        await roundTrip(n);
        if (cmb) assert.equal(behaviour.controller.stats.sqesFromCmb, 3);
        assert.equal(behaviour.controller.stats.fatal, undefined);
      } finally {
        n.close();
        await s.close();
        if ('close' in mem) (mem as { close(): void }).close();
      }
    });
});
