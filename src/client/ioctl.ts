/**
 * The device fd's ioctls over vfio-user, as QEMU's client translates them (hw/vfio-user/
 * device.c): each request is checked as vfio-pci checks it (argsz, flags: the same errnos), sent
 * as its vfio-user command, and the reply copied back in the vfio.h layout.
 *
 *   GET_INFO / GET_REGION_INFO / GET_IRQ_INFO / SET_IRQS / RESET / FEATURE
 *     -> DEVICE_GET_INFO / ..._REGION_INFO / ..._IRQ_INFO / ..._SET_IRQS / ..._RESET / ..._FEATURE
 *
 * The RFC's SET_REGION_FLAGS has no vfio-user command: ENOTTY, as the kernel answers an unknown
 * ioctl (docs/vfio-user-wc.md §1).
 *
 * Replies are checked before they reach the caller's buffer (docs/robustness.md, "The client"):
 * counts against the limits of limits.ts, indexes against the request, fds only where the
 * protocol sends one. A reply that breaks them is EPROTO naming the vfio-user command.
 */
import { readlinkSync } from 'node:fs';
import { Errno } from '../abi/errno.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK,
  VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../abi/vfio.js';
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import type { MemoryAttribute } from '../core/device.js';
import { PAGE_SIZE, roundUp } from '../core/offsets.js';
import { copyArgsz, need } from '../core/uaccess.js';
import { fail } from '../errors.js';
import {
  decodeMmapCookie,
  decodeVfioIrqSet,
  deviceFeatureStruct,
  deviceInfoStruct,
  dmaBufStruct,
  dmaRangeStruct,
  FEATURE_DATA,
  irqInfoStruct,
  irqSetStruct,
  mmapCookieStruct,
  regionInfoStruct,
} from '../wire/vfio.js';
import {
  decodeDeviceInfo,
  decodeIrqInfo,
  encodeDeviceInfo,
  encodeIrqInfo,
  encodeIrqSet,
} from '../wire/vfio-user.js';
import { type Connection, closeFds, decodeOrProto } from './connection.js';
import {
  CLIENT_MAX_IRQ_COUNT,
  CLIENT_MAX_IRQS,
  CLIENT_MAX_REGIONS,
  CLIENT_MIGRATION_TIMEOUT_MS,
  MAX_FEATURE_REPLY,
  MAX_REGION_INFO_REPLY,
} from './limits.js';
import { dirtyReport } from './migration.js';
import type { ClientNegotiated } from './negotiate.js';
import { type ClientCookie, type ClientOffsets, regionBase, WINDOW } from './offsets.js';
import type { RegionTable } from './regions.js';

/** A dma-buf the server exported: the BAR ranges and attribute its fd stands for. */
export interface DmaBuf {
  readonly bar: number;
  readonly ranges: readonly { offset: bigint; length: bigint }[];
  readonly attribute: MemoryAttribute;
}

/** What the translations need of the client. */
export interface IoctlContext {
  readonly conn: Pick<Connection, 'request'>;
  negotiated(): ClientNegotiated;
  readonly regions: RegionTable;
  readonly offsets: ClientOffsets;
  /** dma-buf fds the client holds, by fd. */
  readonly dmabufs: Map<number, DmaBuf>;
}

/** ioctl(request, arg) on the device fd, over vfio-user. */
export async function ioctl(ctx: IoctlContext, request: number, arg: Uint8Array): Promise<number> {
  switch (request) {
    case VFIO_DEVICE_GET_INFO:
      return getInfo(ctx, arg);
    case VFIO_DEVICE_GET_REGION_INFO:
      return getRegionInfo(ctx, arg);
    case VFIO_DEVICE_GET_IRQ_INFO:
      return getIrqInfo(ctx, arg);
    case VFIO_DEVICE_SET_IRQS:
      return setIrqs(ctx, arg);
    case VFIO_DEVICE_RESET:
      await ctx.conn.request(C.DEVICE_RESET);
      return 0;
    case VFIO_DEVICE_FEATURE:
      return feature(ctx, arg);
  }
  // VFIO_DEVICE_SET_REGION_FLAGS included: it has no vfio-user command (docs/vfio-user-wc.md §1).
  return fail(Errno.ENOTTY, 'ioctl', `request 0x${request.toString(16)} has no vfio-user command`);
}

