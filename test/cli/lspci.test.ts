/**
 * `vfio-ts info` reads like `lspci -nn -vv` because it prints lspci's lines: the same config
 * space bytes go to the installed lspci (`lspci -F dump`, names from the same pci.ids fixture) and
 * to our decoder (src/driver/pci-config.ts, src/driver/lspci.ts), and every line we print must
 * be one lspci prints, in the same order; every line lspci prints must be ours too, except the
 * details we say we leave out (PCI Express version 2 registers, extended capabilities' bodies).
 * Cases: a synthetic endpoint with every field we decode set, broken capability chains, and the
 * config space of each of our device models as VFIO reads it. Plus the decoder's own edge cases.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as P from '../../src/abi/pci.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, e1000eModel } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { lspciLines } from '../../src/driver/lspci.js';
import { decodeConfig } from '../../src/driver/pci-config.js';
import { PciIdDatabase } from '../../src/driver/pci-ids.js';
import { MalformedError } from '../../src/errors.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { requireOrSkip } from '../helpers/env.js';
import { FIXTURE_PCI_IDS } from './pci-ids.test.js';

/** Config space under construction: little-endian stores and a capability chain. */
class Config {
  readonly b: Uint8Array;
  private readonly v: DataView;
  private lastCap = P.PCI_CAPABILITY_LIST;
  private lastExt = -1;
  constructor(size: number) {
    this.b = new Uint8Array(size);
    this.v = new DataView(this.b.buffer);
  }
  u8(o: number, x: number) {
    this.v.setUint8(o, x);
    return this;
  }
  u16(o: number, x: number) {
    this.v.setUint16(o, x, true);
    return this;
  }
  u32(o: number, x: number) {
    this.v.setUint32(o, x >>> 0, true);
    return this;
  }
  /** Appends capability `id` at `at` to the chain (status Cap+ set). */
  cap(at: number, id: number, flags: number) {
    this.u16(P.PCI_STATUS, this.v.getUint16(P.PCI_STATUS, true) | P.PCI_STATUS_CAP_LIST);
    this.u8(this.lastCap === P.PCI_CAPABILITY_LIST ? this.lastCap : this.lastCap + 1, at);
    this.lastCap = at;
    return this.u8(at, id).u16(at + 2, flags);
  }
  /** Appends extended capability `id` version `ver` at `at`. */
  ext(at: number, id: number, ver: number) {
    if (this.lastExt >= 0) this.u32(this.lastExt, this.v.getUint32(this.lastExt, true) | (at << 20));
    this.lastExt = at;
    return this.u32(at, id | (ver << 16));
  }
}

function header(c: Config, vendor: number, device: number, classCode: number) {
  return c
    .u16(P.PCI_VENDOR_ID, vendor)
    .u16(P.PCI_DEVICE_ID, device)
    .u32(P.PCI_CLASS_REVISION, (classCode << 8) | 0x03)
    .u16(P.PCI_SUBSYSTEM_VENDOR_ID, 0x1af4)
    .u16(P.PCI_SUBSYSTEM_ID, 0x1100);
}

/**
 * An endpoint with every field the decoder reads set to something lspci prints differently.
 * `above4G` puts BAR2 above 4 GiB: lspci -F then reads BAR3 (the upper half) as a BAR of its
 * own, which lspci on sysfs does not, so the comparison leaves it below.
 */
