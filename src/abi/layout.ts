/**
 * The one shape of a C struct's layout in src/abi: its name, sizeof, and each field's offset and
 * type. Layouts are data; src/wire/struct.ts reads and writes bytes by them, so the numbers the
 * ABI probe (test/abi/probe.test.ts) checks against the real headers are the numbers the code uses.
 */

/**
 * Scalar fields (`u64` reads as a bigint, the others as numbers), `cap` for an embedded
 * `struct vfio_info_cap_header` (8 bytes), and `bytes` for a byte array: `length` bytes, or a
 * flexible array member (C `x[]`, any element type) when `length` is absent.
 */
export type FieldType = 'u8' | 'u16' | 'u32' | 's32' | 'u64' | 'cap' | 'bytes';
export type ScalarType = 'u8' | 'u16' | 'u32' | 's32' | 'u64';

export interface Field<T extends FieldType = FieldType> {
  readonly offset: number;
  readonly type: T;
  /** `bytes` only: the array's length; absent for a flexible array member. */
  readonly length?: number;
  /** The first kernel header that has the field (absent: every supported header). */
  readonly since?: HeaderVersion;
}

/** The uAPI headers vfio-ts is checked against (Debian bookworm's 6.1, trixie-backports' 7.3). */
export type HeaderVersion = '6.1' | '7.3';

/**
 * Where a definition comes from: merged uAPI, the seed RFC, the unmerged DMA_BUF attribute, us;
 * or the vfio-user protocol (QEMU's docs/interop/vfio-user.rst) and the peers that differ from it.
 */
export type Origin =
  | 'uapi'
  | 'uapi-6.19'
  | 'rfc'
  | 'proposed'
  | 'vfio-ts'
  | 'vfio-user'
  | 'qemu'
  | 'libvfio-user';

export type Fields = { readonly [name: string]: Field };

export interface StructLayout<F extends Fields = Fields> {
  /** C name, e.g. `vfio_region_info` (without `struct`). */
  readonly name: string;
  readonly size: number;
  readonly fields: F;
  readonly origin: Origin;
  /** sizeof where a header differs from `size` (structs that grew). */
  readonly sizes?: Partial<Record<HeaderVersion, number>>;
}

/** sizeof(struct) as a given header defines it. */
export function sizeIn(l: StructLayout, header: HeaderVersion): number {
  return l.sizes?.[header] ?? l.size;
}

/** Bytes a field takes (0 for a flexible array member). */
export function fieldSize(f: Field): number {
  switch (f.type) {
    case 'u8':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
    case 's32':
      return 4;
    case 'u64':
    case 'cap':
      return 8;
    case 'bytes':
      return f.length ?? 0;
  }
}

export function layout<F extends Fields>(
  name: string,
  size: number,
  origin: Origin,
  fields: F,
  sizes?: Partial<Record<HeaderVersion, number>>,
): StructLayout<F> {
  return sizes ? { name, size, fields, origin, sizes } : { name, size, fields, origin };
}

/** A scalar or embedded-header field at `offset`. */
export function field<T extends Exclude<FieldType, 'bytes'>>(
  offset: number,
  type: T,
  since?: HeaderVersion,
): Field<T> {
  return since ? { offset, type, since } : { offset, type };
}

/** A byte array of `length` bytes at `offset`, or a flexible array member when `length` is absent. */
export function bytes(offset: number, length?: number): Field<'bytes'> {
  return length === undefined ? { offset, type: 'bytes' } : { offset, type: 'bytes', length };
}
