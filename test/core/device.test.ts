/**
 * The device core through its raw uAPI: the same probe bytes the kernel gets, the answers
 * Linux's vfio-pci gives (../shared/tools/qemu-vfio/sample-output.txt for edu and
 * ivshmem-plain on 6.1; docs/kernel-profiles.md for 7.3).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno, errnoName } from '../../src/abi/errno.js';
import * as A from '../../src/abi/vfio.js';
import { NO_EXTENSIONS, VfioPciDevice } from '../../src/core/device.js';
import { heapEnvironment } from '../../src/core/env.js';
import { e1000eModel } from '../../src/devices/e1000e.js';
import { eduDevice } from '../../src/devices/edu.js';
import { ivshmemDevice } from '../../src/devices/ivshmem.js';
import { nvmeDevice } from '../../src/devices/nvme.js';
import {
  decodeVfioRegionInfo,
  encodeDmaBuf,
  encodeVfioDeviceFeature,
  encodeVfioIrqSet,
  hotResetStruct,
  putU32,
  u32,
} from '../../src/wire/vfio.js';
import { errnoOf } from '../helpers/errno.js';

function edu(profile: '6.1' | '7.3' = '6.1', extensions = NO_EXTENSIONS) {
  const env = heapEnvironment();
  const dev = eduDevice().instantiate({
    env,
    profile,
    extensions,
    mmapTrappedBars: true,
  }).device;
  return { env, dev };
}
function ivshmem(profile: '6.1' | '7.3' = '7.3', extensions = {}, opts = {}) {
  const env = heapEnvironment();
  const dev = ivshmemDevice().instantiate({
    env,
    profile,
    extensions,
    ...opts,
  }).device;
  return { env, dev };
}

function regionInfoBytes(index: number, argsz = 32, flags = 0, size = argsz): Uint8Array {
  const b = new Uint8Array(Math.max(size, 16));
  putU32(b, 0, argsz);
  putU32(b, 4, flags);
  putU32(b, 8, index);
  return b;
}

describe('DEVICE_GET_INFO', () => {
  test('flags PCI, 9 regions, 5 irqs; argsz below 16 is EINVAL', () => {
    const { dev } = edu();
    const b = new Uint8Array(20);
    putU32(b, 0, 20);
    assert.equal(dev.ioctl(A.VFIO_DEVICE_GET_INFO, b), 0);
    assert.deepEqual([u32(b, 0), u32(b, 4), u32(b, 8), u32(b, 12), u32(b, 16)], [20, 0x2, 9, 5, 0]);
    putU32(b, 0, 15);
    assert.equal(
      errnoOf(() => dev.ioctl(A.VFIO_DEVICE_GET_INFO, b)),
      Errno.EINVAL,
    );
  });
});

describe('DEVICE_GET_REGION_INFO matches Linux 6.1 for edu', () => {
  // index, flags, size (sample-output.txt)
  const expected: [number, number, bigint][] = [
    [0, 0x7, 0x100000n],
    [1, 0, 0n],
    [2, 0, 0n],
    [3, 0, 0n],
    [4, 0, 0n],
    [5, 0, 0n],
    [6, 0, 0n],
    [7, 0x3, 0x100n],
  ];
  for (const [index, flags, size] of expected) {
    test(`region ${index}`, () => {
      const { dev } = edu();
      const b = regionInfoBytes(index, 32, 0xffffffff);
      dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
      const r = decodeVfioRegionInfo(b);
      assert.equal(r.flags, flags, 'output-only flags overwrite the garbage the caller put in');
      assert.equal(r.size, size);
      assert.equal(r.offset, BigInt(index) << 40n);
      assert.equal(r.argsz, 32);
    });
  }
  const bad: [string, Uint8Array, number][] = [
    ['VGA on a non-VGA device', regionInfoBytes(8), Errno.EINVAL],
    ['index 99', regionInfoBytes(99), Errno.EINVAL],
    ['argsz 8', regionInfoBytes(0, 8, 0, 32), Errno.EINVAL],
    ['argsz 31', regionInfoBytes(0, 31, 0, 32), Errno.EINVAL],
    ['buffer shorter than the struct', regionInfoBytes(0, 32, 0, 16), Errno.EFAULT],
  ];
  for (const [name, arg, errno] of bad)
    test(name, () => {
      assert.equal(
        errnoOf(() => edu().dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, arg)),
        errno,
      );
    });
});

describe('capabilities and the argsz exchange', () => {
  const nvmeLike = () => {
    const env = heapEnvironment();
    const d = {
      ...ivshmemDevice().description,
      name: 'msix-dev',
      bars: [{ size: 0x4000, kind: 'mem64' as const }],
      msix: { tableSize: 64, tableBar: 0, tableOffset: 0x2000, pbaBar: 0, pbaOffset: 0x3000 },
    };
    return { env, d };
  };
  test('sparse mmap around the MSI-X table: argsz grows, then caps arrive at 32', () => {
    const { env, d } = nvmeLike();
    const dev = new VfioPciDevice(d, {}, { env });
    const b = regionInfoBytes(0);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    const first = decodeVfioRegionInfo(b);
    assert.ok(first.flags & A.VFIO_REGION_INFO_FLAG_CAPS);
    assert.equal(first.capOffset, 0);
    assert.ok(first.argsz > 32);
    const b2 = regionInfoBytes(0, first.argsz, 0, first.argsz);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b2);
    const r = decodeVfioRegionInfo(b2);
    assert.equal(r.capOffset, 32);
    assert.deepEqual(r.caps, [{ kind: 'sparse-mmap', areas: [{ offset: 0n, size: 0x2000n }] }]);
    // mmap over the table is refused; below it works.
    assert.equal(
      errnoOf(() => dev.mmap(0x2000n, 4096)),
      Errno.EINVAL,
    );
    assert.equal(
      errnoOf(() => dev.mmap(0n, 0x4000)),
      Errno.EINVAL,
    );
    assert.equal(dev.mmap(0n, 0x2000).length, 0x2000);
    // reads of the table are 0xff, writes dropped (vfio_pci_bar_rw's MSI-X exclusion)
    dev.pwrite(0x2000n, new Uint8Array([1, 2, 3, 4]));
    assert.deepEqual([...dev.pread(0x1ffen, 4)], [0, 0, 0xff, 0xff]);
  });
  test("'kernel' MSI-X mode reports MSIX_MAPPABLE like Linux >= 4.16", () => {
    const { env, d } = nvmeLike();
    const dev = new VfioPciDevice(d, {}, { env, msixMmap: 'kernel' });
    const b = regionInfoBytes(0, 64, 0, 64);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    assert.deepEqual(decodeVfioRegionInfo(b).caps, [{ kind: 'msix-mappable' }]);
  });
});

describe('IRQ_INFO and SET_IRQS', () => {
  test('edu on 6.1: INTx 0x7/1, MSI 0x9/1, MSI-X 0x9/0, ERR EINVAL, REQ 0x9/1', () => {
    const { dev } = edu();
    const rows = [0, 1, 2, 3, 4].map((i) => {
      const b = new Uint8Array(16);
      putU32(b, 0, 16);
      putU32(b, 8, i);
      const e = errnoOf(() => dev.ioctl(A.VFIO_DEVICE_GET_IRQ_INFO, b));
      return e ?? [u32(b, 4), u32(b, 12)];
    });
    assert.deepEqual(rows, [[0x7, 1], [0x9, 1], [0x9, 0], Errno.EINVAL, [0x9, 1]]);
  });
  test('ivshmem on 7.3: ERR answers 0x9 count 1 (seen on 7.3.4)', () => {
    const { dev } = ivshmem('7.3');
    const b = new Uint8Array(16);
    putU32(b, 0, 16);
    putU32(b, 8, 3);
    dev.ioctl(A.VFIO_DEVICE_GET_IRQ_INFO, b);
    assert.deepEqual([u32(b, 4), u32(b, 12)], [0x9, 1]);
  });
  test('MSI with an eventfd, loopback trigger, device raise, disable', () => {
    const { env, dev } = edu();
    const efd = env.createEventfd();
    const fds = new Uint8Array(4);
    new DataView(fds.buffer).setInt32(0, efd.fd, true);
    const flags = A.VFIO_IRQ_SET_DATA_EVENTFD | A.VFIO_IRQ_SET_ACTION_TRIGGER;
    dev.ioctl(A.VFIO_DEVICE_SET_IRQS, encodeVfioIrqSet({ flags, index: 1, start: 0, count: 1, data: fds }));
    assert.equal(dev.irqs.type, 'msi');
    const none = A.VFIO_IRQ_SET_DATA_NONE | A.VFIO_IRQ_SET_ACTION_TRIGGER;
    dev.ioctl(
      A.VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags: none, index: 1, start: 0, count: 1, data: new Uint8Array() }),
    );
    assert.equal(efd.count, 1n);
    // edu's "raise interrupt" register
    dev.pwrite(0x60n, new Uint8Array([1, 0, 0, 0]));
    assert.equal(efd.count, 2n);
    // INTx while MSI is active: EINVAL
    const intx = encodeVfioIrqSet({ flags, index: 0, start: 0, count: 1, data: fds });
    assert.equal(
      errnoOf(() => dev.ioctl(A.VFIO_DEVICE_SET_IRQS, intx)),
      Errno.EINVAL,
    );
    dev.ioctl(
      A.VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({ flags: none, index: 1, start: 0, count: 0, data: new Uint8Array() }),
    );
    assert.equal(dev.irqs.type, 'none');
  });
  test('INTx is automasked and delivered again after UNMASK', () => {
    const { env, dev } = edu();
    const efd = env.createEventfd();
    const fds = new Uint8Array(4);
    new DataView(fds.buffer).setInt32(0, efd.fd, true);
    dev.ioctl(
      A.VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_EVENTFD | A.VFIO_IRQ_SET_ACTION_TRIGGER,
        index: 0,
        start: 0,
        count: 1,
        data: fds,
      }),
    );
    dev.pwrite(0x60n, new Uint8Array([1, 0, 0, 0]));
    dev.pwrite(0x60n, new Uint8Array([1, 0, 0, 0]));
    assert.equal(efd.count, 1n, 'second raise waits while masked');
    dev.ioctl(
      A.VFIO_DEVICE_SET_IRQS,
      encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_NONE | A.VFIO_IRQ_SET_ACTION_UNMASK,
        index: 0,
        start: 0,
        count: 1,
        data: new Uint8Array(),
      }),
    );
    assert.equal(efd.count, 2n, 'pending INTx delivered on unmask');
  });
  const T = A.VFIO_IRQ_SET_ACTION_TRIGGER;
  const cases: [string, Parameters<typeof encodeVfioIrqSet>[0], number][] = [
    [
      'index 5',
      { flags: A.VFIO_IRQ_SET_DATA_NONE | T, index: 5, start: 0, count: 0, data: new Uint8Array() },
      Errno.EINVAL,
    ],
    ['two data types', { flags: 3 | T, index: 1, start: 0, count: 1, data: new Uint8Array(4) }, Errno.EINVAL],
    [
      'unknown flag bit',
      { flags: (1 << 6) | 1 | T, index: 1, start: 0, count: 0, data: new Uint8Array() },
      Errno.EINVAL,
    ],
    [
      'start beyond count',
      { flags: A.VFIO_IRQ_SET_DATA_NONE | T, index: 1, start: 1, count: 1, data: new Uint8Array() },
      Errno.EINVAL,
    ],
    [
      'MSI-X on edu (0 vectors)',
      { flags: A.VFIO_IRQ_SET_DATA_NONE | T, index: 2, start: 0, count: 0, data: new Uint8Array() },
      Errno.EINVAL,
    ],
    [
      'count overflows start',
      { flags: A.VFIO_IRQ_SET_DATA_NONE | T, index: 1, start: 1, count: 0xffffffff, data: new Uint8Array() },
      Errno.EINVAL,
    ],
    [
      'eventfd data missing',
      {
        flags: A.VFIO_IRQ_SET_DATA_EVENTFD | T,
        index: 1,
        start: 0,
        count: 1,
        data: new Uint8Array(),
        argsz: 20,
      },
      Errno.EINVAL,
    ],
    [
      'MSI mask: not implemented',
      {
        flags: A.VFIO_IRQ_SET_DATA_NONE | A.VFIO_IRQ_SET_ACTION_MASK,
        index: 1,
        start: 0,
        count: 1,
        data: new Uint8Array(),
      },
      Errno.ENOTTY,
    ],
    [
      'two actions',
      {
        flags: A.VFIO_IRQ_SET_DATA_NONE | T | A.VFIO_IRQ_SET_ACTION_MASK,
        index: 0,
        start: 0,
        count: 1,
        data: new Uint8Array(),
      },
      Errno.ENOTTY,
    ],
    [
      'INTx unmask while disabled',
      {
        flags: A.VFIO_IRQ_SET_DATA_NONE | A.VFIO_IRQ_SET_ACTION_UNMASK,
        index: 0,
        start: 0,
        count: 1,
        data: new Uint8Array(),
      },
      Errno.EINVAL,
    ],
    [
      'not an open fd',
      {
        flags: A.VFIO_IRQ_SET_DATA_EVENTFD | T,
        index: 1,
        start: 0,
        count: 1,
        data: new Uint8Array([7, 0, 0, 0]),
      },
      Errno.EBADF,
    ],
  ];
  for (const [name, s, errno] of cases)
    test(`SET_IRQS ${name}: ${errno}`, () => {
      assert.equal(
        errnoOf(() => edu().dev.ioctl(A.VFIO_DEVICE_SET_IRQS, encodeVfioIrqSet(s))),
        errno,
      );
    });
});

describe('region access', () => {
  test('edu registers through pread/pwrite: id, liveness, factorial', () => {
    const { dev } = edu();
    const rd = (o: bigint) => new DataView(dev.pread(o, 4).buffer).getUint32(0, true);
    assert.equal(rd(0n), 0x010000ed);
    assert.equal(rd(4n), 0, 'liveness reads addr4, 0 after reset (seen on 6.1)');
    dev.pwrite(4n, new Uint8Array([0x78, 0x56, 0x34, 0x12]));
    assert.equal(rd(4n), ~0x12345678 >>> 0);
    dev.pwrite(8n, new Uint8Array([5, 0, 0, 0]));
    assert.equal(rd(8n), 120);
  });
  test('pread at the end of a BAR is EINVAL, across the end is short (vfio_pci_bar_rw)', () => {
    const { dev } = ivshmem();
    assert.equal(
      errnoOf(() => dev.pread(256n, 4)),
      Errno.EINVAL,
    );
    assert.equal(dev.pread(254n, 4).length, 2);
    assert.equal(
      errnoOf(() => dev.pread(1n << 40n, 4)),
      Errno.EINVAL,
      'empty BAR1',
    );
    assert.equal(
      errnoOf(() => dev.pread(99n << 40n, 4)),
      Errno.EINVAL,
      'no region there',
    );
  });
  test('config space: vendor/device, BAR sizing reads back the mask', () => {
    const { dev } = edu();
    const cfg = 7n << 40n;
    assert.deepEqual([...dev.pread(cfg, 4)], [0x34, 0x12, 0xe8, 0x11]);
    dev.pwrite(cfg + 0x10n, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    assert.equal(new DataView(dev.pread(cfg + 0x10n, 4).buffer).getUint32(0, true), 0xfff00000);
  });
  test('ROM is read-only; VGA absent', () => {
    const { dev } = edu();
    assert.equal(
      errnoOf(() => dev.pread(6n << 40n, 4)),
      Errno.EINVAL,
      'no ROM: region flags 0',
    );
  });
  test('unknown ioctl ENOTTY; SET_REGION_FLAGS is ENOTTY without the RFC (Linux: ENOTTY)', () => {
    const { dev } = edu();
    assert.equal(
      errnoOf(() => dev.ioctl(A.vfioIoctl(42), new Uint8Array(8))),
      Errno.ENOTTY,
    );
    assert.equal(
      errnoOf(() => dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, new Uint8Array(8))),
      Errno.ENOTTY,
    );
  });
  test('DEVICE_RESET without a reset method: EINVAL', () => {
    assert.equal(
      errnoOf(() => edu().dev.ioctl(A.VFIO_DEVICE_RESET, new Uint8Array())),
      Errno.EINVAL,
    );
  });
});

describe('mmap rules (vfio_pci_core_mmap)', () => {
  const cases: [string, bigint, number, boolean, number][] = [
    ['config region', 7n << 40n, 4096, true, Errno.EINVAL],
    ['MAP_PRIVATE', 2n << 40n, 4096, false, Errno.EINVAL],
    ['beyond the BAR', (2n << 40n) + (4n << 20n), 4096, true, Errno.EINVAL],
    ['straddling the end', (2n << 40n) + (4n << 20n) - 4096n, 8192, true, Errno.EINVAL],
    ['unaligned offset', (2n << 40n) + 100n, 4096, true, Errno.EINVAL],
    ['zero length', 2n << 40n, 0, true, Errno.EINVAL],
    ['empty BAR1', 1n << 40n, 4096, true, Errno.EINVAL],
    ['ROM', 6n << 40n, 4096, true, Errno.EINVAL],
  ];
  for (const [name, off, len, shared, errno] of cases)
    test(name, () => {
      assert.equal(
        errnoOf(() => ivshmem().dev.mmap(off, len, shared)),
        errno,
      );
    });
  test('a sub-page BAR0 maps one page, UC (ivshmem: not its registers, test/devices/ivshmem.test.ts)', () => {
    const { dev } = ivshmem();
    const m = dev.mmap(0n, 4096);
    assert.equal(m.bytes.length, 4096);
    assert.equal(m.attribute, 'uc');
  });
});

describe('write combining: four front doors, one mechanism', () => {
  const BAR2 = 2n << 40n;
  test('path 1, the RFC: PREFETCH flag, SET_REGION_FLAGS, then mmaps of BAR2 are WC', () => {
    const { dev } = ivshmem('7.3', { rfc: true });
    const b = regionInfoBytes(2);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    assert.equal(decodeVfioRegionInfo(b).flags, 0x7 | A.VFIO_REGION_INFO_FLAG_PREFETCH);
    const before = dev.mmap(BAR2, 4096);
    const rf = new Uint8Array(8);
    putU32(rf, 0, 2);
    putU32(rf, 4, A.VFIO_REGION_FLAG_WRITE_COMBINE);
    dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, rf);
    const after = dev.mmap(BAR2, 4096);
    assert.deepEqual([before.attribute, after.attribute, after.via], ['uc', 'wc', 'rfc-region-flags']);
    putU32(rf, 4, 0);
    dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, rf);
    assert.equal(dev.mmap(BAR2, 4096).attribute, 'uc');
  });
  const rfcErrors: [string, number, number, boolean, number][] = [
    ['index 6', 6, 1, true, Errno.EINVAL],
    ['non-prefetchable BAR0', 0, 1, true, Errno.EINVAL],
    ['empty BAR1', 1, 1, true, Errno.EINVAL],
    ['non-prefetchable BAR0, relaxed rule', 0, 1, false, 0],
    ['clearing on BAR0 is always fine', 0, 0, true, 0],
  ];
  for (const [name, index, flags, strict, errno] of rfcErrors)
    test(`RFC SET_REGION_FLAGS ${name}`, () => {
      const { dev } = ivshmem('7.3', { rfc: true }, { wcRequiresPrefetch: strict });
      const rf = new Uint8Array(8);
      putU32(rf, 0, index);
      putU32(rf, 4, flags);
      assert.equal(errnoOf(() => dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, rf)) ?? 0, errno);
    });

  function cookie(dev: VfioPciDevice, region: number, flags: number, op = A.VFIO_DEVICE_FEATURE_GET) {
    const data = new Uint8Array(24);
    putU32(data, 0, region);
    putU32(data, 4, flags);
    const b = encodeVfioDeviceFeature(op | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
    dev.ioctl(A.VFIO_DEVICE_FEATURE, b);
    return new DataView(b.buffer).getBigUint64(16, true);
  }
  test('path 2, cookies: a new offset per request; REGION_INFO unchanged; release frees', () => {
    const { dev } = ivshmem();
    const c1 = cookie(dev, 2, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    const c2 = cookie(dev, 2, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    assert.notEqual(c1, c2);
    assert.equal(c2 - c1, 4n << 20n, 'packed densely: the second right after the first');
    const m = dev.mmap(c1, 4096);
    assert.deepEqual([m.attribute, m.via, m.regionIndex], ['wc', 'cookie', 2]);
    m.bytes[0] = 0xa5;
    assert.equal(dev.pread(BAR2, 1)[0], 0xa5, 'same memory as the BAR');
    const info = new Uint8Array(16);
    putU32(info, 0, 16);
    dev.ioctl(A.VFIO_DEVICE_GET_INFO, info);
    assert.equal(u32(info, 8), 9, 'no new regions');
    // release while mapped: no new mmaps; space freed when the mapping goes
    const rel = new Uint8Array(24);
    putU32(rel, 4, A.VFIO_TS_MMAP_COOKIE_FLAG_RELEASE);
    new DataView(rel.buffer).setBigUint64(8, c1, true);
    dev.ioctl(
      A.VFIO_DEVICE_FEATURE,
      encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_SET | A.VFIO_TS_FEATURE_MMAP_COOKIE, rel),
    );
    assert.equal(
      errnoOf(() => dev.mmap(c1, 4096)),
      Errno.EINVAL,
    );
    assert.equal(dev.cookieCount, 2);
    m.unmap();
    assert.equal(dev.cookieCount, 1);
    assert.equal(
      errnoOf(() =>
        dev.ioctl(
          A.VFIO_DEVICE_FEATURE,
          encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_SET | A.VFIO_TS_FEATURE_MMAP_COOKIE, rel),
        ),
      ),
      Errno.EINVAL,
      'double release',
    );
  });
  const cookieErrors: [string, number, number, number][] = [
    ['unknown flag bits', 2, 1 << 3, Errno.EINVAL],
    ['unknown attribute', 2, 2 << 28, Errno.EINVAL],
    ['config region', 7, 0, Errno.EINVAL],
    ['empty BAR', 1, 0, Errno.EINVAL],
    ['WC on non-prefetchable BAR0', 0, 1 << 28, Errno.EINVAL],
  ];
  for (const [name, region, flags, errno] of cookieErrors)
    test(`cookie ${name}`, () => {
      assert.equal(
        errnoOf(() => cookie(ivshmem().dev, region, flags)),
        errno,
      );
    });

  test('path 3, alias regions: a new region with a TYPE cap, MMAP only, maps WC', () => {
    const { dev } = ivshmem();
    const data = new Uint8Array(16);
    putU32(data, 0, 2);
    putU32(data, 4, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_ALIAS_REGION, data);
    dev.ioctl(A.VFIO_DEVICE_FEATURE, b);
    const index = u32(b, 16);
    assert.equal(index, 9);
    const info = regionInfoBytes(index, 64, 0, 64);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, info);
    const r = decodeVfioRegionInfo(info);
    assert.equal(r.flags, A.VFIO_REGION_INFO_FLAG_MMAP | A.VFIO_REGION_INFO_FLAG_CAPS);
    // vendor type space: (1 << 31) | 0xffff, subtype 1 + BAR
    assert.deepEqual(r.caps, [{ kind: 'type', type: 0x8000ffff, subtype: 3 }]);
    assert.equal(r.offset, 9n << 40n);
    const m = dev.mmap(r.offset, 4096);
    assert.deepEqual([m.attribute, m.via], ['wc', 'alias-region']);
    assert.equal(
      errnoOf(() => dev.pread(r.offset, 4)),
      Errno.EINVAL,
      'no READ flag',
    );
    // asking again finds the same region; existing indexes never move
    dev.ioctl(A.VFIO_DEVICE_FEATURE, b);
    assert.equal(u32(b, 16), 9);
  });

  function dmabuf(
    dev: VfioPciDevice,
    region: number,
    flags: number,
    ranges: { offset: bigint; length: bigint }[],
  ) {
    return dev.ioctl(
      A.VFIO_DEVICE_FEATURE,
      encodeVfioDeviceFeature(
        A.VFIO_DEVICE_FEATURE_GET | A.VFIO_DEVICE_FEATURE_DMA_BUF,
        encodeDmaBuf({ regionIndex: region, openFlags: 2 /* O_RDWR */, flags, ranges }),
      ),
    );
  }
  const one = [{ offset: 0n, length: 4096n }];
  // Linux 7.3 exactly (vfio_pci_dmabuf.c), with the extension off
  const kernel73: [string, number, number, { offset: bigint; length: bigint }[], number][] = [
    ['flags WC refused (not merged)', 2, 1 << 28, one, Errno.EINVAL],
    ['flags 1<<5', 2, 1 << 5, one, Errno.EINVAL],
    ['no ranges', 2, 0, [], Errno.EINVAL],
    ['ROM region', 6, 0, one, Errno.ENODEV],
    ['range past the BAR', 2, 0, [{ offset: 4n << 20n, length: 4096n }], Errno.EINVAL],
    ['unaligned offset', 2, 0, [{ offset: 100n, length: 4096n }], Errno.EINVAL],
    ['zero length', 2, 0, [{ offset: 0n, length: 0n }], Errno.EINVAL],
    // Seen on 7.3: an unimplemented BAR is ENODEV (the model said EINVAL before).
    ['empty BAR', 1, 0, one, Errno.ENODEV],
  ];
  for (const [name, region, flags, ranges, errno] of kernel73)
    test(`DMA_BUF as Linux 7.3: ${name}`, () => {
      const { dev } = ivshmem('7.3', NO_EXTENSIONS);
      assert.equal(
        errnoOf(() => dmabuf(dev, region, flags, ranges)),
        errno,
      );
    });
  // nr_ranges (vfio_pci_core_feature_dma_buf → memdup_array_user): no explicit limit, argsz not
  // consulted; past KMALLOC_MAX_SIZE / 16 ranges ENOMEM, ranges the buffer lacks EFAULT.
  // [name, ranges in the buffer, nr_ranges claimed, argsz override, errno]
  const pages = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ offset: BigInt(i % 1024) * 4096n, length: 4096n }));
  const counts: [string, number, number, number | undefined, number | undefined][] = [
    ['2000 ranges: an fd (no 1024 limit)', 2000, 2000, undefined, undefined],
    ['argsz covering only the header, ranges in the buffer: an fd', 3, 3, 8 + 16, undefined],
    ['3 claimed, 1 in the buffer: EFAULT', 1, 3, undefined, Errno.EFAULT],
    ['262144 claimed (4 MiB), 1 in the buffer: EFAULT', 1, 262144, undefined, Errno.EFAULT],
    ['262145 claimed: ENOMEM (kmalloc beyond KMALLOC_MAX_SIZE)', 1, 262145, undefined, Errno.ENOMEM],
    ['0xffffffff claimed: ENOMEM', 1, 0xffffffff, undefined, Errno.ENOMEM],
  ];
  for (const [name, have, claim, argsz, errno] of counts)
    test(`DMA_BUF nr_ranges: ${name}`, () => {
      const { dev } = ivshmem('7.3', NO_EXTENSIONS);
      const b = encodeVfioDeviceFeature(
        A.VFIO_DEVICE_FEATURE_GET | A.VFIO_DEVICE_FEATURE_DMA_BUF,
        encodeDmaBuf({ regionIndex: 2, openFlags: 2, flags: 0, ranges: pages(have) }),
      );
      putU32(b, 8 + 12, claim);
      if (argsz !== undefined) putU32(b, 0, argsz);
      const e = errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b));
      assert.equal(e, errno);
    });
  test('DMA_BUF as Linux 7.3 with memory decode off: exported all the same (revoked until enabled)', () => {
    const { dev } = ivshmem('7.3', NO_EXTENSIONS);
    dev.pwrite((7n << 40n) + 4n, new Uint8Array([0, 0]));
    const fd = dmabuf(dev, 2, 0, one);
    assert.ok(fd > 0);
    dev.closeDmaBuf(fd);
  });
  test('DMA_BUF as Linux 7.3: flags 0 returns an fd; mmap of it is EINVAL; 6.1 has no feature', () => {
    const { dev } = ivshmem('7.3', NO_EXTENSIONS);
    const fd = dmabuf(dev, 2, 0, one);
    assert.ok(fd > 0);
    assert.equal(
      errnoOf(() => dev.mmapDmaBuf(fd, 0n, 4096)),
      Errno.EINVAL,
    );
    assert.equal(
      errnoOf(() => dmabuf(ivshmem('6.1', NO_EXTENSIONS).dev, 2, 0, one)),
      Errno.ENOTTY,
    );
  });
  test('path 4, DMA_BUF with ATTR_WC (extension): fd maps WC, same memory', () => {
    const { dev, env } = ivshmem();
    const fd = dmabuf(dev, 2, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC, [{ offset: 8192n, length: 8192n }]);
    const m = dev.mmapDmaBuf(fd, 4096n, 4096);
    assert.deepEqual([m.attribute, m.via, m.regionOffset], ['wc', 'dma-buf', 12288n]);
    m.bytes[1] = 0x3c;
    assert.equal(dev.pread(BAR2 + 12289n, 1)[0], 0x3c);
    assert.equal(
      errnoOf(() => dev.mmapDmaBuf(fd, 4096n, 8192)),
      Errno.EINVAL,
      'past the dma-buf',
    );
    dev.closeDmaBuf(fd);
    assert.equal(env.openFds(), 0, 'fd released');
    assert.equal(
      errnoOf(() => dmabuf(dev, 2, 3 << 28, one)),
      Errno.EINVAL,
      'unknown attribute',
    );
  });
});

