/**
 * The driver conformance table (run by conformance.test.ts; importable without running tests, so
 * other harnesses, such as a guest with real vfio-pci, can run the same cases). One table of
 * driver-level cases, run unchanged against every backend a driver can sit on:
 * the in-process core (LocalDeviceFile) and our vfio-user client talking to our vfio-user
 * server (src/server, in this process, over a socketpair). Each case returns plain data and the
 * table states what it must be; both backends must give exactly that.
 *
 * The one difference is written down in the table: the RFC's VFIO_DEVICE_SET_REGION_FLAGS has
 * no vfio-user command (docs/vfio-user-wc.md §1, §5), so over vfio-user it is ENOTTY, as an
 * unknown ioctl is on Linux.
 */
import {
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_SET_REGION_FLAGS,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
} from '../../src/abi/vfio.js';
import {
  createDmaMemory,
  createMessageOnlyDmaMemory,
  Eventfd,
  VfioUserClient,
} from '../../src/client/index.js';
import { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { nvmeDevice } from '../../src/devices/nvme.js';
import { VfioDevice, type WcPath } from '../../src/driver/device.js';
import type { DmaMemory, Transport } from '../../src/driver/file.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { VfioError } from '../../src/errors.js';
import { socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { ThreadedServer } from '../../src/server/index.js';
import { putU32, u32 } from '../../src/wire/vfio.js';
import { servedClient } from '../client/rig.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface Opened {
  readonly dev: VfioDevice;
  /** The device itself, when it lives in this thread. */
  readonly core?: VfioPciDevice;
  close(): Promise<void>;
}

export interface Backend {
  readonly name: Transport;
  /** What the test calls it, when several backends share a transport. */
  readonly label?: string;
  open(device: CaseDevice): Promise<Opened>;
}

/** The example devices, and nvme for a BAR with an MSI-X table in it (sparse mmap). */
export type CaseDevice = DeviceName | 'nvme';

/** The device of a case (also the DeviceModule export a ThreadedServer's worker calls). */
export function makeDevice(name: CaseDevice): VfioPciDevice {
  const env = nativeEnvironment();
  if (name === 'nvme') {
    // The layout is what these cases look at (an MSI-X table inside BAR0), not the controller
    // behind it, whose registers are trapped: BAR0 as plain memory here.
    const d = nvmeDevice().description;
    const bars = [{ ...d.bars[0]!, backing: 'memory' as const }, ...d.bars.slice(1)];
    return new VfioPciDevice({ ...d, bars }, {}, { env });
  }
  return createDevice(name, { env });
}

export const BACKENDS: readonly Backend[] = [
  {
    name: 'in-process',
    async open(name) {
      const core = makeDevice(name);
      const dev = new VfioDevice(new LocalDeviceFile(core));
      return { dev, core, close: () => dev.close() };
    },
  },
  {
    name: 'vfio-user',
    async open(name) {
      const s = await servedClient(() => makeDevice(name));
      return { dev: new VfioDevice(s.client), core: s.device, close: () => s.close() };
    },
  },
  {
    // As `vfio-ts serve` runs it: the device and its server in a worker, asleep in recvmsg.
    name: 'vfio-user',
    label: 'vfio-user, server in a worker (blocking loop)',
    async open(name) {
      const server = await ThreadedServer.start({ module: import.meta.url, export: 'makeDevice', arg: name });
      const [a, b] = socketPair();
      void server.adopt(b).catch(() => {});
      const client = await VfioUserClient.fromFd(a);
      const dev = new VfioDevice(client);
      return {
        dev,
        async close() {
          await dev.close();
          await server.idle();
          await server.stop();
        },
      };
    },
  },
];

export interface Case {
  readonly name: string;
  readonly device: CaseDevice;
  run(dev: VfioDevice): Promise<Json>;
  /** What every backend must return... */
  readonly expect?: Json;
  /** ...or, where the uAPI itself differs by transport, what each one must (absent: not run). */
  readonly expectBy?: Readonly<Partial<Record<Transport, Json>>>;
}

/** A VfioError becomes `{ errno: 'EINVAL' }`; anything else fails the test. */
export async function outcome(f: () => Promise<Json>): Promise<Json> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof VfioError) return { errno: e.code };
    throw e;
  }
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

