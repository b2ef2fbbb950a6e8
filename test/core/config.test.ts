/**
 * ConfigSpace: PCI configuration space virtualized the way drivers/vfio/pci/vfio_pci_config.c
 * does it. Expected values come from the kernel's rules and, where marked, from what Linux 6.1
 * answered for QEMU's edu and ivshmem-plain (shared/tools/qemu-vfio/sample-output.txt).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import * as P from '../../src/abi/pci.js';
import { CONFIG_RANGE_ERRNO, ConfigSpace, MAX_CAP_WALK, ROM_BAR_INDEX } from '../../src/core/config.js';
import type { DeviceDescription } from '../../src/core/description.js';
import { eduDevice } from '../../src/devices/edu.js';
import { ivshmemDevice } from '../../src/devices/ivshmem.js';
import { VfioError } from '../../src/errors.js';
import { requireOrSkip } from '../helpers/env.js';
import { errnoOf } from '../helpers/errno.js';

// --- devices ----------------------------------------------------------------------------------

/** The example devices themselves (src/devices): QEMU's edu (1 MiB BAR0, one 64-bit MSI vector
 * at 0x40, hw/misc/edu.c) and ivshmem-plain (256-byte BAR0, 64-bit prefetchable 4 MiB BAR2). */
const EDU: DeviceDescription = eduDevice().description;
const IVSHMEM: DeviceDescription = ivshmemDevice().description;

/** Every feature: PM, 32-bit maskable MSI x8, PCIe endpoint, MSI-X, an I/O BAR and a ROM. */
const FULL: DeviceDescription = {
  name: 'full',
  identity: {
    vendorId: 0x8086,
    deviceId: 0x10d3,
    subsystemVendorId: 0x8086,
    subsystemId: 0x0000,
    classCode: 0x020000,
    revision: 0,
    interruptPin: 1,
  },
  bars: [
    { size: 0x4000, kind: 'mem64' },
    undefined,
    { size: 32, kind: 'io' },
    { size: 1 << 20, kind: 'mem32', prefetchable: true },
  ],
  rom: { size: 0x10000 },
  pm: true,
  msi: { vectors: 8, addr64: false, perVectorMask: true },
  pcie: true,
  resettable: true,
  msix: { tableSize: 16, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000 },
};

/** nvme-like: PM, PCIe, MSI-X (no MSI). */
const NVME: DeviceDescription = {
  name: 'nvme-like',
  identity: { ...FULL.identity, classCode: 0x010802 },
  bars: [{ size: 0x4000, kind: 'mem64' }],
  pm: true,
  pcie: true,
  msix: { tableSize: 64, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000 },
};

// --- helpers ------------------------------------------------------------------------------------

function u(cs: ConfigSpace, offset: number, len: 1 | 2 | 4): number {
  const b = cs.read(offset, len);
  let v = 0;
  for (let i = len - 1; i >= 0; i--) v = (v << 8) | b[i]!;
  return v >>> 0;
}

function w(cs: ConfigSpace, offset: number, len: 1 | 2 | 4, val: number): void {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (val >>> (8 * i)) & 0xff;
  cs.write(offset, b);
}

// --- identity -----------------------------------------------------------------------------------

describe('identity fields', () => {
  const cases: [string, DeviceDescription, number, 1 | 2 | 4, number][] = [
    ['vendor', EDU, P.PCI_VENDOR_ID, 2, 0x1234],
    ['device', EDU, P.PCI_DEVICE_ID, 2, 0x11e8],
    ['revision', EDU, P.PCI_REVISION_ID, 1, 0x10],
    ['class|revision', EDU, P.PCI_CLASS_REVISION, 4, 0x00ff0010],
    ['prog-if', FULL, P.PCI_CLASS_PROG, 1, 0x00],
    ['class', NVME, P.PCI_CLASS_DEVICE, 2, 0x0108],
    ['nvme prog-if', NVME, P.PCI_CLASS_PROG, 1, 0x02],
    ['header type 0', FULL, P.PCI_HEADER_TYPE, 1, 0],
    ['subsystem vendor', EDU, P.PCI_SUBSYSTEM_VENDOR_ID, 2, 0x1af4],
    ['subsystem', EDU, P.PCI_SUBSYSTEM_ID, 2, 0x1100],
    ['interrupt pin A', EDU, P.PCI_INTERRUPT_PIN, 1, 1],
    ['no interrupt pin', IVSHMEM, P.PCI_INTERRUPT_PIN, 1, 0],
    ['interrupt line unknown with a pin', EDU, P.PCI_INTERRUPT_LINE, 1, 0xff],
    ['interrupt line 0 without a pin', IVSHMEM, P.PCI_INTERRUPT_LINE, 1, 0],
    ['status CAP_LIST with caps', EDU, P.PCI_STATUS, 2, P.PCI_STATUS_CAP_LIST],
    ['status without caps', IVSHMEM, P.PCI_STATUS, 2, 0],
    ['cap pointer', EDU, P.PCI_CAPABILITY_LIST, 1, 0x40],
    ['no cap pointer', IVSHMEM, P.PCI_CAPABILITY_LIST, 1, 0],
    // Firmware (SeaBIOS) leaves I/O, memory and SERR# on for every function: Linux 6.1 and 7.3 show
    // 0x0103 for edu, nvme and e1000e (test/kernel/differential.test.ts).
    [
      'command: I/O, memory, SERR# as firmware leaves them',
      EDU,
      P.PCI_COMMAND,
      2,
      P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_SERR,
    ],
    [
      'command: the same with an I/O BAR',
      FULL,
      P.PCI_COMMAND,
      2,
      P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_SERR,
    ],
    ['cardbus CIS', FULL, P.PCI_CARDBUS_CIS, 4, 0],
  ];
  for (const [name, desc, off, len, want] of cases) {
    test(`${desc.name}: ${name}`, () => assert.equal(u(new ConfigSpace(desc), off, len), want));
  }

  test('size: 256 conventional, 4096 PCIe', () => {
    assert.equal(new ConfigSpace(EDU).size, 256);
    assert.equal(new ConfigSpace(IVSHMEM).size, 256);
    assert.equal(new ConfigSpace(FULL).size, 4096);
  });
});

