/**
 * Regions: DEVICE_GET_REGION_INFO, DEVICE_GET_REGION_IO_FDS, and access (spec, "Read and Write
 * Operations"; libvfio-user is_valid_region_access): REGION_READ, REGION_WRITE,
 * REGION_WRITE_MULTI. Access goes to the device by region index (readRegionInto/writeRegion), with
 * bounds from the region itself: no REGION_INFO ioctl, no device-fd offset to decode again.
 */
import { Errno } from '../../abi/errno.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_PCI_VGA_REGION_INDEX } from '../../abi/vfio.js';
import {
  VfioUserRegionFlags,
  vfio_user_region_access,
  vfio_user_region_io_fds,
  vfio_user_region_write_multi,
} from '../../abi/vfio-user.js';
import { PAGE_SIZE } from '../../core/offsets.js';
import { fail, VfioError } from '../../errors.js';
import { struct } from '../../wire/struct.js';
import { regionInfoStruct } from '../../wire/vfio.js';
import {
  decodeIoFdsRequest,
  decodeRegionInfoRequest,
  decodeRegionReadRequest,
  decodeRegionWriteMulti,
  decodeRegionWriteRequest,
  type Frame,
} from '../../wire/vfio-user.js';
import { type ClientContext, type Reply, reply, xferMax } from '../context.js';
import type { DevicePort, PortRegion } from '../device-port.js';

/** The vfio-user REGION_INFO payload is struct vfio_region_info (spec, "VFIO_USER_DEVICE_GET_REGION_INFO"). */
const L = regionInfoStruct;
const ioFds = struct(vfio_user_region_io_fds);
const writeMulti = struct(vfio_user_region_write_multi);

/**
 * Region `index` where REGION_INFO answers it, else undefined: past the last region, and the
 * VGA region of a device without VGA (vfio_pci_ioctl_get_region_info: `if (!vdev->has_vga)
 * return -EINVAL`; a VGA region is never empty, so the core's placeholder is the one of size 0).
 */
export function regionOf(d: DevicePort, index: number): PortRegion | undefined {
  if (index >= d.numRegions) return undefined;
  const r = d.region(index);
  return r === undefined || (index === VFIO_PCI_VGA_REGION_INDEX && r.size === 0n) ? undefined : r;
}

/** The fd and fd offset of region `index`'s byte 0, when the region can be mmapped. */
export function regionFd(d: DevicePort, index: number): { fd: number; offset: bigint } | undefined {
  const r = d.region(index);
  if (r === undefined) return undefined;
  // The first page may be a hole (the MSI-X table): then the first sparse area that maps.
  const tries = [0n];
  for (const c of r.caps)
    if (c.kind === 'sparse-mmap') for (const a of c.areas) if (a.size > 0n) tries.push(a.offset);
  for (const at of tries) {
    try {
      const src = d.mappingSource(r.base + at, Number(PAGE_SIZE));
      if (src.memory.fd === undefined) return undefined;
      return { fd: src.memory.fd, offset: src.memoryOffset - at };
    } catch {
      // this page is not mappable (an MSI-X hole): try the next sparse area
    }
  }
  return undefined;
}

/**
 * The core's REGION_INFO of `index` in vfio_pci_ioctl_get_region_info's argsz exchange: first
 * with the bare struct to learn the full size (`need`), then with room for the capabilities
 * when the client's `argsz` has it.
 */
function regionInfoIoctl(d: DevicePort, index: number, argsz: number): { info: Uint8Array; need: number } {
  const ask = (size: number) => {
    const info = new Uint8Array(size);
    L.write(info, { argsz: size, index });
    d.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
    return info;
  };
  const info = ask(L.size);
  const need = L.get(info, 'argsz');
  return { info: need > L.size && argsz >= need ? ask(need) : info, need };
}

export function deviceGetRegionInfo(s: ClientContext, f: Frame): Reply {
  const req = decodeRegionInfoRequest(f.payload);
  const { info, need } = regionInfoIoctl(s.device, req.index, req.argsz);
  const whole = req.argsz >= need;
  let flags = L.get(info, 'flags');
  const fds: number[] = [];
  let offset = 0n;
  if (flags & VfioUserRegionFlags.MMAP) {
    // The fd lookup reads the sparse areas from the region even when the client's argsz left
    // the caps out of the reply.
    const src = regionFd(s.device, req.index);
    if (src === undefined) flags &= ~VfioUserRegionFlags.MMAP;
    else {
      // Spec: `offset` is the offset into the fd sent with the reply. libvfio-user attaches the
      // fd only when the whole reply fits the client's argsz; QEMU takes at most one fd.
      offset = src.offset;
      if (whole) fds.push(src.fd);
    }
  }
  L.write(info, { argsz: need, flags, offset });
  return { chunks: [info], fds };
}