async function regionTable(dev: VfioDevice): Promise<Json> {
  return (await dev.regions()).map((r) => ({
    index: r.index,
    flags: r.flags,
    size: hex(r.size),
    offset: hex(r.offset),
    caps: r.caps.map((c) => ({ ...c }) as unknown as Json),
  }));
}

async function irqTable(dev: VfioDevice): Promise<Json> {
  const out: Json[] = [];
  for (let i = 0; i <= 5; i++)
    out.push(
      await outcome(async () => {
        const q = await dev.irqInfo(i);
        return { index: q.index, flags: q.flags, count: q.count };
      }),
    );
  return out;
}

/** Raw REGION_INFO with a caller-chosen argsz: the first half of the argsz exchange. */
async function rawRegionInfo(dev: VfioDevice, index: number, argsz: number): Promise<Json> {
  const b = new Uint8Array(Math.max(argsz, 32));
  putU32(b, 0, argsz);
  putU32(b, 8, index);
  await dev.file.ioctl(VFIO_DEVICE_GET_REGION_INFO, b);
  return { argsz: u32(b, 0), flags: u32(b, 4), capOffset: u32(b, 12) };
}

const EDU = { ID: 0x00, LIVENESS: 0x04, FACT: 0x08, RAISE: 0x60, ACK: 0x64 } as const;
const EDU_BUFFER = 0x40000n;
const IOVA = 0x10_0000n;

async function edu64(dev: VfioDevice, reg: number, v: bigint): Promise<void> {
  await dev.write32(0, reg, Number(v & 0xffffffffn));
  await dev.write32(0, reg + 4, Number(v >> 32n));
}

