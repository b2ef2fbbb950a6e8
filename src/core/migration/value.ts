/**
 * Device state values (src/core/state.ts: numbers, bigints, booleans, strings, byte arrays,
 * arrays and plain objects) as bytes, for the migration stream's PCI, STATE and MODEL sections,
 * and the check that a saved value fits the live state it is restored into.
 *
 * One tag byte per value, little endian:
 *   1 number (f64)     2 bigint (u8 sign, u32 length, magnitude)   3 false   4 true
 *   5 string (u32 length, UTF-8)   6 bytes (u32 length, bytes)
 *   7 array (u32 count, values)    8 object (u32 count, then key string and value each)
 * Decoding trusts nothing: every length is checked against what is left, nesting is bounded by
 * MAX_STATE_DEPTH, objects are built without a prototype (a key `__proto__` is a key), and a
 * malformed value is VfioError(EINVAL) naming where it broke.
 */
import { Errno } from '../../abi/errno.js';
import { fail } from '../../errors.js';
import { view } from '../../wire/struct.js';
import { type DeviceState, MAX_STATE_DEPTH, type StateValue } from '../state.js';

const T = { NUMBER: 1, BIGINT: 2, FALSE: 3, TRUE: 4, STRING: 5, BYTES: 6, ARRAY: 7, OBJECT: 8 } as const;

/** Longest bigint magnitude a stream may carry (a 64-bit register needs 8). */
export const MAX_BIGINT_BYTES = 1024;

const OP = 'migration stream';
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes of `v` once encoded (to size the buffer before writing). */
function sizeOf(v: StateValue): number {
  switch (typeof v) {
    case 'number':
      return 9;
    case 'bigint':
      return 6 + magnitude(v).length;
    case 'boolean':
      return 1;
    case 'string':
      return 5 + utf8.encode(v).length;
  }
  if (v instanceof Uint8Array) return 5 + v.length;
  if (Array.isArray(v)) return 5 + v.reduce((n: number, x: StateValue) => n + sizeOf(x), 0);
  let n = 5;
  for (const [k, x] of Object.entries(v)) n += 4 + utf8.encode(k).length + sizeOf(x);
  return n;
}

function magnitude(v: bigint): Uint8Array {
  let m = v < 0n ? -v : v;
  const out: number[] = [];
  while (m > 0n) {
    out.push(Number(m & 0xffn));
    m >>= 8n;
  }
  return Uint8Array.from(out);
}

/** `v` as bytes. `v` must be state data (checkState); the engine checks it before saving. */
export function encodeValue(v: StateValue): Uint8Array {
  const out = new Uint8Array(sizeOf(v));
  const dv = view(out);
  let at = 0;
  const u32 = (n: number) => {
    dv.setUint32(at, n, true);
    at += 4;
  };
  const raw = (b: Uint8Array) => {
    u32(b.length);
    out.set(b, at);
    at += b.length;
  };
  const put = (x: StateValue): void => {
    switch (typeof x) {
      case 'number':
        out[at++] = T.NUMBER;
        dv.setFloat64(at, x, true);
        at += 8;
        return;
      case 'bigint':
        out[at++] = T.BIGINT;
        out[at++] = x < 0n ? 1 : 0;
        raw(magnitude(x));
        return;
      case 'boolean':
        out[at++] = x ? T.TRUE : T.FALSE;
        return;
      case 'string':
        out[at++] = T.STRING;
        raw(utf8.encode(x));
        return;
    }
    if (x instanceof Uint8Array) {
      out[at++] = T.BYTES;
      raw(x);
    } else if (Array.isArray(x)) {
      out[at++] = T.ARRAY;
      u32(x.length);
      for (const e of x) put(e);
    } else {
      const entries = Object.entries(x);
      out[at++] = T.OBJECT;
      u32(entries.length);
      for (const [k, e] of entries) {
        raw(utf8.encode(k));
        put(e);
      }
    }
  };
  put(v);
  return out;
}

/**
 * Decodes one value filling `bytes` exactly.
 * @throws VfioError(EINVAL) naming `what` and the path where the bytes stop making sense
 */
