/**
 * DMA_MAP's memory policy: how the memory a client names becomes a DmaTarget the device reaches
 * (src/core/dma.ts). Three kinds, by what came with the message:
 *
 * - no fd: the device reaches the range through DMA_READ / DMA_WRITE messages to the client;
 * - an fd sealed against shrinking (F_SEAL_SHRINK, as QEMU's memfd guest RAM and vfio-ts's own
 *   allocateShared are): it is mmapped and the device touches the bytes directly;
 * - any other fd: a dup of it is read and written with pread/pwrite, so a file shrunk later
 *   gives the device EFAULT, never the server a SIGBUS.
 *
 * The fd itself is never kept (the session closes it after the message): the mapping, or the dup,
 * is what lives on, released with the range.
 */
import { Errno } from '../abi/errno.js';
import { VfioUserDmaMapFlags } from '../abi/vfio-user.js';
import type { DmaTarget, RemoteMemory } from '../core/dma.js';
import { PAGE_SIZE } from '../core/offsets.js';
import { fail, VfioError } from '../errors.js';
import {
  closeFd,
  dupFd,
  F_SEAL_SHRINK,
  fstatIdentity,
  fstatSize,
  getSeals,
  MAP_SHARED,
  MAX_MAPPING_BYTES,
  mmap,
  PROT_READ,
  PROT_WRITE,
  pread,
  pwrite,
} from '../native/index.js';
import type { DmaMap } from '../wire/vfio-user.js';

/**
 * vfio_iommu_type1.c vfio_dma_do_map: iova and size must be page aligned (EINVAL); a mapping of
 * a file is made of pages. Only for a range with an fd: without one the client serves every
 * byte by message, and libvfio-user's REGION_ACCESS_MODE_MSG needs no alignment.
 */
export function checkFileRangeAligned(op: string, m: DmaMap): void {
  if (m.address % PAGE_SIZE !== 0n || m.size % PAGE_SIZE !== 0n)
    fail(
      Errno.EINVAL,
      op,
      `iova 0x${m.address.toString(16)} / size 0x${m.size.toString(16)} not page aligned`,
    );
}

/**
 * What backs the range, compared when the same range is mapped again (DmaTarget.identity;
 * libvfio-user dma_controller_add_region: the same file, offset and prot is the same mapping).
 */
export function memoryIdentity(m: DmaMap, fd: number | undefined): string {
  return fd === undefined ? `msg:${m.flags}` : `${fstatIdentity(fd)}@${m.offset}:${m.flags}`;
}

/**
 * The DmaTarget for DMA_MAP `m` with `fd` (or none: `messages` reaches the client). An fd range
 * is checked first (EINVAL). The caller registers the target and, if that fails, calls its
 * `release` (which unmaps or closes the dup).
 */
export function clientMemory(
  op: string,
  m: DmaMap,
  fd: number | undefined,
  identity: string,
  messages: RemoteMemory,
): DmaTarget {
  const readable = (m.flags & VfioUserDmaMapFlags.READ) !== 0;
  const writable = (m.flags & VfioUserDmaMapFlags.WRITE) !== 0;
  if (fd === undefined) return { readable, writable, identity, remote: messages };
  if (m.size === 0n || m.size > BigInt(MAX_MAPPING_BYTES)) fail(Errno.EINVAL, op, `size ${m.size}`);
  if (m.offset % PAGE_SIZE !== 0n)
    fail(Errno.EINVAL, op, `offset 0x${m.offset.toString(16)} not page aligned`);
  // A mapping past the end of the file would SIGBUS the server on the device's first access
  // (mmap(2)); refuse it.
  if (m.offset + m.size > fstatSize(fd)) {
    fail(
      Errno.EINVAL,
      op,
      `offset 0x${m.offset.toString(16)} + size 0x${m.size.toString(16)} past the end of the fd`,
    );
  }
  if (shrinkSealed(fd)) {
    // The file can never get shorter: map it and let the device touch the bytes directly.
    const prot = PROT_READ | (writable ? PROT_WRITE : 0);
    const mapping = mmap(fd, m.offset, Number(m.size), prot, MAP_SHARED);
    return { bytes: mapping.bytes, readable, writable, identity, release: () => mapping.unmap() };
  }
  // An unsealed file could be truncated under a mapping, and the next device access would kill
  // the server with SIGBUS. Reach it with pread/pwrite instead: a shrunk file reads short, and
  // the device sees EFAULT.
  const own = dupFd(fd);
  const at = (iova: bigint) => m.offset + (iova - m.address);
  return {
    readable,
    writable,
    identity,
    remote: {
      read: async (iova, length) => {
        const b = pread(own, length, at(iova));
        if (b.length !== length) fail(Errno.EFAULT, 'DMA read', 'client memory file shrank');
        return b;
      },
      // A write past a shrunk file's end grows it again: harmless to the server.
      write: async (iova, data) => {
        if (pwrite(own, data, at(iova)) !== data.length) fail(Errno.EFAULT, 'DMA write', 'short write');
      },
    },
    release: () => closeFd(own),
  };
}

/** F_SEAL_SHRINK: the file behind `fd` can never get shorter (memfd_create(2), File sealing). */
function shrinkSealed(fd: number): boolean {
  try {
    return (getSeals(fd) & F_SEAL_SHRINK) !== 0;
  } catch (e) {
    if (e instanceof VfioError) return false; // not a sealable file (EINVAL): treat as unsealed
    throw e;
  }
}
