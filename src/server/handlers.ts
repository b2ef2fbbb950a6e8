/**
 * The handler table of the vfio-user server: one small function per command, each turning a
 * validated message into a reply (payload chunks, the fds to attach, and what to do once sent)
 * or throwing VfioError / MalformedError, which the session turns into an error reply.
 *
 * Handlers never close the message's fds: the session closes every received fd after the
 * handler returns (nothing here keeps one: DMA_MAP keeps the mapping, the core dups eventfds).
 *
 * Device requests go through the core's ioctl with the payload laid out as the vfio.h struct, so
 * the server answers exactly what vfio-pci answers; the handlers only translate what differs on
 * the wire (argsz of the 16-byte device info, region offsets that become fd offsets, fds).
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../abi/vfio.js';
import {
  VfioUserCommand as C,
  VfioUserCapKey as K,
  VFIO_USER_MAJOR,
  VFIO_USER_MINOR,
  VfioUserDmaMapFlags,
  VfioUserDmaUnmapFlags,
  VfioUserFeatureFlags,
  VfioUserRegionFlags,
  vfio_user_region_access,
  vfio_user_region_info,
  vfio_user_region_io_fds,
} from '../abi/vfio-user.js';
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
import {
  type CapabilitiesInput,
  capabilitiesJson,
  decodeDeviceFeature,
  decodeDeviceInfo,
  decodeDmaMap,
  decodeDmaUnmap,
  decodeIoFdsRequest,
  decodeIrqInfo,
  decodeIrqSet,
  decodeRegionInfoReply,
  decodeRegionInfoRequest,
  decodeRegionReadRequest,
  decodeRegionWriteMulti,
  decodeRegionWriteRequest,
  decodeVersion,
  encodeVersion,
  type Frame,
  proposedCapabilities,
} from '../wire/vfio-user.js';
import type { Session } from './session.js';

/** A success reply: payload chunks (gathered by sendmsg), fds to attach, and a hook once sent. */
export interface Reply {
  readonly chunks: readonly Uint8Array[];
  readonly fds: readonly number[];
  readonly after?: () => void;
}

export interface HandlerEntry {
  /** Smallest payload (bytes after the header) the command can have. */
  readonly minPayload: number;
  /** Largest payload accepted; more is EINVAL (libvfio-user is_valid_header: too large). */
  maxPayload(s: Session): number;
  /** Most fds the message may carry; more is EINVAL (all are closed). */
  maxFds(s: Session): number;
  handle(s: Session, f: Frame): Reply;
}

// SERVER_MAX_MSG_FDS and SERVER_MAX_DATA_XFER_SIZE moved to limits.ts (configurable per server).
export { SERVER_MAX_DATA_XFER_SIZE, SERVER_MAX_MSG_FDS } from './limits.js';
/** Payload cap of the commands whose payload is one fixed struct (extra bytes are ignored). */
export const MAX_FIXED_PAYLOAD = 256;
/** Payload cap of VERSION (QEMU's proposal is about 200 bytes). */
export const MAX_VERSION_PAYLOAD = 64 * 1024;
/** Payload cap of SET_IRQS (DATA_BOOL: one byte per vector; MSI-X has at most 2048). */
export const MAX_SET_IRQS_PAYLOAD = 20 + 4096;
/** Payload cap of DEVICE_FEATURE: a dma-buf request of up to (64 KiB - 32) / 16 ranges fits. */
export const MAX_FEATURE_PAYLOAD = 64 * 1024;
/** Most writes in one REGION_WRITE_MULTI (QEMU coalesces at most 200). */
export const MAX_WRITE_MULTI = 1024;

const EMPTY: Reply = { chunks: [], fds: [] };
const le32 = (b: Uint8Array, o: number) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(o, true);
const put32 = (b: Uint8Array, o: number, v: number) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(o, v, true);
const put64 = (b: Uint8Array, o: number, v: bigint) =>
  new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(o, v, true);

const fixed = (size: number, handle: HandlerEntry['handle'], fds = 0): HandlerEntry => ({
  minPayload: size,
  maxPayload: () => MAX_FIXED_PAYLOAD,
  maxFds: () => fds,
  handle,
});