describe('DEVICE_FEATURE framing (vfio_ioctl_device_feature)', () => {
  const { PROBE, GET, SET } = {
    PROBE: A.VFIO_DEVICE_FEATURE_PROBE,
    GET: A.VFIO_DEVICE_FEATURE_GET,
    SET: A.VFIO_DEVICE_FEATURE_SET,
  };
  const cases: [string, number, number][] = [
    ['probe DMA_BUF on 7.3', PROBE | GET | 11, 0],
    ['probe DMA_BUF with SET', PROBE | SET | 11, Errno.EINVAL],
    ['GET and SET together', GET | SET | 11, Errno.EINVAL],
    ['unknown flag bit 19', (1 << 19) | 11, Errno.EINVAL],
    ['probe migration (the core is a migration driver)', PROBE | GET | 1, 0],
    ['probe low power entry', PROBE | SET | 3, 0],
    ['probe unknown feature 200', PROBE | 200, Errno.ENOTTY],
    ['probe cookie feature', PROBE | GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, 0],
  ];
  for (const [name, flags, errno] of cases)
    test(name, () => {
      const { dev } = ivshmem();
      assert.equal(
        errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, encodeVfioDeviceFeature(flags))) ?? 0,
        errno,
      );
    });
  // [name, wakeup_eventfd (E: a real eventfd), argsz of the data, errno]
  const E = -1000;
  const wakeup: [string, number, number, number | undefined][] = [
    ['an eventfd', E, 8, undefined],
    ['fd -1: EINVAL before any lookup', -1, 8, Errno.EINVAL],
    ['fd -2147483648: EINVAL', -2147483648, 8, Errno.EINVAL],
    ['fd 7, not open: EBADF', 7, 8, Errno.EBADF],
    ['data shorter than the struct: EINVAL (vfio_check_feature)', E, 4, Errno.EINVAL],
  ];
  for (const [name, fd, size, errno] of wakeup)
    test(`LOW_POWER_ENTRY_WITH_WAKEUP ${name}`, () => {
      const { env, dev } = ivshmem();
      const data = new Uint8Array(size);
      if (size >= 4) new DataView(data.buffer).setInt32(0, fd === E ? env.createEventfd().fd : fd, true);
      const b = encodeVfioDeviceFeature(SET | A.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, data);
      assert.equal(
        errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b)),
        errno,
      );
      assert.equal(dev.inLowPower, errno === undefined);
    });
  test('probe migration without migration (vfio-pci, no variant driver): ENOTTY', () => {
    const { dev } = ivshmem('7.3', {}, { migration: false });
    for (const f of [1, 2, 6, 7, 8, 9])
      assert.equal(
        errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, encodeVfioDeviceFeature(PROBE | GET | f))),
        Errno.ENOTTY,
        `feature ${f}`,
      );
  });
  test('argsz below 8: EINVAL', () => {
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_PROBE | 11);
    putU32(b, 0, 4);
    assert.equal(
      errnoOf(() => ivshmem().dev.ioctl(A.VFIO_DEVICE_FEATURE, b)),
      Errno.EINVAL,
    );
  });
});

