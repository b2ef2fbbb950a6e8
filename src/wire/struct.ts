/**
 * A C struct read and written by its layout (src/abi/layout.ts): the one way src/ touches the
 * fields of a uAPI or vfio-user struct, so the offsets the ABI probe checks against the real
 * headers (test/abi/probe.test.ts) are the offsets the code uses. Host byte order, which is
 * little endian on every platform vfio-ts runs on.
 *
 *   const info = struct(vfio_region_info);
 *   info.get(arg, 'index');                       // a u32 field
 *   info.write(arg, { size: 4096n, offset: 0n }); // several fields in place
 *   info.encode({ argsz: 32, index: 2 });         // a new, zeroed struct
 *
 * `base` (every method's last argument) is where the struct starts in the buffer: a struct inside
 * another one (a feature's data at 8) is read in place, without a subarray.
 *
 * Speed: `read`, `write` and `check` are compiled once per layout into straight-line DataView
 * code (`compile` below), the code one would write by hand, so the codecs on the vfio-user hot
 * path cost what hand-written ones did (bench/wire.ts). The generated source comes from our own
 * layouts only (field names are checked to be identifiers), never from input.
 */
import { Errno } from '../abi/errno.js';
import type { Field, Fields, ScalarType, StructLayout } from '../abi/layout.js';
import { VfioError } from '../errors.js';

/** A DataView over exactly `bytes` (no copy). */
export const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

type ValueOf<T> = T extends 'u64' ? bigint : number;
/** Names of the fields that hold a value (not an embedded header, not a byte array). */
export type ScalarField<F extends Fields> = {
  [K in keyof F]: F[K]['type'] extends ScalarType ? K : never;
}[keyof F] &
  string;
/** The value of field `K`: a bigint for u64, a number otherwise. */
export type FieldValue<F extends Fields, K extends keyof F> = ValueOf<F[K]['type']>;
/** A struct's scalar fields as an object keyed by their C names. */
export type StructValue<F extends Fields> = { [K in ScalarField<F>]: FieldValue<F, K> };

interface Slot {
  readonly name: string;
  readonly offset: number;
  readonly type: ScalarType;
}

const WIDTH: Readonly<Record<ScalarType, number>> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };
const U64_MAX = (1n << 64n) - 1n;

function load(dv: DataView, at: number, type: ScalarType): number | bigint {
  switch (type) {
    case 'u8':
      return dv.getUint8(at);
    case 'u16':
      return dv.getUint16(at, true);
    case 'u32':
      return dv.getUint32(at, true);
    case 's32':
      return dv.getInt32(at, true);
    case 'u64':
      return dv.getBigUint64(at, true);
  }
}

/** A C store: the value is truncated to the field's width (as putU32's `>>> 0`). */
function store(dv: DataView, at: number, type: ScalarType, v: number | bigint): void {
  switch (type) {
    case 'u8':
      dv.setUint8(at, Number(v) & 0xff);
      break;
    case 'u16':
      dv.setUint16(at, Number(v) & 0xffff, true);
      break;
    case 'u32':
      dv.setUint32(at, Number(v) >>> 0, true);
      break;
    case 's32':
      dv.setInt32(at, Number(v) | 0, true);
      break;
    case 'u64':
      dv.setBigUint64(at, BigInt.asUintN(64, BigInt(v)), true);
      break;
  }
}

/**
 * The condition that `x` fits a field of `type` exactly (the check a careful encoder makes), as
 * source for `compile`: an integer number in range, or for u64 a bigint in 0..2^64-1.
 */
function fitsSource(type: ScalarType): string {
  if (type === 'u64') return `typeof x === 'bigint' && x >= 0n && x <= ${U64_MAX}n`;
  const [lo, hi] = type === 's32' ? [-0x8000_0000, 0x7fff_ffff] : [0, 2 ** (8 * WIDTH[type]) - 1];
  return `typeof x === 'number' && Number.isInteger(x) && x >= ${lo} && x <= ${hi}`;
}

type Values = Record<string, number | bigint | undefined>;
/** A layout's straight-line code: `write` returns -1, or the buffer length a field needed. */
interface Compiled {
  read(dv: DataView, base: number): Record<string, number | bigint>;
  write(dv: DataView, v: Values, base: number): number;
  /** The name of the first field whose value does not fit it, or undefined. */
  check(v: Values): string | undefined;
}