/**
 * vfio_pci_ioctl_get_info's checks, then DEVICE_GET_INFO (16 bytes: no cap_offset on the wire).
 * num_regions and num_irqs above QEMU's VFIO_USER_MAX_REGIONS / VFIO_USER_MAX_IRQS are EPROTO
 * (hw/vfio-user/device.c vfio_user_get_device_info: "defend against a malicious server"; QEMU
 * says EINVAL): a driver loops over them.
 */
async function getInfo(ctx: IoctlContext, arg: Uint8Array): Promise<number> {
  const op = 'VFIO_DEVICE_GET_INFO';
  const argsz = copyArgsz(arg, deviceInfoStruct, deviceInfoStruct.endOf('num_irqs'), op);
  const out = Math.min(argsz, deviceInfoStruct.size);
  need(arg, out, op);
  const r = await ctx.conn.request(C.DEVICE_GET_INFO, [
    encodeDeviceInfo({ argsz: 16, flags: 0, numRegions: 0, numIrqs: 0 }),
  ]);
  const cmd = 'VFIO_USER_DEVICE_GET_INFO';
  const d = decodeOrProto(cmd, () => decodeDeviceInfo(r.payload, 'reply'));
  if (d.numRegions > CLIENT_MAX_REGIONS)
    fail(Errno.EPROTO, cmd, `num_regions ${d.numRegions} > ${CLIENT_MAX_REGIONS}`);
  if (d.numIrqs > CLIENT_MAX_IRQS) fail(Errno.EPROTO, cmd, `num_irqs ${d.numIrqs} > ${CLIENT_MAX_IRQS}`);
  deviceInfoStruct.write(arg, { flags: d.flags, num_regions: d.numRegions, num_irqs: d.numIrqs });
  // copy_to_user of min(argsz, sizeof): cap_offset reads back 0 when it is copied at all.
  if (out >= deviceInfoStruct.endOf('cap_offset')) deviceInfoStruct.set(arg, 'cap_offset', 0);
  return 0;
}

/**
 * DEVICE_GET_REGION_INFO with the caller's argsz, the reply copied back (capabilities pass
 * through unchanged: cap_offset and next count from the struct's start on both sides) with
 * `offset` rewritten to the region's offset in this client's own space.
 */
async function getRegionInfo(ctx: IoctlContext, arg: Uint8Array): Promise<number> {
  const op = 'VFIO_DEVICE_GET_REGION_INFO';
  const argsz = copyArgsz(arg, regionInfoStruct, regionInfoStruct.size, op);
  const index = regionInfoStruct.get(arg, 'index');
  const { payload } = await ctx.regions.fetch(index, Math.min(argsz, MAX_REGION_INFO_REPLY));
  const n = Math.min(payload.length, argsz);
  need(arg, n, op);
  arg.set(payload.subarray(0, n));
  regionInfoStruct.set(arg, 'offset', regionBase(index));
  return 0;
}

async function getIrqInfo(ctx: IoctlContext, arg: Uint8Array): Promise<number> {
  const op = 'VFIO_DEVICE_GET_IRQ_INFO';
  const minsz = irqInfoStruct.size;
  copyArgsz(arg, irqInfoStruct, minsz, op);
  const index = irqInfoStruct.get(arg, 'index');
  const r = await ctx.conn.request(C.DEVICE_GET_IRQ_INFO, [
    encodeIrqInfo({ argsz: minsz, flags: 0, index, count: 0 }),
  ]);
  const cmd = 'VFIO_USER_DEVICE_GET_IRQ_INFO';
  const q = decodeOrProto(cmd, () => decodeIrqInfo(r.payload, 'reply'));
  if (q.index !== index) fail(Errno.EPROTO, cmd, `asked for IRQ index ${index}, got ${q.index}`);
  if (q.count > CLIENT_MAX_IRQ_COUNT) fail(Errno.EPROTO, cmd, `count ${q.count} > ${CLIENT_MAX_IRQ_COUNT}`);
  irqInfoStruct.write(arg, { flags: q.flags, count: q.count });
  return 0;
}

/**
 * SET_IRQS. DATA_EVENTFD: the s32 fds of the data array travel as SCM_RIGHTS fds, in order,
 * never in the payload. Like QEMU (hw/vfio-user/device.c: vfio_user_device_io_set_irqs) the
 * array is sent in runs of at most max_msg_fds valid fds, and runs of -1 (unassign) as
 * messages without fds (libvfio-user device_set_irqs_validate: nr_fds is 0 or count).
 */
