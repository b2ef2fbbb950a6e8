/**
 * The one number format of the text vfio-ts prints (`info`, the demo, formatReport), lspci's:
 * addresses, offsets and register values in lowercase hex without `0x` (lspci -vv: "Memory at
 * fe800000", "offset=00002000"), sizes in binary units as lspci's show_size writes them
 * ("[size=4M]"), counts in decimal. JSON output has its own convention (describe.ts, reportJson).
 */

/** Lowercase hex, no prefix, zero-padded to `width` digits. */
export function hex(n: number | bigint, width = 0): string {
  return n.toString(16).padStart(width, '0');
}

const SIZE_UNITS = ['', 'K', 'M', 'G', 'T'] as const;

/** A size as lspci writes it: the largest binary unit that divides it (256, 4K, 4084K, 1M, 2G). */
export function sizeText(size: number | bigint): string {
  let n = BigInt(size);
  let unit = 0;
  while (n !== 0n && n % 1024n === 0n && unit < SIZE_UNITS.length - 1) {
    n /= 1024n;
    unit++;
  }
  return `${n}${SIZE_UNITS[unit]}`;
}

/** `[size=4M]`, lspci's size suffix; empty for 0 (lspci prints none). */
export function sizeTag(size: number | bigint): string {
  return BigInt(size) === 0n ? '' : ` [size=${sizeText(size)}]`;
}

/** An inclusive range `start-end` in hex, then its size: `3000-3fffff [size=4084K]`. */
export function rangeText(offset: bigint, size: bigint): string {
  return `${hex(offset)}-${hex(offset + size - 1n)}${sizeTag(size)}`;
}

/** lspci's flag notation: `Name+` when set, `Name-` when not. */
export function flag(name: string, set: boolean | number): string {
  return `${name}${set ? '+' : '-'}`;
}
