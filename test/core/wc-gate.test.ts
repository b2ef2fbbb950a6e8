/**
 * The one write-combining gate (src/core/wc.ts grantWc, docs/wc-uapi.md): every request path —
 * the RFC's SET_REGION_FLAGS, an mmap cookie, an alias region, a DMA_BUF with ATTR_WC — asked
 * for WC on four kinds of BAR, under both policy settings. A granted request must also map WC
 * through the one mmap end point; a refused one is EINVAL, whichever path asked.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import * as A from '../../src/abi/vfio.js';
import { type DeviceOptions, VfioPciDevice } from '../../src/core/device.js';
import { heapEnvironment } from '../../src/core/env.js';
import { e1000eModel } from '../../src/devices/e1000e.js';
import { eduDevice } from '../../src/devices/edu.js';
import { ivshmemDevice } from '../../src/devices/ivshmem.js';
import { nvmeDevice } from '../../src/devices/nvme.js';
import { VfioDevice } from '../../src/driver/device.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { VfioError } from '../../src/errors.js';
import {
  aliasRegionStruct,
  decodeMmapCookie,
  encodeAliasRegionGet,
  encodeDmaBuf,
  encodeMmapCookieGet,
  encodeVfioDeviceFeature,
  FEATURE_DATA,
  regionFlagsStruct,
} from '../../src/wire/vfio.js';

const WC = A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC;
const UC = A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC;
const PAGE = 4096;

type Path = 'rfc-region-flags' | 'cookie' | 'alias-region' | 'dma-buf';
const PATHS: readonly Path[] = ['rfc-region-flags', 'cookie', 'alias-region', 'dma-buf'];
/** What a request gives: the attribute and path of a page mapped through it, or the errno name. */
type Outcome = string;

/** The four kinds of BAR, on the models that have them (7.3 profile, every extension). */
const BARS = {
  'memory, not prefetchable (nvme BAR0)': { make: nvme, bar: 0 },
  'memory, prefetchable (ivshmem BAR2)': { make: ivshmem, bar: 2 },
  'I/O (e1000e BAR2)': { make: e1000e, bar: 2 },
  'trapped, not mmappable (edu BAR0)': { make: edu, bar: 0 },
} as const;
type BarCase = keyof typeof BARS;

function options(wcRequiresPrefetch: boolean): DeviceOptions {
  return { env: heapEnvironment(), profile: '7.3', wcRequiresPrefetch };
}
/** nvme's layout with BAR0 as plain memory (the controller behind it traps its registers). */
function nvme(strict: boolean) {
  const d = nvmeDevice().description;
  const bars = [{ ...d.bars[0]!, backing: 'memory' as const }, ...d.bars.slice(1)];
  return new VfioPciDevice({ ...d, bars }, {}, options(strict));
}
function ivshmem(strict: boolean) {
  return ivshmemDevice().instantiate(options(strict)).device;
}
function e1000e(strict: boolean) {
  return e1000eModel().instantiate(options(strict)).device;
}
function edu(strict: boolean) {
  return eduDevice().instantiate(options(strict)).device;
}

/** Asks for WC on `bar` through `path`, then maps a page through what it granted. */
function request(dev: VfioPciDevice, bar: number, path: Path): Outcome {
  try {
    let m: { attribute: string; via: string };
    switch (path) {
      case 'rfc-region-flags':
        dev.ioctl(
          A.VFIO_DEVICE_SET_REGION_FLAGS,
          regionFlagsStruct.encode({ index: bar, flags: A.VFIO_REGION_FLAG_WRITE_COMBINE }),
        );
        m = dev.mmap(dev.regionOffset(bar), PAGE);
        break;
      case 'cookie': {
        const arg = encodeMmapCookieGet(bar, WC);
        dev.ioctl(A.VFIO_DEVICE_FEATURE, arg);
        m = dev.mmap(decodeMmapCookie(arg).offset, PAGE);
        break;
      }
      case 'alias-region': {
        const arg = encodeAliasRegionGet(bar, WC);
        dev.ioctl(A.VFIO_DEVICE_FEATURE, arg);
        m = dev.mmap(dev.regionOffset(aliasRegionStruct.get(arg, 'alias_index', FEATURE_DATA)), PAGE);
        break;
      }
      case 'dma-buf': {
        const fd = dmaBuf(dev, bar, WC);
        m = dev.mmapDmaBuf(fd, 0n, PAGE);
        break;
      }
    }
    return `${m.attribute} via ${m.via}`;
  } catch (e) {
    if (e instanceof VfioError) return e.code;
    throw e;
  }
}