async function setIrqs(ctx: IoctlContext, arg: Uint8Array): Promise<number> {
  const op = 'VFIO_DEVICE_SET_IRQS';
  const minsz = irqSetStruct.size;
  need(arg, minsz, op);
  const { argsz, flags, index, start, count } = decodeVfioIrqSet(arg);
  // vfio_set_irqs_validate_and_prepare
  const one = (v: number) => v !== 0 && (v & (v - 1)) === 0;
  if (
    argsz < minsz ||
    flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) ||
    !one(flags & VFIO_IRQ_SET_DATA_TYPE_MASK) ||
    !one(flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) ||
    count >= 0xffffffff - start
  )
    fail(Errno.EINVAL, op, 'header');
  const send = async (s: number, n: number, data?: Uint8Array, fds: readonly number[] = []) => {
    const head = encodeIrqSet({
      argsz: minsz + (data?.length ?? 0),
      flags,
      index,
      start: s,
      count: n,
      ...(data ? { data } : {}),
    });
    await ctx.conn.request(C.DEVICE_SET_IRQS, [head], fds);
  };
  const dataType = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  if (dataType === VFIO_IRQ_SET_DATA_BOOL) {
    if (argsz - minsz < count) fail(Errno.EINVAL, op, 'argsz too small for data');
    need(arg, minsz + count, op);
    await send(start, count, arg.slice(minsz, minsz + count));
    return 0;
  }
  if (dataType !== VFIO_IRQ_SET_DATA_EVENTFD || count === 0) {
    await send(start, count);
    return 0;
  }
  if (argsz - minsz < count * 4) fail(Errno.EINVAL, op, 'argsz too small for data');
  need(arg, minsz + count * 4, op);
  const dv = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  const fds: number[] = [];
  for (let i = 0; i < count; i++) {
    const fd = dv.getInt32(minsz + 4 * i, true);
    // eventfd_ctx_fdget: a closed fd is EBADF (sendmsg would say so too, less clearly).
    if (fd >= 0 && !isOpenFd(fd)) fail(Errno.EBADF, op, `fd ${fd}`);
    fds.push(fd < 0 ? -1 : fd);
  }
  const max = ctx.negotiated().maxMsgFds;
  for (let i = 0; i < count; ) {
    const valid = fds[i]! >= 0;
    let n = 1;
    while (i + n < count && fds[i + n]! >= 0 === valid && (!valid || n < max)) n++;
    await send(start + i, n, undefined, valid ? fds.slice(i, i + n) : []);
    i += n;
  }
  return 0;
}

/**
 * DEVICE_FEATURE: the payload is struct vfio_device_feature itself. The replies of the WC
 * paths carry one fd (docs/vfio-user-wc.md §2-3), which the client keeps; every other reply
 * takes none. What a dma-buf fd stands for is taken from our request (the ranges we asked
 * for), never from the reply; a cookie must be for the BAR we asked about and fit a region
 * window.
 */