describe('PCI_HOT_RESET (vfio_pci_ioctl_pci_hot_reset): the group list against how the fd was opened', () => {
  // [profile, opened, count, flags, errno]: edu sits on the root bus, so a request that gets
  // past the checks finds no slot or bus reset (ENODEV). 7.3 refuses an empty list on a group
  // fd and a list of groups on a cdev fd (EINVAL) before that; 6.1 probes the reset first.
  const cases: ['6.1' | '7.3', 'group' | 'cdev', number, number, number][] = [
    ['7.3', 'group', 0, 0, Errno.EINVAL],
    ['7.3', 'group', 1, 0, Errno.ENODEV],
    ['7.3', 'cdev', 0, 0, Errno.ENODEV],
    ['7.3', 'cdev', 1, 0, Errno.EINVAL],
    ['7.3', 'group', 1, 1, Errno.EINVAL],
    ['6.1', 'group', 0, 0, Errno.ENODEV],
    ['6.1', 'group', 1, 0, Errno.ENODEV],
    ['6.1', 'group', 0, 2, Errno.EINVAL],
  ];
  for (const [profile, opened, count, flags, errno] of cases)
    test(`${profile} ${opened} fd, count ${count}, flags ${flags}: ${errnoName(errno)}`, () => {
      const { device: dev } = eduDevice().instantiate({ env: heapEnvironment(), profile, opened });
      const arg = hotResetStruct.encode({ argsz: hotResetStruct.size + 4, flags, count }, 4);
      assert.equal(
        errnoOf(() => dev.ioctl(A.VFIO_DEVICE_PCI_HOT_RESET, arg)),
        errno,
      );
    });
  test('argsz below the count field is EINVAL on either path', () => {
    for (const opened of ['group', 'cdev'] as const) {
      const { device: dev } = eduDevice().instantiate({ env: heapEnvironment(), opened });
      const arg = hotResetStruct.encode({ argsz: hotResetStruct.endOf('count') - 1 });
      assert.equal(
        errnoOf(() => dev.ioctl(A.VFIO_DEVICE_PCI_HOT_RESET, arg)),
        Errno.EINVAL,
        opened,
      );
    }
  });
});