export function deviceGetRegionIoFds(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS';
  const req = decodeIoFdsRequest(f.payload);
  // libvfio-user handle_device_get_region_io_fds: flags and count must be 0 in the request.
  if (req.flags !== 0 || req.count !== 0) fail(Errno.EINVAL, op, 'flags and count must be 0');
  // EINVAL for a region that does not exist (VGA on non-VGA devices too).
  if (regionOf(s.device, req.index) === undefined) fail(Errno.EINVAL, op, `region ${req.index}`);
  // No ioeventfds are offered: the 16-byte head with count 0, argsz 16.
  return reply(ioFds.encode({ argsz: ioFds.size, index: req.index }));
}

/** libvfio-user: count above max_data_xfer_size, a bad index, or an access past the region's end are all EINVAL. */
function checkAccess(s: ClientContext, op: string, region: number, offset: bigint, count: number): void {
  if (count > xferMax(s)) fail(Errno.EINVAL, op, `count ${count} > max_data_xfer_size ${xferMax(s)}`);
  const r = regionOf(s.device, region) ?? fail(Errno.EINVAL, op, `region ${region}`);
  if (offset + BigInt(count) > r.size)
    fail(Errno.EINVAL, op, `0x${offset.toString(16)}+${count} past the end of region ${region}`);
}

export function regionRead(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_READ';
  const r = decodeRegionReadRequest(f.payload);
  checkAccess(s, op, r.region, r.offset, r.count);
  // A view of the request: it is sent (or copied by the channel) before the buffer is reused.
  const head = f.payload.subarray(0, vfio_user_region_access.size);
  if (r.count === 0) return reply(head);
  // checkAccess put offset + count inside the region: the offset is exact as a number.
  const data = new Uint8Array(r.count);
  if (s.device.readRegionInto(r.region, Number(r.offset), data) !== r.count)
    fail(Errno.EINVAL, op, 'short read');
  return { chunks: [head, data], fds: [] };
}

export function regionWrite(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_WRITE';
  const w = decodeRegionWriteRequest(f.payload);
  checkAccess(s, op, w.region, w.offset, w.data.length);
  if (w.data.length > 0 && s.device.writeRegion(w.region, w.offset, w.data) !== w.data.length)
    fail(Errno.EINVAL, op, 'short write');
  // Reply: offset, region, count; no data.
  return reply(f.payload.subarray(0, vfio_user_region_access.size));
}

export function regionWriteMulti(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_WRITE_MULTI';
  // Only a client told `write_multiple` may send it (QEMU checks the server's capability).
  if (!s.negotiated?.writeMultiple) fail(Errno.EINVAL, op, 'write_multiple was not negotiated');
  const m = decodeRegionWriteMulti(f.payload);
  // Every entry is checked before any is applied: a bad entry fails the whole message with
  // EINVAL (as a REGION_WRITE would) and nothing has happened to the device.
  for (const [i, w] of m.writes.entries()) {
    try {
      checkAccess(s, op, w.region, w.offset, w.data.length);
    } catch (e) {
      if (e instanceof VfioError) fail(e.errno, op, `write ${i}: ${e.message}`);
      throw e;
    }
  }
  // Spec, "VFIO_USER_REGION_WRITE_MULTI": the reply's wr_cnt is "the number of device writes
  // completed". A write the device refuses or takes short stops the run there: the reply counts
  // the writes done before it, and only when none was done is the reply an error (its errno).
  // libvfio-user has no WRITE_MULTI to compare with; QEMU posts these and reads no reply.
  let done = 0;
  for (const w of m.writes) {
    if (w.data.length > 0) {
      let n: number;
      try {
        n = s.device.writeRegion(w.region, w.offset, w.data);
      } catch (e) {
        if (done === 0) throw e;
        break;
      }
      if (n !== w.data.length) {
        if (done === 0) fail(Errno.EINVAL, op, `write 0: short write (${n} of ${w.data.length})`);
        break;
      }
    }
    done++;
  }
  return reply(writeMulti.encode({ wr_cnt: BigInt(done) }));
}
