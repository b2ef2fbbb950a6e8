/**
 * Save and restore of every device on the device API (edu, ivshmem, the e1000e model, the two
 * examples; NVMe mid-I/O, its queues included, in test/client/migrate.test.ts), in-process through the device fd's
 * features: each source is put in a state of its own (registers, buffers, BAR memory, config
 * space: command register, BARs, MSI), migrated with and without PRE_COPY into a fresh device,
 * and the target must read back the same everywhere and go on working from there.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import dmaCopy, { REG as DREG } from '../../../examples/dma-copy.js';
import doorbell, { REG as BREG } from '../../../examples/doorbell.js';
import { PCI_COMMAND } from '../../../src/abi/pci.js';
import { VFIO_PCI_CONFIG_REGION_INDEX as CFG, VfioMigState as S } from '../../../src/abi/vfio.js';
import type { DeviceDefinition, DeviceInstance } from '../../../src/core/define.js';
import { heapEnvironment } from '../../../src/core/env.js';
import { e1000eModel } from '../../../src/devices/e1000e.js';
import { EDU_DMA_BUFFER, eduDevice } from '../../../src/devices/edu.js';
import { IVSHMEM_SHM_BAR, ivshmemDevice } from '../../../src/devices/ivshmem.js';
import { drain, getState, migrate, setState } from './rig.js';

type Instance = DeviceInstance;

function build(def: DeviceDefinition): Instance {
  return def.instantiate({ env: heapEnvironment() }) as Instance;
}

const w = (d: Instance, bar: number, off: number, v: bigint, size = 4) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  d.device.writeRegion(bar, BigInt(off), b.subarray(0, size));
};
const r = (d: Instance, bar: number, off: number, size = 4) => {
  const b = new Uint8Array(8);
  b.set(d.device.readRegion(bar, BigInt(off), size));
  return new DataView(b.buffer).getBigUint64(0, true);
};
const config = (d: Instance) => d.device.readRegion(CFG, 0n, d.device.config.size);

/** Memory enable, bus master, BAR addresses, a write to an MSI capability when there is one. */
function programConfig(d: Instance): void {
  d.device.writeRegion(CFG, BigInt(PCI_COMMAND), new Uint8Array([0x06, 0x00]));
  for (let bar = 0; bar < 6; bar++) {
    if (!d.device.description.bars[bar]) continue;
    const at = 0x10 + 4 * bar;
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, 0xfe00_0000 + bar * 0x10_0000, true);
    d.device.writeRegion(CFG, BigInt(at), b);
  }
  const msi = d.device.config.capabilityOffset(0x05);
  if (msi !== undefined) d.device.writeRegion(CFG, BigInt(msi + 4), new Uint8Array([0x00, 0x10, 0xe0, 0xfe]));
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

interface Case {
  readonly name: string;
  readonly def: () => DeviceDefinition;
  /** Puts the source in a state of its own. */
  readonly prepare: (d: Instance) => void;
  /** What the target must show afterwards besides config, memory BARs and `state`. */
  readonly check?: (src: Instance, dst: Instance) => void;
  /** Drives the target on from the restored state. */
  readonly goOn?: (dst: Instance) => Promise<void> | void;
}

const CASES: Case[] = [
  {
    name: 'edu',
    def: () => eduDevice(),
    prepare: (d) => {
      w(d, 0, 0x04, 0x1234n); // liveness
      w(d, 0, 0x08, 6n); // factorial
      w(d, 0, 0x20, 0x80n); // status: interrupt on factorial
      w(d, 0, 0x80, 0x1000n, 8); // DMA source, destination, count: no start
      w(d, 0, 0x88, EDU_DMA_BUFFER + 0x10n, 8);
      w(d, 0, 0x90, 64n, 8);
      for (let i = 0; i < 16; i++) w(d, 0, Number(EDU_DMA_BUFFER) + 4 * i, BigInt(0x1000 + i));
    },
    check: (src, dst) => {
      for (const off of [0x04, 0x08, 0x20, 0x24, 0x80, 0x88, 0x90, 0x98])
        assert.equal(r(dst, 0, off), r(src, 0, off), `register 0x${off.toString(16)}`);
    },
    goOn: (dst) => {
      w(dst, 0, 0x08, 5n);
      assert.equal(r(dst, 0, 0x08), 120n, 'the factorial unit works on');
    },
  },
  {
    name: 'ivshmem',
    def: () => ivshmemDevice(256 << 10),
    prepare: (d) => {
      w(d, 0, 0x0, 0xffffn); // IntrMask
      w(d, 0, 0x4, 0x3n); // IntrStatus
      fill(d, IVSHMEM_SHM_BAR, 7);
    },
    check: (_src, dst) => assert.equal(r(dst, 0, 0x0), 0xffffn),
  },
  {
    name: 'e1000e model',
    def: () => e1000eModel(),
    prepare: (d) => {
      for (const bar of [0, 1, 3]) fill(d, bar, bar);
    },
  },
  {
    name: 'example doorbell',
    def: () => doorbell,
    prepare: (d) => {
      w(d, 0, BREG.SCRATCH, 0x0123_4567_89ab_cdefn, 8);
      w(d, 0, BREG.RING, 0n);
      w(d, 0, BREG.RING, 1n);
    },
    check: (_src, dst) => {
      assert.equal(r(dst, 0, BREG.SCRATCH, 8), 0x0123_4567_89ab_cdefn);
      assert.equal(r(dst, 0, BREG.RINGS, 8), 2n);
    },
    goOn: (dst) => {
      w(dst, 0, BREG.RING, 2n);
      assert.equal(r(dst, 0, BREG.RINGS, 8), 3n);
    },
  },
  {
    name: 'example dma-copy',
    def: () => dmaCopy,
    prepare: (d) => {
      w(d, 0, DREG.SRC, 0x10_0000n, 8);
      w(d, 0, DREG.DST, 0x200n, 8);
      w(d, 0, DREG.LEN, 512n);
      fill(d, 2, 3);
    },
    check: (_src, dst) => assert.equal(r(dst, 0, DREG.LEN), 512n),
  },
];