function endpoint(above4G = false): Uint8Array {
  const c = header(new Config(4096), 0x1b36, 0x0010, 0x010802);
  c.u16(P.PCI_COMMAND, P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_MASTER | P.PCI_COMMAND_SERR);
  c.u16(P.PCI_STATUS, P.PCI_STATUS_66MHZ | P.PCI_STATUS_DEVSEL_MEDIUM | P.PCI_STATUS_REC_MASTER_ABORT);
  c.u8(P.PCI_CACHE_LINE_SIZE, 0x10)
    .u8(P.PCI_LATENCY_TIMER, 0x40)
    .u8(P.PCI_BIST, P.PCI_BIST_CAPABLE | 0x3);
  c.u32(P.PCI_BASE_ADDRESS_0, 0xc001); // I/O at c000
  c.u32(P.PCI_BASE_ADDRESS_1, 0xfe000000); // 32-bit memory
  c.u32(P.PCI_BASE_ADDRESS_2, 0xc000000c).u32(P.PCI_BASE_ADDRESS_3, above4G ? 0x8 : 0); // 64-bit prefetchable
  c.u32(P.PCI_BASE_ADDRESS_4, 0x2); // below 1 MiB, unassigned
  c.u32(P.PCI_ROM_ADDRESS, 0xfeb80001);
  c.u8(P.PCI_INTERRUPT_PIN, 2).u8(P.PCI_INTERRUPT_LINE, 11).u8(P.PCI_MIN_GNT, 4).u8(P.PCI_MAX_LAT, 8);
  c.cap(0x40, P.PCI_CAP_ID_PM, 0x4000 | 0x0800 | 0x0400 | 0x0200 | (3 << 6) | 0x8 | 3);
  c.u16(0x40 + P.PCI_PM_CTRL, 0x8000 | 0x0100 | 0x8 | 3).u8(0x40 + P.PCI_PM_PPB_EXTENSIONS, 0xc0);
  c.cap(0x50, P.PCI_CAP_ID_MSI, P.PCI_MSI_FLAGS_ENABLE | (2 << 4) | (3 << 1) | P.PCI_MSI_FLAGS_MASKBIT);
  c.u32(0x50 + P.PCI_MSI_ADDRESS_LO, 0xfee01000).u16(0x50 + P.PCI_MSI_DATA_32, 0x4021);
  c.u32(0x50 + P.PCI_MSI_MASK_32, 0x5).u32(0x50 + P.PCI_MSI_PENDING_32, 0x1);
  c.cap(0x70, P.PCI_CAP_ID_MSIX, P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL | 15);
  c.u32(0x70 + P.PCI_MSIX_TABLE, 0x1000 | 4).u32(0x70 + P.PCI_MSIX_PBA, 0x1800 | 4);
  c.cap(0x80, P.PCI_CAP_ID_EXP, 2 | (P.PCI_EXP_TYPE_ENDPOINT << 4) | (3 << 9));
  c.u32(
    0x80 + P.PCI_EXP_DEVCAP,
    1 | (1 << 3) | 0x20 | (3 << 6) | (5 << 9) | 0x1000 | 0x8000 | (25 << 18) | (1 << 26) | 0x10000000,
  );
  c.u16(0x80 + P.PCI_EXP_DEVCTL, 0x1 | 0x8 | 0x10 | (1 << 5) | 0x100 | 0x800 | (2 << 12) | 0x8000);
  c.u16(0x80 + P.PCI_EXP_DEVSTA, 0x1 | 0x10 | 0x20);
  c.u32(
    0x80 + P.PCI_EXP_LNKCAP,
    3 | (16 << 4) | (3 << 10) | (2 << 12) | (4 << 15) | 0x40000 | 0x100000 | 0x400000 | (3 << 24),
  );
  c.u16(0x80 + P.PCI_EXP_LNKCTL, 2 | 0x8 | 0x40 | 0x100 | 0x400);
  c.u16(0x80 + P.PCI_EXP_LNKSTA, 2 | (8 << 4) | 0x2000 | 0x1000);
  c.cap(0xc0, P.PCI_CAP_ID_VNDR, 0x14);
  c.cap(0xd8, 0x20, 0xbeef);
  c.ext(0x100, 0x01, 2); // AER: lspci prints its registers; we print the name
  c.ext(0x148, P.PCI_EXT_CAP_ID_DSN, 1).u32(0x14c, 0x89abcdef).u32(0x150, 0x01234567);
  c.ext(0x160, P.PCI_EXT_CAP_ID_VNDR, 1).u32(0x164, 0x01a | (2 << 16) | (0x18 << 20));
  c.ext(0x180, P.PCI_EXT_CAP_ID_DVSEC, 1)
    .u32(0x184, 0x1af4 | (1 << 16) | (0x10 << 20))
    .u16(0x188, 7);
  c.ext(0x1a0, 0x0e, 1); // ARI
  c.ext(0x1b0, 0x3f, 1); // an ID lspci 3.9 does not know either
  return c.b;
}

