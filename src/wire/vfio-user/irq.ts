/**
 * DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS (spec; vfio.h struct vfio_irq_info, vfio_irq_set).
 * Eventfds for DATA_EVENTFD travel as SCM_RIGHTS fds, never in the payload.
 */
import { VfioUserIrqSetFlags as F, vfio_user_irq_info, vfio_user_irq_set } from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { encodeFail, malformed, needBytes, U32_MAX } from './bytes.js';
import type { MessageType } from './header.js';

const IRQ_INFO = struct(vfio_user_irq_info);
const IRQ_SET = struct(vfio_user_irq_set);

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
  needBytes(what, p, IRQ_INFO.size);
  const { argsz, flags, index, count } = IRQ_INFO.read(p);
  if (type === 'command' && argsz < IRQ_INFO.size) throw malformed(what, `argsz ${argsz} < ${IRQ_INFO.size}`);
  return { argsz, flags, index, count };
}

export function encodeIrqInfo(i: IrqInfo): Uint8Array {
  const out = new Uint8Array(IRQ_INFO.size);
  IRQ_INFO.writeChecked(out, i, 'VFIO_USER_DEVICE_GET_IRQ_INFO');
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
  needBytes(what, p, IRQ_SET.size);
  const { argsz, flags, index, start, count } = IRQ_SET.read(p);
  const s = { argsz, flags, index, start, count };
  if (s.argsz < IRQ_SET.size) throw malformed(what, `argsz ${s.argsz} < ${IRQ_SET.size}`);
  if ((s.flags & ~(F.DATA_TYPE_MASK | F.ACTION_TYPE_MASK)) >>> 0 !== 0) {
    throw malformed(what, `unknown flags 0x${s.flags.toString(16)}`);
  }
  if (!ONE_BIT(s.flags & F.DATA_TYPE_MASK) || !ONE_BIT(s.flags & F.ACTION_TYPE_MASK)) {
    throw malformed(what, `flags 0x${s.flags.toString(16)} need exactly one DATA_ and one ACTION_ bit`);
  }
  if (s.start + s.count > U32_MAX + 1)
    throw malformed(what, `start ${s.start} + count ${s.count} wraps past 2^32`);
  if (s.flags & F.DATA_BOOL) {
    const have = p.byteLength - IRQ_SET.size;
    if (have !== s.count) throw malformed(what, `DATA_BOOL with count ${s.count} but ${have} data bytes`);
    return { ...s, data: p.subarray(IRQ_SET.offsetOf('data')) };
  }
  return s;
}

export function encodeIrqSet(s: IrqSet): Uint8Array {
  const what = 'VFIO_USER_DEVICE_SET_IRQS';
  const bool = (s.flags & F.DATA_BOOL) !== 0;
  if (bool !== (s.data !== undefined)) encodeFail(what, 'data must be present exactly when DATA_BOOL is set');
  if (s.data !== undefined && s.data.byteLength !== s.count) {
    encodeFail(what, `count ${s.count} but ${s.data.byteLength} data bytes`);
  }
  const out = new Uint8Array(IRQ_SET.size + (s.data?.byteLength ?? 0));
  const { argsz, flags, index, start, count } = s;
  IRQ_SET.writeChecked(out, { argsz, flags, index, start, count }, what);
  if (s.data !== undefined) out.set(s.data, IRQ_SET.offsetOf('data'));
  return out;
}
