/**
 * What the vfio-user client accepts from a server: every count, size and fd a reply may carry is
 * bounded here, so that a hostile server (a less privileged process than the driver or VMM that
 * connects to it, spec "Introduction") can neither crash, hang nor exhaust the client.
 * docs/robustness.md ("The client") lists each limit with what a breach gets.
 *
 * Where QEMU's own vfio-user client (hw/vfio-user/) has a limit, ours is the same.
 */
import { VFIO_USER_HEADER_SIZE, vfio_user_region_access } from '../abi/vfio-user.js';

/**
 * Time a request waits for its reply (QEMU's `x-msg-timeout` defaults to 5000 ms; ours is the
 * server's own DMA_REQUEST_TIMEOUT_MS, which gives a loaded machine more slack). Past it the
 * request fails ETIMEDOUT and the connection is dropped: a late reply can never be matched to
 * a later request.
 */
export const CLIENT_REQUEST_TIMEOUT_MS = 10_000;

/** fds per message we propose and take (QEMU hw/vfio-user/protocol.h VFIO_USER_MAX_MAX_FDS). */
export const CLIENT_MAX_MSG_FDS = 16;

/** Data per REGION_READ/WRITE and DMA_READ/WRITE we propose (spec default, QEMU's). */
export const CLIENT_MAX_DATA_XFER_SIZE = 1024 * 1024;

/** Largest max_data_xfer_size a client may be configured with (QEMU VFIO_USER_MAX_MAX_XFER). */
export const MAX_CLIENT_DATA_XFER_SIZE = 64 * 1024 * 1024;

/**
 * Most regions and IRQ indexes a DEVICE_GET_INFO reply may report: QEMU hw/vfio-user/device.c
 * VFIO_USER_MAX_REGIONS and VFIO_USER_MAX_IRQS ("to defend against a malign server trying to
 * force us to run out of memory"). vfio-pci has 9 regions plus a few device-specific ones and
 * 5 IRQ indexes (VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS).
 */
export const CLIENT_MAX_REGIONS = 100;
export const CLIENT_MAX_IRQS = 50;

/** Most vectors one IRQ index may report: MSI-X's Table Size field is 11 bits (PCI spec 7.7.2.2). */
export const CLIENT_MAX_IRQ_COUNT = 2048;

/** Largest region-info reply asked for (a capability chain this long is refused as E2BIG). */
export const MAX_REGION_INFO_REPLY = 64 * 1024;

/** Largest VERSION reply (the server's own MAX_VERSION_PAYLOAD). */
export const MAX_VERSION_REPLY = 64 * 1024;

/** Largest DEVICE_FEATURE reply (the server's MAX_FEATURE_PAYLOAD). */
export const MAX_FEATURE_REPLY = 64 * 1024;

/**
 * Largest DMA_LOGGING_REPORT bitmap we take in one reply (the server's MAX_REPORT_BITMAP, 256 KiB:
 * 8 GiB of 4 KiB pages); VERSION proposes it as migration.max_bitmap_size, and a larger report is
 * asked for in pieces (migration.ts).
 */
export const MAX_DIRTY_BITMAP = 256 * 1024;

/** Longest MIG_DEVICE_STATE SET may take: the server's quiesce limit (30 s) and a flush. */
export const CLIENT_MIGRATION_TIMEOUT_MS = 60_000;

/**
 * Largest reply to a command whose reply is one fixed struct (DEVICE_GET_INFO, IRQ_INFO,
 * SET_IRQS, RESET, DMA_MAP/UNMAP, REGION_WRITE): the server's MAX_FIXED_PAYLOAD.
 */
export const MAX_FIXED_REPLY = 256;

/**
 * The largest message a server may send us: a REGION_READ reply or DMA_WRITE command of
 * `maxDataXferSize` bytes, or a VERSION / region-info / feature reply, whichever is larger.
 * Anything larger breaks the stream (the connection is dropped, pending requests ECONNRESET).
 */
export function clientMessageSize(maxDataXferSize: number): number {
  const data = maxDataXferSize + vfio_user_region_access.size;
  const report = 8 + 24 + MAX_DIRTY_BITMAP; // a DMA_LOGGING_REPORT reply
  return (
    VFIO_USER_HEADER_SIZE +
    Math.max(data, MAX_REGION_INFO_REPLY, MAX_VERSION_REPLY, MAX_FEATURE_REPLY, report)
  );
}

/**
 * What to do with a region, cookie or dma-buf fd that is not sealed against shrinking
 * (F_SEAL_SHRINK, memfd_create(2) "File sealing"). A mapping of a file that its owner later
 * shrinks raises SIGBUS on the next touch, which kills the process: no error can be returned.
 *
 * - 'refuse' (default): mmap fails EPERM. Our server's memory is sealed (src/runtime.ts
 *   allocateShared), so nothing is lost with it; the threat model (docs/robustness.md) says a
 *   server must not be able to kill the client.
 * - 'map': map it after the size check (fstat), trusting the server not to shrink it later:
 *   for servers that pass whatever fd their device registered (QEMU's x-vfio-user-server,
 *   libvfio-user devices such as SPDK's), which are trusted by whoever chose them.
 */
export type UnsealedFdPolicy = 'refuse' | 'map';
export const DEFAULT_UNSEALED_FD_POLICY: UnsealedFdPolicy = 'refuse';
