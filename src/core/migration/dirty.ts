/**
 * Device DMA logging (vfio.h VFIO_DEVICE_FEATURE_DMA_LOGGING_START / _STOP / _REPORT; the spec's
 * section of the same names): while logging, every page the device writes through DMA is
 * recorded, and a report reads the record back as a bitmap and clears it. "Only DMA WRITEs are
 * logged." The record is kept per page of the size START settled on, in chunks allocated only
 * where the device wrote: a START over the whole IOVA space costs nothing until a write lands.
 *
 * DmaSpace.write (src/core/dma.ts) calls `mark` for every write the device issues, mapped
 * memory and DMA by message alike, so nothing the device writes escapes the log.
 */

/** Pages per chunk of the record: one 4 KiB bitmap. */
const CHUNK_PAGES = 32768;
const CHUNK_SHIFT = 15;
const U64_MAX = (1n << 64n) - 1n;

export interface LogRange {
  readonly start: bigint;
  /** Exclusive. */
  readonly end: bigint;
}

export class DirtyLog {
  readonly #shift: bigint;
  /** Sorted, disjoint; empty means every address (vfio-user: num_ranges 0 logs all writes). */
  readonly #ranges: readonly LogRange[];
  /** Chunk index -> bitmap of its pages (a bit per page, 32 per word). */
  readonly #chunks = new Map<number, Uint32Array>();

  /** `pageSize`: a power of two of at least 4 KiB (the engine settles it). */
  constructor(
    readonly pageSize: bigint,
    ranges: readonly LogRange[],
  ) {
    this.#shift = BigInt(pageSize.toString(2).length - 1);
    this.#ranges = [...ranges].sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  /** The device wrote [iova, iova + length). */
  mark(iova: bigint, length: number): void {
    if (length <= 0) return;
    const end = iova + BigInt(length);
    if (this.#ranges.length === 0) {
      this.#markPages(iova, end);
      return;
    }
    for (const r of this.#ranges) {
      if (r.start >= end) break;
      if (r.end <= iova) continue;
      this.#markPages(iova > r.start ? iova : r.start, end < r.end ? end : r.end);
    }
  }

  #markPages(start: bigint, end: bigint): void {
    const first = Number(start >> this.#shift);
    const last = Number((end - 1n) >> this.#shift);
    for (let p = first; p <= last; p++) {
      const c = Math.floor(p / CHUNK_PAGES);
      let bits = this.#chunks.get(c);
      if (!bits) {
        bits = new Uint32Array(CHUNK_PAGES / 32);
        this.#chunks.set(c, bits);
      }
      const i = p - c * CHUNK_PAGES;
      bits[i >>> 5]! |= 1 << (i & 31);
    }
  }

  /**
   * DMA_LOGGING_REPORT: sets bit i of `bitmap` (little-endian u64 words: byte i/8, bit i%8) when
   * the device wrote into [iova + i * pageSize, iova + (i + 1) * pageSize), and clears what it
   * reported. `pageSize` may differ from the log's: a smaller one repeats a logged page's bit,
   * a larger one ORs several ("The driver will format its internal logging to match the
   * reporting page size"). Only sets bits, never clears one ("LOGGING_REPORT will only set
   * bits in the bitmap and never clear or perform any initialization of the user provided
   * bitmap"). `bitmap` must hold ceil(length / pageSize) bits.
   */
  report(iova: bigint, length: bigint, pageSize: bigint, bitmap: Uint8Array): void {
    if (length === 0n) return;
    const end = iova + length;
    const first = Number(iova >> this.#shift);
    const last = Number((end - 1n) >> this.#shift);
    const lo = Math.floor(first / CHUNK_PAGES);
    const hi = Math.floor(last / CHUNK_PAGES);
    const chunks =
      hi - lo < this.#chunks.size
        ? Array.from({ length: hi - lo + 1 }, (_, k) => lo + k).filter((c) => this.#chunks.has(c))
        : [...this.#chunks.keys()].filter((c) => c >= lo && c <= hi);
    for (const c of chunks) {
      const bits = this.#chunks.get(c)!;
      let any = false;
      for (let w = 0; w < bits.length; w++) {
        let word = bits[w]!;
        if (word === 0) continue;
        for (let b = 0; word !== 0; b++, word >>>= 1) {
          if (!(word & 1)) continue;
          const page = c * CHUNK_PAGES + w * 32 + b;
          if (page < first || page > last) {
            any = true;
            continue;
          }
          const pStart = BigInt(page) << this.#shift;
          const pEnd = pStart + this.pageSize;
          const from = pStart > iova ? pStart : iova;
          const to = pEnd < end ? pEnd : end;
          const i0 = Number((from - iova) / pageSize);
          const i1 = Number((to - 1n - iova) / pageSize);
          for (let i = i0; i <= i1; i++) bitmap[i >>> 3]! |= 1 << (i & 7);
          // Read and clear: a page wholly inside the range is reported whole; one the range only
          // grazes keeps its bit for the report that covers the rest of it.
          if (pStart >= iova && pEnd <= end) bits[w]! &= ~(1 << b);
          else any = true;
        }
        if (bits[w] !== 0) any = true;
      }
      if (!any) this.#chunks.delete(c);
    }
  }

  /** Pages recorded and not yet reported (tests, PRECOPY_INFO-style estimates). */
  get pending(): number {
    let n = 0;
    for (const bits of this.#chunks.values())
      for (const w of bits) {
        let x = w;
        while (x) {
          x &= x - 1;
          n++;
        }
      }
    return n;
  }
}

/** Bytes of a report bitmap for `length` bytes in pages of `pageSize`: whole u64 words. */
export function bitmapBytes(length: bigint, pageSize: bigint): bigint {
  const pages = (length + pageSize - 1n) / pageSize;
  return ((pages + 63n) / 64n) * 8n;
}

/**
 * The end of a range, or undefined when iova + length does not fit a u64 (EOVERFLOW):
 * vfio_main.c's `check_add_overflow(iova, length, &iova_end) || iova_end > ULONG_MAX`, so a
 * range ending exactly at 2^64 overflows too.
 */
export function rangeEnd(iova: bigint, length: bigint): bigint | undefined {
  const end = iova + length;
  return end > U64_MAX ? undefined : end;
}

export { CHUNK_SHIFT as DIRTY_CHUNK_SHIFT };