const xferMax = (s: Session) => s.negotiated?.maxDataXferSize ?? s.limits.maxDataXferSize;

// ---------------------------------------------------------------------------------------------
// VERSION (spec, "VFIO_USER_VERSION")
// ---------------------------------------------------------------------------------------------
function version(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_VERSION';
  if (s.negotiated) fail(Errno.EINVAL, op, 'already negotiated');
  const v = decodeVersion(f.payload);
  // libvfio-user negotiate(): a different major is refused with EINVAL.
  if (v.major !== VFIO_USER_MAJOR) fail(Errno.EINVAL, op, `major ${v.major}, we speak ${VFIO_USER_MAJOR}`);
  const c = v.capabilities;
  // Spec: the reply's minor is no higher than the client's; QEMU refuses a higher one.
  const minor = Math.min(v.minor, VFIO_USER_MINOR);
  const maxDataXferSize = Math.min(c.maxDataXferSize, s.limits.maxDataXferSize);
  const maxMsgFds = Math.max(1, Math.min(c.maxMsgFds, s.limits.maxMsgFds));
  const layoutOpt = s.options.dmaLayout ?? 'auto';
  s.negotiated = {
    major: v.major,
    minor,
    client: c,
    maxDataXferSize,
    maxMsgFds,
    writeMultiple: c.writeMultiple,
    // 'auto' is the spec's layout: QEMU 11.1 proposes 0.0 and still puts the data at byte 32
    // (test/server/qemu.test.ts, guest RAM without an fd; docs/vfio-user-wire.md).
    dmaLayout: layoutOpt === 'auto' ? 'spec' : layoutOpt,
  };
  // Spec, "VFIO_USER_VERSION": "The capability list must be a subset of those proposed." The
  // reply names only capabilities the client named, each no larger than the client's value; a
  // capability the client left out stays at the spec's default for both sides. libvfio-user
  // (format_server_capabilities) always states max_msg_fds and max_data_xfer_size; we follow the
  // spec text, so a bare 4-byte proposal gets a bare 4-byte reply.
  const named = proposedCapabilities(v);
  const maxDmaMaps = Math.min(c.maxDmaMaps, s.device.dma.maxMaps, s.limits.maxDmaMaps);
  const pgsizes = c.pgsizes & PAGE_SIZE;
  // "If the server requires a capability the client did not include, it closes the connection":
  // a limit below the default the client assumes for a capability it left out is refused, since
  // the reply could not tell the client about it.
  const unstated: [string, number, number][] = [
    [K.MAX_DATA_XFER_SIZE, maxDataXferSize, c.maxDataXferSize],
    [K.MAX_DMA_MAPS, maxDmaMaps, c.maxDmaMaps],
  ];
  for (const [key, ours, assumed] of unstated) {
    if (!named.has(key) && ours < assumed)
      fail(Errno.EINVAL, op, `the client did not propose ${key}; this server needs at most ${ours}`);
  }
  if (pgsizes === 0n) fail(Errno.EINVAL, op, `pgsizes 0x${c.pgsizes.toString(16)} lacks 4 KiB pages`);
  const caps: CapabilitiesInput = {
    ...(named.has(K.MAX_MSG_FDS) ? { maxMsgFds } : {}),
    ...(named.has(K.MAX_DATA_XFER_SIZE) ? { maxDataXferSize } : {}),
    ...(named.has(K.MAX_DMA_MAPS) ? { maxDmaMaps } : {}),
    ...(named.has(K.PGSIZES) ? { pgsizes } : {}),
    ...(c.writeMultiple ? { writeMultiple: true } : {}),
  };
  const json = Object.keys(caps).length > 0 ? capabilitiesJson(caps) : undefined;
  return {
    chunks: [encodeVersion({ major: v.major, minor, ...(json !== undefined ? { json } : {}) })],
    fds: [],
  };
}