describe('offset space: cookies vs the fixed index << 40 encoding', () => {
  const PAGE = 4096n;
  const roundUp = (n: bigint, a: bigint) => ((n + a - 1n) / a) * a;
  const SHIFT = A.VFIO_PCI_OFFSET_SHIFT; // 40: vfio_pci_priv.h VFIO_PCI_OFFSET_SHIFT
  /** Windows the device reserves before cookies under the kernel encoding: fixed 0..8, aliases 9..14. */
  const RESERVED_WINDOWS = BigInt(A.VFIO_PCI_NUM_REGIONS) + 6n;

  /**
   * The heap environment, but BAR memory is one page whatever the BAR's size: lets a 64 TiB BAR
   * exist so that a 63-bit offset space can be filled with a countable number of cookies.
   * Nothing here touches BAR bytes.
   */
  function thinEnv() {
    const env = heapEnvironment();
    return { ...env, allocate: (name: string, size: number) => ({ ...env.allocate(name, 4096), size }) };
  }
  function device(bits: number, scheme: 'kernel' | 'dense', barSize: number) {
    return ivshmemDevice(barSize).instantiate({
      env: thinEnv(),
      profile: '7.3',
      offsetBits: bits,
      regionOffsets: scheme,
      wcRequiresPrefetch: false,
      maxMmapCookies: Number.MAX_SAFE_INTEGER, // counting to ENOSPC: lift the live-cookie limit
    }).device;
  }
  function getCookie(dev: VfioPciDevice, bar = 2): bigint | number {
    const data = new Uint8Array(24);
    putU32(data, 0, bar);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
    const e = errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b));
    return e ?? new DataView(b.buffer).getBigUint64(16, true);
  }
  function releaseCookie(dev: VfioPciDevice, offset: bigint): void {
    const data = new Uint8Array(24);
    putU32(data, 4, A.VFIO_TS_MMAP_COOKIE_FLAG_RELEASE);
    new DataView(data.buffer).setBigUint64(8, offset, true);
    dev.ioctl(
      A.VFIO_DEVICE_FEATURE,
      encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_SET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data),
    );
  }
  function getAlias(dev: VfioPciDevice, bar: number): number {
    const data = new Uint8Array(16);
    putU32(data, 0, bar);
    putU32(data, 4, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_ALIAS_REGION, data);
    return errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b)) ?? -u32(b, 16);
  }
  /**
   * Bytes the 9 fixed regions take when packed (dense): each rounded up to a page, empty ones a
   * page. VGA answers REGION_INFO with EINVAL on a non-VGA device but still holds its page.
   */
  function denseFootprint(dev: VfioPciDevice): bigint {
    let sum = 0n;
    for (let i = 0; i < A.VFIO_PCI_NUM_REGIONS; i++) {
      const b = regionInfoBytes(i);
      const size = errnoOf(() => dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b))
        ? 0n
        : decodeVfioRegionInfo(b).size;
      sum += roundUp(size > 0n ? size : PAGE, PAGE);
    }
    return sum;
  }

  // [pgoff width, bits, BAR2 size]: a 32-bit pgoff (44 bits, 4 MiB BAR) and a 64-bit loff_t
  // (63 bits; a 64 TiB BAR keeps the count walkable).
  const widths: [string, number, number][] = [
    ['32-bit pgoff', 44, 4 << 20],
    ['64-bit', 63, 2 ** 46],
  ];
  const rows: string[] = [];
  for (const [label, bits, barSize] of widths)
    for (const scheme of ['kernel', 'dense'] as const)
      test(`${label} (${bits} bits), ${scheme} offsets: cookies of a ${barSize / 2 ** 20} MiB BAR until ENOSPC`, () => {
        const dev = device(bits, scheme, barSize);
        const limit = 1n << BigInt(bits);
        const cookie = roundUp(BigInt(barSize), PAGE);
        // The arithmetic: under the kernel encoding 2^bits / 2^40 windows, cookies packed above
        // window 15; dense, cookies packed right after the regions.
        const windows = limit >> SHIFT;
        const floor = scheme === 'kernel' ? RESERVED_WINDOWS << SHIFT : denseFootprint(dev);
        const expected = (limit - floor) / cookie;
        let n = 0n;
        let last = 0n;
        for (;;) {
          const r = getCookie(dev);
          if (typeof r === 'number') {
            assert.equal(r, Errno.ENOSPC);
            break;
          }
          assert.ok(
            r >= floor && r + cookie <= limit && (n === 0n || r > last),
            `cookie ${n} at 0x${r.toString(16)}`,
          );
          last = r;
          n++;
        }
        assert.equal(n, expected);
        // Space is reused: release one cookie after ENOSPC, the next GET gets its offset back.
        releaseCookie(dev, floor);
        assert.equal(getCookie(dev), floor);
        assert.equal(getCookie(dev), Errno.ENOSPC);
        rows.push(
          `${label.padEnd(13)} ${String(bits).padStart(2)} ${scheme.padEnd(6)} ` +
            `${(scheme === 'kernel' ? windows.toString() : '-').padStart(8)} ${n.toString().padStart(8)}`,
        );
        if (rows.length === widths.length * 2)
          console.log(
            [
              `pgoff         bits scheme  windows  cookies (BAR2: ${widths.map((w) => w[2]).join(' / ')} bytes)`,
              ...rows,
            ].join('\n'),
          );
      });

  test('kernel encoding: the 9 fixed windows need 44 bits (ENOSPC below)', () => {
    // The smallest width with 9 windows of 2^40: 40 + ceil(log2(9)).
    const need = 40 + Math.ceil(Math.log2(A.VFIO_PCI_NUM_REGIONS));
    let first = 0;
    for (let bits = 40; bits <= 63 && !first; bits++) {
      const e = errnoOf(() => device(bits, 'kernel', 4 << 20));
      if (e === undefined) first = bits;
      else assert.equal(e, Errno.ENOSPC);
    }
    assert.equal(first, need);
  });

  test('alias regions: windows 9, 10 under the kernel encoding at 44 bits; dense, ENOSPC once the width is full', () => {
    const k = device(44, 'kernel', 4 << 20);
    assert.deepEqual([getAlias(k, 0), getAlias(k, 2)], [-9, -10]);
    const b = regionInfoBytes(10);
    k.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    assert.equal(decodeVfioRegionInfo(b).offset, 10n << SHIFT);
    // Dense at 23 bits (8 MiB): the regions take 4 MiB + 8 pages; BAR0's one-page alias fits,
    // BAR2's 4 MiB alias does not.
    const bits = 23;
    const d = device(bits, 'dense', 4 << 20);
    const room = (1n << BigInt(bits)) - denseFootprint(d);
    const want = [PAGE <= room ? -9 : Errno.ENOSPC, PAGE + (4n << 20n) <= room ? -10 : Errno.ENOSPC];
    assert.deepEqual([getAlias(d, 0), getAlias(d, 2)], want);
    assert.deepEqual(want, [-9, Errno.ENOSPC]);
    assert.equal(d.numRegions, 10, 'the failed alias added no region');
  });
});

