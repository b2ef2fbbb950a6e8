/**
 * PCI addresses and the bind helpers over a fake sysfs tree (no root, no QEMU): the error each
 * missing piece gives. The real bind runs in the guests (on-hardware.ts).
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioError } from '../../src/errors.js';
import { kernelPathFor } from '../../src/kernel/device.js';
import {
  bindVfioPci,
  boundDriver,
  driverLeavesDmaToUser,
  groupViability,
  iomemRelaxed,
  iommuGroup,
  isBdf,
  normalizeBdf,
  resourceRange,
  resourceWcPath,
  vfioCdevName,
} from '../../src/kernel/sysfs.js';
import { errnoOf } from '../helpers/errno.js';

describe('PCI addresses', () => {
  const cases: [string, string | number][] = [
    ['0000:00:03.0', '0000:00:03.0'],
    ['00:03.0', '0000:00:03.0'],
    ['0000:AB:1f.7', '0000:ab:1f.7'],
    ['0000:00:20.0', Errno.EINVAL],
    ['0000:00:03.8', Errno.EINVAL],
    ['0000:00:03', Errno.EINVAL],
    ['/dev/vfio/3', Errno.EINVAL],
  ];
  for (const [input, want] of cases)
    test(`${input} -> ${want}`, () => {
      if (typeof want === 'string') {
        assert.equal(normalizeBdf(input), want);
        assert.equal(isBdf(input), true);
      } else {
        assert.equal(
          errnoOf(() => normalizeBdf(input)),
          want,
        );
        assert.equal(isBdf(input), false);
      }
    });
});

describe('bind helpers over a fake sysfs', () => {
  const root = mkdtempSync(join(tmpdir(), 'vfio-ts-sysfs-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const devices = join(root, 'devices');
  const drivers = join(root, 'drivers');
  const groups = join(root, 'iommu_groups');
  const dev = (bdf: string, group: number | undefined, driver: string | undefined, files: string[] = []) => {
    const d = join(devices, bdf);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'driver_override'), '(null)\n');
    for (const f of files) writeFileSync(join(d, f), '');
    if (group !== undefined) {
      const g = join(groups, String(group));
      mkdirSync(join(g, 'devices'), { recursive: true });
      symlinkSync(d, join(g, 'devices', bdf));
      symlinkSync(g, join(d, 'iommu_group'));
    }
    if (driver !== undefined) {
      mkdirSync(join(drivers, driver), { recursive: true });
      symlinkSync(join(drivers, driver), join(d, 'driver'));
    }
  };
  dev('0000:00:03.0', 3, 'vfio-pci', ['resource2_wc']);
  dev('0000:00:04.0', 4, 'vfio-pci');
  dev('0000:00:04.1', 4, 'e1000e');
  dev('0000:00:05.0', undefined, undefined);
  // Group 6: a driverless bridge, a device on vfio-pci, the rest on drivers that leave DMA to
  // the user (pci-stub, a vfio-pci variant, pcieport). Group 7: the same plus shpchp.
  dev('0000:00:06.0', 6, undefined);
  dev('0000:01:00.0', 6, 'vfio-pci');
  dev('0000:01:01.0', 6, 'pci-stub');
  dev('0000:01:02.0', 6, 'mlx5_vfio_pci');
  dev('0000:01:03.0', 6, 'pcieport');
  dev('0000:00:07.0', 7, 'shpchp');
  dev('0000:02:00.0', 7, 'vfio-pci');
  // vfio-dev/: 08.0 has a cdev, 09.0 an empty vfio-dev, 0a.0 only something else in it.
  dev('0000:00:08.0', 8, 'vfio-pci');
  mkdirSync(join(devices, '0000:00:08.0', 'vfio-dev', 'vfio3'), { recursive: true });
  dev('0000:00:09.0', 9, 'vfio-pci');
  mkdirSync(join(devices, '0000:00:09.0', 'vfio-dev'), { recursive: true });
  dev('0000:00:0a.0', 10, 'vfio-pci');
  mkdirSync(join(devices, '0000:00:0a.0', 'vfio-dev', 'vfiox'), { recursive: true });
  writeFileSync(
    join(devices, '0000:00:03.0', 'resource'),
    '0x00000000feb00000 0x00000000feb000ff 0x0000000000040200\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n0x00000000fe000000 0x00000000fe3fffff 0x000000000014220c\n',
  );
  const opts = {
    sysfs: devices,
    driverDir: join(drivers, 'vfio-pci'),
    driversProbe: join(root, 'drivers_probe'),
  };

  test('group, driver and resource files are read from sysfs', () => {
    assert.equal(iommuGroup('00:03.0', devices), 3);
    assert.equal(boundDriver('0000:00:04.1', devices), 'e1000e');
    assert.equal(boundDriver('0000:00:05.0', devices), undefined);
    assert.match(resourceWcPath('0000:00:03.0', 2, devices) ?? '', /resource2_wc$/);
    assert.equal(resourceWcPath('0000:00:03.0', 0, devices), undefined);
  });
  test('an unknown address is ENODEV; no IOMMU group is ENODEV', () => {
    assert.equal(
      errnoOf(() => bindVfioPci('0000:00:1f.0', opts)),
      Errno.ENODEV,
    );
    assert.equal(
      errnoOf(() => iommuGroup('0000:00:05.0', devices)),
      Errno.ENODEV,
    );
  });
  test('a missing vfio-pci module is ENODEV and says so', () => {
    assert.throws(
      () => bindVfioPci('0000:00:03.0', { ...opts, driverDir: join(drivers, 'nope') }),
      (e: unknown) => e instanceof VfioError && e.errno === Errno.ENODEV && /vfio-pci module/.test(e.message),
    );
  });
  test('already bound: nothing written; viability from the group members', () => {
    const r = bindVfioPci('0000:00:03.0', opts);
    assert.deepEqual([r.group, r.previousDriver, r.viable], [3, 'vfio-pci', true]);
    const r4 = bindVfioPci('0000:00:04.0', opts);
    assert.equal(r4.viable, false);
    assert.deepEqual(groupViability('0000:00:04.0', devices).members, [
      { bdf: '0000:00:04.0', driver: 'vfio-pci' },
      { bdf: '0000:00:04.1', driver: 'e1000e' },
    ]);
  });

  test('viability follows driver_managed_dma: no driver, vfio-pci and variants, pci-stub, pcieport; not shpchp', () => {
    const g6 = groupViability('0000:01:00.0', devices);
    assert.equal(g6.viable, true, JSON.stringify(g6.members));
    assert.deepEqual(g6.blocking, []);
    const g7 = groupViability('0000:02:00.0', devices);
    assert.equal(g7.viable, false);
    assert.deepEqual(g7.blocking, [{ bdf: '0000:00:07.0', driver: 'shpchp' }]);
    const table: [string | undefined, boolean][] = [
      [undefined, true],
      ['vfio-pci', true],
      ['mlx5_vfio_pci', true],
      ['xe-vfio-pci', true],
      ['pci-stub', true],
      ['pcieport', true],
      ['virtio-pci', false],
      ['e1000e', false],
      ['shpchp', false],
      ['vfio', false],
    ];
    for (const [driver, ok] of table) assert.equal(driverLeavesDmaToUser(driver), ok, String(driver));
  });
  test('vfioCdevName: the vfioN under vfio-dev/, else undefined', () => {
    assert.equal(vfioCdevName('0000:00:08.0', devices), 'vfio3');
    assert.equal(vfioCdevName('0000:00:09.0', devices), undefined);
    assert.equal(vfioCdevName('0000:00:0a.0', devices), undefined);
    assert.equal(vfioCdevName('0000:00:03.0', devices), undefined);
    assert.equal(vfioCdevName('0000:00:1f.0', devices), undefined, 'no such device');
  });
  test('kernelPathFor: cdev only with /dev/iommu, a vfio-dev name and its /dev/vfio/devices node', () => {
    const iommu = join(root, 'iommu');
    writeFileSync(iommu, '');
    const none = join(root, 'no-iommu');
    const cdevs = join(root, 'vfio-devices');
    mkdirSync(cdevs, { recursive: true });
    writeFileSync(join(cdevs, 'vfio3'), '');
    assert.equal(kernelPathFor('0000:00:08.0', devices, iommu, cdevs), 'cdev');
    assert.equal(kernelPathFor('0000:00:08.0', devices, none, cdevs), 'group');
    assert.equal(kernelPathFor('0000:00:09.0', devices, iommu, cdevs), 'group');
    assert.equal(kernelPathFor('0000:00:04.0', devices, iommu, cdevs), 'group');
    // Debian's kernels: sysfs names vfio3, but there is no cdev node (no CONFIG_VFIO_DEVICE_CDEV).
    assert.equal(kernelPathFor('0000:00:08.0', devices, iommu, join(root, 'no-cdevs')), 'group');
  });
  test('resourceRange reads sysfs resource; iomemRelaxed reads the command line', () => {
    assert.deepEqual(resourceRange('0000:00:03.0', 2, devices), { start: 0xfe000000n, end: 0xfe400000n });
    assert.deepEqual(resourceRange('0000:00:03.0', 0, devices), { start: 0xfeb00000n, end: 0xfeb00100n });
    assert.equal(resourceRange('0000:00:03.0', 1, devices), undefined);
    assert.equal(resourceRange('0000:00:04.0', 2, devices), undefined);
    const cmd = join(root, 'cmdline');
    for (const [line, want] of [
      ['console=ttyS0 iomem=relaxed quiet', true],
      ['iomem=relaxed', true],
      ['console=ttyS0 quiet', false],
      ['iomem=strict', false],
      ['noiomem=relaxed', false],
    ] as const) {
      writeFileSync(cmd, `${line}\n`);
      assert.equal(iomemRelaxed(cmd), want, line);
    }
  });
});
