/** DMA_MAP / DMA_UNMAP (spec; vfio.h type1 semantics, libvfio-user handle_dma_map/unmap). */
import { Errno } from '../../abi/errno.js';
import { VfioUserDmaMapFlags, VfioUserDmaUnmapFlags } from '../../abi/vfio-user.js';
import { fail } from '../../errors.js';
import { decodeDmaMap, decodeDmaUnmap, type Frame } from '../../wire/vfio-user.js';
import { type ClientContext, EMPTY, type Reply, reply } from '../context.js';
import { checkFileRangeAligned, clientMemory, memoryIdentity } from '../dma-memory.js';

export function dmaMap(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_DMA_MAP';
  const m = decodeDmaMap(f.payload);
  const known = VfioUserDmaMapFlags.READ | VfioUserDmaMapFlags.WRITE;
  if ((m.flags & ~known) >>> 0 !== 0) fail(Errno.EINVAL, op, `flags 0x${m.flags.toString(16)}`);
  const fd = f.fds[0];
  const dma = s.device.dma;
  if (fd !== undefined) checkFileRangeAligned(op, m);
  // libvfio-user lib/dma.c dma_controller_add_region, in its order: the same range again is
  // success when offset, file and prot match (EINVAL otherwise); an overlap is EINVAL; past
  // max_dma_maps is EINVAL. (type1 would say EEXIST and ENOSPC; the in-process core does.)
  const identity = memoryIdentity(m, fd);
  const existing = dma.exact(m.address, m.size);
  if (existing) {
    if (existing.identity !== identity)
      fail(Errno.EINVAL, op, `0x${m.address.toString(16)} is mapped with another fd, offset or prot`);
    return EMPTY; // the session closes the fd; the existing mapping stays
  }
  if (dma.overlaps(m.address, m.size))
    fail(Errno.EINVAL, op, `0x${m.address.toString(16)} overlaps a mapping`);
  if (dma.count >= s.limits.maxDmaMaps) fail(Errno.EINVAL, op, `${s.limits.maxDmaMaps} DMA regions already`);
  const target = clientMemory(op, m, fd, identity, {
    read: (iova, length) => s.dmaRead(iova, length),
    write: (iova, data) => s.dmaWrite(iova, data),
  });
  try {
    dma.map(m.address, m.size, target);
  } catch (e) {
    target.release?.();
    throw e;
  }
  return EMPTY;
}

export function dmaUnmap(s: ClientContext, f: Frame): Reply {
  const u = decodeDmaUnmap(f.payload, 'command');
  // UNMAP_ALL (vfio.h VFIO_DMA_UNMAP_FLAG_ALL, address and size 0): not in the spec's table,
  // whose flags are "unused in this version", but QEMU sends it (hw/vfio-user/container.c:
  // vfio_user_dma_unmap) and libvfio-user handles it (handle_dma_unmap).
  if (u.flags & VfioUserDmaUnmapFlags.ALL) s.device.dma.unmapAll();
  else if (!s.device.dma.unmapExact(u.address, u.size)) {
    // Spec: "The address and size of the DMA region being unmapped must match exactly a previous
    // mapping" — no type1-style range unmap. libvfio-user dma_controller_remove_region: ENOENT
    // when no mapping starts at the address or its size differs.
    fail(
      Errno.ENOENT,
      'VFIO_USER_DMA_UNMAP',
      `no mapping is exactly 0x${u.address.toString(16)}+0x${u.size.toString(16)}`,
    );
  }
  // Spec: "The server responds with the original DMA entry".
  return reply(f.payload.slice(0, 24));
}