describe("regionOffsets: 'dense' (offsets found through the offset space)", () => {
  function both(scheme: 'kernel' | 'dense') {
    const env = heapEnvironment();
    const dev = eduDevice().instantiate({
      env,
      profile: '7.3',
      regionOffsets: scheme,
      mmapTrappedBars: true,
    }).device;
    const iv = ivshmem('7.3', {}, { regionOffsets: scheme }).dev;
    const off = (d: VfioPciDevice, i: number) => {
      const b = regionInfoBytes(i);
      d.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
      return decodeVfioRegionInfo(b).offset;
    };
    return { dev, iv, off };
  }
  function ioeventfd(dev: VfioPciDevice, offset: bigint, size: number, fd: number): number | undefined {
    const b = new Uint8Array(32);
    putU32(b, 0, 32);
    putU32(b, 4, size);
    new DataView(b.buffer).setBigUint64(8, offset, true);
    new DataView(b.buffer).setInt32(24, fd, true);
    return errnoOf(() => dev.ioctl(A.VFIO_DEVICE_IOEVENTFD, b));
  }

  test('dense offsets are packed (BAR2 of ivshmem right after BAR0/BAR1), not index << 40', () => {
    const { iv, off } = both('dense');
    assert.deepEqual([off(iv, 0), off(iv, 1), off(iv, 2)], [0n, 4096n, 8192n]);
  });

  for (const scheme of ['kernel', 'dense'] as const) {
    test(`${scheme}: pread/pwrite reach edu's registers and ivshmem's BAR2 at REGION_INFO's offsets`, () => {
      const { dev, iv, off } = both(scheme);
      const bar0 = off(dev, 0);
      assert.equal(u32(dev.pread(bar0, 4), 0), 0x010000ed, 'edu id register');
      dev.pwrite(bar0 + 4n, new Uint8Array([0x0f, 0, 0, 0]));
      assert.equal(u32(dev.pread(bar0 + 4n, 4), 0), 0xfffffff0, 'liveness: ~value');
      const bar2 = off(iv, 2);
      iv.pwrite(bar2 + 100n, new Uint8Array([1, 2, 3]));
      assert.deepEqual([...iv.pread(bar2 + 100n, 3)], [1, 2, 3]);
      // the config region, wherever it sits
      assert.equal(u32(iv.pread(off(iv, A.VFIO_PCI_CONFIG_REGION_INDEX), 4), 0), 0x11101af4);
    });

    test(`${scheme}: mmap of BAR2 at its offset is the memory pread sees; past the BAR EINVAL`, () => {
      const { iv, off } = both(scheme);
      const bar2 = off(iv, 2);
      const m = iv.mmap(bar2 + 4096n, 4096);
      m.bytes[0] = 0x42;
      assert.equal(iv.pread(bar2 + 4096n, 1)[0], 0x42);
      assert.equal(
        errnoOf(() => iv.mmap(bar2 + (4n << 20n) - 4096n, 8192)),
        Errno.EINVAL,
      );
      m.unmap();
    });

    // [name, region, offset within it, size, fd, errno]: the model registers no ioeventfds, so a
    // valid request is ENOSPC (VFIO_PCI_IOEVENTFD_MAX in use) and a valid delete ENODEV.
    const cases: [string, number, bigint, number, number, number][] = [
      ['BAR0 of edu, 4 bytes at 0x4', 0, 4n, 4, 0, Errno.ENOSPC],
      ['ivshmem BAR2, 8 bytes at 0x1000', 2, 0x1000n, 8, 0, Errno.ENOSPC],
      ['ivshmem BAR2 at its last byte', 2, (4n << 20n) - 1n, 1, -1, Errno.ENODEV],
      ['ivshmem BAR0, 2 bytes at 0xfe', 0, 0xfen, 2, 0, Errno.ENOSPC],
      ['BAR0 delete of a missing one', 0, 4n, 4, -1, Errno.ENODEV],
      ['BAR0 at the last 4 bytes', 0, (1n << 20n) - 4n, 4, 0, Errno.ENOSPC],
      ['BAR0 across its end', 0, (1n << 20n) - 2n, 4, 0, Errno.EINVAL],
      ['size 3', 0, 0n, 3, 0, Errno.EINVAL],
      ['the config region', A.VFIO_PCI_CONFIG_REGION_INDEX, 0n, 4, 0, Errno.EINVAL],
      ['the ROM region', A.VFIO_PCI_ROM_REGION_INDEX, 0n, 4, 0, Errno.EINVAL],
      ['empty BAR1', 1, 0n, 4, 0, Errno.EINVAL],
    ];
    for (const [name, region, at, size, fd, errno] of cases)
      test(`${scheme}: IOEVENTFD ${name}: ${errno}`, () => {
        const { dev: edu, iv, off } = both(scheme);
        const dev = name.startsWith('ivshmem') ? iv : edu;
        assert.equal(ioeventfd(dev, off(dev, region) + at, size, fd), errno);
      });
  }

  test('dense: IOEVENTFD at a cookie offset or past every region is EINVAL', () => {
    const { iv } = both('dense');
    const data = new Uint8Array(24);
    putU32(data, 0, 2);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
    iv.ioctl(A.VFIO_DEVICE_FEATURE, b);
    const cookie = new DataView(b.buffer).getBigUint64(16, true);
    assert.equal(ioeventfd(iv, cookie, 4, 0), Errno.EINVAL);
    assert.equal(ioeventfd(iv, 1n << 50n, 4, 0), Errno.EINVAL);
  });
});