describe('read-only fields ignore writes', () => {
  const cases: [string, number, 1 | 2 | 4][] = [
    ['vendor', P.PCI_VENDOR_ID, 2],
    ['device', P.PCI_DEVICE_ID, 2],
    ['vendor+device dword', P.PCI_VENDOR_ID, 4],
    ['class+revision', P.PCI_CLASS_REVISION, 4],
    ['header type', P.PCI_HEADER_TYPE, 1],
    ['latency timer (writable by vfio, hardwired by the device)', P.PCI_LATENCY_TIMER, 1],
    ['BIST', P.PCI_BIST, 1],
    ['subsystem', P.PCI_SUBSYSTEM_VENDOR_ID, 4],
    ['cap pointer', P.PCI_CAPABILITY_LIST, 1],
    ['interrupt pin', P.PCI_INTERRUPT_PIN, 1],
    ['min_gnt/max_lat', P.PCI_MIN_GNT, 2],
    ['status (perm NO_WRITE: RW1C bits cannot be cleared)', P.PCI_STATUS, 2],
    ['reserved 0x38', 0x38, 4],
    ['unassigned 0x80', 0x80, 4],
    ['last dword', 0xfc, 4],
  ];
  for (const [name, off, len] of cases) {
    for (const val of [0xffffffff, 0, 0x5a5a5a5a]) {
      test(`${name} <- ${val.toString(16)}`, () => {
        const cs = new ConfigSpace(FULL);
        const before = u(cs, off, len);
        w(cs, off, len, val);
        assert.equal(u(cs, off, len), before);
      });
    }
  }

  test('whole 4 KiB image unchanged after writing all-ones to read-only ranges', () => {
    const cs = new ConfigSpace(FULL);
    const before = cs.read(0x100, 0xf00);
    cs.write(0x100, new Uint8Array(0xf00).fill(0xff));
    assert.deepEqual(cs.read(0x100, 0xf00), before);
  });

  test('writable scratch: cache line size (device) and interrupt line (virtual)', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, P.PCI_CACHE_LINE_SIZE, 1, 0x10);
    w(cs, P.PCI_INTERRUPT_LINE, 1, 0x0b);
    assert.equal(u(cs, P.PCI_CACHE_LINE_SIZE, 1), 0x10);
    assert.equal(u(cs, P.PCI_INTERRUPT_LINE, 1), 0x0b);
    assert.equal(u(cs, P.PCI_INTERRUPT_PIN, 1), 1);
  });
});

// --- BARs ---------------------------------------------------------------------------------------

describe('BAR sizing (vfio_bar_fixup)', () => {
  const cases: [string, DeviceDescription, number, number, number][] = [
    [
      'edu BAR0 1 MiB mem32 (Linux 6.1 answered 0xfff00000)',
      EDU,
      P.PCI_BASE_ADDRESS_0,
      0xffffffff,
      0xfff00000,
    ],
    [
      'ivshmem BAR0 256 B (Linux 6.1 answered 0xffffff00)',
      IVSHMEM,
      P.PCI_BASE_ADDRESS_0,
      0xffffffff,
      0xffffff00,
    ],
    ['ivshmem BAR1 unimplemented', IVSHMEM, P.PCI_BASE_ADDRESS_1, 0xffffffff, 0],
    ['ivshmem BAR2 4 MiB mem64 prefetchable, low', IVSHMEM, P.PCI_BASE_ADDRESS_2, 0xffffffff, 0xffc0000c],
    ['ivshmem BAR3 = BAR2 high dword', IVSHMEM, P.PCI_BASE_ADDRESS_3, 0xffffffff, 0xffffffff],
    ['ivshmem BAR4 unimplemented', IVSHMEM, P.PCI_BASE_ADDRESS_4, 0xffffffff, 0],
    ['full BAR0 16 KiB mem64', FULL, P.PCI_BASE_ADDRESS_0, 0xffffffff, 0xffffc004],
    ['full BAR2 32 B io: mask | 1', FULL, P.PCI_BASE_ADDRESS_2, 0xffffffff, 0xffffffe1],
    ['full BAR3 1 MiB mem32 prefetchable', FULL, P.PCI_BASE_ADDRESS_3, 0xffffffff, 0xfff00008],
    ['full BAR5 unimplemented', FULL, P.PCI_BASE_ADDRESS_5, 0xffffffff, 0],
    ['writing zero keeps type bits', FULL, P.PCI_BASE_ADDRESS_3, 0, 0x00000008],
    ['low bits written are ignored', EDU, P.PCI_BASE_ADDRESS_0, 0xfea0000f, 0xfea00000],
    ['ROM 64 KiB sized with the address mask', FULL, P.PCI_ROM_ADDRESS, P.PCI_ROM_ADDRESS_MASK, 0xffff0000],
    ['ROM all-ones keeps the enable bit', FULL, P.PCI_ROM_ADDRESS, 0xffffffff, 0xffff0001],
    ['no ROM', EDU, P.PCI_ROM_ADDRESS, 0xffffffff, 0],
  ];
  for (const [name, desc, off, val, want] of cases) {
    test(name, () => {
      const cs = new ConfigSpace(desc);
      w(cs, off, 4, val);
      assert.equal(u(cs, off, 4), want);
    });
  }

  test('byte-wise sizing gives the same answer as a dword write', () => {
    const cs = new ConfigSpace(EDU);
    for (let i = 0; i < 4; i++) w(cs, P.PCI_BASE_ADDRESS_0 + i, 1, 0xff);
    assert.equal(u(cs, P.PCI_BASE_ADDRESS_0, 4), 0xfff00000);
  });

  test('mem64 sized with one 8-byte write', () => {
    const cs = new ConfigSpace(IVSHMEM);
    cs.write(P.PCI_BASE_ADDRESS_2, new Uint8Array(8).fill(0xff));
    assert.equal(u(cs, P.PCI_BASE_ADDRESS_2, 4), 0xffc0000c);
    assert.equal(u(cs, P.PCI_BASE_ADDRESS_3, 4), 0xffffffff);
  });
});

