/**
 * mmap(2) with a zero-copy JS view of the mapped memory.
 *
 * Lifetime: `bytes` is a koffi.view over the mapping (an external ArrayBuffer). V8 cannot detach
 * such a buffer, so `unmap()` cannot take the view away from code still holding it. To keep a
 * stale view from ever reading or writing whatever the kernel maps at that address next,
 * `unmap()` atomically replaces the mapping with an inaccessible reservation (mmap MAP_FIXED
 * over it, PROT_NONE, MAP_NORESERVE: no memory, only address space): the file or device mapping
 * is really gone (its vma leaves /proc/self/maps, the device or memfd is released), and a stale
 * access faults at once instead of corrupting memory. The reservation is munmapped when the
 * ArrayBuffer is garbage collected. A mapping that is dropped without `unmap()` is munmapped at
 * that point too.
 */
import { constants } from 'node:buffer';
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { checkOffset } from './fd.js';
import { failErrno, libc, viewAt } from './libc.js';

// asm-generic/mman-common.h, asm-generic/mman.h
export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;

const MAP_FAILED = -1;

/**
 * The longest mapping `mmap` offers: the largest ArrayBuffer this Node makes (2^32 bytes on
 * Node 20). koffi.view aborts the whole process (a napi fatal error, not an exception) when
 * asked for a longer view, so this is checked before mapping. Map larger regions in parts.
 */
export const MAX_MAPPING_BYTES = constants.MAX_LENGTH;

/** A live mmap. `bytes` sees the mapped memory itself (no copy) until `unmap()`. */
export interface NativeMapping {
  /** Start address of the mapping. */
  readonly address: bigint;
  /** Length in bytes as requested (the kernel rounds the vma up to whole pages). */
  readonly length: number;
  /** The mapped memory; never touch it after `unmap()` (a stale access faults, see above). */
  readonly bytes: Uint8Array;
  /** True until `unmap()`. */
  readonly mapped: boolean;
  /** Removes the mapping; idempotent. */
  unmap(): void;
}

interface Region {
  address: number;
  length: number;
}

// Runs after the view's ArrayBuffer is collected: nobody can reach the address any more.
const reclaim = new FinalizationRegistry<Region>((r) => {
  libc().munmap(r.address, r.length);
});

class Mapping implements NativeMapping {
  readonly address: bigint;
  readonly bytes: Uint8Array;
  #mapped = true;

  constructor(
    private readonly region: Region,
    readonly length: number,
  ) {
    this.address = BigInt(region.address);
    const buffer = viewAt(region.address, length);
    this.bytes = new Uint8Array(buffer);
    reclaim.register(buffer, region, region);
  }

  get mapped(): boolean {
    return this.#mapped;
  }

  unmap(): void {
    if (!this.#mapped) return;
    this.#mapped = false;
    const c = libc();
    const { address, length } = this.region;
    const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
    if (c.mmap(address, length, PROT_NONE, flags, -1, 0n) !== address) {
      // No reservation (out of vmas?): plain munmap; the view then dangles, and the collector
      // must not munmap an address that may have been handed out again.
      reclaim.unregister(this.region);
      if (c.munmap(address, length) < 0) failErrno('munmap');
    }
  }
}

/**
 * mmap(2) of `length` bytes of `fd` at `offset` (a multiple of the page size), with `prot` from
 * PROT_* and `flags` from MAP_* (MAP_SHARED to share with the fd and other mappings).
 */
export function mmap(fd: number, offset: bigint, length: number, prot: number, flags: number): NativeMapping {
  checkOffset(offset, 'mmap');
  if (!Number.isSafeInteger(length) || length <= 0 || length > MAX_MAPPING_BYTES) {
    fail(Errno.EINVAL, 'mmap', `length ${length} outside 1..${MAX_MAPPING_BYTES}`);
  }
  if (flags & MAP_FIXED) fail(Errno.EINVAL, 'mmap', 'MAP_FIXED is not offered');
  const address = libc().mmap(0, length, prot, flags, fd, offset);
  if (address === MAP_FAILED) failErrno('mmap');
  return new Mapping({ address, length }, length);
}
