/**
 * The VFIO device cdev path (Documentation/driver-api/vfio.rst, "VFIO Device cdev";
 * drivers/vfio/device_cdev.c): /dev/vfio/devices/vfioN is opened, bound to an iommufd
 * (/dev/iommu: VFIO_DEVICE_BIND_IOMMUFD) and attached to an IO address space of its own
 * (IOMMU_IOAS_ALLOC, VFIO_DEVICE_ATTACH_IOMMUFD_PT). DMA maps go to that IOAS: IOMMU_IOAS_MAP for
 * an address of this process, IOMMU_IOAS_MAP_FILE for a memfd or a vfio-pci dma-buf.
 *
 * What the kernel refuses here, and why (seen in the 7.3-iommufd and 7.3-cdev guests):
 * - BIND is EPERM when another member of the IOMMU group is bound to a driver that does DMA
 *   itself (iommufd_bind_iommu → iommu_device_claim_dma_owner: the group is not viable; the
 *   group path reports the same as not viable in VFIO_GROUP_GET_STATUS, EBUSY here), and when
 *   the group's MSI cannot be isolated (no interrupt remapping);
 * - BIND is EBUSY while the device's group is open through /dev/vfio/N (vfio_device_block_group);
 * - BIND is EINVAL when the device is already open through another cdev fd (vfio_df_open: only
 *   the group path may open a device more than once);
 * - every other ioctl, pread, pwrite and mmap of the fd is EINVAL until BIND succeeds
 *   (df->access_granted).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Errno } from '../abi/errno.js';
import {
  IOMMU_DESTROY,
  IOMMU_DESTROY_SIZE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOC_SIZE,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FILE_SIZE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_SIZE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_IOAS_UNMAP_SIZE,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_BIND_IOMMUFD_SIZE,
} from '../abi/iommufd.js';
import { fail, VfioError } from '../errors.js';
import { closeFd, ioctl, O_CLOEXEC, O_RDWR, openPath } from '../native/index.js';
import {
  attachIommufdPtStruct,
  bindIommufdStruct,
  ioasAllocStruct,
  ioasMapFileStruct,
  ioasMapStruct,
  ioasUnmapStruct,
  iommuDestroyStruct,
} from '../wire/iommufd.js';
import { groupViability, iommuGroup, vfioCdevName } from './sysfs.js';

export const IOMMUFD_PATH = '/dev/iommu';
export const VFIO_CDEV_DIR = '/dev/vfio/devices';

/** The IOMMU side of an open device, on either path: where its DMA maps go. */
export interface IommuContext {
  map(iova: bigint, vaddr: bigint, size: bigint, read: boolean, write: boolean): void;
  /** Maps `size` bytes of file `fd` from `start` (the cdev path only: IOMMU_IOAS_MAP_FILE). */
  mapFile?(iova: bigint, fd: number, start: bigint, size: bigint, read: boolean, write: boolean): void;
  /** Returns how many bytes the kernel unmapped. */
  unmap(iova: bigint, size: bigint): bigint;
  close(): void;
}

/** What openViaCdev opened: the device fd, its IOAS, and the ids iommufd gave them. */
export interface CdevOpen {
  deviceFd: number;
  iommu: IommuContext;
  /** `out_devid` of VFIO_DEVICE_BIND_IOMMUFD. */
  devid: number;
  /** The IOAS the device is attached to. */
  ioas: number;
  /** /dev/vfio/devices/vfioN. */
  cdev: string;
}

const accessFlags = (read: boolean, write: boolean): number =>
  IOMMU_IOAS_MAP_FIXED_IOVA | (read ? IOMMU_IOAS_MAP_READABLE : 0) | (write ? IOMMU_IOAS_MAP_WRITEABLE : 0);

/** VFIO_DEVICE_BIND_IOMMUFD, its EPERM / EBUSY / EINVAL explained (see the header comment). */
function bind(
  deviceFd: number,
  iommufd: number,
  bdf: string,
  cdev: string,
  sysfs: string | undefined,
): number {
  const b = bindIommufdStruct.encode({ argsz: VFIO_DEVICE_BIND_IOMMUFD_SIZE, iommufd });
  try {
    ioctl(deviceFd, VFIO_DEVICE_BIND_IOMMUFD, b);
  } catch (e) {
    if (!(e instanceof VfioError)) throw e;
    if (e.errno === Errno.EPERM || e.errno === Errno.EBUSY) {
      const group = iommuGroup(bdf, sysfs);
      const blocking = groupViability(bdf, sysfs).blocking.map((m) => `${m.bdf} (${m.driver})`);
      if (blocking.length)
        fail(
          e.errno,
          'VFIO_DEVICE_BIND_IOMMUFD',
          `IOMMU group ${group} is not viable: every device in it must be unbound or bound to vfio-pci, a vfio-pci variant, pci-stub or pcieport; bound elsewhere: ${blocking.join(', ')}`,
        );
      if (e.errno === Errno.EBUSY && existsSync(`/dev/vfio/${group}`))
        fail(
          Errno.EBUSY,
          'VFIO_DEVICE_BIND_IOMMUFD',
          `${cdev}: its group /dev/vfio/${group} is open (the legacy group path holds the device: vfio_device_block_group)`,
        );
      if (e.errno === Errno.EPERM)
        fail(
          Errno.EPERM,
          'VFIO_DEVICE_BIND_IOMMUFD',
          `${cdev}: MSI of IOMMU group ${group} cannot be isolated (no interrupt remapping: iommufd_bind_iommu; iommufd.allow_unsafe_interrupts=1 overrides), or another owner holds the group`,
        );
    }
    if (e.errno === Errno.EINVAL)
      fail(
        Errno.EINVAL,
        'VFIO_DEVICE_BIND_IOMMUFD',
        `${cdev}: is it already open through another cdev fd? (a device binds through its cdev once: vfio_df_open)`,
      );
    throw e;
  }
  return bindIommufdStruct.get(b, 'out_devid');
}