describe('BAR addresses are stored virtually and restored after sizing', () => {
  const cases: [DeviceDescription, number][] = [
    [EDU, 0],
    [IVSHMEM, 0],
    [IVSHMEM, 2],
    [FULL, 0],
    [FULL, 2],
    [FULL, 3],
  ];
  for (const [desc, bar] of cases) {
    test(`${desc.name} BAR${bar}`, () => {
      const seen: [number, bigint][] = [];
      const cs = new ConfigSpace(desc, { onBarChange: (b, a) => seen.push([b, a]) });
      const off = P.PCI_BASE_ADDRESS_0 + 4 * bar;
      const is64 = desc.bars[bar]!.kind === 'mem64';
      const len = is64 ? 8 : 4;
      const original = cs.read(off, len);
      const addr = cs.barAddress(bar)!;
      assert.ok(addr > 0n, 'firmware-assigned address');
      cs.write(off, new Uint8Array(len).fill(0xff));
      assert.notEqual(cs.barAddress(bar), addr);
      cs.write(off, original);
      assert.deepEqual(cs.read(off, len), original);
      assert.equal(cs.barAddress(bar), addr);
      assert.deepEqual(seen.at(-1), [bar, addr]);
      assert.ok(seen.length >= 2, 'sizing and restore both reported');
    });
  }

  test('a new address is kept, aligned to the BAR size', () => {
    const cs = new ConfigSpace(IVSHMEM);
    cs.write(P.PCI_BASE_ADDRESS_2, new Uint8Array([0x0c, 0x00, 0x40, 0x00, 0x01, 0x00, 0x00, 0x00]));
    assert.equal(cs.barAddress(2), 0x1_0040_0000n);
    w(cs, P.PCI_BASE_ADDRESS_2, 4, 0x00412345);
    assert.equal(cs.barAddress(2), 0x1_0040_0000n);
  });

  test('barAddress: undefined for unimplemented and upper halves, ROM at index 6', () => {
    const cs = new ConfigSpace(FULL);
    assert.equal(cs.barAddress(1), undefined);
    assert.equal(cs.barAddress(4), undefined);
    assert.equal(cs.barAddress(5), undefined);
    assert.ok(cs.barAddress(ROM_BAR_INDEX)! > 0n);
    assert.equal(cs.romEnabled, false);
    w(cs, P.PCI_ROM_ADDRESS, 4, Number(cs.barAddress(ROM_BAR_INDEX)!) | P.PCI_ROM_ADDRESS_ENABLE);
    assert.equal(cs.romEnabled, true);
    assert.equal(new ConfigSpace(EDU).barAddress(ROM_BAR_INDEX), undefined);
    for (const bad of [-1, 7, 1.5])
      assert.equal(
        errnoOf(() => cs.barAddress(bad)),
        Errno.EINVAL,
      );
  });

  test('firmware-like placement: naturally aligned, no overlaps, I/O from 0xc000', () => {
    const cs = new ConfigSpace(FULL);
    const spans: [bigint, bigint][] = [];
    for (const [i, size] of [
      [0, 0x4000n],
      [3, 1n << 20n],
      [ROM_BAR_INDEX, 0x10000n],
    ] as const) {
      const a = cs.barAddress(i)!;
      assert.equal(a % size, 0n, `BAR${i} aligned`);
      assert.ok(a >= 0xc000_0000n && a + size <= 0xfec0_0000n, `BAR${i} in the 32-bit window`);
      spans.push([a, a + size]);
    }
    spans.sort((x, y) => (x[0] < y[0] ? -1 : 1));
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i]![0] >= spans[i - 1]![1], 'no overlap');
    assert.equal(cs.barAddress(2), 0xc000n);
  });

  test('a 64-bit BAR too large for the 32-bit window goes above 4 GiB', () => {
    const cs = new ConfigSpace({
      ...IVSHMEM,
      bars: [undefined, undefined, { size: 2 ** 34, kind: 'mem64' }],
    });
    assert.ok(cs.barAddress(2)! >= 1n << 32n);
    w(cs, P.PCI_BASE_ADDRESS_2, 4, 0xffffffff);
    w(cs, P.PCI_BASE_ADDRESS_3, 4, 0xffffffff);
    assert.equal(u(cs, P.PCI_BASE_ADDRESS_2, 4), 0x00000004);
    assert.equal(u(cs, P.PCI_BASE_ADDRESS_3, 4), 0xfffffffc);
  });
});

// --- command register ---------------------------------------------------------------------------

describe('command register', () => {
  const INTX = P.PCI_COMMAND_INTX_DISABLE;
  // The device implements IO, MEMORY, MASTER, SERR and INTx disable (QEMU's pci_init_wmask);
  // INTx disable is vfio's virtual bit.
  const cases: [string, number, number][] = [
    ['all ones', 0xffff, 0x0507],
    ['zero', 0x0000, 0x0000],
    ['memory only', P.PCI_COMMAND_MEMORY, P.PCI_COMMAND_MEMORY],
    ['bus master + memory', 0x0006, 0x0006],
    ['INTx disable', INTX, INTX],
    ['special/invalidate/palette/parity/wait/fastb2b are hardwired 0', 0x02f8, 0x0000],
  ];
  for (const [name, val, want] of cases) {
    test(name, () => {
      const cs = new ConfigSpace(FULL);
      w(cs, P.PCI_COMMAND, 2, val);
      assert.equal(u(cs, P.PCI_COMMAND, 2), want);
      assert.equal(cs.command, want);
      assert.equal(cs.memoryEnabled, (want & P.PCI_COMMAND_MEMORY) !== 0);
      assert.equal(cs.ioEnabled, (want & P.PCI_COMMAND_IO) !== 0);
      assert.equal(cs.busMasterEnabled, (want & P.PCI_COMMAND_MASTER) !== 0);
      assert.equal(cs.intxDisabled, (want & INTX) !== 0);
    });
  }

  test('byte write to the upper half toggles INTx disable only', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, P.PCI_COMMAND + 1, 1, 0x04);
    // The byte 0x04 also clears SERR# (bit 8), which firmware had set.
    assert.equal(cs.command, P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY | INTX);
    assert.equal(cs.intxDisabled, true);
    assert.equal(cs.memoryEnabled, true);
  });

  test('dword write covering command and status changes only the command', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, P.PCI_COMMAND, 4, 0xffff0006);
    assert.equal(u(cs, P.PCI_COMMAND, 4), (P.PCI_STATUS_CAP_LIST << 16) | 0x0006);
  });

  test('onCommandChange reports the visible old and new values once per write', () => {
    const seen: [number, number][] = [];
    const cs = new ConfigSpace(EDU, { onCommandChange: (o, n) => seen.push([o, n]) });
    w(cs, P.PCI_COMMAND, 4, 0x00000406);
    w(cs, P.PCI_COMMAND, 2, 0x0406); // no change, no call
    w(cs, P.PCI_COMMAND, 2, 0x0000);
    assert.deepEqual(seen, [
      [0x0103, 0x0406],
      [0x0406, 0x0000],
    ]);
  });

  test('status Interrupt bit comes from the device', () => {
    const cs = new ConfigSpace(EDU);
    cs.setInterruptStatus(true);
    assert.equal(u(cs, P.PCI_STATUS, 2), P.PCI_STATUS_CAP_LIST | P.PCI_STATUS_INTERRUPT);
    w(cs, P.PCI_STATUS, 2, 0xffff);
    assert.equal(u(cs, P.PCI_STATUS, 2), P.PCI_STATUS_CAP_LIST | P.PCI_STATUS_INTERRUPT);
    cs.setInterruptStatus(false);
    assert.equal(u(cs, P.PCI_STATUS, 2), P.PCI_STATUS_CAP_LIST);
  });
});