export function decodeValue(bytes: Uint8Array, what: string): StateValue {
  const dv = view(bytes);
  let at = 0;
  const bad = (path: string, why: string): never => fail(Errno.EINVAL, OP, `${what} ${path}: ${why}`);
  const need = (n: number, path: string) => {
    if (at + n > bytes.length) bad(path, `needs ${n} bytes, ${bytes.length - at} left`);
  };
  const u32 = (path: string): number => {
    need(4, path);
    const n = dv.getUint32(at, true);
    at += 4;
    return n;
  };
  const raw = (path: string): Uint8Array => {
    const n = u32(path);
    need(n, path);
    at += n;
    return bytes.subarray(at - n, at);
  };
  const text = (path: string): string => {
    try {
      return fromUtf8.decode(raw(path));
    } catch {
      return bad(path, 'a string that is not UTF-8');
    }
  };
  const get = (path: string, depth: number): StateValue => {
    if (depth > MAX_STATE_DEPTH) bad(path, `nested deeper than ${MAX_STATE_DEPTH}`);
    need(1, path);
    const tag = bytes[at++];
    switch (tag) {
      case T.NUMBER: {
        need(8, path);
        at += 8;
        return dv.getFloat64(at - 8, true);
      }
      case T.BIGINT: {
        need(1, path);
        const sign = bytes[at++];
        if (sign !== 0 && sign !== 1) bad(path, `bigint sign ${sign}`);
        const m = raw(path);
        if (m.length > MAX_BIGINT_BYTES) bad(path, `a bigint of ${m.length} bytes`);
        let v = 0n;
        for (let i = m.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(m[i]!);
        return sign ? -v : v;
      }
      case T.FALSE:
        return false;
      case T.TRUE:
        return true;
      case T.STRING:
        return text(path);
      case T.BYTES:
        return raw(path).slice();
      case T.ARRAY: {
        const n = u32(path);
        // Every value takes a byte at least: a count past what is left cannot be true.
        if (n > bytes.length - at) bad(path, `${n} elements in ${bytes.length - at} bytes`);
        const out: StateValue[] = [];
        for (let i = 0; i < n; i++) out.push(get(`${path}[${i}]`, depth + 1));
        return out;
      }
      case T.OBJECT: {
        const n = u32(path);
        if (n > (bytes.length - at) / 5) bad(path, `${n} members in ${bytes.length - at} bytes`);
        const out: Record<string, StateValue> = Object.create(null);
        for (let i = 0; i < n; i++) {
          const k = text(`${path} key ${i}`);
          if (Object.hasOwn(out, k)) bad(path, `member '${k}' twice`);
          out[k] = get(`${path}.${k}`, depth + 1);
        }
        return out;
      }
    }
    return bad(path, `tag ${tag}`);
  };
  const v = get('', 0);
  if (at !== bytes.length) bad('', `${bytes.length - at} bytes after the value`);
  return v;
}

function kind(v: StateValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

/**
 * Checks that `saved` can be restored into `live` (restoreState): the same members, each of the
 * same kind, byte arrays of the same length (a device's buffers have fixed sizes). Arrays may
 * differ in length (a queue). Nothing is changed.
 * @throws VfioError(EINVAL) naming the first member that differs
 */
export function checkFits(live: DeviceState, saved: StateValue, path = 'state'): void {
  const mismatch = (p: string, l: StateValue | undefined, s: StateValue | undefined): never =>
    fail(Errno.EINVAL, OP, `${p}: the stream has ${kind(s)}, this device ${kind(l)}`);
  const walk = (l: StateValue, s: StateValue, p: string): void => {
    if (l instanceof Uint8Array) {
      if (!(s instanceof Uint8Array) || s.length !== l.length) mismatch(p, l, s);
      return;
    }
    if (Array.isArray(l)) {
      if (!Array.isArray(s)) mismatch(p, l, s);
      return;
    }
    if (typeof l !== 'object') {
      if (typeof s !== typeof l) mismatch(p, l, s);
      return;
    }
    if (typeof s !== 'object' || s instanceof Uint8Array || Array.isArray(s)) mismatch(p, l, s);
    const sv = s as Record<string, StateValue>;
    const lv = l as Record<string, StateValue>;
    for (const k of Object.keys(sv)) if (!Object.hasOwn(lv, k)) mismatch(`${p}.${k}`, undefined, sv[k]);
    for (const k of Object.keys(lv)) {
      if (!Object.hasOwn(sv, k)) mismatch(`${p}.${k}`, lv[k], undefined);
      walk(lv[k]!, sv[k]!, `${p}.${k}`);
    }
  };
  walk(live, saved, path);
}