// ---------------------------------------------------------------------------------------------
// DMA_MAP / DMA_UNMAP (spec; vfio.h type1 semantics, libvfio-user handle_dma_map/unmap)
// ---------------------------------------------------------------------------------------------
function dmaMap(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_DMA_MAP';
  const m = decodeDmaMap(f.payload);
  const known = VfioUserDmaMapFlags.READ | VfioUserDmaMapFlags.WRITE;
  if ((m.flags & ~known) >>> 0 !== 0) fail(Errno.EINVAL, op, `flags 0x${m.flags.toString(16)}`);
  const readable = (m.flags & VfioUserDmaMapFlags.READ) !== 0;
  const writable = (m.flags & VfioUserDmaMapFlags.WRITE) !== 0;
  const fd = f.fds[0];
  const dma = s.device.dma;
  if (fd !== undefined) {
    // vfio_iommu_type1.c vfio_dma_do_map: iova and size must be page aligned (EINVAL); a mapping
    // of a file is made of pages. (Without an fd the client serves every byte by message, and
    // libvfio-user's REGION_ACCESS_MODE_MSG needs no alignment.)
    if (m.address % PAGE_SIZE !== 0n || m.size % PAGE_SIZE !== 0n)
      fail(
        Errno.EINVAL,
        op,
        `iova 0x${m.address.toString(16)} / size 0x${m.size.toString(16)} not page aligned`,
      );
  }
  // libvfio-user lib/dma.c dma_controller_add_region, in its order: the same range again is
  // success when offset, file and prot match (EINVAL otherwise); an overlap is EINVAL; past
  // max_dma_maps is EINVAL. (type1 would say EEXIST and ENOSPC; the in-process core does.)
  const identity = fd === undefined ? `msg:${m.flags}` : `${fstatIdentity(fd)}@${m.offset}:${m.flags}`;
  const existing = dma.exact(m.address, m.size);
  if (existing) {
    if (existing.identity !== identity)
      fail(Errno.EINVAL, op, `0x${m.address.toString(16)} is mapped with another fd, offset or prot`);
    return EMPTY; // the session closes the fd; the existing mapping stays
  }
  if (dma.overlaps(m.address, m.size))
    fail(Errno.EINVAL, op, `0x${m.address.toString(16)} overlaps a mapping`);
  if (dma.count >= s.limits.maxDmaMaps) fail(Errno.EINVAL, op, `${s.limits.maxDmaMaps} DMA regions already`);
  if (fd === undefined) {
    // No fd: the device reaches this memory through DMA_READ / DMA_WRITE to the client.
    dma.map(m.address, m.size, {
      readable,
      writable,
      identity,
      remote: {
        read: (iova, length) => s.dmaRead(iova, length),
        write: (iova, data) => s.dmaWrite(iova, data),
      },
    });
    return EMPTY;
  }
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
    // The file can never get shorter (QEMU's memory-backend-memfd seals by default, and so does
    // vfio-ts's own allocateShared): map it and let the device touch the bytes directly.
    const prot = PROT_READ | (writable ? PROT_WRITE : 0);
    const mapping = mmap(fd, m.offset, Number(m.size), prot, MAP_SHARED);
    try {
      dma.map(m.address, m.size, {
        bytes: mapping.bytes,
        readable,
        writable,
        identity,
        release: () => mapping.unmap(),
      });
    } catch (e) {
      mapping.unmap();
      throw e;
    }
    return EMPTY;
  }
  // An unsealed file could be truncated under a mapping, and the next device access would kill
  // the server with SIGBUS. Reach it with pread/pwrite instead: a shrunk file reads short, and
  // the device sees EFAULT.
  const own = dupFd(fd);
  const at = (iova: bigint) => m.offset + (iova - m.address);
  try {
    dma.map(m.address, m.size, {
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
    });
  } catch (e) {
    closeFd(own);
    throw e;
  }
  return EMPTY;
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

function dmaUnmap(s: Session, f: Frame): Reply {
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
  return { chunks: [f.payload.slice(0, 24)], fds: [] };
}

// ---------------------------------------------------------------------------------------------
// Device information
// ---------------------------------------------------------------------------------------------
function deviceGetInfo(s: Session, f: Frame): Reply {
  decodeDeviceInfo(f.payload, 'command');
  // vfio-user's struct is vfio_device_info without cap_offset: ask the core for 16 bytes.
  const arg = new Uint8Array(16);
  put32(arg, 0, 16);
  s.device.ioctl(VFIO_DEVICE_GET_INFO, arg);
  return { chunks: [arg], fds: [] };
}