// --- capabilities -------------------------------------------------------------------------------

describe('capability chain', () => {
  const cases: [DeviceDescription, [number, number][]][] = [
    [EDU, [[P.PCI_CAP_ID_MSI, 0x40]]],
    [IVSHMEM, []],
    [
      NVME,
      [
        [P.PCI_CAP_ID_PM, 0x40],
        [P.PCI_CAP_ID_EXP, 0x48],
        [P.PCI_CAP_ID_MSIX, 0x84],
      ],
    ],
    [
      FULL,
      [
        [P.PCI_CAP_ID_PM, 0x40],
        [P.PCI_CAP_ID_MSI, 0x48],
        [P.PCI_CAP_ID_EXP, 0x60],
        [P.PCI_CAP_ID_MSIX, 0x9c],
      ],
    ],
  ];
  for (const [desc, want] of cases) {
    test(`${desc.name}: walk reaches each capability and terminates`, () => {
      const cs = new ConfigSpace(desc);
      // Walk by hand, through reads only.
      const found: [number, number][] = [];
      let pos = u(cs, P.PCI_CAPABILITY_LIST, 1);
      let steps = 0;
      while (pos !== 0) {
        assert.ok(pos >= 0x40 && pos < 0x100 && pos % 4 === 0, `pointer ${pos} in range and aligned`);
        found.push([u(cs, pos, 1), pos]);
        pos = u(cs, pos + P.PCI_CAP_LIST_NEXT, 1);
        assert.ok(++steps <= MAX_CAP_WALK, 'chain terminates');
      }
      assert.deepEqual(found, want);
      assert.deepEqual(
        cs.capabilities().map((c) => [c.id, c.offset]),
        want,
      );
      for (const [id, off] of want) assert.equal(cs.capabilityOffset(id), off);
      assert.equal(cs.capabilityOffset(P.PCI_CAP_ID_VPD), undefined);
      assert.equal((u(cs, P.PCI_STATUS, 2) & P.PCI_STATUS_CAP_LIST) !== 0, want.length > 0);
    });
  }

  test('capability IDs and next pointers ignore writes', () => {
    const cs = new ConfigSpace(FULL);
    const before = cs.capabilities();
    for (const { offset } of before) w(cs, offset, 2, 0xffff);
    assert.deepEqual(cs.capabilities(), before);
  });

  test('capability offsets do not depend on the MSI variant', () => {
    for (const msi of [
      { vectors: 1, addr64: false, perVectorMask: false },
      { vectors: 32, addr64: true, perVectorMask: true },
    ]) {
      const cs = new ConfigSpace({ ...FULL, msi });
      assert.equal(cs.capabilityOffset(P.PCI_CAP_ID_EXP), 0x60);
      assert.equal(cs.capabilityOffset(P.PCI_CAP_ID_MSIX), 0x9c);
    }
  });
});

describe('power management capability', () => {
  test('PME bits are virtualized to zero; version 3; NoSoftRst', () => {
    const cs = new ConfigSpace(NVME);
    assert.equal(u(cs, 0x40 + P.PCI_PM_PMC, 2), 3);
    assert.equal(u(cs, 0x40 + P.PCI_PM_CTRL, 2), P.PCI_PM_CTRL_NO_SOFT_RESET);
    w(cs, 0x40 + P.PCI_PM_CTRL, 2, P.PCI_PM_CTRL_PME_ENABLE | P.PCI_PM_CTRL_PME_STATUS);
    assert.equal(u(cs, 0x40 + P.PCI_PM_CTRL, 2), P.PCI_PM_CTRL_NO_SOFT_RESET);
  });

  test('D3hot and back: state bits follow, memory decode is off in D3hot, hook fires', () => {
    const seen: [number, number][] = [];
    const cs = new ConfigSpace(NVME, { onPowerStateChange: (a, b) => seen.push([a, b]) });
    const ctrl = 0x40 + P.PCI_PM_CTRL;
    w(cs, ctrl, 2, P.PCI_D3hot);
    assert.equal(cs.powerState, P.PCI_D3hot);
    assert.equal(u(cs, ctrl, 2) & P.PCI_PM_CTRL_STATE_MASK, P.PCI_D3hot);
    assert.equal(cs.memoryEnabled, false);
    assert.equal(cs.command & P.PCI_COMMAND_MEMORY, P.PCI_COMMAND_MEMORY, 'command bit itself unchanged');
    w(cs, ctrl, 2, P.PCI_D1); // pci_set_low_power_state: cannot go from D3hot to D1
    assert.equal(cs.powerState, P.PCI_D3hot);
    w(cs, ctrl, 2, P.PCI_D0);
    assert.equal(cs.powerState, P.PCI_D0);
    assert.equal(cs.memoryEnabled, true);
    assert.deepEqual(seen, [
      [P.PCI_D0, P.PCI_D3hot],
      [P.PCI_D3hot, P.PCI_D0],
    ]);
  });

  test('D1/D2 unsupported: no change', () => {
    const cs = new ConfigSpace(NVME);
    for (const s of [P.PCI_D1, P.PCI_D2]) {
      w(cs, 0x40 + P.PCI_PM_CTRL, 2, s);
      assert.equal(cs.powerState, P.PCI_D0);
    }
  });

  test('a write not starting at PMCSR does not change the power state', () => {
    const cs = new ConfigSpace(NVME);
    w(cs, 0x40 + P.PCI_PM_CTRL + 1, 1, 0);
    w(cs, 0x40, 4, 0xffffffff);
    assert.equal(cs.powerState, P.PCI_D0);
  });
});