function dmaBuf(dev: VfioPciDevice, bar: number, attr: number): number {
  const data = encodeDmaBuf({
    regionIndex: bar,
    openFlags: 2, // O_RDWR
    flags: attr,
    ranges: [{ offset: 0n, length: BigInt(PAGE) }],
  });
  return dev.ioctl(
    A.VFIO_DEVICE_FEATURE,
    encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_DEVICE_FEATURE_DMA_BUF, data),
  );
}

/** Per BAR, per policy: the four paths in PATHS order. Written out, not derived. */
const GRANTED: readonly Outcome[] = PATHS.map((p) => `wc via ${p}`);
const REFUSED: readonly Outcome[] = ['EINVAL', 'EINVAL', 'EINVAL', 'EINVAL'];
const EXPECTED: Readonly<Record<BarCase, { strict: readonly Outcome[]; relaxed: readonly Outcome[] }>> = {
  'memory, not prefetchable (nvme BAR0)': { strict: REFUSED, relaxed: GRANTED },
  'memory, prefetchable (ivshmem BAR2)': { strict: GRANTED, relaxed: GRANTED },
  'I/O (e1000e BAR2)': { strict: REFUSED, relaxed: REFUSED },
  'trapped, not mmappable (edu BAR0)': { strict: REFUSED, relaxed: REFUSED },
};

describe('the WC gate: every path, every kind of BAR, both policies', () => {
  for (const [name, { make, bar }] of Object.entries(BARS) as [BarCase, (typeof BARS)[BarCase]][])
    for (const policy of ['strict', 'relaxed'] as const)
      test(`${name}, wcRequiresPrefetch: ${policy === 'strict'}`, () => {
        const got = PATHS.map((path) => {
          const dev = make(policy === 'strict');
          try {
            return request(dev, bar, path);
          } finally {
            dev.close();
          }
        });
        assert.deepEqual(got, EXPECTED[name][policy]);
      });
});

describe("the gate is for WC; UC keeps each path's own rules", () => {
  test('a UC dma-buf of a non-prefetchable BAR is exported and maps UC (7.3 exports any memory BAR)', () => {
    const dev = nvme(true);
    const m = dev.mmapDmaBuf(dmaBuf(dev, 0, UC), 0n, PAGE);
    assert.deepEqual([m.attribute, m.via], ['uc', 'dma-buf']);
    dev.close();
  });
  test('a UC dma-buf of a trapped BAR is exported (7.3) but the one mmap end point refuses it', () => {
    const dev = edu(false);
    const fd = dmaBuf(dev, 0, UC);
    assert.ok(fd > 0);
    assert.throws(() => dev.mmapDmaBuf(fd, 0n, PAGE), { errno: Errno.EINVAL });
    // mmapTrappedBars (the kernel's view of real MMIO) makes the same BAR mappable, UC and WC.
    const kernelLike = eduDevice().instantiate({
      ...options(false),
      mmapTrappedBars: true,
    }).device;
    assert.equal(request(kernelLike, 0, 'dma-buf'), 'wc via dma-buf');
    dev.close();
    kernelLike.close();
  });
  test('clearing the RFC flag never fails for a BAR index, whatever the BAR', () => {
    const dev = e1000e(true);
    for (let bar = 0; bar < A.PCI_STD_NUM_BARS; bar++)
      dev.ioctl(A.VFIO_DEVICE_SET_REGION_FLAGS, regionFlagsStruct.encode({ index: bar, flags: 0 }));
    dev.close();
  });
});

describe('what the driver offers follows the gate (npm start lists these)', () => {
  const cases: [string, () => VfioPciDevice, number, string[]][] = [
    ['nvme BAR0, strict', () => nvme(true), 0, []],
    ['nvme BAR0, relaxed', () => nvme(false), 0, ['cookie', 'dma-buf', 'alias-region']],
    ['ivshmem BAR2', () => ivshmem(true), 2, ['cookie', 'dma-buf', 'alias-region', 'rfc-region-flags']],
  ];
  for (const [name, make, bar, paths] of cases)
    test(`${name}: ${paths.join(', ') || 'no WC path'}`, async () => {
      const dev = new VfioDevice(new LocalDeviceFile(make()));
      try {
        assert.deepEqual(await dev.wcPaths(bar), paths);
      } finally {
        await dev.close();
      }
    });
});