async function feature(ctx: IoctlContext, arg: Uint8Array): Promise<number> {
  const op = 'VFIO_DEVICE_FEATURE';
  const cmd = 'VFIO_USER_DEVICE_FEATURE';
  const argsz = copyArgsz(arg, deviceFeatureStruct, FEATURE_DATA, op);
  const flags = deviceFeatureStruct.get(arg, 'flags');
  const feature = flags & VFIO_DEVICE_FEATURE_MASK;
  const probe = (flags & VFIO_DEVICE_FEATURE_PROBE) !== 0;
  const get = (flags & VFIO_DEVICE_FEATURE_GET) !== 0;
  const set = (flags & VFIO_DEVICE_FEATURE_SET) !== 0;
  const payload = arg.slice(0, Math.min(argsz, arg.length));
  // Migration (migration.ts): a report may come in pieces; a state change may take long.
  if (feature === VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT && get && !probe)
    return dirtyReport(ctx.conn, ctx.negotiated(), arg, argsz);
  const slow = feature === VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE && set && !probe;
  let release: ClientCookie | undefined;
  if (feature === VFIO_TS_FEATURE_MMAP_COOKIE && set && !probe && !get) {
    // Our cookie offsets are our own: name the server's cookie instead (vfio-user-wc.md §3).
    need(arg, FEATURE_DATA + mmapCookieStruct.size, op);
    release =
      ctx.offsets.cookieAt(decodeMmapCookie(arg).offset) ??
      fail(Errno.EINVAL, 'VFIO_TS_FEATURE_MMAP_COOKIE', 'no such cookie');
    mmapCookieStruct.set(payload, 'offset', release.serverOffset, FEATURE_DATA);
  }
  const takesFd =
    get && !probe && (feature === VFIO_DEVICE_FEATURE_DMA_BUF || feature === VFIO_TS_FEATURE_MMAP_COOKIE);
  let dmabuf: DmaBuf | undefined;
  let bar: number | undefined;
  if (takesFd && feature === VFIO_DEVICE_FEATURE_DMA_BUF) {
    // vfio_check_feature: argsz below the feature's struct is EINVAL.
    if (payload.length < FEATURE_DATA + dmaBufStruct.size)
      fail(Errno.EINVAL, op, 'argsz too small for DMA_BUF');
    dmabuf = parseDmaBuf(payload.subarray(FEATURE_DATA));
  } else if (takesFd) {
    need(arg, FEATURE_DATA + mmapCookieStruct.size, op);
    bar = decodeMmapCookie(arg).region_index;
  }
  const r = await ctx.conn.request(C.DEVICE_FEATURE, [payload], [], {
    replyFds: takesFd ? 1 : 0,
    maxReply: Math.max(payload.length, Math.min(argsz, MAX_FEATURE_REPLY)),
    ...(slow ? { timeoutMs: CLIENT_MIGRATION_TIMEOUT_MS } : {}),
  });
  let kept: number | undefined;
  try {
    if (r.payload.length < FEATURE_DATA) fail(Errno.EPROTO, cmd, `reply of ${r.payload.length} bytes`);
    const data = r.payload.subarray(FEATURE_DATA);
    const room = arg.subarray(FEATURE_DATA);
    room.set(data.subarray(0, Math.min(data.length, room.length)));
    if (release) {
      mmapCookieStruct.set(arg, 'offset', release.base, FEATURE_DATA);
      ctx.offsets.release(release);
      return 0;
    }
    if (dmabuf) {
      kept = r.fds[0] ?? fail(Errno.EPROTO, cmd, 'DMA_BUF reply without an fd');
      ctx.dmabufs.set(kept, dmabuf);
      return kept;
    }
    if (bar !== undefined) {
      const fd = r.fds[0] ?? fail(Errno.EPROTO, cmd, 'MMAP_COOKIE reply without an fd');
      const got = decodeMmapCookie(arg);
      if (got.region_index !== bar)
        fail(Errno.EPROTO, cmd, `cookie for BAR ${got.region_index}, asked for ${bar}`);
      if (got.size === 0n || got.size > WINDOW)
        fail(Errno.EPROTO, cmd, `cookie size 0x${got.size.toString(16)}`);
      const cookie = ctx.offsets.addCookie({
        size: roundUp(got.size, PAGE_SIZE),
        serverOffset: got.offset,
        bar,
        attribute: attributeOf(got.flags),
        fd,
      });
      kept = fd;
      mmapCookieStruct.set(arg, 'offset', cookie.base, FEATURE_DATA);
    }
    return 0;
  } finally {
    closeFds(r.fds.filter((x) => x !== kept));
  }
}

/** struct vfio_device_feature_dma_buf as we sent it: the ranges and attribute the fd stands for. */
function parseDmaBuf(data: Uint8Array): DmaBuf {
  const head = dmaBufStruct.read(data);
  const first = dmaBufStruct.offsetOf('dma_ranges');
  const ranges: { offset: bigint; length: bigint }[] = [];
  for (let i = 0; i < head.nr_ranges && first + dmaRangeStruct.size * (i + 1) <= data.length; i++)
    ranges.push(dmaRangeStruct.read(data, first + dmaRangeStruct.size * i));
  return { bar: head.region_index, ranges, attribute: attributeOf(head.flags) };
}

/** The ATTR field of a WC request (DMA_BUF flags, cookie flags): WC, or UC for anything else. */
function attributeOf(flags: number): MemoryAttribute {
  return (flags & VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_MASK) === VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC
    ? 'wc'
    : 'uc';
}

function isOpenFd(fd: number): boolean {
  try {
    readlinkSync(`/proc/self/fd/${fd}`);
    return true;
  } catch {
    return false;
  }
}
