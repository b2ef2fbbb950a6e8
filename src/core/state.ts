/**
 * A device's declared state: the registers and buffers it keeps, as plain data (numbers,
 * bigints, booleans, strings, byte arrays, arrays and plain objects of them). Being plain data is
 * what lets the core restore it in place on a reset, and what device save/restore (migration,
 * issue 14) will walk and encode without asking the device; a function, class instance or cycle
 * in it is refused when the device is defined, naming the field.
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';

export type StateValue =
  | number
  | bigint
  | boolean
  | string
  | Uint8Array
  | readonly StateValue[]
  | { readonly [key: string]: StateValue };

/** The shape `state()` returns: a plain object of StateValues. */
export type DeviceState = { [key: string]: StateValue };

/** Deepest nesting a state may have (it also stops a cycle). */
export const MAX_STATE_DEPTH = 16;

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Throws EINVAL naming the first field of `value` (at `path`) that is not StateValue data. */
export function checkState(value: unknown, op: string, path = 'state', depth = 0): void {
  if (depth > MAX_STATE_DEPTH) fail(Errno.EINVAL, op, `${path}: nested deeper than ${MAX_STATE_DEPTH}`);
  switch (typeof value) {
    case 'number':
    case 'bigint':
    case 'boolean':
    case 'string':
      return;
    case 'object':
      if (value === null) break;
      if (value instanceof Uint8Array) return;
      if (Array.isArray(value)) {
        for (const [i, v] of value.entries()) checkState(v, op, `${path}[${i}]`, depth + 1);
        return;
      }
      if (!isPlainObject(value)) {
        fail(
          Errno.EINVAL,
          op,
          `${path}: a ${value.constructor?.name ?? 'class'} instance is not device state`,
        );
      }
      for (const [k, v] of Object.entries(value)) checkState(v, op, `${path}.${k}`, depth + 1);
      return;
  }
  fail(
    Errno.EINVAL,
    op,
    `${path}: ${value === null ? 'null' : typeof value} is not device state (numbers, bigints, booleans, strings, Uint8Arrays, arrays, plain objects)`,
  );
}

/**
 * Makes `live` hold `from`'s values, in place: byte arrays of the same length are copied into,
 * plain objects are restored field by field, so a handler that kept a reference to a buffer or a
 * nested object of the state still sees the live one. Everything else is replaced.
 */
export function restoreState(live: DeviceState, from: DeviceState): void {
  for (const [k, v] of Object.entries(from)) {
    const cur = live[k];
    if (cur instanceof Uint8Array && v instanceof Uint8Array && cur.length === v.length) cur.set(v);
    else if (isRecord(cur) && isRecord(v)) restoreState(cur as DeviceState, v as DeviceState);
    else live[k] = v;
  }
}

function isRecord(v: StateValue | undefined): boolean {
  return typeof v === 'object' && !(v instanceof Uint8Array) && !Array.isArray(v);
}
