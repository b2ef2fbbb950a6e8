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
import {
  bindVfioPci,
  boundDriver,
  groupViability,
  iommuGroup,
  isBdf,
  normalizeBdf,
  resourceWcPath,
} from '../../src/kernel/sysfs.js';

function errnoOf(fn: () => unknown): number | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}

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
});