/** Programs an edu DMA (registers 0x80/0x88/0x90/0x98) and waits for the start bit to clear. */
async function eduDma(
  dev: VfioDevice,
  src: bigint,
  dst: bigint,
  count: number,
  toRam: boolean,
): Promise<void> {
  await edu64(dev, 0x80, src);
  await edu64(dev, 0x88, dst);
  await dev.write32(0, 0x90, count);
  await dev.write32(0, 0x98, 1 | (toRam ? 2 : 0));
  for (let i = 0; i < 500; i++) {
    if (!((await dev.read32(0, 0x98)) & 1)) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error('edu DMA did not finish');
}

/** RAM -> edu buffer -> RAM through `memory` mapped at IOVA; what came back where. */
async function eduDmaRoundTrip(dev: VfioDevice, memory: DmaMemory): Promise<Json> {
  await dev.dmaMap(IOVA, memory);
  const pattern = bytes(4096, 7);
  memory.bytes.set(pattern, 0);
  await eduDma(dev, IOVA, EDU_BUFFER, 4096, false);
  const inDevice = await dev.read(0, EDU_BUFFER, 4096);
  await eduDma(dev, EDU_BUFFER, IOVA + 4096n, 4096, true);
  const back = memory.bytes.slice(4096, 8192);
  await dev.dmaUnmap(IOVA, BigInt(memory.size));
  return { deviceGotIt: same(inDevice, pattern), ramGotItBack: same(back, pattern) };
}

/** Maps ivshmem BAR2 WC by `path` at `page`, writes through the mapping, reads via the region. */
async function wcMap(dev: VfioDevice, path: WcPath, page: number): Promise<Json> {
  const offset = BigInt(page) * 4096n;
  const m = await dev.map(2, { attribute: 'wc', path, offset, length: 4096 });
  const pattern = bytes(64, page);
  m.bytes.set(pattern, 8);
  const back = await dev.read(2, offset + 8n, 64);
  const r = { attribute: m.attribute, via: m.via, regionSeesWrite: same(back, pattern) };
  m.unmap();
  return r;
}

const EDU_REGIONS: Json = [
  { index: 0, flags: 3, size: '0x100000', offset: '0x0', caps: [] },
  ...[1, 2, 3, 4, 5, 6].map((i) => ({
    index: i,
    flags: 0,
    size: '0x0',
    offset: hex(BigInt(i) << 40n),
    caps: [],
  })),
  { index: 7, flags: 3, size: '0x100', offset: '0x70000000000', caps: [] },
];
const IVSHMEM_REGIONS: Json = [
  { index: 0, flags: 7, size: '0x100', offset: '0x0', caps: [] },
  { index: 1, flags: 0, size: '0x0', offset: '0x10000000000', caps: [] },
  { index: 2, flags: 0x17, size: '0x400000', offset: '0x20000000000', caps: [] },
  ...[3, 4, 5, 6].map((i) => ({ index: i, flags: 0, size: '0x0', offset: hex(BigInt(i) << 40n), caps: [] })),
  { index: 7, flags: 3, size: '0x100', offset: '0x70000000000', caps: [] },
];

export const CASES: readonly Case[] = [
  // --- identity and info ----------------------------------------------------------------------
  {
    name: 'device info (edu): PCI, not resettable, 9 regions, 5 IRQs',
    device: 'edu',
    run: async (d) => {
      const i = await d.info();
      return { flags: i.flags, numRegions: i.numRegions, numIrqs: i.numIrqs };
    },
    expect: { flags: 2, numRegions: 9, numIrqs: 5 },
  },
  {
    name: 'device info argsz below 16 is EINVAL, a buffer below 16 bytes EFAULT',
    device: 'edu',
    run: async (d) => {
      const small = new Uint8Array(16);
      putU32(small, 0, 8);
      const short = new Uint8Array(8);
      putU32(short, 0, 16);
      return [
        await outcome(async () => d.file.ioctl(VFIO_DEVICE_GET_INFO, small)),
        await outcome(async () => d.file.ioctl(VFIO_DEVICE_GET_INFO, short)),
      ];
    },
    expect: [{ errno: 'EINVAL' }, { errno: 'EFAULT' }],
  },
  {
    name: 'config space identity (edu 1234:11e8, class 00ff00, rev 0x10, subsystem 1af4:1100)',
    device: 'edu',
    run: async (d) => {
      const c = await d.readConfig(0, 0x30);
      const v = new DataView(c.buffer, c.byteOffset);
      return [
        hex(v.getUint32(0, true)),
        hex(v.getUint32(8, true) >>> 8),
        v.getUint8(8),
        hex(v.getUint32(0x2c, true)),
      ];
    },
    expect: ['0x11e81234', '0xff00', 0x10, '0x11001af4'],
  },
  { name: 'every region info (edu)', device: 'edu', run: regionTable, expect: EDU_REGIONS },
  {
    name: 'every region info (ivshmem: BAR2 prefetchable, mmap)',
    device: 'ivshmem',
    run: regionTable,
    expect: IVSHMEM_REGIONS,
  },
  {
    name: 'VGA and an index past the regions are EINVAL',
    device: 'edu',
    run: async (d) => [
      await outcome(() => rawRegionInfo(d, 8, 32)),
      await outcome(() => rawRegionInfo(d, 9, 32)),
    ],
    expect: [{ errno: 'EINVAL' }, { errno: 'EINVAL' }],
  },
  {
    name: 'argsz exchange on the WC alias region: 32 asks back 48, then the type capability',
    device: 'ivshmem',
    run: async (d) => {
      const index = await d.aliasRegion(2);
      const first = await rawRegionInfo(d, index, 32);
      const info = await d.regionInfo(index);
      return {
        index,
        first,
        second: { argsz: info.argsz, flags: info.flags, capOffset: info.capOffset, size: hex(info.size) },
        caps: info.caps.map((c) => ({ ...c }) as unknown as Json),
        offset: hex(info.offset),
      };
    },
    expect: {
      index: 9,
      first: { argsz: 48, flags: 0xc, capOffset: 0 },
      second: { argsz: 48, flags: 0xc, capOffset: 32, size: '0x400000' },
      caps: [{ kind: 'type', type: 0x8000ffff, subtype: 3 }],
      offset: '0x90000000000',
    },
  },
  {
    name: 'every IRQ info (edu), index 5 EINVAL',
    device: 'edu',
    run: irqTable,
    expect: [
      { index: 0, flags: 7, count: 1 },
      { index: 1, flags: 9, count: 1 },
      { index: 2, flags: 9, count: 0 },
      { index: 3, flags: 9, count: 1 },
      { index: 4, flags: 9, count: 1 },
      { errno: 'EINVAL' },
    ],
  },
  // --- region access ---------------------------------------------------------------------------
  {
    name: 'edu registers: id, liveness, factorial',
    device: 'edu',
    run: async (d) => {
      const id = await d.read32(0, EDU.ID);
      await d.write32(0, EDU.LIVENESS, 0x12345678);
      const live = await d.read32(0, EDU.LIVENESS);
      await d.write32(0, EDU.FACT, 10);
      return [hex(id), hex(live), await d.read32(0, EDU.FACT)];
    },
    expect: ['0x10000ed', '0xedcba987', 3628800],
  },
  {
    name: 'config BAR sizing: edu BAR0 1 MiB mem32, then restored',
    device: 'edu',
    run: async (d) => {
      const orig = await d.readConfig(0x10, 4);
      await d.writeConfig(0x10, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
      const mask = u32(await d.readConfig(0x10, 4), 0);
      await d.writeConfig(0x10, orig);
      return [hex(mask), same(await d.readConfig(0x10, 4), orig)];
    },
    expect: ['0xfff00000', true],
  },
  {
    name: 'config BAR sizing: ivshmem BAR2 4 MiB mem64 prefetchable',
    device: 'ivshmem',
    run: async (d) => {
      await d.writeConfig(0x18, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
      await d.writeConfig(0x1c, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
      return [hex(u32(await d.readConfig(0x18, 4), 0)), hex(u32(await d.readConfig(0x1c, 4), 0))];
    },
    expect: ['0xffc0000c', '0xffffffff'],
  },
  {
    name: 'region bounds: BAR past the end EINVAL, across it short; config outside EFAULT; empty BAR, cookie space EINVAL',
    device: 'ivshmem',
    run: async (d) => [
      await outcome(async () => (await d.read(0, 0x100, 4)).length),
      await outcome(async () => (await d.read(0, 0xfe, 4)).length),
      await outcome(async () => d.write(0, 0xfc, new Uint8Array(8))),
      await outcome(async () => (await d.read(VFIO_PCI_CONFIG_REGION_INDEX, 0x100, 4)).length),
      await outcome(async () => (await d.read(VFIO_PCI_CONFIG_REGION_INDEX, 0xfe, 4)).length),
      await outcome(async () => d.write(VFIO_PCI_CONFIG_REGION_INDEX, 0xfc, new Uint8Array(8))),
      await outcome(async () => (await d.read(1, 0, 4)).length),
      await outcome(async () => (await d.file.pread(16n << 40n, 4)).length),
    ],
    expect: [
      { errno: 'EINVAL' },
      2,
      4,
      { errno: 'EFAULT' },
      { errno: 'EFAULT' },
      { errno: 'EFAULT' },
      { errno: 'EINVAL' },
      { errno: 'EINVAL' },
    ],
  },
  {
    name: 'unknown ioctl is ENOTTY; reset of a device without reset is EINVAL',
    device: 'edu',
    run: async (d) => [
      await outcome(async () => d.file.ioctl(0x3b00 + 99, new Uint8Array(64))),
      await outcome(async () => {
        await d.reset();
        return 'reset';
      }),
    ],
    expect: [{ errno: 'ENOTTY' }, { errno: 'EINVAL' }],
  },
  // --- mappings --------------------------------------------------------------------------------
  {
    name: 'mmap ivshmem BAR2: uncached, writes meet region reads both ways',
    device: 'ivshmem',
    run: async (d) => {
      const m = await d.map(2, { offset: 8192n, length: 8192 });
      const a = bytes(100, 1);
      m.bytes.set(a, 10);
      const viaRegion = await d.read(2, 8192n + 10n, 100);
      const b = bytes(100, 2);
      await d.write(2, 8192n + 4096n, b);
      const viaMapping = m.bytes.slice(4096, 4196);
      const r = {
        attribute: m.attribute,
        via: m.via,
        region: same(viaRegion, a),
        mapping: same(viaMapping, b),
      };
      m.unmap();
      return r;
    },
    expect: { attribute: 'uc', via: 'region', region: true, mapping: true },
  },
  {
    name: 'mmap refusals: unaligned, past the BAR, config space',
    device: 'ivshmem',
    run: async (d) => {
      const bar2 = (await d.regionInfo(2)).offset;
      return [
        await outcome(async () => (await d.file.mmap(bar2 + 100n, 4096)).length),
        await outcome(async () => (await d.file.mmap(bar2 + (4n << 20n), 4096)).length),
        await outcome(async () => (await d.file.mmap(7n << 40n, 4096)).length),
      ];
    },
    expect: [{ errno: 'EINVAL' }, { errno: 'EINVAL' }, { errno: 'EINVAL' }],
  },
  {
    name: 'WC paths offered for ivshmem BAR2; none for edu BAR0 (EOPNOTSUPP)',
    device: 'ivshmem',
    run: async (d) => [
      (await d.wcPaths(2)) as Json,
      (await d.wcPaths(0)) as Json,
      await outcome(async () => (await d.map(0, { attribute: 'wc' })).via),
    ],
    expectBy: {
      'in-process': [['cookie', 'dma-buf', 'alias-region', 'rfc-region-flags'], [], { errno: 'EOPNOTSUPP' }],
      'vfio-user': [['cookie', 'dma-buf', 'alias-region'], [], { errno: 'EOPNOTSUPP' }],
    },
  },
  ...(['cookie', 'dma-buf', 'alias-region'] as const).map(
    (path, i): Case => ({
      name: `WC mapping of ivshmem BAR2 through ${path}`,
      device: 'ivshmem',
      run: (d) => wcMap(d, path, i + 1),
      expect: { attribute: 'wc', via: path, regionSeesWrite: true },
    }),
  ),
  {
    name: 'WC mapping through the RFC flag (no vfio-user command: ENOTTY)',
    device: 'ivshmem',
    run: (d) => outcome(() => wcMap(d, 'rfc-region-flags', 5)),
    expectBy: {
      'in-process': { attribute: 'wc', via: 'rfc-region-flags', regionSeesWrite: true },
      'vfio-user': { errno: 'ENOTTY' },
    },
  },
  {
    // nvme's BAR0 is memory-backed, mmappable and not prefetchable, and the page asked for is
    // clear of its MSI-X table: the one thing that refuses WC is the gate's prefetch rule (the
    // last entry shows the same page maps UC). ivshmem's BAR0, used here before, is 256 bytes:
    // its one-page dma-buf range was refused by the range check, not by the gate.
    name: 'WC refused on a memory BAR that is not prefetchable (cookie, dma-buf, alias: EINVAL); UC maps',
    device: 'nvme',
    run: async (d) => [
      await outcome(async () => (await d.map(0, { attribute: 'wc', path: 'cookie', length: 4096 })).via),
      await outcome(async () => (await d.map(0, { attribute: 'wc', path: 'dma-buf', length: 4096 })).via),
      await outcome(
        async () => (await d.map(0, { attribute: 'wc', path: 'alias-region', length: 4096 })).via,
      ),
      await outcome(async () => {
        const m = await d.map(0, { length: 4096 });
        m.unmap();
        return `${m.attribute} ${m.via}`;
      }),
    ],
    expect: [{ errno: 'EINVAL' }, { errno: 'EINVAL' }, { errno: 'EINVAL' }, 'uc region'],
  },
  {
    name: 'SET_REGION_FLAGS with a bad index (EINVAL in-process, ENOTTY over vfio-user)',
    device: 'ivshmem',
    run: (d) =>
      outcome(async () => d.file.ioctl(VFIO_DEVICE_SET_REGION_FLAGS, Uint8Array.of(9, 0, 0, 0, 0, 0, 0, 0))),
    expectBy: { 'in-process': { errno: 'EINVAL' }, 'vfio-user': { errno: 'ENOTTY' } },
  },
  {
    name: 'cookie: a mapping outlives the release; a released cookie maps and releases EINVAL',
    device: 'ivshmem',
    run: async (d) => {
      const c = await d.mmapCookie(2, 'wc');
      const m = await d.file.mmap(c.offset + 4096n, 4096);
      await d.releaseCookie(c.offset);
      const pattern = bytes(32, 3);
      m.bytes.set(pattern);
      const back = await d.read(2, 4096n, 32);
      const r: Json = [
        hex(c.size),
        m.attribute,
        m.via,
        same(back, pattern),
        await outcome(async () => (await d.file.mmap(c.offset, 4096)).length),
        await outcome(async () => {
          await d.releaseCookie(c.offset);
          return 'released';
        }),
      ];
      m.unmap();
      return r;
    },
    expect: ['0x400000', 'wc', 'cookie', true, { errno: 'EINVAL' }, { errno: 'EINVAL' }],
  },
  {
    name: 'dma-buf of two ranges: offsets count through the ranges; one mapping per range',
    device: 'ivshmem',
    run: async (d) => {
      const fd = await d.exportDmaBuf(
        2,
        [
          { offset: 0n, length: 4096n },
          { offset: 0x10000n, length: 8192n },
        ],
        'wc',
      );
      try {
        const m = await d.file.mmapDmaBuf(fd, 8192n, 4096);
        const pattern = bytes(16, 9);
        m.bytes.set(pattern);
        const r: Json = [
          m.attribute,
          m.via,
          same(await d.read(2, 0x11000n, 16), pattern),
          await outcome(async () => (await d.file.mmapDmaBuf(fd, 0n, 8192)).length),
          await outcome(async () => (await d.file.mmapDmaBuf(fd, 12288n, 4096)).length),
        ];
        m.unmap();
        return r;
      } finally {
        await d.file.closeFd(fd);
      }
    },
    expect: ['wc', 'dma-buf', true, { errno: 'EINVAL' }, { errno: 'EINVAL' }],
  },
  {
    name: 'dma-buf refusals: ROM index ENODEV, unaligned range EINVAL, no ranges EINVAL',
    device: 'ivshmem',
    run: async (d) => [
      await outcome(async () => d.exportDmaBuf(6, [{ offset: 0n, length: 4096n }])),
      await outcome(async () => d.exportDmaBuf(2, [{ offset: 100n, length: 4096n }])),
      await outcome(async () => d.exportDmaBuf(2, [])),
    ],
    expect: [{ errno: 'ENODEV' }, { errno: 'EINVAL' }, { errno: 'EINVAL' }],
  },
  {
    name: 'alias region: no READ/WRITE (EINVAL), maps WC; asking again gives the same index',
    device: 'ivshmem',
    run: async (d) => {
      const index = await d.aliasRegion(2);
      const m = await d.map(index, { length: 4096 });
      const r: Json = [
        index,
        await d.aliasRegion(2),
        await outcome(async () => (await d.read(index, 0, 4)).length),
        m.attribute,
        m.via,
        (await d.info()).numRegions,
      ];
      m.unmap();
      return r;
    },
    expect: [9, 9, { errno: 'EINVAL' }, 'wc', 'alias-region', 10],
  },
  {
    name: 'region info buffer shorter than its argsz is EFAULT once capabilities need the room',
    device: 'ivshmem',
    run: async (d) => {
      const index = await d.aliasRegion(2);
      const b = new Uint8Array(40);
      putU32(b, 0, 48);
      putU32(b, 8, index);
      return outcome(async () => d.file.ioctl(VFIO_DEVICE_GET_REGION_INFO, b));
    },
    expect: { errno: 'EFAULT' },
  },
  {
    name: 'nvme BAR0: sparse mmap around the MSI-X table and PBA; table reads 0xff; no mmap over it',
    device: 'nvme',
    run: async (d) => {
      const r = await d.regionInfo(0);
      const m = await d.map(0, { length: 0x2000 });
      m.bytes.set([1, 2, 3, 4], 0x100);
      const res: Json = [
        r.flags,
        hex(r.size),
        r.caps.map((c) =>
          c.kind === 'sparse-mmap' ? c.areas.map((a) => [hex(a.offset), hex(a.size)]) : c.kind,
        ) as Json,
        m.attribute,
        [...(await d.read(0, 0x100, 4))],
        [...(await d.read(0, 0x2000, 4))],
        await outcome(async () => (await d.map(0, { offset: 0x2000n, length: 4096 })).via),
        await outcome(async () => (await d.map(0, { length: 0x4000 })).via),
      ];
      m.unmap();
      return res;
    },
    expect: [
      0xf,
      '0x4000',
      [[['0x0', '0x2000']]],
      'uc',
      [1, 2, 3, 4],
      [255, 255, 255, 255],
      { errno: 'EINVAL' },
      { errno: 'EINVAL' },
    ],
  },
  // --- interrupts ------------------------------------------------------------------------------
  {
    name: 'MSI: edu raise register 0x60 signals the eventfd routed by SET_IRQS',
    device: 'edu',
    run: async (d) => {
      const e = new Eventfd();
      try {
        await d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [e.fd]);
        const before = e.read();
        await d.write32(0, EDU.RAISE, 1);
        const n = await e.wait(2000);
        const status = await d.read32(0, 0x24);
        await d.write32(0, EDU.ACK, 1);
        await d.disableIrqs(VFIO_PCI_MSI_IRQ_INDEX);
        return { before: String(before), fired: n !== null && n > 0n, status };
      } finally {
        e.close();
      }
    },
    expect: { before: 'null', fired: true, status: 1 },
  },
  {
    name: 'INTx: edu raise signals the eventfd once, automasked until unmasked',
    device: 'edu',
    run: async (d) => {
      const e = new Eventfd();
      try {
        await d.setIrqEventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, [e.fd]);
        await d.write32(0, EDU.RAISE, 1);
        const first = await e.wait(2000);
        await d.write32(0, EDU.ACK, 1);
        await d.write32(0, EDU.RAISE, 2);
        const whileMasked = await e.wait(50);
        await d.write32(0, EDU.ACK, 2);
        await d.unmaskIntx();
        await d.write32(0, EDU.RAISE, 4);
        const afterUnmask = await e.wait(2000);
        await d.write32(0, EDU.ACK, 4);
        await d.disableIrqs(VFIO_PCI_INTX_IRQ_INDEX);
        return [String(first), String(whileMasked), String(afterUnmask)];
      } finally {
        e.close();
      }
    },
    expect: ['1', 'null', '1'],
  },
  {
    name: 'SET_IRQS with a closed fd is EBADF, beyond the vectors EINVAL',
    device: 'edu',
    run: async (d) => [
      await outcome(async () => {
        await d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [987654]);
        return 'ok';
      }),
      await outcome(async () => {
        const e = new Eventfd();
        try {
          await d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [e.fd, e.fd]);
          return 'ok';
        } finally {
          e.close();
        }
      }),
    ],
    expect: [{ errno: 'EBADF' }, { errno: 'EINVAL' }],
  },
  // --- DMA -------------------------------------------------------------------------------------
  {
    name: 'edu DMA from memfd memory into its buffer and back',
    device: 'edu',
    run: async (d) => {
      const mem = createDmaMemory(8192);
      try {
        return await eduDmaRoundTrip(d, mem);
      } finally {
        mem.close();
      }
    },
    expect: { deviceGotIt: true, ramGotItBack: true },
  },
  {
    name: 'edu DMA from memory without an fd (vfio-user: DMA_READ/DMA_WRITE messages)',
    device: 'edu',
    run: (d) => eduDmaRoundTrip(d, createMessageOnlyDmaMemory(8192)),
    expect: { deviceGotIt: true, ramGotItBack: true },
  },
  {
    name: 'DMA map overlap: EEXIST in-process (type1), EINVAL over vfio-user (libvfio-user)',
    device: 'edu',
    run: async (d) => {
      const m = createMessageOnlyDmaMemory(8192);
      await d.dmaMap(IOVA, m);
      const r = [
        await outcome(async () => {
          await d.dmaMap(IOVA + 4096n, m);
          return 'mapped';
        }),
      ];
      await d.dmaUnmap(IOVA, 8192n);
      return r;
    },
    expectBy: { 'in-process': [{ errno: 'EEXIST' }], 'vfio-user': [{ errno: 'EINVAL' }] },
  },
];

/** What `c` must give on `transport` (undefined: the case does not apply there). */
export function expected(c: Case, transport: Transport): Json | undefined {
  return c.expectBy ? c.expectBy[transport] : c.expect;
}