/** DataView's getter and setter of each field type. */
const ACCESSOR: Readonly<Record<ScalarType, readonly [string, string]>> = {
  u8: ['getUint8', 'setUint8'],
  u16: ['getUint16', 'setUint16'],
  u32: ['getUint32', 'setUint32'],
  s32: ['getInt32', 'setInt32'],
  u64: ['getBigUint64', 'setBigUint64'],
};
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The read, write and check of one layout as straight-line code. DataView's setters truncate a
 * value to the field's width (ToUint32, ToBigUint64, ...), which is the C store `set` documents.
 */
function compile(name: string, size: number, slots: readonly Slot[]): Compiled {
  for (const s of slots)
    if (!IDENTIFIER.test(s.name)) throw new VfioError(Errno.EINVAL, `struct ${name}`, `field name ${s.name}`);
  const at = (s: Slot) => `base + ${s.offset}`;
  const end = (s: Slot) => `base + ${s.offset + WIDTH[s.type]}`;
  const read = `return { ${slots.map((s) => `${s.name}: dv.${ACCESSOR[s.type]![0]}(${at(s)}, true)`).join(', ')} };`;
  const write = [
    `const whole = base + ${size} <= dv.byteLength;`,
    'let x;',
    ...slots.map(
      (s) =>
        `x = v.${s.name}; if (x !== undefined) { ` +
        `if (!whole && ${end(s)} > dv.byteLength) return ${end(s)}; dv.${ACCESSOR[s.type]![1]}(${at(s)}, x, true); }`,
    ),
    'return -1;',
  ].join('\n');
  const check = [
    'let x;',
    ...slots.map(
      (s) => `x = v.${s.name}; if (x !== undefined && !(${fitsSource(s.type)})) return '${s.name}';`,
    ),
    'return undefined;',
  ].join('\n');
  return {
    read: new Function('dv', 'base', read) as Compiled['read'],
    write: new Function('dv', 'v', 'base', write) as Compiled['write'],
    check: new Function('v', check) as Compiled['check'],
  };
}

/** One field read and written on a caller's DataView at `base` (`Struct.accessor`). */
export interface FieldAccessor<T> {
  /** offsetof(struct, field). */
  readonly offset: number;
  get(dv: DataView, base: number): T;
  set(dv: DataView, base: number, value: T): void;
}

/** 2^32, and the high half from which a u64 is 2^53 or more (not exact as a number). */
const U32_SPAN = 0x1_0000_0000;
const U53_HI = 0x20_0000;

export class Struct<F extends Fields> {
  readonly name: string;
  /** sizeof(struct). */
  readonly size: number;
  private readonly byName: ReadonlyMap<string, Slot>;
  private readonly code: Compiled;

  constructor(readonly layout: StructLayout<F>) {
    this.name = layout.name;
    this.size = layout.size;
    const slots: Slot[] = [];
    for (const [name, f] of Object.entries(layout.fields) as [string, Field][])
      if (f.type !== 'cap' && f.type !== 'bytes') slots.push({ name, offset: f.offset, type: f.type });
    this.byName = new Map(slots.map((s) => [s.name, s]));
    this.code = compile(layout.name, layout.size, slots);
  }

  /** offsetof(struct, field), for any field (a flexible array member's is where its data starts). */
  offsetOf(field: keyof F & string): number {
    return this.layout.fields[field]!.offset;
  }

  /** offsetofend(struct, field): the first byte after it (the kernel's `minsz` idiom). */
  endOf(field: ScalarField<F>): number {
    const s = this.slot(field);
    return s.offset + WIDTH[s.type];
  }

  /**
   * Field `field` of the struct at `base` in `buf`.
   * @throws VfioError(EFAULT) when the buffer ends before the field, as copy_from_user would.
   */
  get<K extends ScalarField<F>>(buf: Uint8Array, field: K, base = 0): FieldValue<F, K> {
    const s = this.slot(field);
    this.bounds(buf, base + s.offset + WIDTH[s.type]);
    return load(view(buf), base + s.offset, s.type) as FieldValue<F, K>;
  }

  /** Stores `value` into field `field`, truncated to its width as a C assignment would. */
  set<K extends ScalarField<F>>(buf: Uint8Array, field: K, value: FieldValue<F, K>, base = 0): void {
    const s = this.slot(field);
    this.bounds(buf, base + s.offset + WIDTH[s.type]);
    store(view(buf), base + s.offset, s.type, value);
  }

