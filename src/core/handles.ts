/**
 * The vocabulary of mappings (docs/wc-uapi.md): every write-combining request path records a
 * mapping handle = (BAR, range, attribute), found through an offset of the device fd (a region
 * offset or an mmap cookie) or through a dma-buf fd. src/core/mmap.ts holds them and is the one
 * place a handle becomes a mapping.
 */

export type MemoryAttribute = 'uc' | 'wc';
/** Which front door a mapping came through. */
export type MappingPath = 'region' | 'rfc-region-flags' | 'cookie' | 'alias-region' | 'dma-buf';

/** An mmap cookie: offsets of the device fd bound to (BAR, attribute). */
export interface Cookie {
  readonly base: bigint;
  readonly size: bigint;
  readonly bar: number;
  readonly attribute: MemoryAttribute;
  released: boolean;
  mappings: number;
}

/** Who owns an offset of the device fd. */
export type OffsetOwner = { kind: 'region'; region: number } | { kind: 'cookie'; cookie: Cookie };

/** A window of a BAR: bytes [offset, offset + length). */
export interface BarRange {
  readonly offset: bigint;
  readonly length: bigint;
}

/** A dma-buf the device exported: BAR ranges, concatenated in order, with one attribute. */
export interface DmaBuf {
  readonly fd: number;
  readonly bar: number;
  readonly ranges: readonly BarRange[];
  readonly size: bigint;
  readonly attribute: MemoryAttribute;
  /** Opened O_RDWR (open_flags): a writable shared mapping of a read-only fd is EACCES. */
  readonly writable: boolean;
}