describe('write combining: edge cases of each path', () => {
  const WC = A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC;
  const UC = A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC;
  function e1000e(opts = {}) {
    const env = heapEnvironment();
    const dev = e1000eModel().instantiate({
      env,
      profile: '7.3',
      wcRequiresPrefetch: false,
      ...opts,
    }).device;
    return { env, dev };
  }
  function cookie(dev: VfioPciDevice, bar: number, flags: number): bigint | number {
    const data = new Uint8Array(24);
    putU32(data, 0, bar);
    putU32(data, 4, flags);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
    return (
      errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b)) ?? new DataView(b.buffer).getBigUint64(16, true)
    );
  }
  function alias(dev: VfioPciDevice, bar: number, flags = WC): number {
    const data = new Uint8Array(16);
    putU32(data, 0, bar);
    putU32(data, 4, flags);
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_ALIAS_REGION, data);
    return errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b)) ?? -u32(b, 16);
  }
  function rfc(dev: VfioPciDevice, bar: number, flags: number): number | undefined {
    const b = new Uint8Array(8);
    putU32(b, 0, bar);
    putU32(b, 4, flags);
    return errnoOf(() => dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, b));
  }
  function dmabuf(dev: VfioPciDevice, bar: number, flags: number): number {
    const req = encodeDmaBuf({
      regionIndex: bar,
      openFlags: 2,
      flags,
      ranges: [{ offset: 0n, length: 4096n }],
    });
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_DEVICE_FEATURE_DMA_BUF, req);
    const e = errnoOf(() => dev.ioctl(A.VFIO_DEVICE_FEATURE, b));
    return e === undefined ? 0 : e;
  }

  // e1000e's BAR2 is an I/O BAR: every path refuses it, for WC and (where asked) UC.
  const io: [string, (dev: VfioPciDevice) => number | bigint | undefined, number][] = [
    ['RFC SET_REGION_FLAGS WC', (d) => rfc(d, 2, A.VFIO_REGION_FLAG_WRITE_COMBINE), Errno.EINVAL],
    ['cookie WC', (d) => cookie(d, 2, WC), Errno.EINVAL],
    ['cookie UC', (d) => cookie(d, 2, UC), Errno.EINVAL],
    ['alias WC', (d) => alias(d, 2), Errno.EINVAL],
    ['DMA_BUF WC', (d) => dmabuf(d, 2, WC), Errno.EINVAL],
    ['DMA_BUF UC', (d) => dmabuf(d, 2, UC), Errno.EINVAL],
  ];
  for (const [name, fn, errno] of io)
    test(`I/O BAR (e1000e BAR2): ${name}: ${errno}`, () => {
      assert.equal(fn(e1000e().dev), errno);
    });
  test('the same requests on memory BAR0 succeed (the table can fail)', () => {
    const { dev } = e1000e();
    assert.equal(rfc(dev, 0, A.VFIO_REGION_FLAG_WRITE_COMBINE), undefined);
    assert.equal(typeof cookie(dev, 0, WC), 'bigint');
    assert.equal(alias(dev, 0), -9);
    assert.equal(dmabuf(dev, 0, WC), 0);
  });

  // DMA_BUF with the extension: ATTR in bits 28..31, every other bit EINVAL, also beside WC.
  const dmaFlags: [string, number, number][] = [
    ['WC', WC, 0],
    ['UC', UC, 0],
    ['WC | bit 0', WC | 1, Errno.EINVAL],
    ['WC | bit 27', WC | (1 << 27), Errno.EINVAL],
    ['UC | bit 5', 1 << 5, Errno.EINVAL],
    ['attribute 2', 2 << 28, Errno.EINVAL],
  ];
  for (const [name, flags, errno] of dmaFlags)
    test(`DMA_BUF extension flags ${name}: ${errno}`, () => {
      assert.equal(dmabuf(ivshmem().dev, 2, flags), errno);
    });

  test('a UC cookie maps UC through the cookie path; REGION_INFO is unchanged', () => {
    const { dev } = ivshmem();
    const before = regionInfoBytes(2);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, before);
    const off = cookie(dev, 2, UC);
    assert.equal(typeof off, 'bigint');
    const m = dev.mmap(off as bigint, 4096);
    assert.deepEqual([m.attribute, m.via, m.regionIndex], ['uc', 'cookie', 2]);
    m.bytes[0] = 0x11;
    assert.equal(dev.pread((2n << 40n) + 0n, 1)[0], 0x11);
    const after = regionInfoBytes(2);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, after);
    assert.deepEqual(after, before);
    m.unmap();
  });

  test('an alias of the MSI-X BAR: sparse-mmap capability as the BAR, mmap over the table EINVAL', () => {
    const { dev } = e1000e();
    const index = -alias(dev, 3);
    const info = (i: number) => {
      const b = regionInfoBytes(i, 256, 0, 256);
      dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
      return decodeVfioRegionInfo(b);
    };
    const bar = info(3);
    const a = info(index);
    const sparse = (r: ReturnType<typeof info>) => r.caps.filter((c) => c.kind === 'sparse-mmap');
    assert.deepEqual(sparse(a), sparse(bar));
    assert.equal(sparse(a).length, 1);
    assert.equal(a.flags, A.VFIO_REGION_INFO_FLAG_MMAP | A.VFIO_REGION_INFO_FLAG_CAPS);
    // table at 0x0 (page 0), PBA at 0x2000 (page 2): page 1 and 3 map, 0 and 2 do not
    const cases: [bigint, number | undefined][] = [
      [0n, Errno.EINVAL],
      [0x1000n, undefined],
      [0x2000n, Errno.EINVAL],
      [0x3000n, undefined],
    ];
    for (const [at, errno] of cases) {
      const got = errnoOf(() => dev.mmap(a.offset + at, 4096).unmap());
      assert.equal(got, errno, `alias page 0x${at.toString(16)}`);
      assert.equal(
        errnoOf(() => dev.mmap(bar.offset + at, 4096).unmap()),
        errno,
        `BAR page 0x${at.toString(16)}`,
      );
    }
    assert.equal(dev.mmap(a.offset + 0x1000n, 4096).attribute, 'wc');
  });

  test("msixMmap 'kernel': the alias carries MSIX_MAPPABLE and maps the table page", () => {
    const { dev } = e1000e({ msixMmap: 'kernel' });
    const index = -alias(dev, 3);
    const b = regionInfoBytes(index, 256, 0, 256);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    assert.ok(decodeVfioRegionInfo(b).caps.some((c) => c.kind === 'msix-mappable'));
    assert.equal(dev.mmap(decodeVfioRegionInfo(b).offset, 4096).attribute, 'wc');
  });
});

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const CFG = 7n << 40n;
const bar = (i: number, off = 0n) => (BigInt(i) << 40n) + off;
/** Sets the command register (2 bytes) through the config region. */
function command(dev: VfioPciDevice, v: number): void {
  dev.pwrite(CFG + 4n, new Uint8Array([v & 0xff, v >> 8]));
}

