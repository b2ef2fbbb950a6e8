/**
 * Physical Region Page entries for one transfer (NVMe 1.4 §4.3 "Physical Region Page Entry and
 * List"): PRP1 addresses the first page, and may start at a dword-aligned offset in it; every
 * further page starts at offset 0. Two pages fit PRP1 and PRP2; more make PRP2 point to a PRP
 * List, pages of 8-byte entries. When a transfer needs more entries than one list page holds,
 * "the last PRP entry before the end of the memory page shall be a pointer to the next PRP List"
 * (§4.3): a full page carries 511 data entries and the chain pointer, the last page up to 512.
 * A command's list pages are contiguous here (io.ts gives each command slot its own run of
 * pages), so page k chains to the page after it.
 */
import { Errno } from '../../abi/errno.js';
import { fail } from '../../errors.js';
import { PAGE } from './dma.js';
import { PRP_ENTRY_BYTES } from './spec.js';

/** Entries in one PRP List page. */
export const PRP_LIST_ENTRIES = PAGE / PRP_ENTRY_BYTES;
/**
 * The driver's largest transfer whatever MDTS allows (MDTS 0 means no limit of the
 * controller's own): 4 MiB, Linux 6.1's NVME_MAX_KB_SZ (drivers/nvme/host/pci.c).
 */
export const MAX_TRANSFER_BYTES = 4 << 20;

export interface Prps {
  readonly prp1: bigint;
  readonly prp2: bigint;
  /**
   * The entries to write from the first list page on (chain pointers included, at the last slot
   * of every full page); empty when PRP2 is a data page or 0.
   */
  readonly list: readonly bigint[];
}

/** Memory pages `length` bytes at `iova` touch. */
export function prpPages(iova: bigint, length: number): number {
  const page = BigInt(PAGE);
  const first = iova & ~(page - 1n);
  return Number((iova + BigInt(length) - first + page - 1n) / page);
}

/** PRP List pages a transfer over `pages` memory pages needs: 0 when PRP1 and PRP2 suffice. */
export function prpListPages(pages: number): number {
  const entries = pages - 1;
  if (entries <= 1) return 0;
  if (entries <= PRP_LIST_ENTRIES) return 1;
  // Every page but the last gives one slot to the chain pointer.
  return Math.ceil((entries - 1) / (PRP_LIST_ENTRIES - 1));
}

/**
 * The PRPs of `length` bytes at `iova`. `listIova` is the page-aligned start of `listPages`
 * contiguous pages where the PRP List will sit if one is needed; more than that is EINVAL.
 */
export function buildPrps(iova: bigint, length: number, listIova: bigint, listPages = 1): Prps {
  if (length <= 0 || !Number.isSafeInteger(length)) fail(Errno.EINVAL, 'nvme PRP', `length ${length}`);
  // §4.3: "the offset shall be dword aligned" (bits 1:0 of a PRP entry are 0).
  if (iova & 3n) fail(Errno.EINVAL, 'nvme PRP', `buffer address 0x${iova.toString(16)} is not dword aligned`);
  const page = BigInt(PAGE);
  const first = iova & ~(page - 1n);
  const pages = prpPages(iova, length);
  if (pages === 1) return { prp1: iova, prp2: 0n, list: [] };
  if (pages === 2) return { prp1: iova, prp2: first + page, list: [] };
  const need = prpListPages(pages);
  if (need > listPages)
    fail(
      Errno.EINVAL,
      'nvme PRP',
      `${length} bytes span ${pages} pages: ${need} PRP List pages, more than the ${listPages} this command has`,
    );
  if (listIova & (page - 1n))
    fail(Errno.EINVAL, 'nvme PRP', `PRP List at 0x${listIova.toString(16)} is not page aligned`);
  const list: bigint[] = [];
  for (let i = 1; i < pages; i++) {
    // The last slot of a list page chains on when more than one entry is still to come.
    if (list.length % PRP_LIST_ENTRIES === PRP_LIST_ENTRIES - 1 && pages - i > 1)
      list.push(listIova + BigInt((list.length + 1) / PRP_LIST_ENTRIES) * page);
    list.push(first + BigInt(i) * page);
  }
  return { prp1: iova, prp2: listIova, list };
}
