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

/** Whether `v` fits a field of `type` exactly (the check a careful encoder makes). */
function fits(type: ScalarType, v: number | bigint): boolean {
  if (type === 'u64') return typeof v === 'bigint' && v >= 0n && v <= U64_MAX;
  if (typeof v !== 'number' || !Number.isInteger(v)) return false;
  if (type === 's32') return v >= -0x8000_0000 && v <= 0x7fff_ffff;
  return v >= 0 && v < 2 ** (8 * WIDTH[type]);
}

export class Struct<F extends Fields> {
  readonly name: string;
  /** sizeof(struct). */
  readonly size: number;
  private readonly slots: readonly Slot[];
  private readonly byName: ReadonlyMap<string, Slot>;

  constructor(readonly layout: StructLayout<F>) {
    this.name = layout.name;
    this.size = layout.size;
    const slots: Slot[] = [];
    for (const [name, f] of Object.entries(layout.fields) as [string, Field][])
      if (f.type !== 'cap' && f.type !== 'bytes') slots.push({ name, offset: f.offset, type: f.type });
    this.slots = slots;
    this.byName = new Map(slots.map((s) => [s.name, s]));
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
    const dv = view(buf);
    const out: Record<string, number | bigint> = {};
    for (const s of this.slots) out[s.name] = load(dv, base + s.offset, s.type);
    return out as StructValue<F>;
  }

  /**
   * Stores the fields `value` names (the others keep their bytes), truncating like `set`. Only
   * those fields need to fit in `buf` (a struct's head, as an older header defines it, is fine).
   */
  write(buf: Uint8Array, value: Partial<StructValue<F>>, base = 0): void {
    const dv = view(buf);
    for (const s of this.slots) {
      const v = (value as Record<string, number | bigint | undefined>)[s.name];
      if (v === undefined) continue;
      this.bounds(buf, base + s.offset + WIDTH[s.type]);
      store(dv, base + s.offset, s.type, v);
    }
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
    for (const s of this.slots) {
      const v = (value as Record<string, number | bigint | undefined>)[s.name];
      if (v !== undefined && !fits(s.type, v))
        throw new VfioError(
          Errno.EINVAL,
          `encode ${what}`,
          `${label}${s.name} ${String(v)} is not a ${s.type}`,
        );
    }
  }

  /** A new zeroed struct of `size + extra` bytes with `value`'s fields stored (truncating). */
  encode(value: Partial<StructValue<F>> = {}, extra = 0): Uint8Array {
    const out = new Uint8Array(this.size + extra);
    this.write(out, value);
    return out;
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
