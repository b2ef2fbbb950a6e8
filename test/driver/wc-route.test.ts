/**
 * VfioDevice.wcPaths and map() with a backend that has a WC route outside the device fd (the
 * kernel backend's sysfs resourceN_wc): the route is offered exactly where the backend says it
 * exists (writeCombiningRoute), not for every mappable BAR, and the EOPNOTSUPP says why not.
 * The model plays a kernel without extensions (no PREFETCH flag, no cookies, no WC DMA_BUF).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { NO_EXTENSIONS } from '../../src/core/index.js';
import { createDevice } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import type { Mapping, VfioDeviceFile } from '../../src/driver/file.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { VfioError } from '../../src/errors.js';
import { nativeEnvironment } from '../../src/runtime.js';

/** The model's device fd plus a fake sysfs WC route that exists for `bars` only. */
function withRoute(bars: readonly number[]): { dev: VfioDevice; mapped: number[] } {
  const local = new LocalDeviceFile(
    createDevice('ivshmem', { env: nativeEnvironment(), extensions: NO_EXTENSIONS }),
  );
  const mapped: number[] = [];
  const file: VfioDeviceFile = Object.assign(Object.create(local) as VfioDeviceFile, {
    async mapWriteCombining(region: number, offset: bigint, length: number): Promise<Mapping> {
      mapped.push(region);
      const m = await local.mmap((BigInt(region) << 40n) + offset, length);
      return { ...m, attribute: 'wc' as const, via: 'sysfs-resource-wc' as const };
    },
    writeCombiningRoute(region: number) {
      return bars.includes(region)
        ? { available: true, note: 'fake resourceN_wc' }
        : { available: false, note: `no resource${region}_wc (only prefetchable memory BARs have one)` };
    },
  });
  return { dev: new VfioDevice(file), mapped };
}

test('sysfs-resource-wc is listed only for BARs whose route exists', async () => {
  const { dev } = withRoute([2]);
  assert.deepEqual(await dev.wcPaths(2), ['sysfs-resource-wc']);
  assert.deepEqual(await dev.wcPaths(0), []);
  const none = withRoute([]);
  assert.deepEqual(await none.dev.wcPaths(2), []);
});

test('map WC goes through the route where it exists; elsewhere EOPNOTSUPP with the reason', async () => {
  const { dev, mapped } = withRoute([2]);
  const m = await dev.map(2, { attribute: 'wc', length: 4096 });
  assert.deepEqual([m.via, m.attribute, mapped], ['sysfs-resource-wc', 'wc', [2]]);
  m.unmap();
  await assert.rejects(dev.map(0, { attribute: 'wc' }), (e: unknown) => {
    assert.ok(e instanceof VfioError);
    assert.equal(e.errno, Errno.EOPNOTSUPP);
    assert.match(e.message, /no resource0_wc/);
    return true;
  });
  assert.deepEqual(mapped, [2], 'the route was not tried for BAR0');
});