/** /dev/vfio/devices/vfioN bound to a new iommufd and attached to a new IOAS. */
export function openViaCdev(bdf: string, sysfs: string | undefined): CdevOpen {
  if (!existsSync(IOMMUFD_PATH))
    fail(
      Errno.ENODEV,
      'open kernel device',
      `${IOMMUFD_PATH} is missing: the kernel has no iommufd (CONFIG_IOMMUFD), so no device cdev path`,
    );
  const name = vfioCdevName(bdf, sysfs);
  if (name === undefined)
    fail(
      Errno.ENODEV,
      'open kernel device',
      `${bdf} has no vfio-dev/vfioN in sysfs: not bound to vfio-pci (vfio-ts bind ${bdf}), or the kernel has no device cdev (CONFIG_VFIO_DEVICE_CDEV, CONFIG_IOMMUFD)`,
    );
  const cdev = join(VFIO_CDEV_DIR, name);
  if (!existsSync(cdev))
    fail(
      Errno.ENODEV,
      'open kernel device',
      `${cdev} is missing: the kernel has no device cdev (CONFIG_VFIO_DEVICE_CDEV)`,
    );
  const fds: number[] = [];
  try {
    const deviceFd = openPath(cdev, O_RDWR | O_CLOEXEC);
    fds.push(deviceFd);
    const iommufd = openPath(IOMMUFD_PATH, O_RDWR | O_CLOEXEC);
    fds.push(iommufd);
    const devid = bind(deviceFd, iommufd, bdf, cdev, sysfs);
    const alloc = ioasAllocStruct.encode({ size: IOMMU_IOAS_ALLOC_SIZE });
    ioctl(iommufd, IOMMU_IOAS_ALLOC, alloc);
    const ioas = ioasAllocStruct.get(alloc, 'out_ioas_id');
    const attach = attachIommufdPtStruct.encode({ argsz: VFIO_DEVICE_ATTACH_IOMMUFD_PT_SIZE, pt_id: ioas });
    ioctl(deviceFd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, attach);
    return { deviceFd, iommu: ioasContext(iommufd, ioas), devid, ioas, cdev };
  } catch (e) {
    for (const fd of fds.reverse()) closeFd(fd);
    throw e;
  }
}

/** IOMMU_IOAS_MAP / MAP_FILE / UNMAP on `ioas`; close destroys it and closes the iommufd. */
function ioasContext(iommufd: number, ioas: number): IommuContext {
  return {
    map(iova, vaddr, length, read, write) {
      const flags = accessFlags(read, write);
      const b = ioasMapStruct.encode({
        size: IOMMU_IOAS_MAP_SIZE,
        flags,
        ioas_id: ioas,
        user_va: vaddr,
        length,
        iova,
      });
      ioctl(iommufd, IOMMU_IOAS_MAP, b);
    },
    mapFile(iova, fd, start, length, read, write) {
      const flags = accessFlags(read, write);
      const size = IOMMU_IOAS_MAP_FILE_SIZE;
      const b = ioasMapFileStruct.encode({ size, flags, ioas_id: ioas, fd, start, length, iova });
      ioctl(iommufd, IOMMU_IOAS_MAP_FILE, b);
    },
    unmap(iova, length) {
      const b = ioasUnmapStruct.encode({ size: IOMMU_IOAS_UNMAP_SIZE, ioas_id: ioas, iova, length });
      ioctl(iommufd, IOMMU_IOAS_UNMAP, b);
      // drivers/iommu/iommufd/ioas.c: iommufd_ioas_unmap writes back the length it unmapped.
      return ioasUnmapStruct.get(b, 'length');
    },
    close() {
      const d = iommuDestroyStruct.encode({ size: IOMMU_DESTROY_SIZE, id: ioas });
      try {
        ioctl(iommufd, IOMMU_DESTROY, d);
      } catch {
        // The IOAS goes with the iommufd anyway.
      }
      closeFd(iommufd);
    },
  };
}