// --- MSI ----------------------------------------------------------------------------------------

describe('MSI capability (vfio_msi_config_read/write)', () => {
  const EDU_MSI = 0x40;
  const FULL_MSI = 0x48;

  test('edu: 64-bit layout, Multiple Message Capable shows msi_qmax (0 before SET_IRQS)', () => {
    const cs = new ConfigSpace(EDU);
    assert.equal(u(cs, EDU_MSI, 4), (P.PCI_MSI_FLAGS_64BIT << 16) | P.PCI_CAP_ID_MSI);
  });

  const stores: [string, DeviceDescription, number, 1 | 2 | 4, number][] = [
    ['edu address low', EDU, EDU_MSI + P.PCI_MSI_ADDRESS_LO, 4, 0xfee01004],
    ['edu address high', EDU, EDU_MSI + P.PCI_MSI_ADDRESS_HI, 4, 0x12345678],
    ['edu data', EDU, EDU_MSI + P.PCI_MSI_DATA_64, 2, 0x4041],
    ['full (32-bit) address', FULL, FULL_MSI + P.PCI_MSI_ADDRESS_LO, 4, 0xfee00000],
    ['full (32-bit) data', FULL, FULL_MSI + P.PCI_MSI_DATA_32, 2, 0xbeef],
    ['full mask bits: 8 vectors implemented', FULL, FULL_MSI + P.PCI_MSI_MASK_32, 4, 0x000000a5],
  ];
  for (const [name, desc, off, len, val] of stores) {
    test(`stored: ${name}`, () => {
      const cs = new ConfigSpace(desc);
      w(cs, off, len, val);
      assert.equal(u(cs, off, len), val);
    });
  }

  test('msiState reflects the stored registers', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, EDU_MSI + P.PCI_MSI_ADDRESS_LO, 4, 0xfee01004);
    w(cs, EDU_MSI + P.PCI_MSI_ADDRESS_HI, 4, 1);
    w(cs, EDU_MSI + P.PCI_MSI_DATA_64, 2, 0x4041);
    assert.deepEqual(cs.msiState(), {
      enabled: false,
      active: false,
      addr: 0x1_fee0_1004n,
      data: 0x4041,
      multipleMessageCapable: 0,
      multipleMessageEnable: 0,
      addr64: true,
      perVectorMask: false,
      maskBits: 0,
      pendingBits: 0,
    });
    assert.equal(new ConfigSpace(IVSHMEM).msiState(), undefined);
  });

  test('mask bits beyond the implemented vectors are read-only; pending bits are read-only', () => {
    const cs = new ConfigSpace(FULL);
    w(cs, FULL_MSI + P.PCI_MSI_MASK_32, 4, 0xffffffff);
    assert.equal(u(cs, FULL_MSI + P.PCI_MSI_MASK_32, 4), 0xff);
    w(cs, FULL_MSI + P.PCI_MSI_PENDING_32, 4, 0xffffffff);
    assert.equal(u(cs, FULL_MSI + P.PCI_MSI_PENDING_32, 4), 0);
    cs.setMsiPendingBits(0x1ff);
    assert.equal(u(cs, FULL_MSI + P.PCI_MSI_PENDING_32, 4), 0xff);
    assert.equal(cs.msiState()!.pendingBits, 0xff);
    assert.equal(cs.msiState()!.maskBits, 0xff);
  });

  test('MSI Enable cannot be set by a config write while MSI is off', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2, P.PCI_MSI_FLAGS_64BIT | P.PCI_MSI_FLAGS_ENABLE);
    assert.equal(u(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2) & P.PCI_MSI_FLAGS_ENABLE, 0);
    assert.equal(cs.msiState()!.enabled, false);
  });

  test('after SET_IRQS(MSI) the user may set MSI Enable; disabling MSI leaves vconfig alone', () => {
    const cs = new ConfigSpace(EDU);
    cs.setMsiEnabled(true, 1);
    assert.equal(
      u(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2) & P.PCI_MSI_FLAGS_ENABLE,
      0,
      'SET_IRQS alone: not visible',
    );
    w(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2, P.PCI_MSI_FLAGS_64BIT | P.PCI_MSI_FLAGS_ENABLE);
    assert.equal(u(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2), P.PCI_MSI_FLAGS_64BIT | P.PCI_MSI_FLAGS_ENABLE);
    assert.equal(cs.msiState()!.enabled, true);
    assert.equal(cs.msiState()!.active, true);
    cs.setMsiEnabled(false);
    assert.equal(cs.msiState()!.active, false);
    assert.equal(cs.msiState()!.enabled, true, 'vfio_msi_disable does not touch vconfig');
    w(cs, EDU_MSI + P.PCI_MSI_FLAGS, 1, P.PCI_MSI_FLAGS_64BIT | P.PCI_MSI_FLAGS_ENABLE);
    assert.equal(cs.msiState()!.enabled, false, 'the next flags write clears it');
  });

  // [vectors enabled through SET_IRQS (0 = never), MME written, MMC read, MME read]
  const clamp: [number, number, number, number][] = [
    [0, 3, 0, 0],
    [0, 0, 0, 0],
    [1, 3, 0, 0],
    [2, 3, 1, 1],
    [3, 3, 2, 2], // fls(3 * 2 - 1) - 1 = 2: rounded up to 4 vectors
    [4, 1, 2, 1],
    [8, 3, 3, 3],
    [8, 7, 3, 3],
  ];
  for (const [nvec, mme, mmc, want] of clamp) {
    test(`Multiple Message Enable ${mme} with ${nvec} vectors enabled: MMC ${mmc}, MME ${want}`, () => {
      const cs = new ConfigSpace(FULL);
      if (nvec) {
        cs.setMsiEnabled(true, nvec);
        cs.setMsiEnabled(false);
      }
      w(cs, FULL_MSI + P.PCI_MSI_FLAGS, 2, mme << 4);
      const flags = u(cs, FULL_MSI + P.PCI_MSI_FLAGS, 2);
      assert.equal((flags & P.PCI_MSI_FLAGS_QMASK) >> 1, mmc);
      assert.equal((flags & P.PCI_MSI_FLAGS_QSIZE) >> 4, want);
      assert.equal(flags & P.PCI_MSI_FLAGS_MASKBIT, P.PCI_MSI_FLAGS_MASKBIT, 'upper byte from the device');
      assert.equal(cs.msiState()!.multipleMessageEnable, want);
    });
  }

  test('the lower flags byte is fully virtual: even the 64-bit bit can be written (kernel quirk)', () => {
    const cs = new ConfigSpace(EDU);
    w(cs, EDU_MSI + P.PCI_MSI_FLAGS, 1, 0);
    assert.equal(u(cs, EDU_MSI + P.PCI_MSI_FLAGS, 2) & P.PCI_MSI_FLAGS_64BIT, 0);
    // The layout does not move: the high address and 64-bit data offsets still hold their values.
    w(cs, EDU_MSI + P.PCI_MSI_DATA_64, 2, 0x1234);
    assert.equal(cs.msiState()!.data, 0x1234);
  });

  test('setMsiEnabled rejects devices without MSI and bad vector counts', () => {
    assert.equal(
      errnoOf(() => new ConfigSpace(IVSHMEM).setMsiEnabled(true, 1)),
      Errno.EINVAL,
    );
    for (const n of [0, 2, 1.5])
      assert.equal(
        errnoOf(() => new ConfigSpace(EDU).setMsiEnabled(true, n)),
        Errno.EINVAL,
      );
  });
});

