/**
 * Our server hands out only memory sealed against shrinking (src/runtime.ts allocateShared seals
 * every memfd F_SEAL_SHRINK | F_SEAL_GROW; dma-bufs and cookies are dups of it), so the client's
 * default policy (unsealedFds: 'refuse', src/client/limits.ts) maps all of it: region fds,
 * cookie fds, dma-buf fds, alias regions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_GET,
} from '../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { createDevice } from '../../src/devices/index.js';
import { VfioDevice, WC_PATH_ORDER } from '../../src/driver/device.js';
import { closeFd, F_SEAL_SHRINK, getSeals, socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { encodeDmaBuf, encodeMmapCookieGet, encodeVfioDeviceFeature } from '../../src/wire/vfio.js';
import { encodeRegionInfoRequest } from '../../src/wire/vfio-user.js';
import { RawClient } from '../fuzz/client.js';
import { servedClient } from './rig.js';

test('every fd our server sends for mapping is sealed against shrinking', async () => {
  const device = createDevice('ivshmem', { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const [a, b] = socketPair();
  server.adopt(b);
  const c = new RawClient(a);
  await c.negotiate();
  const got = [];
  for (const index of [0, 2]) {
    const q = encodeRegionInfoRequest({ argsz: 4096, flags: 0, index, capOffset: 0, size: 0n, offset: 0n });
    got.push(await c.call(C.DEVICE_GET_REGION_INFO, q, [], true));
  }
  got.push(
    await c.call(C.DEVICE_FEATURE, encodeMmapCookieGet(2, VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC), [], true),
  );
  const dmabuf = encodeDmaBuf({
    regionIndex: 2,
    openFlags: 0o2000002,
    flags: 0,
    ranges: [{ offset: 0n, length: 4096n }],
  });
  got.push(
    await c.call(
      C.DEVICE_FEATURE,
      encodeVfioDeviceFeature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, dmabuf),
      [],
      true,
    ),
  );
  const fds = got.flatMap((r) => r?.fds ?? []);
  assert.equal(fds.length, 4, 'BAR0, BAR2, a cookie and a dma-buf each came with an fd');
  for (const fd of fds) {
    assert.ok(getSeals(fd) & F_SEAL_SHRINK, `fd ${fd} is not sealed against shrinking`);
    closeFd(fd);
  }
  c.close();
  await server.idle();
  server.stop();
  device.close();
});

test("the default client (unsealedFds: 'refuse') maps our server's BARs by every path", async () => {
  const s = await servedClient('ivshmem');
  try {
    const dev = new VfioDevice(s.client);
    const m0 = await dev.map(0);
    m0.unmap();
    for (const path of WC_PATH_ORDER.slice(0, 3)) {
      const m = await dev.map(2, { attribute: 'wc', path, length: 8192 });
      m.bytes[8191] = 1;
      assert.equal(m.via, path);
      m.unmap();
    }
  } finally {
    await s.close();
  }
});