  /** Every scalar field of the struct at `base`. @throws VfioError(EFAULT) when it does not fit. */
  read(buf: Uint8Array, base = 0): StructValue<F> {
    this.bounds(buf, base + this.size);
    return this.code.read(view(buf), base) as StructValue<F>;
  }

  /**
   * Stores the fields `value` names (the others keep their bytes), truncating like `set`. Only
   * those fields need to fit in `buf` (a struct's head, as an older header defines it, is fine).
   */
  write(buf: Uint8Array, value: Partial<StructValue<F>>, base = 0): void {
    const needed = this.code.write(view(buf), value as Values, base);
    if (needed >= 0) this.bounds(buf, needed);
  }

  /**
   * As `write`, but every value must fit its field exactly, as an encoder of a peer's message must
   * check. @throws VfioError(EINVAL, `encode <what>`) naming the first field that does not fit.
   */
  writeChecked(buf: Uint8Array, value: Partial<StructValue<F>>, what: string, base = 0, label = ''): void {
    this.check(value, what, label);
    this.write(buf, value, base);
  }

  /**
   * @throws VfioError(EINVAL, `encode <what>`) for the first of `value`'s fields that does not fit,
   * named `<label><field>` (a label such as 'capability ' says which part of a message it is).
   */
  check(value: Partial<StructValue<F>>, what: string, label = ''): void {
    const bad = this.code.check(value as Values);
    if (bad === undefined) return;
    const { type } = this.slot(bad);
    const v = (value as Values)[bad];
    throw new VfioError(Errno.EINVAL, `encode ${what}`, `${label}${bad} ${String(v)} is not a ${type}`);
  }

  /** A new zeroed struct of `size + extra` bytes with `value`'s fields stored (truncating). */
  encode(value: Partial<StructValue<F>> = {}, extra = 0): Uint8Array {
    const out = new Uint8Array(this.size + extra);
    this.write(out, value);
    return out;
  }

  /**
   * Field `field` as an accessor on a DataView the caller holds, for a hot path that must not
   * allocate: no view, object or name lookup per call. Bounds are DataView's own (a RangeError):
   * the caller has made sure the struct is there.
   */
  accessor<K extends ScalarField<F>>(field: K): FieldAccessor<FieldValue<F, K>> {
    const s = this.slot(field);
    const [getter, setter] = ACCESSOR[s.type]!;
    const offset = s.offset;
    return {
      offset,
      get: new Function('dv', 'base', `return dv.${getter}(base + ${offset}, true);`) as FieldAccessor<
        FieldValue<F, K>
      >['get'],
      set: new Function('dv', 'base', 'v', `dv.${setter}(base + ${offset}, v, true);`) as FieldAccessor<
        FieldValue<F, K>
      >['set'],
    };
  }

  /**
   * A u64 field as a number, without BigInt: `get` gives its value when below 2^53 and -1 when
   * not (a position no region reaches; the caller takes its slow path); `set` stores a number.
   */
  u64AsNumber(field: ScalarField<F>): FieldAccessor<number> {
    const s = this.slot(field);
    if (s.type !== 'u64') throw new VfioError(Errno.EINVAL, `struct ${this.name}`, `${field} is not a u64`);
    const lo = s.offset;
    const hi = s.offset + 4;
    return {
      offset: lo,
      get: (dv, base) => {
        const h = dv.getUint32(base + hi, true);
        const l = dv.getUint32(base + lo, true);
        // The low half alone when the high one is 0: a small integer stays one for the JIT (a
        // product is a double, and a double index slows every array access it reaches).
        return h === 0 ? l : h >= U53_HI ? -1 : h * U32_SPAN + l;
      },
      set: (dv, base, v) => {
        dv.setUint32(base + lo, v >>> 0, true);
        dv.setUint32(base + hi, Math.floor(v / U32_SPAN) >>> 0, true);
      },
    };
  }

  private slot(field: string): Slot {
    const s = this.byName.get(field);
    if (!s) throw new VfioError(Errno.EINVAL, `struct ${this.name}`, `no scalar field ${field}`);
    return s;
  }

  private bounds(buf: Uint8Array, end: number): void {
    if (end > buf.byteLength)
      throw new VfioError(
        Errno.EFAULT,
        `struct ${this.name}`,
        `buffer of ${buf.byteLength} bytes, ${end} needed`,
      );
  }
}

/** The codec of one layout. */
export function struct<F extends Fields>(layout: StructLayout<F>): Struct<F> {
  return new Struct(layout);
}
