/**
 * Physical Region Page entries for one transfer (NVMe 1.4 §4.3 "Physical Region Page Entry and
 * List"): PRP1 addresses the first page, and may start at a dword-aligned offset in it; every
 * further page starts at offset 0. Two pages fit PRP1 and PRP2; more make PRP2 point to a PRP
 * List, one page of 8-byte entries. A list that does not fit one page would need chaining (its
 * last entry pointing to the next list); the driver bounds a transfer instead (MAX_PRP_LIST).
 */
import { Errno } from '../../abi/errno.js';
import { fail } from '../../errors.js';
import { PAGE } from './dma.js';
import { PRP_ENTRY_BYTES } from './spec.js';

/** Entries in one PRP List page: a transfer spans at most this many pages plus PRP1's. */
export const MAX_PRP_LIST = PAGE / PRP_ENTRY_BYTES;

export interface Prps {
  readonly prp1: bigint;
  readonly prp2: bigint;
  /** Entries to write into the command's PRP List page (empty when PRP2 is a data page or 0). */
  readonly list: readonly bigint[];
}

/** The PRPs of `length` bytes at `iova`; `listIova` is where the PRP List will sit if needed. */
export function buildPrps(iova: bigint, length: number, listIova: bigint): Prps {
  if (length <= 0 || !Number.isSafeInteger(length)) fail(Errno.EINVAL, 'nvme PRP', `length ${length}`);
  // §4.3: "the offset shall be dword aligned" (bits 1:0 of a PRP entry are 0).
  if (iova & 3n) fail(Errno.EINVAL, 'nvme PRP', `buffer address 0x${iova.toString(16)} is not dword aligned`);
  const page = BigInt(PAGE);
  const first = iova & ~(page - 1n);
  const end = iova + BigInt(length);
  const pages = Number((end - first + page - 1n) / page);
  if (pages - 1 > MAX_PRP_LIST)
    fail(
      Errno.EINVAL,
      'nvme PRP',
      `${length} bytes span ${pages} pages: more than one PRP List (${MAX_PRP_LIST} entries) holds`,
    );
  if (pages === 1) return { prp1: iova, prp2: 0n, list: [] };
  if (pages === 2) return { prp1: iova, prp2: first + page, list: [] };
  const list: bigint[] = [];
  for (let i = 1; i < pages; i++) list.push(first + BigInt(i) * page);
  return { prp1: iova, prp2: listIova, list };
}