describe('memory decode gating (vfio_pci_core_do_io_rw test_mem, __vfio_pci_memory_enabled)', () => {
  const devices = {
    edu: () => edu('7.3').dev,
    ivshmem: () => ivshmem('7.3').dev,
    nvme: () => nvmeDevice().instantiate({ env: heapEnvironment() }).device,
    e1000e: () => e1000eModel().instantiate({ env: heapEnvironment() }).device,
  };
  // [what, device, access, errno with memory decode off (undefined: it works)]
  type Access = (d: VfioPciDevice) => unknown;
  const rows: [string, keyof typeof devices, Access, number | undefined][] = [
    ['edu BAR0 pread (trapped)', 'edu', (d) => d.pread(bar(0), 4), Errno.EIO],
    ['edu BAR0 pwrite', 'edu', (d) => d.pwrite(bar(0, 4n), new Uint8Array(4)), Errno.EIO],
    ['edu BAR0 pread 8 bytes', 'edu', (d) => d.pread(bar(0), 8), Errno.EIO],
    ['ivshmem BAR2 pread (memory-backed)', 'ivshmem', (d) => d.pread(bar(2), 4), Errno.EIO],
    ['ivshmem BAR2 pwrite', 'ivshmem', (d) => d.pwrite(bar(2), new Uint8Array(4)), Errno.EIO],
    ['ivshmem BAR0 pread at the end stays EINVAL', 'ivshmem', (d) => d.pread(bar(0, 256n), 4), Errno.EINVAL],
    ['e1000e ROM pread (pci_map_rom finds no image)', 'e1000e', (d) => d.pread(bar(6), 4), Errno.ENOMEM],
    ['e1000e I/O BAR2 pread (not tested)', 'e1000e', (d) => d.pread(bar(2), 4), undefined],
    ['e1000e I/O BAR2 pwrite', 'e1000e', (d) => d.pwrite(bar(2), new Uint8Array(4)), undefined],
    ['nvme MSI-X table only (never reaches ioread)', 'nvme', (d) => d.pread(bar(0, 0x2000n), 16), undefined],
    ['nvme BAR0 across the table start', 'nvme', (d) => d.pread(bar(0, 0x1ffcn), 8), Errno.EIO],
    ['config region', 'edu', (d) => d.pread(CFG, 4), undefined],
    ['mmap of BAR0 (faults later in the kernel)', 'edu', (d) => d.mmap(bar(0), 4096).unmap(), undefined],
  ];
  for (const [name, which, access, errno] of rows)
    test(`${name}: ${errno === undefined ? 'ok' : errnoName(errno)}`, () => {
      const dev = devices[which]();
      assert.equal(
        errnoOf(() => access(dev)),
        errno === Errno.EINVAL ? Errno.EINVAL : undefined,
        'decode on',
      );
      command(dev, 0x0101); // I/O and SERR# kept, memory off
      assert.equal(
        errnoOf(() => access(dev)),
        errno,
      );
      command(dev, 0x0103);
      assert.equal(
        errnoOf(() => access(dev)),
        errno === Errno.EINVAL ? Errno.EINVAL : undefined,
        'decode on again',
      );
      dev.close();
    });
  test('opened with memory decode on (SeaBIOS 0x0103, pci_enable_device)', () => {
    const { dev } = edu('7.3');
    assert.equal(hex(dev.pread(CFG + 4n, 2)), '0301');
    assert.equal(dev.config.memoryEnabled, true);
  });
  test('I/O decode off: an I/O BAR reads all-ones (the device stops decoding), memory BARs still work', () => {
    const writes: number[] = [];
    const dev = new VfioPciDevice(
      e1000eModel().description,
      { bars: { 2: { read: () => 0x12345678n, write: (_o, _s, v) => void writes.push(Number(v)) } } },
      { env: heapEnvironment() },
    );
    assert.equal(hex(dev.pread(bar(2), 4)), '78563412', 'I/O decode on: the device answers');
    command(dev, 0x0102);
    assert.equal(hex(dev.pread(bar(2), 4)), 'ffffffff');
    assert.equal(dev.pwrite(bar(2), new Uint8Array([1, 0, 0, 0])), 4);
    assert.deepEqual(writes, [], 'the write went nowhere');
    assert.equal(dev.pread(bar(0), 4).length, 4);
  });
  test('D3hot gates BAR access like a clear memory bit', () => {
    const dev = devices.nvme();
    const pm = dev.config.capabilityOffset(0x01)!;
    dev.pwrite(CFG + BigInt(pm + 4), new Uint8Array([3, 0]));
    assert.equal(
      errnoOf(() => dev.pread(bar(0), 4)),
      Errno.EIO,
    );
    dev.pwrite(CFG + BigInt(pm + 4), new Uint8Array([0, 0]));
    assert.equal(dev.pread(bar(0), 4).length, 4);
  });
});