// --- MSI-X --------------------------------------------------------------------------------------

describe('MSI-X capability (read-only, vfio_direct_config_read)', () => {
  const AT = 0x9c;

  test('fields: table size, table and PBA offset/BIR', () => {
    const cs = new ConfigSpace(FULL);
    assert.equal(u(cs, AT, 2), P.PCI_CAP_ID_MSIX);
    assert.equal(u(cs, AT + P.PCI_MSIX_FLAGS, 2), 15);
    assert.equal(u(cs, AT + P.PCI_MSIX_TABLE, 4), 0x2000);
    assert.equal(u(cs, AT + P.PCI_MSIX_PBA, 4), 0x3000);
    assert.deepEqual(cs.msixState(), {
      enabled: false,
      functionMask: false,
      tableSize: 16,
      tableBar: 0,
      tableOffset: 0x2000,
      pbaBar: 0,
      pbaOffset: 0x3000,
    });
    assert.equal(new ConfigSpace(EDU).msixState(), undefined);
  });

  const writes: [string, number, 1 | 2 | 4, number][] = [
    ['enable + function mask', AT + P.PCI_MSIX_FLAGS, 2, P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL],
    ['table size', AT + P.PCI_MSIX_FLAGS, 2, 0x07ff],
    ['upper flags byte', AT + P.PCI_MSIX_FLAGS + 1, 1, 0xc0],
    ['table offset/BIR', AT + P.PCI_MSIX_TABLE, 4, 0x1005],
    ['PBA offset/BIR', AT + P.PCI_MSIX_PBA, 4, 0xffffffff],
    ['whole capability', AT, 4, 0xffffffff],
  ];
  for (const [name, off, len, val] of writes) {
    test(`write dropped: ${name}`, () => {
      const cs = new ConfigSpace(FULL);
      const before = cs.read(AT, P.PCI_CAP_MSIX_SIZEOF);
      w(cs, off, len, val);
      assert.deepEqual(cs.read(AT, P.PCI_CAP_MSIX_SIZEOF), before);
    });
  }

  test('setMsixEnabled: Enable visible, Function Mask clear; off again', () => {
    const cs = new ConfigSpace(FULL);
    cs.setMsixEnabled(true);
    assert.equal(u(cs, AT + P.PCI_MSIX_FLAGS, 2), P.PCI_MSIX_FLAGS_ENABLE | 15);
    assert.equal(cs.msixState()!.enabled, true);
    assert.equal(cs.msixState()!.functionMask, false);
    w(cs, AT + P.PCI_MSIX_FLAGS, 2, 0);
    assert.equal(cs.msixState()!.enabled, true, 'a config write cannot disable it');
    cs.setMsixEnabled(false);
    assert.equal(u(cs, AT + P.PCI_MSIX_FLAGS, 2), 15);
    assert.equal(
      errnoOf(() => new ConfigSpace(EDU).setMsixEnabled(true)),
      Errno.EINVAL,
    );
  });
});

// --- PCI Express ---------------------------------------------------------------------------------

describe('PCI Express', () => {
  const AT = 0x60;

  test('v2 endpoint registers', () => {
    const cs = new ConfigSpace(FULL);
    assert.equal(u(cs, AT + P.PCI_EXP_FLAGS, 2), 0x0002);
    assert.equal(u(cs, AT + P.PCI_EXP_DEVCAP, 4), P.PCI_EXP_DEVCAP_RBER | P.PCI_EXP_DEVCAP_FLR);
    assert.equal(
      u(cs, AT + P.PCI_EXP_DEVCTL, 2),
      P.PCI_EXP_DEVCTL_RELAX_EN | P.PCI_EXP_DEVCTL_NOSNOOP_EN | P.PCI_EXP_DEVCTL_READRQ_512B,
    );
    assert.equal(u(cs, AT + P.PCI_EXP_LNKSTA, 2), 0x0011);
    const nvme = new ConfigSpace({ ...NVME, resettable: false });
    assert.equal(u(nvme, 0x48 + P.PCI_EXP_DEVCAP, 4) & P.PCI_EXP_DEVCAP_FLR, 0);
  });

  test('4 KiB config space with a zero extended capability header at 0x100', () => {
    const cs = new ConfigSpace(FULL);
    assert.equal(cs.size, 4096);
    assert.equal(u(cs, 0x100, 4), 0);
    assert.equal(P.PCI_EXT_CAP_NEXT(u(cs, 0x100, 4)), 0);
    w(cs, 0x100, 4, 0x00010001);
    assert.equal(u(cs, 0x100, 4), 0);
    assert.equal(u(cs, 0xffc, 4), 0);
  });

  const devctl: [string, number, number][] = [
    // Phantom Functions Enable not writable; Max_Payload_Size and MRRS virtual; the rest through the device.
    ['error reporting enables', 0x000f, 0x000f],
    ['phantom functions', P.PCI_EXP_DEVCTL_PHANTOM, 0],
    ['max payload (virtual)', 0x00a0, 0x00a0],
    ['max read request (virtual)', 0x5000, 0x5000],
    ['aux power PM / ext tag not implemented', 0x0500, 0],
    ['FLR reads back 0', P.PCI_EXP_DEVCTL_BCR_FLR, 0],
  ];
  for (const [name, val, want] of devctl) {
    test(`Device Control: ${name}`, () => {
      const cs = new ConfigSpace(FULL);
      w(cs, AT + P.PCI_EXP_DEVCTL, 2, val);
      assert.equal(u(cs, AT + P.PCI_EXP_DEVCTL, 2), want);
    });
  }

  test('read-only: capabilities, link control and status', () => {
    const cs = new ConfigSpace(FULL);
    const before = cs.read(AT, P.PCI_EXP_VER2_SIZEOF);
    for (const off of [
      P.PCI_EXP_FLAGS,
      P.PCI_EXP_DEVCAP,
      P.PCI_EXP_LNKCAP,
      P.PCI_EXP_LNKCTL,
      P.PCI_EXP_DEVCAP2,
    ]) {
      w(cs, AT + off, 2, 0xffff);
    }
    w(cs, AT + P.PCI_EXP_DEVCTL2, 2, 0xffff); // writable by vfio, nothing implemented by the device
    w(cs, AT + P.PCI_EXP_SLTCAP2, 4, 0xffffffff); // beyond vfio's map: raw, device read-only
    assert.deepEqual(cs.read(AT, P.PCI_EXP_VER2_SIZEOF), before);
  });

  test('Initiate FLR calls onFunctionLevelReset only when FLR is advertised', () => {
    let flrs = 0;
    const hooks = { onFunctionLevelReset: () => flrs++ };
    w(new ConfigSpace(FULL, hooks), AT + P.PCI_EXP_DEVCTL, 2, P.PCI_EXP_DEVCTL_BCR_FLR);
    assert.equal(flrs, 1);
    w(
      new ConfigSpace({ ...NVME, resettable: false }, hooks),
      0x48 + P.PCI_EXP_DEVCTL,
      2,
      P.PCI_EXP_DEVCTL_BCR_FLR,
    );
    assert.equal(flrs, 1);
  });
});