/** A virtio device's vendor capability (lspci decodes it for 1af4:1000-107f), 32-bit MSI unmaskable. */
function virtio(): Uint8Array {
  const c = header(new Config(256), 0x1af4, 0x1041, 0x020000);
  c.u32(P.PCI_BASE_ADDRESS_4, 0xc).u32(P.PCI_BASE_ADDRESS_5, 0);
  c.cap(0x84, P.PCI_CAP_ID_VNDR, 0x14 | (2 << 8))
    .u8(0x84 + 4, 4)
    .u32(0x84 + 8, 0x3000)
    .u32(0x84 + 12, 0x1000);
  c.u32(0x84 + 16, 4);
  c.cap(0x98, P.PCI_CAP_ID_MSI, 0);
  return c.b;
}

/** Capabilities lspci prints as one fixed line: Null and Hot-plug without `<?>`, the rest with it. */
function fixedLines(): Uint8Array {
  return header(new Config(256), 0x1234, 0x11e8, 0x00ff00)
    .cap(0x40, 0, 0x1234)
    .cap(0x50, P.PCI_CAP_ID_SHPC, 0)
    .cap(0x60, P.PCI_CAP_ID_CHSWP, 0)
    .cap(0x70, P.PCI_CAP_ID_CCRC, 0)
    .cap(0x80, P.PCI_CAP_ID_AGP3, 0)
    .cap(0x90, P.PCI_CAP_ID_SECDEV, 0).b;
}

/** BARs and a ROM at low addresses: lspci pads I/O ports to 4 hex digits, memory and the ROM to 8. */
function lowAddresses(): Uint8Array {
  const c = header(new Config(256), 0x1234, 0x11e8, 0x00ff00);
  c.u16(P.PCI_COMMAND, P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY);
  c.u32(P.PCI_BASE_ADDRESS_0, 0x100 | P.PCI_BASE_ADDRESS_SPACE_IO);
  c.u32(P.PCI_BASE_ADDRESS_1, 0x0c000000);
  c.u32(P.PCI_BASE_ADDRESS_2, 0x1000 | P.PCI_BASE_ADDRESS_MEM_TYPE_64 | P.PCI_BASE_ADDRESS_MEM_PREFETCH);
  return c.u32(P.PCI_ROM_ADDRESS, 0xc0000 | P.PCI_ROM_ADDRESS_ENABLE).b;
}

function loop(): Uint8Array {
  const c = header(new Config(256), 0x1234, 0x11e8, 0x00ff00)
    .cap(0x40, P.PCI_CAP_ID_MSI, 0)
    .cap(0x50, 0x20, 0);
  return c.u8(0x51, 0x40).b; // 0x50's next is 0x40 again
}

function brokenChain(): Uint8Array {
  const c = header(new Config(256), 0x1234, 0x11e8, 0x00ff00)
    .cap(0x40, P.PCI_CAP_ID_MSI, 0)
    .cap(0x60, 0xff, 0);
  return c.b;
}

async function modelConfig(dev: VfioPciDevice): Promise<Uint8Array> {
  const v = new VfioDevice(new LocalDeviceFile(dev));
  try {
    return await v.readConfig(0, Number((await v.regionInfo(7)).size));
  } finally {
    await v.close();
  }
}

