/**
 * The udmabuf uAPI (include/uapi/linux/udmabuf.h, drivers/dma-buf/udmabuf.c): a dma-buf made from
 * pages of a memfd sealed against shrinking. The kernel tests use it as a dma-buf that is not
 * vfio-pci's, which IOMMU_IOAS_MAP_FILE refuses (it imports only vfio-pci's:
 * vfio_pci_dma_buf_iommufd_map). Numbers only, checked against Linux 7.3's header by
 * test/abi/probe.test.ts.
 */
import { field, layout } from './layout.js';

/** _IOW('u', 0x42, struct udmabuf_create): direction write (1 << 30), size 24. */
export const UDMABUF_CREATE = (1 << 30) | (24 << 16) | (0x75 << 8) | 0x42;
export const UDMABUF_FLAGS_CLOEXEC = 0x01;
/** struct udmabuf_create { memfd, flags, offset, size } */
export const UDMABUF_CREATE_SIZE = 24;
/** The character device udmabuf registers (miscdevice "udmabuf"). */
export const UDMABUF_PATH = '/dev/udmabuf';

export const udmabuf_create = layout('udmabuf_create', UDMABUF_CREATE_SIZE, 'uapi', {
  memfd: field(0, 'u32'),
  flags: field(4, 'u32'),
  offset: field(8, 'u64'),
  size: field(16, 'u64'),
});
