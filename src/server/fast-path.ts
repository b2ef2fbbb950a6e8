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
 * Fields are read and written through the codecs' accessors (headerFields, regionAccessFields:
 * the layouts the ABI probe checks, nothing allocated). A read goes straight into the reply
 * buffer (`DevicePort.readRegionInto`, a number position); what is still allocated per message
 * is a write's: `writeRegion` takes a view of the data and a bigint position (docs/performance.md).
 */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C, VFIO_USER_HEADER_SIZE, VfioUserFlags } from '../abi/vfio-user.js';
import { fail } from '../errors.js';
import { headerFields as HF, regionAccessFields as RA } from '../wire/vfio-user.js';
import { regionOf } from './commands/region.js';
import type { Negotiated } from './context.js';
import type { DevicePort } from './device-port.js';
import { MAX_FIXED_PAYLOAD } from './dispatch.js';

/** struct vfio_user_region_access before its data (spec, "Read and Write Operations"). */
const ACCESS = RA.data;
const H = VFIO_USER_HEADER_SIZE;
/** Reads up to this many bytes (config space, registers) reuse a view of the reply buffer. */
const CACHED_VIEWS = 64;

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
  /** Views of the reply's data area by length, up to CACHED_VIEWS bytes (made once each). */
  readonly #views: Uint8Array[] = [];

  constructor(
    private readonly owner: FastPathOwner,
    private readonly channel: FastPathOut,
  ) {
    this.#out = channel.replyBuffer;
    this.#outView = new DataView(this.#out.buffer, this.#out.byteOffset, this.#out.byteLength);
    this.#maxRead = this.#out.length - H - ACCESS;
  }

  /** The reply's data area, `count` bytes from after its access struct. */
  #dataView(count: number): Uint8Array {
    const at = H + ACCESS;
    if (count > CACHED_VIEWS) return this.#out.subarray(at, at + count);
    let v = this.#views[count];
    if (v === undefined) {
      v = this.#out.subarray(at, at + count);
      this.#views[count] = v;
    }
    return v;
  }

  /**
   * The message of `size` bytes at `at` (the channel has checked msg_size against its limit):
   * true once handled, false (nothing done) for the full path.
   */
  handle(bytes: Uint8Array, v: DataView, at: number, size: number): boolean {
    const command = HF.command.get(v, at);
    if (command !== C.REGION_READ && command !== C.REGION_WRITE) return false;
    // A command, expecting a reply or posted (NO_REPLY); any other bit is the full path's.
    const flags = HF.flags.get(v, at);
    if ((flags & ~VfioUserFlags.NO_REPLY) !== 0) return false;
    const negotiated = this.owner.negotiated;
    if (negotiated === undefined) return false;
    const payload = size - H;
    if (payload < ACCESS) return false;
    // -1 from 2^53 up (not exact as a number): the full path takes it.
    const offset = RA.offset.get(v, at + H);
    if (offset < 0) return false;
    const region = RA.region.get(v, at + H);
    const count = RA.count.get(v, at + H);
    if (count === 0 || count > negotiated.maxDataXferSize) return false;
    const read = command === C.REGION_READ;
    // The payload caps of dispatch.ts: a fixed struct for a read, the data after it for a write.
    if (read ? payload > MAX_FIXED_PAYLOAD || count > this.#maxRead : payload !== ACCESS + count)
      return false;
    const device = this.owner.device;
    const r = regionOf(device, region);
    if (r === undefined || offset + count > r.size) return false;

    this.owner.messages++;
    try {
      if (read) {
        // Straight into the reply, after its header and access struct.
        if (device.readRegionInto(region, offset, this.#dataView(count)) !== count)
          fail(Errno.EINVAL, 'VFIO_USER_REGION_READ', 'short read');
      } else {
        const n = device.writeRegion(region, BigInt(offset), bytes.subarray(at + H + ACCESS, at + size));
        if (n !== count) fail(Errno.EINVAL, 'VFIO_USER_REGION_WRITE', 'short write');
      }
    } catch (e) {
      this.owner.failAt(bytes, at, e);
      return true;
    }
    if (flags & VfioUserFlags.NO_REPLY) return true;
    // The reply's payload: the request's access struct echoed, and for a read the data (already
    // in place); the channel writes the header.
    const o = this.#outView;
    RA.offset.set(o, H, offset);
    RA.region.set(o, H, region);
    RA.count.set(o, H, count);
    this.channel.sendReplyBuffer(HF.msgId.get(v, at), command, ACCESS + (read ? count : 0));
    return true;
  }
}
