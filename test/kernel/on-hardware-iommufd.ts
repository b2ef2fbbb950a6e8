/**
 * The kernel backend's device cdev path against the real iommufd and vfio-pci, run by Node inside
 * a guest of the kernels provision.sh builds with iommufd (in-guest.test.ts boots them:
 * 7.3-iommufd, where the group path exists beside the cdev, and 7.3-cdev, where only the cdev
 * does). Elsewhere it skips: outside a guest (VFIO_TS_GUEST unset), or in a kernel without
 * /dev/iommu (Debian's).
 *
 * A device proves each IOMMU mapping by doing DMA through it: QEMU's edu copies between an IOVA
 * and its internal buffer (test/kernel/guest-util.ts). The DMA_BUF tests export ivshmem's BAR2,
 * map the dma-buf into edu's IOAS with IOMMU_IOAS_MAP_FILE, and let edu read and write the BAR
 * peer to peer; a udmabuf (drivers/dma-buf/udmabuf.c) stands for a dma-buf that is not vfio-pci's.
 * Lines starting `IOMMUFD-` report what was measured (in-guest.test.ts repeats them).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { UDMABUF_CREATE, UDMABUF_FLAGS_CLOEXEC, UDMABUF_PATH } from '../../src/abi/dmabuf.js';
import { Errno, errnoName } from '../../src/abi/errno.js';
import { VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_BIND_IOMMUFD_SIZE } from '../../src/abi/iommufd.js';
import { VFIO_DEVICE_GET_INFO } from '../../src/abi/vfio.js';
import type { SharedMemory } from '../../src/core/env.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { IOMMUFD_PATH, type KernelDeviceFile, openKernelDevice } from '../../src/kernel/device.js';
import { bindVfioPci, iommuGroup, vfioCdevName } from '../../src/kernel/sysfs.js';
import {
  closeFd,
  ioctl,
  MAP_SHARED,
  mmap,
  O_CLOEXEC,
  O_RDWR,
  openPath,
  PROT_READ,
  PROT_WRITE,
  pread,
} from '../../src/native/index.js';
import { allocateShared } from '../../src/runtime.js';
import { bindIommufdStruct, udmabufCreateStruct } from '../../src/wire/iommufd.js';
import { deviceInfoStruct } from '../../src/wire/vfio.js';
import { EDU_DMA_MAX, eduDma, enableBusMaster, errnoOf, find, IDS, IN_GUEST } from './guest-util.js';

const IOMMUFD = IN_GUEST && existsSync(IOMMUFD_PATH);
const GROUPS = IN_GUEST && existsSync('/dev/vfio/vfio');
const PAGE = 4096n;
/** IOVAs below edu's 28-bit DMA mask. */
const IOVA_A = 0x10_0000n;
const IOVA_B = 0x20_0000n;
const IOVA_BAR = 0x40_0000n;
/** How much of ivshmem's BAR2 the dma-buf covers. */
const BAR_SPAN = 0x1_0000n;

/** A udmabuf of the first `size` bytes of memfd `fd` (sealed F_SEAL_SHRINK: udmabuf.c check_memfd_seals). */
function udmabuf(fd: number, size: number): number {
  const dev = openPath(UDMABUF_PATH, O_RDWR | O_CLOEXEC);
  try {
    const b = udmabufCreateStruct.encode({ memfd: fd, flags: UDMABUF_FLAGS_CLOEXEC, size: BigInt(size) });
    return ioctl(dev, UDMABUF_CREATE, b);
  } finally {
    closeFd(dev);
  }
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * seed + 7) & 0xff);