// --- access rules ---------------------------------------------------------------------------------

describe('access rules (vfio_pci_config_rw)', () => {
  test('any split of a read returns the same bytes as single-byte reads', () => {
    for (const desc of [EDU, FULL]) {
      const cs = new ConfigSpace(desc);
      const bytes = new Uint8Array(cs.size);
      for (let i = 0; i < cs.size; i++) bytes[i] = cs.read(i, 1)[0]!;
      assert.deepEqual(cs.read(0, cs.size), bytes);
      for (const [off, len] of [
        [1, 7],
        [3, 2],
        [0x3e, 0x10],
        [0x45, 0x23],
        [0xfd, 3],
      ] as const) {
        assert.deepEqual(cs.read(off, len), bytes.subarray(off, off + len), `${desc.name} ${off}+${len}`);
      }
    }
  });

  test('an unaligned multi-byte write lands byte for byte', () => {
    const cs = new ConfigSpace(EDU);
    cs.write(0x43, new Uint8Array([0xaa, 0x04, 0x10, 0xe0, 0xfe, 0x01]));
    assert.equal(u(cs, 0x40 + P.PCI_MSI_ADDRESS_LO, 4), 0xfee01004);
    assert.equal(u(cs, 0x40 + P.PCI_MSI_ADDRESS_HI, 1), 0x01);
    assert.equal(u(cs, 0x43, 1), 0, 'upper flags byte is the device register');
  });

  // [offset, length, errno]
  const bad: [number, number, number][] = [
    [256, 1, CONFIG_RANGE_ERRNO],
    [255, 2, CONFIG_RANGE_ERRNO],
    [0, 257, CONFIG_RANGE_ERRNO],
    [0xfc, 8, CONFIG_RANGE_ERRNO],
    [0x1000, 4, CONFIG_RANGE_ERRNO],
    [-1, 1, Errno.EINVAL],
    [1.5, 1, Errno.EINVAL],
    [0, -1, Errno.EINVAL],
    [0, Number.NaN, Errno.EINVAL],
  ];
  for (const [off, len, errno] of bad) {
    test(`read/write of ${len} at ${off} -> errno ${errno}`, () => {
      const cs = new ConfigSpace(EDU);
      const before = cs.read(0, 256);
      assert.equal(
        errnoOf(() => cs.read(off, len)),
        errno,
      );
      const data = Number.isSafeInteger(len) && len >= 0 ? new Uint8Array(len).fill(0xff) : new Uint8Array(1);
      if (Number.isSafeInteger(len) && len >= 0)
        assert.equal(
          errnoOf(() => cs.write(off, data)),
          errno,
        );
      assert.deepEqual(cs.read(0, 256), before, 'state untouched');
    });
  }

  test('the range errno is EFAULT, as vfio_config_do_rw returns', () => {
    assert.equal(CONFIG_RANGE_ERRNO, Errno.EFAULT);
    try {
      new ConfigSpace(EDU).read(256, 4);
      assert.fail('no throw');
    } catch (e) {
      assert.ok(e instanceof VfioError);
      assert.equal(e.op, 'config read');
    }
    try {
      new ConfigSpace(EDU).write(256, new Uint8Array(4));
      assert.fail('no throw');
    } catch (e) {
      assert.ok(e instanceof VfioError);
      assert.equal(e.op, 'config write');
    }
  });

  test('a 4 KiB space accepts its last byte and refuses one more', () => {
    const cs = new ConfigSpace(FULL);
    assert.equal(cs.read(0xfff, 1).length, 1);
    assert.equal(
      errnoOf(() => cs.read(0xfff, 2)),
      CONFIG_RANGE_ERRNO,
    );
  });

  test('zero-length accesses succeed anywhere (the kernel loops while count)', () => {
    const cs = new ConfigSpace(EDU);
    assert.equal(cs.read(4096, 0).length, 0);
    cs.write(4096, new Uint8Array(0));
  });
});

// --- reset, descriptions --------------------------------------------------------------------------