/** The fd and fd offset of region `index`'s byte 0, when the region can be mmapped. */
function regionFd(s: Session, index: number, info: Uint8Array): { fd: number; offset: bigint } | undefined {
  const d = s.device;
  const base = d.regionOffset(index);
  const tries = [0n];
  const flags = le32(info, vfio_user_region_info.fields.flags.offset);
  if (flags & VfioUserRegionFlags.CAPS && info.length > vfio_user_region_info.size) {
    for (const c of decodeRegionInfoReply(info).caps)
      if (c.kind === 'sparse-mmap') for (const a of c.areas) if (a.size > 0n) tries.push(a.offset);
  }
  for (const at of tries) {
    try {
      const src = d.mappingSource(base + at, Number(PAGE_SIZE));
      if (src.memory.fd === undefined) return undefined;
      return { fd: src.memory.fd, offset: src.memoryOffset - at };
    } catch {
      // this page is not mappable (an MSI-X hole): try the next sparse area
    }
  }
  return undefined;
}

function deviceGetRegionInfo(s: Session, f: Frame): Reply {
  const req = decodeRegionInfoRequest(f.payload);
  const d = s.device;
  const L = vfio_user_region_info;
  // First ask with the bare struct to learn the full size (vfio_pci_ioctl_get_region_info's
  // argsz exchange), then with room for the capabilities when the client has it.
  let info = new Uint8Array(L.size);
  put32(info, L.fields.argsz.offset, L.size);
  put32(info, L.fields.index.offset, req.index);
  d.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
  const need = le32(info, L.fields.argsz.offset);
  if (need > L.size && req.argsz >= need) {
    info = new Uint8Array(need);
    put32(info, L.fields.argsz.offset, need);
    put32(info, L.fields.index.offset, req.index);
    d.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
  }
  const whole = req.argsz >= need;
  let flags = le32(info, L.fields.flags.offset);
  const fds: number[] = [];
  let offset = 0n;
  if (flags & VfioUserRegionFlags.MMAP) {
    // The fd lookup needs the sparse areas even when the client's argsz left the caps out.
    const src = regionFd(s, req.index, info.length < need ? regionInfoFor(s, req.index) : info);
    if (src === undefined) flags &= ~VfioUserRegionFlags.MMAP;
    else {
      // Spec: `offset` is the offset into the fd sent with the reply. libvfio-user attaches the
      // fd only when the whole reply fits the client's argsz; QEMU takes at most one fd.
      offset = src.offset;
      if (whole) fds.push(src.fd);
    }
  }
  put32(info, L.fields.argsz.offset, need);
  put32(info, L.fields.flags.offset, flags);
  put64(info, L.fields.offset.offset, offset);
  return { chunks: [info], fds };
}

function deviceGetRegionIoFds(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_DEVICE_GET_REGION_IO_FDS';
  const req = decodeIoFdsRequest(f.payload);
  // libvfio-user handle_device_get_region_io_fds: flags and count must be 0 in the request.
  if (req.flags !== 0 || req.count !== 0) fail(Errno.EINVAL, op, 'flags and count must be 0');
  if (req.index >= s.device.numRegions) fail(Errno.EINVAL, op, `region ${req.index}`);
  regionSize(s, req.index); // EINVAL for a region that does not exist (VGA on non-VGA devices)
  // No ioeventfds are offered: the 16-byte head with count 0, argsz 16.
  const out = new Uint8Array(vfio_user_region_io_fds.size);
  put32(out, vfio_user_region_io_fds.fields.argsz.offset, vfio_user_region_io_fds.size);
  put32(out, vfio_user_region_io_fds.fields.index.offset, req.index);
  return { chunks: [out], fds: [] };
}

function deviceGetIrqInfo(s: Session, f: Frame): Reply {
  decodeIrqInfo(f.payload, 'command');
  const arg = f.payload.slice(0, 16);
  put32(arg, 0, 16);
  s.device.ioctl(VFIO_DEVICE_GET_IRQ_INFO, arg);
  return { chunks: [arg], fds: [] };
}

