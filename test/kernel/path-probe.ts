/**
 * The cases whose answer depends on how the device was opened — through its group and a type1
 * container, or through its cdev bound to an iommufd — run only on the kernel (guest-probe.ts),
 * once per path, and compared path against path (differential.test.ts). The model answers like a
 * device fd opened through its group and keeps no IOMMU of its own, so it is not asked these.
 *
 * - device fd: the iommufd ioctls (VFIO_DEVICE_BIND_IOMMUFD, ATTACH/DETACH_IOMMUFD_PT exist only
 *   on a cdev fd: drivers/vfio/vfio_main.c vfio_device_fops_unl_ioctl), and GET_PCI_HOT_RESET_INFO
 *   (PCI_HOT_RESET's group list depends on the path too, but the model answers it for either
 *   path, DeviceOptions.opened, so the probe sequence asks it: probe-sequence.ts);
 * - DMA maps: VFIO_IOMMU_MAP_DMA / UNMAP_DMA on the container (drivers/vfio/vfio_iommu_type1.c)
 *   against IOMMU_IOAS_MAP / UNMAP on the IOAS (drivers/iommu/iommufd/io_pagetable.c).
 */
import { errnoName } from '../../src/abi/errno.js';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_BIND_IOMMUFD_SIZE,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE,
} from '../../src/abi/iommufd.js';
import { VFIO_DEVICE_GET_PCI_HOT_RESET_INFO } from '../../src/abi/vfio.js';
import { VfioError } from '../../src/errors.js';
import type { KernelDeviceFile } from '../../src/kernel/device.js';
import { MAP_SHARED, mmap, PROT_READ, PROT_WRITE } from '../../src/native/index.js';
import { allocateShared } from '../../src/runtime.js';
import { attachIommufdPtStruct, bindIommufdStruct, detachIommufdPtStruct } from '../../src/wire/iommufd.js';
import { hotResetInfoStruct } from '../../src/wire/vfio.js';
import type { ProbeCase } from './probe-sequence.js';

const PAGE = 4096n;
/** Where the DMA cases map (below any device's DMA mask, away from the MSI window). */
const IOVA = 0x10_0000n;

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/** `ok <detail>` or `errno <NAME>`; anything but a VfioError is a bug in the probe. */
async function answer(f: () => Promise<string>): Promise<string> {
  try {
    return `ok ${await f()}`.trim();
  } catch (e) {
    if (e instanceof VfioError) return `errno ${errnoName(e.errno)}`;
    throw e;
  }
}

/** Runs the path cases on an open kernel device; `iommufd` is an fd of /dev/iommu, if any. */
export async function runPathProbe(
  file: KernelDeviceFile,
  iommufd: number | undefined,
): Promise<ProbeCase[]> {
  const cases: ProbeCase[] = [];
  const add = async (name: string, request: string, f: () => Promise<string>) => {
    cases.push({ name, request, result: await answer(f) });
  };
  const io = (name: string, request: number, arg: Uint8Array) =>
    add(name, hex(arg), async () => String(await file.ioctl(request, arg)));

  // --- the iommufd ioctls on the device fd ---
  // A second bind: the group path's fd is EINVAL (`if (df->group)`), a bound cdev fd too.
  const attach = (pt_id: number, flags = 0) =>
    attachIommufdPtStruct.encode({ argsz: VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE, flags, pt_id });
  await io(
    'BIND_IOMMUFD on the open fd',
    VFIO_DEVICE_BIND_IOMMUFD,
    bindIommufdStruct.encode({ argsz: VFIO_DEVICE_BIND_IOMMUFD_SIZE, iommufd: iommufd ?? -1 }),
  );
  await io('ATTACH_IOMMUFD_PT pt_id=0', VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach(0));
  await io('ATTACH_IOMMUFD_PT unknown flag', VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach(0, 1 << 7));
  await io(
    'DETACH_IOMMUFD_PT',
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    detachIommufdPtStruct.encode({ argsz: VFIO_DEVICE_DETACH_IOMMUFD_PT_SIZE }),
  );
  const ioas = file.opened.path === 'cdev' ? file.opened.ioas : 0;
  await io('ATTACH_IOMMUFD_PT the IOAS again', VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach(ioas));
  // --- hot reset: the probe sequence asks PCI_HOT_RESET (the model answers it per path) ---
  const resetInfo = hotResetInfoStruct.encode({ argsz: 12 }, 64 - hotResetInfoStruct.size);
  await io('GET_PCI_HOT_RESET_INFO argsz=12', VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, resetInfo);

  // --- DMA maps: the container's answers against the IOAS's ---
  const mem = allocateShared('path-probe', 4 * Number(PAGE));
  // Mapped here so the backend maps by address on both paths (VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP).
  const view = mmap(mem.fd!, 0n, mem.size, PROT_READ | PROT_WRITE, MAP_SHARED);
  const address = view.address;
  try {
    const RW = { read: true, write: true };
    /** A case that maps `pages` of the memfd (or `vaddr`) at `iova`. */
    const map =
      (iova: bigint, pages: number, access = RW, vaddr = address) =>
      async () => {
        const size = pages * Number(PAGE);
        await file.dmaMap(iova, { fd: mem.fd, size, bytes: view.bytes, address: vaddr }, access);
        return '';
      };
    const unmap = (iova: bigint, size: bigint) => async () => String(await file.dmaUnmapped(iova, size));
    await add('DMA map 2 pages', `map ${IOVA} 2`, map(IOVA, 2));
    await add('DMA map the same again', `map ${IOVA} 2`, map(IOVA, 2));
    await add('DMA map overlapping its 2nd page', `map ${IOVA + PAGE} 2`, map(IOVA + PAGE, 2));
    await add('DMA unmap its 1st page only', `unmap ${IOVA} 1`, unmap(IOVA, PAGE));
    await add('DMA unmap its 2nd page only', `unmap ${IOVA + PAGE} 1`, unmap(IOVA + PAGE, PAGE));
    await add('DMA unmap 3 pages over it', `unmap ${IOVA} 3`, unmap(IOVA, 3n * PAGE));
    await add('DMA unmap where nothing is mapped', `unmap ${IOVA} 2`, unmap(IOVA, 2n * PAGE));
    await add('DMA map read-only', `map ${IOVA} 1 r`, map(IOVA, 1, { read: true, write: false }));
    await add('DMA unmap the read-only page', `unmap ${IOVA} 1`, unmap(IOVA, PAGE));
    const none = { read: false, write: false };
    await add('DMA map neither readable nor writable', `map ${IOVA} 1 -`, map(IOVA, 1, none));
    await add('DMA map at 1<<52', `map ${1n << 52n} 1`, map(1n << 52n, 1));
    await add(
      'DMA map an address with nothing mapped',
      `map ${IOVA} 1 vaddr 0x1000`,
      map(IOVA, 1, RW, 0x1000n),
    );
    await add('DMA unmap all that is left', 'unmap 0 1<<47', unmap(0n, 1n << 47n));
  } finally {
    view.unmap();
    mem.close();
  }
  return cases;
}