describe('reset and descriptions', () => {
  test('reset returns to the opened state but keeps msi_qmax', () => {
    const cs = new ConfigSpace(FULL);
    const fresh = cs.read(0, cs.size);
    cs.setMsiEnabled(true, 8);
    cs.setMsixEnabled(true);
    w(cs, P.PCI_COMMAND, 2, 0x0407);
    w(cs, P.PCI_BASE_ADDRESS_3, 4, 0xffffffff);
    w(cs, 0x40 + P.PCI_PM_CTRL, 2, P.PCI_D3hot);
    cs.reset();
    assert.equal(cs.powerState, P.PCI_D0);
    assert.equal(cs.msiState()!.active, false);
    const now = cs.read(0, cs.size);
    assert.equal((now[0x48 + P.PCI_MSI_FLAGS]! & P.PCI_MSI_FLAGS_QMASK) >> 1, 3, 'msi_qmax survives');
    now[0x48 + P.PCI_MSI_FLAGS] = fresh[0x48 + P.PCI_MSI_FLAGS]!;
    assert.deepEqual(now, fresh);
  });

  const invalid: [string, Partial<DeviceDescription>][] = [
    ['BAR size not a power of two', { bars: [{ size: 3000, kind: 'mem32' }] }],
    ['memory BAR under 16 bytes', { bars: [{ size: 8, kind: 'mem32' }] }],
    ['I/O BAR over 256 bytes', { bars: [{ size: 512, kind: 'io' }] }],
    [
      'mem64 in BAR5',
      { bars: [undefined, undefined, undefined, undefined, undefined, { size: 16, kind: 'mem64' }] },
    ],
    [
      'mem64 upper half occupied',
      {
        bars: [
          { size: 16, kind: 'mem64' },
          { size: 16, kind: 'mem32' },
        ],
      },
    ],
    ['seven BARs', { bars: new Array(7).fill({ size: 16, kind: 'mem32' }) }],
    ['MSI 3 vectors', { msi: { vectors: 3, addr64: false, perVectorMask: false } }],
    ['MSI 64 vectors', { msi: { vectors: 64, addr64: false, perVectorMask: false } }],
    ['MSI-X 0 entries', { msix: { tableSize: 0, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 } }],
    [
      'MSI-X table in a missing BAR',
      { msix: { tableSize: 4, tableBar: 2, tableOffset: 0, pbaBar: 0, pbaOffset: 0x800 } },
    ],
    [
      'MSI-X table overflows',
      { msix: { tableSize: 4, tableBar: 0, tableOffset: 0xfffd0, pbaBar: 0, pbaOffset: 0 } },
    ],
    [
      'MSI-X PBA unaligned',
      { msix: { tableSize: 4, tableBar: 0, tableOffset: 0, pbaBar: 0, pbaOffset: 0x804 } },
    ],
    ['ROM 1 KiB', { rom: { size: 1024 } }],
    ['interrupt pin 5', { identity: { ...EDU.identity, interruptPin: 5 } }],
    ['vendor over 16 bits', { identity: { ...EDU.identity, vendorId: 0x10000 } }],
    [
      '32-bit BARs beyond the window',
      {
        bars: [
          { size: 2 ** 31, kind: 'mem32' },
          { size: 2 ** 31, kind: 'mem32' },
        ],
      },
    ],
  ];
  for (const [name, patch] of invalid) {
    test(`rejected with EINVAL: ${name}`, () => {
      assert.equal(
        errnoOf(() => new ConfigSpace({ ...EDU, ...patch })),
        Errno.EINVAL,
      );
    });
  }
});

// --- lspci ----------------------------------------------------------------------------------------

/** The `lspci -x` hex dump format that `lspci -F` reads back. */
function lspciDump(cs: ConfigSpace): string {
  const b = cs.read(0, cs.size);
  let out = '00:03.0 Non-VGA unclassified device: vfio-ts model\n';
  for (let i = 0; i < b.length; i += 16) {
    const hex = Array.from(b.subarray(i, i + 16), (x) => x.toString(16).padStart(2, '0')).join(' ');
    out += `${i.toString(16).padStart(2, '0')}: ${hex}\n`;
  }
  return out;
}

function lspciMissing(): string | undefined {
  const r = spawnSync('lspci', ['--version'], { encoding: 'utf8' });
  return r.error || r.status !== 0 ? 'lspci (pciutils)' : undefined;
}

describe('lspci parses the config space', () => {
  const cases: [string, () => ConfigSpace, string[]][] = [
    [
      'edu',
      () => new ConfigSpace(EDU),
      [
        'Device [1234:11e8] (rev 10)',
        'Control: I/O+ Mem+ BusMaster-',
        'Status: Cap+',
        'Region 0: Memory at ',
        '(32-bit, non-prefetchable)',
        'Capabilities: [40] MSI: Enable- Count=1/1 Maskable- 64bit+',
      ],
    ],
    [
      'ivshmem-plain',
      () => new ConfigSpace(IVSHMEM),
      ['Status: Cap-', 'Region 2: Memory at ', '(64-bit, prefetchable)'],
    ],
    [
      'full, after MSI was enabled',
      () => {
        const cs = new ConfigSpace(FULL);
        cs.setMsiEnabled(true, 8);
        w(cs, 0x48 + P.PCI_MSI_FLAGS, 2, P.PCI_MSI_FLAGS_ENABLE | (3 << 4));
        w(cs, 0x48 + P.PCI_MSI_ADDRESS_LO, 4, 0xfee00000);
        return cs;
      },
      [
        'Region 0: Memory at ',
        '(64-bit, non-prefetchable)',
        'Region 2: I/O ports at c000',
        '(32-bit, prefetchable)',
        'Expansion ROM at ',
        'Capabilities: [40] Power Management version 3',
        'Capabilities: [48] MSI: Enable+ Count=8/8 Maskable+ 64bit-',
        'Address: fee00000',
        'Capabilities: [60] Express (v2) Endpoint, MSI 00',
        'FLReset+',
        'Capabilities: [9c] MSI-X: Enable- Count=16 Masked-',
        'Vector table: BAR=0 offset=00002000',
        'PBA: BAR=0 offset=00003000',
      ],
    ],
  ];
  for (const [name, make, expect] of cases) {
    test(name, (t) => {
      if (!requireOrSkip(t, lspciMissing(), 'apt-get install -y pciutils')) return;
      const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-lspci-'));
      try {
        const file = join(dir, 'dump.txt');
        writeFileSync(file, lspciDump(make()));
        const r = spawnSync('lspci', ['-F', file, '-vvv', '-nn'], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        for (const s of expect) assert.ok(r.stdout.includes(s), `lspci output lacks "${s}":\n${r.stdout}`);
        for (const s of ['<chain broken>', '<chain looped>', '<BAD', '<access denied>']) {
          assert.ok(!r.stdout.includes(s), `lspci output has "${s}":\n${r.stdout}`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
