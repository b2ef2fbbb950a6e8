/**
 * mmap cookies are a bounded resource: a device holds at most maxMmapCookies live cookies (GET
 * past it is ENOSPC, the errno the core uses for exhausted offset space), and a client that
 * leaves holding the maximum is cleaned up with a bounded offset-space structure. (Cleanup time
 * is measured in bench/core.ts, never asserted here.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../../src/abi/vfio.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import { OffsetSpace } from '../../src/core/offsets.js';
import { MAX_MMAP_COOKIES } from '../../src/core/wc.js';
import { concat, message, u32, u64 } from '../fuzz/server.js';
import { rig } from './rig.js';

/** struct vfio_device_feature + vfio_ts_mmap_cookie (index, flags, offset, size). */
const cookieGet = () =>
  concat(u32(8 + 24, VFIO_DEVICE_FEATURE_GET | VFIO_TS_FEATURE_MMAP_COOKIE), u32(2, 0), u64(0n), u64(0n));
const cookieRelease = (cookie: bigint) =>
  concat(u32(8 + 24, VFIO_DEVICE_FEATURE_SET | VFIO_TS_FEATURE_MMAP_COOKIE), u32(2, 1), u64(cookie), u64(0n));

describe('mmap cookies: maxMmapCookies', () => {
  it('GET past the limit is ENOSPC; a release makes room', async () => {
    const r = rig('ivshmem', {}, { maxMmapCookies: 8 });
    const c = r.connect();
    await c.negotiate();
    const got: bigint[] = [];
    for (let i = 0; i < 8; i++) {
      const f = await c.call(C.DEVICE_FEATURE, cookieGet());
      assert.equal(f?.errno, 0, `cookie ${i}`);
      got.push(new DataView(f!.payload.buffer, f!.payload.byteOffset).getBigUint64(16, true));
    }
    assert.equal((await c.call(C.DEVICE_FEATURE, cookieGet()))?.errno, Errno.ENOSPC);
    assert.equal(r.device.cookieCount, 8);
    assert.equal((await c.call(C.DEVICE_FEATURE, cookieRelease(got[3]!)))?.errno, 0);
    assert.equal((await c.call(C.DEVICE_FEATURE, cookieGet()))?.errno, 0);
    assert.equal((await c.call(C.DEVICE_FEATURE, cookieGet()))?.errno, Errno.ENOSPC);
    c.close();
    await r.server.idle();
    assert.equal(r.device.cookieCount, 0);
    r.close();
  });

  it('NO_REPLY GETs stop at the default limit; a client leaving with all of them is cleaned up', async () => {
    const r = rig('ivshmem');
    const baseline = r.device.offsets.size;
    const c = r.connect();
    await c.negotiate();
    // Twice the limit as NO_REPLY (the audit's flood), in batches the socket takes.
    const batch: Uint8Array[] = [];
    for (let i = 0; i < 64; i++)
      batch.push(message(0, C.DEVICE_FEATURE, cookieGet(), VfioUserFlags.NO_REPLY));
    const burst = concat(...batch);
    for (let sent = 0; sent < 2 * MAX_MMAP_COOKIES; sent += 64) {
      c.send(burst);
      // A round trip per batch keeps the socket from filling.
      assert.equal((await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0);
    }
    assert.equal(r.device.cookieCount, MAX_MMAP_COOKIES);
    assert.equal((await c.call(C.DEVICE_FEATURE, cookieGet()))?.errno, Errno.ENOSPC);
    assert.equal(r.device.offsets.size, baseline + MAX_MMAP_COOKIES);
    c.close();
    await r.server.idle();
    assert.equal(r.device.cookieCount, 0);
    assert.equal(r.device.offsets.size, baseline);
    assert.equal(r.device.offsets.slots, baseline, 'no tombstones left behind');
    r.close();
  });
});

describe('OffsetSpace: release leaves tombstones, bounded by compaction', () => {
  it('releasing in allocation order keeps slots within twice the live count', () => {
    const s = new OffsetSpace<number>(63);
    const n = 10_000;
    const bases: bigint[] = [];
    for (let i = 0; i < n; i++) bases.push(s.allocate(4096n, i).base);
    let worst = 0;
    for (let i = 0; i < n; i++) {
      assert.equal(s.release(bases[i]!), true);
      assert.equal(s.release(bases[i]!), false, 'a second release of the same base');
      assert.equal(s.lookup(bases[i]!), undefined);
      if (i + 1 < n) assert.equal(s.lookup(bases[i + 1]!)?.owner, i + 1);
      worst = Math.max(worst, s.slots - 2 * s.size);
    }
    assert.ok(worst <= 65, `slots exceeded 2 x live + 65 by ${worst}`);
    assert.equal(s.size, 0);
    assert.equal(s.slots, 0);
  });

  it('a released gap is found again once the tail is full', () => {
    const s = new OffsetSpace<number>(14); // 4 pages
    const b = [0, 1, 2, 3].map((i) => s.allocate(4096n, i).base);
    assert.throws(() => s.allocate(4096n, 9), { errno: Errno.ENOSPC });
    s.release(b[1]!);
    assert.equal(s.allocate(4096n, 5).base, b[1]);
    assert.equal(s.lookup(b[1]!)?.owner, 5);
  });
});