/** The `lspci -x` dump `lspci -F` reads back. */
function dump(b: Uint8Array): string {
  let out = '00:00.0 Device: dump\n';
  for (let i = 0; i < b.length; i += 16)
    out += `${i.toString(16).padStart(2, '0')}: ${Array.from(b.subarray(i, i + 16), (x) => x.toString(16).padStart(2, '0')).join(' ')}\n`;
  return out;
}

function lspciMissing(): string | undefined {
  const r = spawnSync('lspci', ['--version'], { encoding: 'utf8' });
  return r.error || r.status !== 0 ? 'lspci (pciutils)' : undefined;
}

/**
 * Whether lspci's `line` is one we leave out: an extended capability's body, or what PCI Express
 * prints from DevCap2 on (the version 2 registers). `block` is the capability line above it.
 */
function leftOut(block: string, line: string, seenDevCap2: boolean): boolean {
  if (/^\tCapabilities: \[[0-9a-f]{3} v\d+\]/.test(block)) return line.startsWith('\t\t');
  return / Express \(v2\) /.test(block) && seenDevCap2 && line.startsWith('\t\t');
}

const env = () => nativeEnvironment();
const CASES: [string, () => Promise<Uint8Array> | Uint8Array][] = [
  [
    'a synthetic endpoint: I/O, 32-bit, 64-bit and low-1M BARs, ROM, BIST, PM, MSI, MSI-X, PCIe with a link, vendor, unknown, extended',
    endpoint,
  ],
  ['virtio vendor capability, 32-bit MSI', virtio],
  ['capabilities lspci prints as one fixed line (Null, Hot-plug, the <?> ones)', fixedLines],
  ['BARs and the ROM at low addresses, zero-padded as lspci prints them', lowAddresses],
  ['a capability chain that loops', loop],
  ['a capability chain that breaks (ID ff)', brokenChain],
  ['edu as VFIO reads it', () => modelConfig(createDevice('edu', { env: env() }))],
  ['ivshmem as VFIO reads it', () => modelConfig(createDevice('ivshmem', { env: env() }))],
  ['the nvme controller', () => modelConfig(createDevice('nvme', { env: env() }))],
  [
    'the e1000e model: ROM, I/O BAR, AER and DSN',
    () => modelConfig(createDevice(e1000eModel(), { env: env() })),
  ],
];