/**
 * SET_IRQS: eventfds arrive as SCM_RIGHTS fds, one per interrupt of start..start+count, or none
 * at all to unassign the range (QEMU sends runs of valid fds and runs of -1 as separate messages
 * without fds; libvfio-user device_set_irqs_validate: nr_fds is 0 or count). The core gets the
 * vfio.h layout with the received fd numbers as its s32 data and dups what it keeps.
 */
function deviceSetIrqs(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_DEVICE_SET_IRQS';
  const set = decodeIrqSet(f.payload);
  const eventfd = (set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK) === VFIO_IRQ_SET_DATA_EVENTFD;
  if (!eventfd && f.fds.length > 0) fail(Errno.EINVAL, op, 'fds without DATA_EVENTFD');
  let arg: Uint8Array;
  if (eventfd) {
    if (f.fds.length !== 0 && f.fds.length !== set.count)
      fail(Errno.EINVAL, op, `${f.fds.length} fds for count ${set.count}`);
    // Bound count before allocating for it (a client-chosen u32: up to 16 GiB); the core would
    // refuse it anyway (vfio_set_irqs_validate_and_prepare: start + count > max is EINVAL).
    const max = s.device.irqCount(set.index);
    if (set.start >= max || set.count > max - set.start)
      fail(Errno.EINVAL, op, `start ${set.start} count ${set.count} > ${max}`);
    arg = new Uint8Array(20 + 4 * set.count);
    arg.set(f.payload.subarray(0, 20));
    const dv = new DataView(arg.buffer);
    for (let i = 0; i < set.count; i++) dv.setInt32(20 + 4 * i, f.fds[i] ?? -1, true);
  } else {
    arg = f.payload.slice(0, 20 + (set.data?.length ?? 0));
  }
  put32(arg, 0, arg.length);
  s.device.ioctl(VFIO_DEVICE_SET_IRQS, arg);
  return EMPTY;
}

// ---------------------------------------------------------------------------------------------
// Region access (spec, "Read and Write Operations"; libvfio-user is_valid_region_access)
// ---------------------------------------------------------------------------------------------
/** The region's size, from the core's REGION_INFO (cached; regions never shrink). */
function regionSize(s: Session, index: number): bigint {
  const cached = s.regionSizes[index];
  if (cached !== undefined) return cached;
  const info = new Uint8Array(vfio_user_region_info.size);
  put32(info, 0, info.length);
  put32(info, 8, index);
  s.device.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
  const size = new DataView(info.buffer).getBigUint64(vfio_user_region_info.fields.size.offset, true);
  s.regionSizes[index] = size;
  return size;
}

function checkAccess(s: Session, op: string, region: number, offset: bigint, count: number): bigint {
  // libvfio-user: count above max_data_xfer_size, a bad index, or an access past the region's
  // end are all EINVAL.
  if (count > xferMax(s)) fail(Errno.EINVAL, op, `count ${count} > max_data_xfer_size ${xferMax(s)}`);
  if (region >= s.device.numRegions) fail(Errno.EINVAL, op, `region ${region}`);
  if (offset + BigInt(count) > regionSize(s, region))
    fail(Errno.EINVAL, op, `0x${offset.toString(16)}+${count} past the end of region ${region}`);
  return s.device.regionOffset(region) + offset;
}

function regionRead(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_READ';
  const r = decodeRegionReadRequest(f.payload);
  const at = checkAccess(s, op, r.region, r.offset, r.count);
  // A view of the request: it is sent (or copied by the transport) before the buffer is reused.
  const head = f.payload.subarray(0, vfio_user_region_access.size);
  if (r.count === 0) return { chunks: [head], fds: [] };
  const data = s.device.pread(at, r.count);
  if (data.length !== r.count) fail(Errno.EINVAL, op, 'short read');
  return { chunks: [head, data], fds: [] };
}

function regionWrite(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_WRITE';
  const w = decodeRegionWriteRequest(f.payload);
  const at = checkAccess(s, op, w.region, w.offset, w.data.length);
  if (w.data.length > 0 && s.device.pwrite(at, w.data) !== w.data.length)
    fail(Errno.EINVAL, op, 'short write');
  // Reply: offset, region, count; no data.
  return { chunks: [f.payload.subarray(0, vfio_user_region_access.size)], fds: [] };
}