/** A memory BAR's bytes, as a pread of the region reads them (the MSI-X table reads 0xff). */
function memoryOf(d: Instance, bar: number): Uint8Array {
  return d.device.readRegion(bar, 0n, d.device.description.bars[bar]!.size);
}

function fill(d: Instance, bar: number, seed: number): void {
  d.device.writeRegion(bar, 0n, pattern(d.device.description.bars[bar]!.size, seed));
}

describe('every device saves and restores', () => {
  for (const c of CASES)
    for (const precopy of [true, false])
      test(`${c.name}${precopy ? ', with PRE_COPY' : ', STOP_COPY only'}`, async () => {
        const def = c.def();
        const src = build(def);
        const dst = build(def);
        programConfig(src);
        c.prepare(src);
        const beforeConfig = config(src);
        const stream = await migrate(src.device, dst.device, precopy);
        assert.ok(stream.length > 48);
        assert.equal(getState(dst.device), S.RUNNING);
        assert.deepEqual(config(dst), beforeConfig, 'config space');
        for (const [bar, b] of def.description.bars.entries())
          if (b?.backing === 'memory')
            assert.deepEqual(memoryOf(dst, bar), memoryOf(src, bar), `BAR${bar} memory`);
        assert.deepEqual(dst.state, src.state, 'the device state');
        c.check?.(src, dst);
        await c.goOn?.(dst);
        src.device.close();
        dst.device.close();
      });
});

describe('PRE_COPY', () => {
  test('memory changed after it was sent goes again, and only the pages that changed', async () => {
    const def = ivshmemDevice(256 << 10);
    const src = build(def);
    const dst = build(def);
    const size = 256 << 10;
    fill(src, IVSHMEM_SHM_BAR, 1);
    const poke = (off: number, v: number) =>
      src.device.writeRegion(IVSHMEM_SHM_BAR, BigInt(off), new Uint8Array([v]));
    const fd = await setState(src.device, S.PRE_COPY);
    const stream = drain(src.device, fd);
    const first = stream.reduce((n, b) => n + b.length, 0);
    assert.ok(first > size, `the initial pass sends all of BAR2 (${first} bytes)`);
    const file = src.device.migrationData(fd);
    assert.deepEqual(file.precopyInfo(), { initialBytes: 0n, dirtyBytes: 0n });
    poke(5 * 4096 + 17, 0xee); // the device runs on: one page changes
    assert.equal(file.precopyInfo().dirtyBytes, 4096n);
    const again = drain(src.device, fd);
    assert.equal(
      again.reduce((n, b) => n + b.length, 0),
      16 + 8 + 4096,
      'one MEMORY section of one page',
    );
    assert.equal(drain(src.device, fd).length, 0, 'then the temporary end of stream');
    poke(9 * 4096, 0xdd); // changed after the last pass: goes in STOP_COPY
    await setState(src.device, S.STOP_COPY);
    const last = drain(src.device, fd);
    assert.ok(
      last.reduce((n, b) => n + b.length, 0) < 8192,
      'STOP_COPY sends the changed page and the state',
    );
    assert.equal(drain(src.device, fd).length, 0, 'the end of stream');
    await setState(src.device, S.STOP);
    const rfd = await setState(dst.device, S.RESUMING);
    for (const b of [...stream, ...again, ...last]) dst.device.migrationData(rfd).write(b);
    await setState(dst.device, S.RUNNING);
    assert.deepEqual(memoryOf(dst, IVSHMEM_SHM_BAR), memoryOf(src, IVSHMEM_SHM_BAR));
    assert.equal(memoryOf(dst, IVSHMEM_SHM_BAR)[9 * 4096], 0xdd);
  });
});
