/**
 * DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS (spec; vfio.h struct vfio_irq_info, vfio_irq_set).
 * Eventfds for DATA_EVENTFD travel as SCM_RIGHTS fds, never in the payload.
 */
import { VfioUserIrqSetFlags as F, vfio_user_irq_info, vfio_user_irq_set } from '../../abi/vfio-user.js';
import { checkU32, encodeFail, LE, malformed, needBytes, U32_MAX, view } from './bytes.js';
import type { MessageType } from './header.js';

export interface IrqInfo {
  readonly argsz: number;
  /** VfioUserIrqInfoFlags (reply). */
  readonly flags: number;
  readonly index: number;
  readonly count: number;
}

/**
 * Request and reply, 16 bytes each.
 * @throws MalformedError(EINVAL): payload under 16 bytes; in a command, argsz under 16
 * (libvfio-user handle_device_get_irq_info).
 */
export function decodeIrqInfo(p: Uint8Array, type: MessageType = 'command'): IrqInfo {
  const what = `VFIO_USER_DEVICE_GET_IRQ_INFO ${type}`;
  const L = vfio_user_irq_info;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const i: IrqInfo = {
    argsz: dv.getUint32(L.argsz, LE),
    flags: dv.getUint32(L.flags, LE),
    index: dv.getUint32(L.index, LE),
    count: dv.getUint32(L.count, LE),
  };
  if (type === 'command' && i.argsz < L.SIZEOF) throw malformed(what, `argsz ${i.argsz} < ${L.SIZEOF}`);
  return i;
}

export function encodeIrqInfo(i: IrqInfo): Uint8Array {
  const what = 'VFIO_USER_DEVICE_GET_IRQ_INFO';
  const L = vfio_user_irq_info;
  const out = new Uint8Array(L.SIZEOF);
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', i.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', i.flags), LE);
  dv.setUint32(L.index, checkU32(what, 'index', i.index), LE);
  dv.setUint32(L.count, checkU32(what, 'count', i.count), LE);
  return out;
}

export interface IrqSet {
  readonly argsz: number;
  /** One DATA_* bit and one ACTION_* bit of VfioUserIrqSetFlags. */
  readonly flags: number;
  readonly index: number;
  readonly start: number;
  readonly count: number;
  /** DATA_BOOL only: one byte per interrupt in start..start+count (nonzero = act on it). */
  readonly data?: Uint8Array;
}

const ONE_BIT = (v: number) => v !== 0 && (v & (v - 1)) === 0;

/**
 * DEVICE_SET_IRQS command (the reply has no payload).
 * @throws MalformedError(EINVAL): payload under 20 bytes; argsz under 20; flags with bits
 * outside the data and action masks, or not exactly one data type and one action
 * (drivers/vfio/vfio_main.c: vfio_set_irqs_validate_and_prepare); start + count past 2^32;
 * DATA_BOOL with other than `count` bytes of data (libvfio-user device_set_irqs_validate).
 */
export function decodeIrqSet(p: Uint8Array): IrqSet {
  const what = 'VFIO_USER_DEVICE_SET_IRQS command';
  const L = vfio_user_irq_set;
  needBytes(what, p, L.SIZEOF);
  const dv = view(p);
  const s = {
    argsz: dv.getUint32(L.argsz, LE),
    flags: dv.getUint32(L.flags, LE),
    index: dv.getUint32(L.index, LE),
    start: dv.getUint32(L.start, LE),
    count: dv.getUint32(L.count, LE),
  };
  if (s.argsz < L.SIZEOF) throw malformed(what, `argsz ${s.argsz} < ${L.SIZEOF}`);
  if ((s.flags & ~(F.DATA_TYPE_MASK | F.ACTION_TYPE_MASK)) >>> 0 !== 0) {
    throw malformed(what, `unknown flags 0x${s.flags.toString(16)}`);
  }
  if (!ONE_BIT(s.flags & F.DATA_TYPE_MASK) || !ONE_BIT(s.flags & F.ACTION_TYPE_MASK)) {
    throw malformed(what, `flags 0x${s.flags.toString(16)} need exactly one DATA_ and one ACTION_ bit`);
  }
  if (s.start + s.count > U32_MAX + 1)
    throw malformed(what, `start ${s.start} + count ${s.count} wraps past 2^32`);
  if (s.flags & F.DATA_BOOL) {
    const have = p.byteLength - L.SIZEOF;
    if (have !== s.count) throw malformed(what, `DATA_BOOL with count ${s.count} but ${have} data bytes`);
    return { ...s, data: p.subarray(L.data) };
  }
  return s;
}

export function encodeIrqSet(s: IrqSet): Uint8Array {
  const what = 'VFIO_USER_DEVICE_SET_IRQS';
  const L = vfio_user_irq_set;
  const bool = (s.flags & F.DATA_BOOL) !== 0;
  if (bool !== (s.data !== undefined)) encodeFail(what, 'data must be present exactly when DATA_BOOL is set');
  if (s.data !== undefined && s.data.byteLength !== s.count) {
    encodeFail(what, `count ${s.count} but ${s.data.byteLength} data bytes`);
  }
  const out = new Uint8Array(L.SIZEOF + (s.data?.byteLength ?? 0));
  const dv = view(out);
  dv.setUint32(L.argsz, checkU32(what, 'argsz', s.argsz), LE);
  dv.setUint32(L.flags, checkU32(what, 'flags', s.flags), LE);
  dv.setUint32(L.index, checkU32(what, 'index', s.index), LE);
  dv.setUint32(L.start, checkU32(what, 'start', s.start), LE);
  dv.setUint32(L.count, checkU32(what, 'count', s.count), LE);
  if (s.data !== undefined) out.set(s.data, L.data);
  return out;
}