function regionWriteMulti(s: Session, f: Frame): Reply {
  const op = 'VFIO_USER_REGION_WRITE_MULTI';
  // Only a client told `write_multiple` may send it (QEMU checks the server's capability).
  if (!s.negotiated?.writeMultiple) fail(Errno.EINVAL, op, 'write_multiple was not negotiated');
  const m = decodeRegionWriteMulti(f.payload);
  // Every entry is checked before any is applied: a bad entry fails the whole message with
  // EINVAL (as a REGION_WRITE would) and nothing has happened to the device.
  const at = m.writes.map((w, i) => {
    try {
      return checkAccess(s, op, w.region, w.offset, w.data.length);
    } catch (e) {
      if (e instanceof VfioError) fail(e.errno, op, `write ${i}: ${e.message}`);
      throw e;
    }
  });
  // Spec, "VFIO_USER_REGION_WRITE_MULTI": the reply's wr_cnt is "the number of device writes
  // completed". A write the device refuses or takes short stops the run there: the reply counts
  // the writes done before it, and only when none was done is the reply an error (its errno).
  // libvfio-user has no WRITE_MULTI to compare with; QEMU posts these and reads no reply.
  let done = 0;
  for (const [i, w] of m.writes.entries()) {
    if (w.data.length > 0) {
      let n: number;
      try {
        n = s.device.pwrite(at[i]!, w.data);
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
  const out = new Uint8Array(8);
  put64(out, 0, BigInt(done));
  return { chunks: [out], fds: [] };
}

// ---------------------------------------------------------------------------------------------
// Reset, features, migration
// ---------------------------------------------------------------------------------------------
function deviceReset(s: Session): Reply {
  s.device.ioctl(VFIO_DEVICE_RESET, new Uint8Array(0));
  return EMPTY;
}

/**
 * DEVICE_FEATURE: the payload is struct vfio_device_feature; the core answers it. The reply is
 * the struct as the core left it. DMA_BUF (11) and the mmap cookie (0xf001) answer with one fd
 * (docs/vfio-user-wc.md).
 */
function deviceFeature(s: Session, f: Frame): Reply {
  const req = decodeDeviceFeature(f.payload, 'command');
  const wanted = req.flags & VfioUserFeatureFlags.MASK;
  if (MIGRATION_FEATURES.has(wanted)) {
    // Migration is not implemented: over vfio-user its features answer EOPNOTSUPP, the errno of
    // MIG_DATA_READ/WRITE, as the issue asks ("reply ENOTSUP cleanly"). The core keeps vfio-pci's
    // ENOTTY for them (vfio_ioctl_device_feature with no mig_ops) for in-process and kernel users;
    // libvfio-user answers EINVAL when a device has no migration. docs/vfio-user-server.md.
    throw new VfioError(
      Errno.EOPNOTSUPP,
      'VFIO_USER_DEVICE_FEATURE',
      `feature ${wanted}: migration is not supported`,
    );
  }
  // The core reads and writes the data in place: give it argsz bytes (the payload, zero-padded
  // up to the argsz the client allows for the reply, within the payload cap).
  const size = Math.max(f.payload.length, Math.min(req.argsz, MAX_FEATURE_PAYLOAD));
  const arg = new Uint8Array(size);
  arg.set(f.payload);
  const ret = s.device.ioctl(VFIO_DEVICE_FEATURE, arg);
  const feature = req.flags & VfioUserFeatureFlags.MASK;
  const probe = (req.flags & VfioUserFeatureFlags.PROBE) !== 0;
  const get = (req.flags & VfioUserFeatureFlags.GET) !== 0;
  if (feature === VFIO_DEVICE_FEATURE_DMA_BUF && ret > 0) {
    // The ioctl's return value is the new dma-buf fd: it travels with the reply, and our copy is
    // closed once sent. Its offset R is BAR offset R (a dup of the BAR's memfd).
    const fd = ret;
    return { chunks: [arg], fds: [fd], after: () => s.device.closeDmaBuf(fd) };
  }
  if (feature === VFIO_TS_FEATURE_MMAP_COOKIE && !probe) {
    const dv = new DataView(arg.buffer);
    const cookie = dv.getBigUint64(16, true);
    if (!get) {
      s.cookies.delete(cookie);
      return { chunks: [arg], fds: [] };
    }
    s.cookies.add(cookie);
    // One fd: the BAR's memory, fd offset 0 = BAR offset 0 (the cookie stays an opaque handle).
    const bar = dv.getUint32(8, true);
    const src = regionFd(s, bar, regionInfoFor(s, bar));
    if (src === undefined) fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', `BAR ${bar} has no fd`);
    if (src.offset !== 0n)
      fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', 'BAR does not start at fd offset 0');
    return { chunks: [arg], fds: [src.fd] };
  }
  return { chunks: [arg], fds: [] };
}

/**
 * The spec's vfio-user device features ("Device Features": "The only device features supported
 * by vfio-user are those related to migration"): MIGRATION, MIG_DEVICE_STATE, DMA_LOGGING_*.
 */
const MIGRATION_FEATURES: ReadonlySet<number> = new Set([
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
]);

/** Full REGION_INFO of `index` with its capabilities (for sparse areas). */
function regionInfoFor(s: Session, index: number): Uint8Array {
  let info = new Uint8Array(vfio_user_region_info.size);
  put32(info, 0, info.length);
  put32(info, 8, index);
  s.device.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
  const need = le32(info, 0);
  if (need > info.length) {
    info = new Uint8Array(need);
    put32(info, 0, need);
    put32(info, 8, index);
    s.device.ioctl(VFIO_DEVICE_GET_REGION_INFO, info);
  }
  return info;
}

/**
 * Migration is not implemented: MIG_DATA_READ/WRITE answer EOPNOTSUPP (95, the issue's
 * "ENOTSUP"; libvfio-user answers EINVAL when a device has no migration).
 */
function migData(_s: Session, _f: Frame): Reply {
  throw new VfioError(Errno.EOPNOTSUPP, 'VFIO_USER_MIG_DATA', 'migration is not supported');
}

export const HANDLERS: Readonly<Record<number, HandlerEntry>> = {
  [C.VERSION]: {
    minPayload: 4,
    maxPayload: () => MAX_VERSION_PAYLOAD,
    maxFds: () => 0,
    handle: version,
  },
  [C.DMA_MAP]: fixed(32, dmaMap, 1),
  [C.DMA_UNMAP]: fixed(24, dmaUnmap),
  [C.DEVICE_GET_INFO]: fixed(16, deviceGetInfo),
  [C.DEVICE_GET_REGION_INFO]: fixed(32, deviceGetRegionInfo),
  [C.DEVICE_GET_REGION_IO_FDS]: fixed(16, deviceGetRegionIoFds),
  [C.DEVICE_GET_IRQ_INFO]: fixed(16, deviceGetIrqInfo),
  [C.DEVICE_SET_IRQS]: {
    minPayload: 20,
    maxPayload: () => MAX_SET_IRQS_PAYLOAD,
    maxFds: (s) => s.negotiated?.maxMsgFds ?? 0,
    handle: deviceSetIrqs,
  },
  [C.REGION_READ]: fixed(16, regionRead),
  [C.REGION_WRITE]: {
    minPayload: 16,
    maxPayload: (s) => 16 + xferMax(s),
    maxFds: () => 0,
    handle: regionWrite,
  },
  [C.DEVICE_RESET]: {
    minPayload: 0,
    maxPayload: () => MAX_FIXED_PAYLOAD,
    maxFds: () => 0,
    handle: deviceReset,
  },
  [C.REGION_WRITE_MULTI]: {
    minPayload: 8,
    maxPayload: () => 8 + 24 * MAX_WRITE_MULTI,
    maxFds: () => 0,
    handle: regionWriteMulti,
  },
  [C.DEVICE_FEATURE]: {
    minPayload: 8,
    maxPayload: () => MAX_FEATURE_PAYLOAD,
    maxFds: () => 0,
    handle: deviceFeature,
  },
  [C.MIG_DATA_READ]: { minPayload: 0, maxPayload: () => MAX_FIXED_PAYLOAD, maxFds: () => 0, handle: migData },
  [C.MIG_DATA_WRITE]: {
    minPayload: 0,
    maxPayload: (s) => 8 + xferMax(s),
    maxFds: () => 0,
    handle: migData,
  },
};
