/**
 * The hot path: REGION_READ and REGION_WRITE (QEMU's MMIO and config space traffic, posted or
 * not) decoded in place from the receive buffer and answered from the channel's reply buffer.
 * No Frame, no Header object, no decoded struct, no Reply object, no chunk array: a DataView over
 * each buffer and numbers.
 *
 * It only ever takes a message the full path (session.ts -> dispatch.ts -> commands/region.ts)
 * would answer with success, and answers it the same way; every other message — anything with
 * odd flags, before VERSION, a count the limits or the region refuse, a zero count, an offset
 * past 2^53, a read larger than the reply buffer — is declined before anything happens, and the
 * full path gives it the errno it always gave. A device that throws once the access has
 * started is answered here, through the session's one error path.
 *
 * What is still allocated per message is the device's: `DevicePort.readRegion` returns a fresh
 * array and takes its position as a bigint, and `writeRegion` takes a view of the data
 * (docs/performance.md).
 */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C, VFIO_USER_HEADER_SIZE, VfioUserFlags } from '../abi/vfio-user.js';
import { fail } from '../errors.js';
import { regionOf } from './commands/region.js';
import type { Negotiated } from './context.js';
import type { DevicePort } from './device-port.js';
import { MAX_FIXED_PAYLOAD } from './dispatch.js';

/** struct vfio_user_region_access: u64 offset, u32 region, u32 count (spec, "Read and Write Operations"). */
const ACCESS = 16;
const H = VFIO_USER_HEADER_SIZE;
/** 2^32, to build a u64 offset from its halves without BigInt. */
const HI = 0x1_0000_0000;
/** Offsets from 2^53 up are not exact as numbers: the full path takes them. */
const MAX_EXACT_HI = 0x20_0000;

/** What the fast path needs of the session that owns it. */
export interface FastPathOwner {
  readonly device: DevicePort;
  readonly negotiated: Negotiated | undefined;
  /** Counted for the disconnect log line. */
  messages: number;
  /** Answers the message at `at` with the errno of `e` (the session's one error path). */
  failAt(bytes: Uint8Array, at: number, e: unknown): void;
}

/** Sends what the fast path wrote (the channel's reply buffer; the channel writes the header). */
export interface FastPathOut {
  readonly replyBuffer: Uint8Array;
  sendReplyBuffer(msgId: number, command: number, payload: number): void;
}

export class FastPath {
  readonly #out: Uint8Array;
  readonly #outView: DataView;
  /** Largest read answered here: what fits the reply buffer after the two headers. */
  readonly #maxRead: number;

  constructor(
    private readonly owner: FastPathOwner,
    private readonly channel: FastPathOut,
  ) {
    this.#out = channel.replyBuffer;
    this.#outView = new DataView(this.#out.buffer, this.#out.byteOffset, this.#out.byteLength);
    this.#maxRead = this.#out.length - H - ACCESS;
  }

  /**
   * The message of `size` bytes at `at` (the channel has checked msg_size against its limit):
   * true once handled, false (nothing done) for the full path.
   */
  handle(bytes: Uint8Array, v: DataView, at: number, size: number): boolean {
    const command = v.getUint16(at + 2, true);
    if (command !== C.REGION_READ && command !== C.REGION_WRITE) return false;
    // A command, expecting a reply or posted (NO_REPLY); any other bit is the full path's.
    const flags = v.getUint32(at + 8, true);
    if ((flags & ~VfioUserFlags.NO_REPLY) !== 0) return false;
    const negotiated = this.owner.negotiated;
    if (negotiated === undefined) return false;
    const payload = size - H;
    if (payload < ACCESS) return false;
    const hi = v.getUint32(at + H + 4, true);
    if (hi >= MAX_EXACT_HI) return false;
    const offset = hi * HI + v.getUint32(at + H, true);
    const region = v.getUint32(at + H + 8, true);
    const count = v.getUint32(at + H + 12, true);
    if (count === 0 || count > negotiated.maxDataXferSize) return false;
    const read = command === C.REGION_READ;
    // The payload caps of dispatch.ts: a fixed struct for a read, the data after it for a write.
    if (read ? payload > MAX_FIXED_PAYLOAD || count > this.#maxRead : payload !== ACCESS + count)
      return false;
    const device = this.owner.device;
    const r = regionOf(device, region);
    if (r === undefined || offset + count > r.size) return false;

    this.owner.messages++;
    let data: Uint8Array | undefined;
    try {
      if (read) {
        data = device.readRegion(region, BigInt(offset), count);
        if (data.length !== count) fail(Errno.EINVAL, 'VFIO_USER_REGION_READ', 'short read');
      } else {
        const n = device.writeRegion(region, BigInt(offset), bytes.subarray(at + H + ACCESS, at + size));
        if (n !== count) fail(Errno.EINVAL, 'VFIO_USER_REGION_WRITE', 'short write');
      }
    } catch (e) {
      this.owner.failAt(bytes, at, e);
      return true;
    }
    if (flags & VfioUserFlags.NO_REPLY) return true;
    // The reply's payload: the request's access header echoed, and for a read the data; the
    // channel writes the header.
    const out = this.#outView;
    for (let i = 0; i < ACCESS; i += 4) out.setUint32(H + i, v.getUint32(at + H + i, true), true);
    if (data) this.#out.set(data, H + ACCESS);
    this.channel.sendReplyBuffer(v.getUint16(at, true), command, ACCESS + (data?.length ?? 0));
    return true;
  }
}
