/** Interrupts: DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS, through the core's ioctls. */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
} from '../../abi/vfio.js';
import { fail } from '../../errors.js';
import { encodeFds, irqInfoStruct, irqSetStruct } from '../../wire/vfio.js';
import { decodeIrqInfo, decodeIrqSet, type Frame } from '../../wire/vfio-user.js';
import { type ClientContext, EMPTY, type Reply, reply } from '../context.js';

export function deviceGetIrqInfo(s: ClientContext, f: Frame): Reply {
  decodeIrqInfo(f.payload, 'command');
  const arg = f.payload.slice(0, irqInfoStruct.size);
  irqInfoStruct.set(arg, 'argsz', irqInfoStruct.size);
  s.device.ioctl(VFIO_DEVICE_GET_IRQ_INFO, arg);
  return reply(arg);
}

/**
 * SET_IRQS: eventfds arrive as SCM_RIGHTS fds, one per interrupt of start..start+count, or none
 * at all to unassign the range (QEMU sends runs of valid fds and runs of -1 as separate messages
 * without fds; libvfio-user device_set_irqs_validate: nr_fds is 0 or count). The core gets the
 * vfio.h layout with the received fd numbers as its s32 data and dups what it keeps.
 */
export function deviceSetIrqs(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_DEVICE_SET_IRQS';
  const head = irqSetStruct.size;
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
    arg = new Uint8Array(head + 4 * set.count);
    arg.set(f.payload.subarray(0, head));
    arg.set(encodeFds(Array.from({ length: set.count }, (_, i) => f.fds[i] ?? -1)), head);
  } else {
    arg = f.payload.slice(0, head + (set.data?.length ?? 0));
  }
  irqSetStruct.set(arg, 'argsz', arg.length);
  s.device.ioctl(VFIO_DEVICE_SET_IRQS, arg);
  return EMPTY;
}
