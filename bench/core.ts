/**
 * The in-process device core: raw uAPI calls on the model (sync), the same through the driver
 * API (async, as every backend is), and the WC machinery (cookie allocation, offset lookup).
 * Run: `node dist/bench/core.js`.
 */
import * as A from '../src/abi/vfio.js';
import { heapEnvironment } from '../src/core/env.js';
import { createDevice } from '../src/devices/index.js';
import { VfioDevice } from '../src/driver/device.js';
import { LocalDeviceFile } from '../src/driver/local.js';
import { encodeVfioDeviceFeature, putU32, u64 } from '../src/wire/vfio.js';
import { type BenchRow, isMain, measure, measureAsync, printTable } from './lib.js';

/** Live cookies for the offset-lookup row: above the default cap (MAX_MMAP_COOKIES, 4096). */
const LOOKUP_COOKIES = 10_000;

export async function runCoreBench(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  // The cap raised for this device only (what --max-mmap-cookies does): the lookup row holds
  // LOOKUP_COOKIES at once, and past the default 4096 a GET is ENOSPC.
  const dev = createDevice('ivshmem', { env: heapEnvironment(), maxMmapCookies: LOOKUP_COOKIES + 16 });
  const edu = createDevice('edu', { env: heapEnvironment() });
  const bar0 = dev.regionOffset(0);
  rows.push(measure('model pread 4 B (ivshmem BAR0, memory)', () => dev.pread(bar0, 4)));
  rows.push(measure('model pread 4 B (edu BAR0, trapped)', () => edu.pread(0n, 4)));
  // Register handlers take and return a bigint at every width (src/core/define.ts).
  rows.push(measure('model pread 8 B (edu BAR0 0x80, trapped)', () => edu.pread(0x80n, 8)));
  const four = new Uint8Array([1, 0, 0, 0]);
  rows.push(measure('model pwrite 4 B (edu BAR0 0x04, trapped)', () => edu.pwrite(4n, four)));
  rows.push(measure('model pread 4 B (config space)', () => dev.pread(dev.regionOffset(7), 4)));
  const info = new Uint8Array(32);
  rows.push(
    measure('model REGION_INFO ioctl', () => {
      putU32(info, 0, 32);
      putU32(info, 8, 2);
      dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, info);
    }),
  );
  const data = new Uint8Array(24);
  putU32(data, 0, 2);
  putU32(data, 4, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
  const rel = new Uint8Array(24);
  putU32(rel, 4, A.VFIO_TS_MMAP_COOKIE_FLAG_RELEASE);
  rows.push(
    measure('cookie GET + RELEASE', () => {
      const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
      dev.ioctl(A.VFIO_DEVICE_FEATURE, b);
      rel.set(b.subarray(16, 24), 8);
      dev.ioctl(
        A.VFIO_DEVICE_FEATURE,
        encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_SET | A.VFIO_TS_FEATURE_MMAP_COOKIE, rel),
      );
    }),
  );
  // Offset lookup with LOOKUP_COOKIES live cookies (binary search over the offset space).
  let last = 0n;
  for (let i = 0; i < LOOKUP_COOKIES; i++) {
    const b = encodeVfioDeviceFeature(A.VFIO_DEVICE_FEATURE_GET | A.VFIO_TS_FEATURE_MMAP_COOKIE, data);
    dev.ioctl(A.VFIO_DEVICE_FEATURE, b);
    last = u64(b, 16);
  }
  const ranges = LOOKUP_COOKIES + dev.numRegions;
  rows.push(
    measure(`offset lookup among ${ranges.toLocaleString('en')} ranges`, () => dev.offsets.lookup(last)),
  );
  const drv = new VfioDevice(new LocalDeviceFile(dev));
  await drv.regionInfo(0);
  rows.push(await measureAsync('driver read 4 B (async, in-process)', () => drv.read(0, 0, 4)));
  return rows;
}

if (isMain(import.meta.url)) printTable('device core', await runCoreBench());