describe('our lines are lspci -nn -vv lines for the same bytes', () => {
  for (const [name, make] of CASES) {
    test(name, async (t) => {
      if (!requireOrSkip(t, lspciMissing(), 'apt-get install -y pciutils')) return;
      const bytes = await make();
      const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-lspci-'));
      try {
        writeFileSync(join(dir, 'dump'), dump(bytes));
        const r = spawnSync('lspci', ['-F', join(dir, 'dump'), '-i', FIXTURE_PCI_IDS, '-nn', '-vv'], {
          encoding: 'utf8',
        });
        assert.equal(r.status, 0, r.stderr);
        const theirs = r.stdout.replace(/\n+$/, '').split('\n');
        const ours = lspciLines(
          decodeConfig(bytes),
          '00:00.0',
          { bars: [], rom: 0n },
          PciIdDatabase.load([FIXTURE_PCI_IDS]),
        );
        const both = `ours:\n${ours.join('\n')}\nlspci:\n${theirs.join('\n')}`;
        let at = 0;
        for (const line of ours) {
          const found = theirs.indexOf(line, at);
          assert.ok(found >= 0, `not in lspci's output (in order): ${JSON.stringify(line)}\n${both}`);
          at = found + 1;
        }
        let block = '';
        let devCap2 = false;
        for (const line of theirs) {
          if (line.startsWith('\tCapabilities: ')) [block, devCap2] = [line, false];
          if (line.startsWith('\t\tDevCap2:')) devCap2 = true;
          assert.ok(
            ours.includes(line) || leftOut(block, line, devCap2),
            `we leave out ${JSON.stringify(line)}\n${both}`,
          );
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

test('decodeConfig: BARs, the ROM, a 64-bit BAR above 4 GiB, capability kinds in chain order', () => {
  const c = decodeConfig(endpoint(true));
  assert.deepEqual(
    c.bars.map((b) => [b.index, b.io, b.memoryType, b.prefetchable, b.address]),
    [
      [0, true, undefined, false, 0xc000n],
      [1, false, '32-bit', false, 0xfe000000n],
      [2, false, '64-bit', true, 0x8_c000_0000n],
      [4, false, 'low-1M', false, 0n],
      [5, false, '32-bit', false, 0n],
    ],
  );
  assert.deepEqual(c.rom, { address: 0xfeb80000n, enabled: true });
  assert.deepEqual(
    c.capabilities.map((k) => [k.offset, k.kind]),
    [
      [0x40, 'pm'],
      [0x50, 'msi'],
      [0x70, 'msix'],
      [0x80, 'express'],
      [0xc0, 'vendor'],
      [0xd8, 'other'],
    ],
  );
  assert.deepEqual(
    c.extendedCapabilities.map((k) => (k.kind === 'ext' ? [k.offset, k.id, k.version] : k)),
    [
      [0x100, 1, 2],
      [0x148, 3, 1],
      [0x160, 0x0b, 1],
      [0x180, 0x23, 1],
      [0x1a0, 0x0e, 1],
      [0x1b0, 0x3f, 1],
    ],
  );
  const msix = c.capabilities[2];
  assert.ok(msix?.kind === 'msix');
  assert.deepEqual([msix.tableBar, msix.tableOffset, msix.pbaBar, msix.pbaOffset], [4, 0x1000, 4, 0x1800]);
});

test('decodeConfig: what a device cannot make it do', () => {
  assert.throws(() => decodeConfig(new Uint8Array(63)), MalformedError);
  assert.deepEqual(decodeConfig(loop()).capabilities.at(-1), { kind: 'broken', offset: 0x40, why: 'looped' });
  assert.deepEqual(decodeConfig(brokenChain()).capabilities.at(-1), {
    kind: 'broken',
    offset: 0x60,
    why: 'broken',
  });
  // A pointer past the bytes read (a 64-byte header alone) ends the walk instead of throwing.
  const short = header(new Config(64), 0x1234, 0x11e8, 0)
    .u16(P.PCI_STATUS, P.PCI_STATUS_CAP_LIST)
    .u8(0x34, 0x40).b;
  assert.deepEqual(decodeConfig(short).capabilities, [{ kind: 'broken', offset: 0x40, why: 'unreadable' }]);
  // An MSI capability cut off by the end of the bytes is kept as an undecoded one.
  const cut = header(new Config(0x48), 0x1234, 0x11e8, 0).cap(
    0x40,
    P.PCI_CAP_ID_MSI,
    P.PCI_MSI_FLAGS_64BIT,
  ).b;
  assert.equal(decodeConfig(cut).capabilities[0]?.kind, 'other');
  // Extended capabilities: a next pointer into the standard space, and a loop.
  const ext = new Config(4096);
  header(ext, 0x1234, 0x11e8, 0).cap(0x40, P.PCI_CAP_ID_EXP, P.PCI_EXP_TYPE_RC_END << 4);
  ext.u32(0x100, 0x01 | (1 << 16) | (0x40 << 20));
  assert.deepEqual(decodeConfig(ext.b).extendedCapabilities.at(-1), {
    kind: 'broken',
    offset: 0x40,
    why: 'broken',
  });
  ext.u32(0x100, 0x01 | (1 << 16) | (0x100 << 20));
  assert.deepEqual(decodeConfig(ext.b).extendedCapabilities.at(-1), {
    kind: 'broken',
    offset: 0x100,
    why: 'looped',
  });
});