describe('iommufd and the VFIO device cdev (in a QEMU guest)', {
  skip: IOMMUFD ? false : 'runs only inside a guest whose kernel has iommufd (7.3-iommufd, 7.3-cdev)',
}, () => {
  const bdf = { edu: '', ivshmem: '' };
  let eduFile: KernelDeviceFile;
  let edu: VfioDevice;
  let ivFile: KernelDeviceFile;
  let iv: VfioDevice;
  const mem: SharedMemory[] = [];
  /** A memfd of `size` bytes, mapped here; closed after the tests. */
  const shared = (size: number): SharedMemory & { fd: number } => {
    const m = allocateShared('iommufd-test', size);
    mem.push(m);
    assert.ok(m.fd !== undefined);
    return { ...m, fd: m.fd };
  };

  before(async () => {
    bdf.edu = find(IDS.edu[0], IDS.edu[1]);
    bdf.ivshmem = find(IDS.ivshmem[0], IDS.ivshmem[1]);
    for (const b of Object.values(bdf)) bindVfioPci(b);
    eduFile = await openKernelDevice(bdf.edu);
    edu = new VfioDevice(eduFile);
    ivFile = await openKernelDevice(bdf.ivshmem);
    iv = new VfioDevice(ivFile);
    await enableBusMaster(edu);
  });
  after(async () => {
    await edu?.close();
    await iv?.close();
    for (const m of mem) m.close();
  });

  it('auto takes the cdev path: /dev/vfio/devices/vfioN bound to /dev/iommu, attached to an IOAS of its own', () => {
    for (const [name, f] of [
      ['edu', eduFile],
      ['ivshmem', ivFile],
    ] as const) {
      assert.equal(f.path, 'cdev', name);
      assert.equal(f.group, undefined);
      const o = f.opened;
      assert.ok(o.path === 'cdev');
      assert.equal(o.node, `/dev/vfio/devices/${vfioCdevName(bdf[name])}`);
      assert.ok(o.devid > 0 && o.ioas > 0, JSON.stringify(o));
      // The IOMMU group exists either way (sysfs); its /dev/vfio/N only where the kernel has groups.
      assert.equal(existsSync(`/dev/vfio/${iommuGroup(bdf[name])}`), GROUPS);
    }
  });

  it('a cdev fd answers EINVAL before VFIO_DEVICE_BIND_IOMMUFD; binding a device open elsewhere is EINVAL', async () => {
    const o = eduFile.opened;
    assert.ok(o.path === 'cdev');
    const fd = openPath(o.node, O_RDWR | O_CLOEXEC);
    try {
      const info = deviceInfoStruct.encode({ argsz: deviceInfoStruct.size });
      assert.throws(() => ioctl(fd, VFIO_DEVICE_GET_INFO, info), { errno: Errno.EINVAL });
      assert.throws(() => pread(fd, 4, 7n << 40n), { errno: Errno.EINVAL });
      const b = bindIommufdStruct.encode({ argsz: VFIO_DEVICE_BIND_IOMMUFD_SIZE, iommufd: -1 });
      assert.throws(() => ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, b), { errno: Errno.EINVAL });
    } finally {
      closeFd(fd);
    }
    // A second open of the same device through the cdev: vfio_df_open allows one.
    await assert.rejects(openKernelDevice(bdf.edu, { path: 'cdev' }), (e: unknown) => {
      assert.ok(e instanceof VfioError);
      assert.equal(e.errno, Errno.EINVAL);
      assert.match(e.message, /already open through another cdev fd\?/);
      return true;
    });
  });

  it('the group path and the cdev exclude each other (7.3-iommufd); without groups the group path is ENODEV naming why (7.3-cdev)', async () => {
    if (!GROUPS) {
      await assert.rejects(openKernelDevice(bdf.ivshmem, { path: 'group' }), (e: unknown) => {
        assert.ok(e instanceof VfioError);
        assert.equal(e.errno, Errno.ENODEV);
        assert.match(e.message, /only the device cdev path .*CONFIG_VFIO_GROUP off/);
        return true;
      });
      return;
    }
    // Bound through the cdev: opening the group is EBUSY (vfio_group_fops_open: cdev_device_open_cnt).
    assert.equal(await errnoOf(openKernelDevice(bdf.ivshmem, { path: 'group' })), Errno.EBUSY);
    await iv.close();
    const g = await openKernelDevice(bdf.ivshmem, { path: 'group' });
    try {
      assert.equal(g.path, 'group');
      // Open through the group: binding the cdev is EBUSY (vfio_device_block_group).
      await assert.rejects(openKernelDevice(bdf.ivshmem, { path: 'cdev' }), (e: unknown) => {
        assert.ok(e instanceof VfioError);
        assert.equal(e.errno, Errno.EBUSY);
        assert.match(e.message, /its group \/dev\/vfio\/\d+ is open/);
        return true;
      });
      const m = shared(4096);
      assert.equal(await errnoOf(g.dmaMapFile(IOVA_A, m.fd, 0n, PAGE)), Errno.EOPNOTSUPP);
    } finally {
      await g.close();
    }
    ivFile = await openKernelDevice(bdf.ivshmem);
    iv = new VfioDevice(ivFile);
    assert.equal(ivFile.path, 'cdev');
  });

  it('DMA through the IOAS: edu copies between memory mapped by IOMMU_IOAS_MAP (an address) and IOMMU_IOAS_MAP_FILE (a memfd); after IOMMU_IOAS_UNMAP its writes no longer land', async () => {
    const a = shared(8192);
    const b = shared(8192);
    const view = mmap(a.fd, 0n, a.size, PROT_READ | PROT_WRITE, MAP_SHARED);
    try {
      const data = pattern(EDU_DMA_MAX, 13);
      a.bytes.set(data);
      await eduFile.dmaMap(IOVA_A, { fd: a.fd, size: a.size, bytes: view.bytes, address: view.address });
      await eduFile.dmaMap(IOVA_B, { fd: b.fd, size: b.size, bytes: b.bytes });
      await eduDma(edu, 'toDevice', IOVA_A, EDU_DMA_MAX);
      await eduDma(edu, 'toRam', IOVA_B + PAGE, EDU_DMA_MAX);
      assert.deepEqual(b.bytes.subarray(4096, 4096 + EDU_DMA_MAX), data, 'IOVA_A -> edu -> IOVA_B');
      assert.equal(await eduFile.dmaUnmapped(IOVA_B, 8192n), 8192n);
      // Unmapped: the same DMA now faults in the IOMMU and the memory keeps what it had.
      b.bytes.fill(0x5a);
      await eduDma(edu, 'toRam', IOVA_B + PAGE, EDU_DMA_MAX);
      assert.ok(
        b.bytes.every((x) => x === 0x5a),
        'a DMA write to an unmapped IOVA reached the memory',
      );
      // Nothing mapped there any more: iommufd answers ENOENT (type1 would say 0 bytes).
      assert.equal(await errnoOf(eduFile.dmaUnmapped(IOVA_B, 8192n)), Errno.ENOENT);
      // Mapping over an existing mapping: EEXIST.
      assert.equal(
        await errnoOf(eduFile.dmaMap(IOVA_A, { fd: b.fd, size: 4096, bytes: b.bytes })),
        Errno.EEXIST,
      );
      await eduFile.dmaUnmap(IOVA_A, 8192n);
    } finally {
      view.unmap();
    }
  });

  it('DMA_BUF of ivshmem BAR2 mapped with IOMMU_IOAS_MAP_FILE: edu reads and writes the BAR peer to peer; memory decode off revokes the mapping', async () => {
    const ram = shared(8192);
    await eduFile.dmaMap(IOVA_B, { fd: ram.fd, size: ram.size, bytes: ram.bytes });
    const bar = pattern(256, 29);
    await iv.write(2, 0, bar);
    const dmabuf = await iv.exportDmaBuf(2, [{ offset: 0n, length: BAR_SPAN }]);
    try {
      await eduFile.dmaMapFile(IOVA_BAR, dmabuf, 0n, BAR_SPAN);
      // BAR -> edu -> RAM
      await eduDma(edu, 'toDevice', IOVA_BAR, 256);
      await eduDma(edu, 'toRam', IOVA_B, 256);
      assert.deepEqual(ram.bytes.subarray(0, 256), bar, 'edu read ivshmem BAR2 through the dma-buf IOVA');
      // RAM -> edu -> BAR (page 1 of the dma-buf)
      const back = pattern(256, 71);
      ram.bytes.set(back, 4096);
      await eduDma(edu, 'toDevice', IOVA_B + PAGE, 256);
      await eduDma(edu, 'toRam', IOVA_BAR + PAGE, 256);
      assert.deepEqual(await iv.read(2, 4096, 256), back, 'edu wrote ivshmem BAR2 through the dma-buf IOVA');
      console.log('IOMMUFD-P2P: edu read and wrote ivshmem BAR2 through IOMMU_IOAS_MAP_FILE of its DMA_BUF');

      // Memory decode off revokes the dma-buf (vfio_pci_dma_buf_move); iommufd unmaps it from the
      // IO page table (iopt_revoke_notify). edu's buffer is first filled with something else.
      const readBar = async (): Promise<Uint8Array> => {
        ram.bytes.fill(0x33, 0, 256);
        await eduDma(edu, 'toDevice', IOVA_B, 256);
        ram.bytes.fill(0x44, 0, 256);
        await eduDma(edu, 'toDevice', IOVA_BAR, 256);
        await eduDma(edu, 'toRam', IOVA_B, 256);
        return ram.bytes.slice(0, 256);
      };
      const cmd = await iv.readConfig(4, 2);
      await iv.writeConfig(4, new Uint8Array([cmd[0]! & ~0x02, cmd[1]!]));
      const off = await readBar();
      await iv.writeConfig(4, cmd);
      const on = await readBar();
      const show = (b: Uint8Array) => Buffer.from(b.subarray(0, 8)).toString('hex');
      console.log(
        `IOMMUFD-REVOKE: memory off: edu read ${show(off)}; memory on again: ${show(on)} (BAR2 holds ${show(bar)})`,
      );
      assert.notDeepEqual(off, bar, 'the revoked mapping still reached the BAR');
      assert.notDeepEqual(on, bar, 'iommufd mapped the revoked dma-buf again by itself');
      // Unmapping the revoked area and mapping the dma-buf again restores it.
      assert.equal(await eduFile.dmaUnmapped(IOVA_BAR, BAR_SPAN), BAR_SPAN);
      await eduFile.dmaMapFile(IOVA_BAR, dmabuf, 0n, BAR_SPAN);
      assert.deepEqual(await readBar(), bar, 'mapped again after the revoke');
      await eduFile.dmaUnmap(IOVA_BAR, BAR_SPAN);
    } finally {
      await eduFile.closeFd(dmabuf);
      await eduFile.dmaUnmap(IOVA_B, 8192n);
    }
  });

  it('IOMMU_IOAS_MAP_FILE takes only a vfio-pci dma-buf of one range, within its size', async () => {
    // A dma-buf that is not vfio-pci's: iommufd is no generic dma-buf importer (iommufd.h).
    const m = shared(4096);
    const ub = udmabuf(m.fd, 4096);
    try {
      const e = await errnoOf(eduFile.dmaMapFile(IOVA_BAR, ub, 0n, PAGE));
      console.log(
        `IOMMUFD-UDMABUF: IOMMU_IOAS_MAP_FILE of a udmabuf: ${e === undefined ? 'mapped' : errnoName(e)}`,
      );
      assert.equal(e, Errno.EOPNOTSUPP);
    } finally {
      closeFd(ub);
    }
    const two = await iv.exportDmaBuf(2, [
      { offset: 0n, length: PAGE },
      { offset: 2n * PAGE, length: PAGE },
    ]);
    const one = await iv.exportDmaBuf(2, [{ offset: 0n, length: PAGE }]);
    try {
      // vfio_pci_dma_buf_iommufd_map: "More than one range to iommufd will require proper DMABUF support".
      assert.equal(await errnoOf(eduFile.dmaMapFile(IOVA_BAR, two, 0n, 2n * PAGE)), Errno.EOPNOTSUPP);
      // iopt_alloc_dmabuf_pages: start + length beyond the dma-buf.
      assert.equal(await errnoOf(eduFile.dmaMapFile(IOVA_BAR, one, 0n, 2n * PAGE)), Errno.EINVAL);
      assert.equal(await errnoOf(eduFile.dmaMapFile(IOVA_BAR, one, PAGE, PAGE)), Errno.EINVAL);
    } finally {
      await eduFile.closeFd(two);
      await eduFile.closeFd(one);
    }
  });
});