describe('trapped BAR access widths (vfio_pci_core_do_io_rw) and edu (hw/misc/edu.c)', () => {
  // [offset, length, 6.1 bytes, 7.3 bytes] of a fresh edu's BAR0, as the guests answered
  // (test/kernel/recorded) where the probe reads them.
  const reads: [bigint, number, string, string][] = [
    [0n, 4, 'ed000001', 'ed000001'],
    [0n, 8, 'ed00000100000000', 'ffffffffffffffff'],
    [4n, 4, '00000000', '00000000'],
    [0x100000n - 4n, 4, 'ffffffff', 'ffffffff'],
    [0x100000n - 1n, 1, '00', '00'],
    [1n, 3, '000000', '000000'],
    [1n, 2, '0000', '0000'],
    [0x80n, 8, '00000000ffffffff', '0000000000000000'],
    [0x84n, 4, 'ffffffff', 'ffffffff'],
    [0x0cn, 4, 'ffffffff', 'ffffffff'],
    [0x40000n, 8, '0000000000000000', '0000000000000000'],
  ];
  for (const [off, len, v61, v73] of reads)
    test(`edu BAR0 pread ${len} at 0x${off.toString(16)}: 6.1 ${v61}, 7.3 ${v73}`, () => {
      assert.equal(hex(edu('6.1').dev.pread(bar(0, off), len)), v61);
      assert.equal(hex(edu('7.3').dev.pread(bar(0, off), len)), v73);
    });
  const le64 = (v: bigint) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    return b;
  };
  test('DMA source: 8 bytes whole on 7.3; on 6.1 the high half goes to 0x84, which edu ignores', () => {
    const v = 0x1234_5678_9abc_def0n;
    const d73 = edu('7.3').dev;
    d73.pwrite(bar(0, 0x80n), le64(v));
    assert.equal(hex(d73.pread(bar(0, 0x80n), 8)), hex(le64(v)));
    assert.equal(hex(d73.pread(bar(0, 0x80n), 4)), 'f0debc9a', 'a 4-byte read is the low half');
    const d61 = edu('6.1').dev;
    d61.pwrite(bar(0, 0x80n), le64(v));
    assert.equal(hex(d61.pread(bar(0, 0x80n), 8)), 'f0debc9affffffff', '0x80 low half, 0x84 reads ~0');
  });
  test('edu: 1/2-byte writes and 8-byte writes below 0x80 are dropped', () => {
    const { dev } = edu('7.3');
    dev.pwrite(bar(0, 4n), new Uint8Array([1, 2]));
    dev.pwrite(bar(0, 8n), new Uint8Array([5]));
    dev.pwrite(bar(0, 0n), le64(0x5n << 32n)); // 8 bytes at 0: ID and liveness untouched
    assert.equal(hex(dev.pread(bar(0, 4n), 4)), '00000000');
    assert.equal(hex(dev.pread(bar(0, 8n), 4)), '00000000');
  });
  test('edu: a DMA command without START is not stored; DMA registers ignore writes while running', async () => {
    const { device: dev, state } = eduDevice().instantiate({ env: heapEnvironment(), profile: '7.3' });
    const w32 = (o: bigint, v: number) => dev.pwrite(bar(0, o), new Uint8Array(new Uint32Array([v]).buffer));
    const r32 = (o: bigint) => new DataView(dev.pread(bar(0, o), 4).buffer).getUint32(0, true);
    w32(0x98n, 2 | 4);
    assert.equal(r32(0x98n), 0, 'no START: dropped');
    const ram = new Uint8Array(0x2000).fill(0x5a);
    dev.dma.map(0x1000n, 0x2000n, { bytes: ram, readable: true, writable: true });
    w32(0x80n, 0x1000);
    w32(0x88n, 0x40000);
    w32(0x90n, 16);
    w32(0x98n, 1);
    assert.equal(r32(0x98n), 1, 'running');
    w32(0x90n, 32);
    w32(0x98n, 1 | 2);
    assert.equal(r32(0x90n), 16, 'count write ignored while running');
    assert.equal(r32(0x98n), 1, 'command write ignored while running');
    await dev.settled();
    assert.equal(r32(0x98n), 0);
    assert.equal(hex(state.dmaBuffer.subarray(0, 17)), `${'5a'.repeat(16)}00`);
  });
  test('edu: the RAM address is clamped to dma_mask (28 bits by default)', async () => {
    const { device: dev, model, state } = eduDevice().instantiate({ env: heapEnvironment(), profile: '7.3' });
    const ram = new Uint8Array(0x1000).fill(0x77);
    dev.dma.map(0x2000n, 0x1000n, { bytes: ram, readable: true, writable: true });
    dev.pwrite(bar(0, 0x80n), le64(0x1_1000_2000n)); // bits 28+ dropped: 0x2000
    dev.pwrite(bar(0, 0x88n), le64(0x40000n));
    dev.pwrite(bar(0, 0x90n), le64(4n));
    dev.pwrite(bar(0, 0x98n), le64(1n));
    await dev.settled();
    assert.equal(model.dmaError, undefined);
    assert.equal(hex(state.dmaBuffer.subarray(0, 4)), '77777777');
  });
  test('edu INTx is a level: asserted while the status is non-zero, lowered by the last ack', () => {
    const { env, dev } = edu('7.3');
    const efd = env.createEventfd();
    const fds = new Uint8Array(4);
    new DataView(fds.buffer).setInt32(0, efd.fd, true);
    const set = (flags: number, data = new Uint8Array()) =>
      dev.ioctl(A.VFIO_DEVICE_SET_IRQS, encodeVfioIrqSet({ flags, index: 0, start: 0, count: 1, data }));
    set(A.VFIO_IRQ_SET_DATA_EVENTFD | A.VFIO_IRQ_SET_ACTION_TRIGGER, fds);
    const unmask = () => set(A.VFIO_IRQ_SET_DATA_NONE | A.VFIO_IRQ_SET_ACTION_UNMASK);
    const w32 = (o: bigint, v: number) => dev.pwrite(bar(0, o), new Uint8Array(new Uint32Array([v]).buffer));
    const status = () => (u32(dev.pread(CFG + 4n, 4), 0) >>> 16) & 0x8;
    w32(0x60n, 0);
    assert.equal(efd.count, 0n, 'raising nothing with status 0 asserts nothing');
    w32(0x60n, 3);
    assert.equal(efd.count, 1n);
    assert.equal(status(), 0x8);
    unmask();
    assert.equal(efd.count, 2n, 'still asserted at unmask: signalled again');
    w32(0x64n, 1);
    assert.equal(status(), 0x8, 'status 2 left: still asserted');
    w32(0x64n, 2);
    assert.equal(status(), 0, 'last ack lowers INTx');
    unmask();
    assert.equal(efd.count, 2n, 'lowered: the unmask is quiet');
    w32(0x60n, 4);
    assert.equal(efd.count, 3n);
  });
});

describe('region access by index (readRegion/writeRegion, for transports)', () => {
  test('the same bytes and errnos as pread/pwrite at the region offset', () => {
    const { dev } = ivshmem();
    const off = dev.regionOffset(2);
    assert.equal(dev.writeRegion(2, 0x10n, Uint8Array.of(1, 2, 3, 4)), 4);
    assert.deepEqual([...dev.pread(off + 0x10n, 4)], [1, 2, 3, 4]);
    dev.pwrite(off + 0x20n, Uint8Array.of(9, 8));
    assert.deepEqual([...dev.readRegion(2, 0x20n, 2)], [9, 8]);
    assert.deepEqual(
      [...dev.readRegion(A.VFIO_PCI_CONFIG_REGION_INDEX, 0n, 2)],
      [...dev.pread(dev.regionOffset(7), 2)],
    );
    assert.equal(dev.region(2)?.size, 4n << 20n);
    assert.equal(dev.region(2)!.base, off);
    assert.equal(
      errnoOf(() => dev.readRegion(99, 0n, 4)),
      Errno.EINVAL,
    );
    assert.equal(
      errnoOf(() => dev.writeRegion(99, 0n, Uint8Array.of(1))),
      Errno.EINVAL,
    );
    const end = dev.region(2)!.size;
    assert.equal(
      errnoOf(() => dev.readRegion(2, end, 4)),
      errnoOf(() => dev.pread(off + end, 4)),
    );
    assert.equal(dev.readRegion(99, 0n, 0).length, 0);
  });

  test('readRegionInto: what readRegion reads, into the given bytes, with its errnos', () => {
    // Config space, a memory BAR, a trapped BAR (edu), a trapped BAR with the MSI-X table in it
    // (nvme BAR0: the table reads as 0xff), a read cut short at the region's end.
    const { dev } = ivshmem();
    dev.writeRegion(2, 0x10n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    const trapped = edu('7.3').dev; // 7.3: 8-byte trapped accesses too
    trapped.writeRegion(0, 4n, Uint8Array.of(0x78, 0x56, 0x34, 0x12)); // liveness: reads back inverted
    const nvme = nvmeDevice().instantiate({ env: heapEnvironment() }).device;
    const cases: [VfioPciDevice, number, bigint, number][] = [
      [dev, A.VFIO_PCI_CONFIG_REGION_INDEX, 0n, 64],
      [dev, A.VFIO_PCI_CONFIG_REGION_INDEX, 0x3dn, 3],
      [dev, 2, 0x10n, 8],
      [dev, 2, 0x11n, 3],
      [trapped, 0, 0n, 8],
      [trapped, 0, 4n, 4],
      [trapped, 0, 5n, 2],
      [nvme, 0, 0x1ff8n, 16],
      [nvme, 0, 0x3000n, 8],
    ];
    for (const [d, index, pos, length] of cases) {
      const dst = new Uint8Array(length).fill(0xa5);
      assert.equal(d.readRegionInto(index, Number(pos), dst), length);
      assert.deepEqual([...dst], [...d.readRegion(index, pos, length)], `region ${index} at ${pos}`);
    }
    const end = Number(dev.region(2)!.size);
    const tail = new Uint8Array(8);
    assert.equal(dev.readRegionInto(2, end - 2, tail), 2, 'cut short at the end, as pread');
    for (const [index, pos] of [
      [99, 0],
      [2, end],
      [A.VFIO_PCI_CONFIG_REGION_INDEX, 4094],
    ] as const)
      assert.equal(
        errnoOf(() => dev.readRegionInto(index, pos, new Uint8Array(4))),
        errnoOf(() => dev.readRegion(index, BigInt(pos), 4)),
        `region ${index} at ${pos}`,
      );
    for (const d of [trapped, nvme]) d.close();
  });
});
