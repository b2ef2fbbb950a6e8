/**
 * The client's own offset space: what the driver sees as the device fd's offsets. Region i sits
 * at i << 40 (VFIO_PCI_OFFSET_SHIFT, like every Linux vfio-pci), whatever offset the server's
 * reply names (that one is an offset into the fd sent with the reply, spec
 * "VFIO_USER_DEVICE_GET_REGION_INFO", and is kept with the fd). mmap cookies
 * (docs/vfio-user-wc.md §3) get client offsets of their own, packed above the alias windows as
 * the core packs its own (src/core/wc.ts), in the core's OffsetSpace (src/core/offsets.ts).
 *
 * A cookie the driver releases while it is still mapped keeps its offsets and its fd until its
 * last mapping goes, as in the core.
 */
import { Errno } from '../abi/errno.js';
import { PCI_STD_NUM_BARS, VFIO_PCI_NUM_REGIONS, VFIO_PCI_OFFSET_SHIFT } from '../abi/vfio.js';
import type { Cookie } from '../core/handles.js';
import { OffsetSpace, type Range } from '../core/offsets.js';
import { fail } from '../errors.js';
import { closeFd } from '../native/index.js';

/** Regions live in fixed windows below this index; cookies are packed above (as the core does). */
const COOKIE_BASE_INDEX = BigInt(VFIO_PCI_NUM_REGIONS + PCI_STD_NUM_BARS);
/** Bytes of one region window in the client's offset space (2^40, VFIO_PCI_OFFSET_SHIFT). */
export const WINDOW = 1n << VFIO_PCI_OFFSET_SHIFT;
const WINDOW_MASK = WINDOW - 1n;

/** A cookie as the core keeps one, plus the server's name for it and the fd that maps it. */
export interface ClientCookie extends Cookie {
  /** The server's cookie offset (named in its release). */
  readonly serverOffset: bigint;
  /** The fd that came with the cookie: its offset R is BAR offset R. */
  readonly fd: number;
}

export type Owner = { kind: 'region'; index: number } | { kind: 'cookie'; cookie: ClientCookie };

/** Offset of region `index` in the client's offset space. */
export function regionBase(index: number): bigint {
  return BigInt(index) << VFIO_PCI_OFFSET_SHIFT;
}

/** Whether `offset` lies in a region window (below the cookies), where a region may yet be learned. */
export function inRegionWindows(offset: bigint): boolean {
  return offset >> VFIO_PCI_OFFSET_SHIFT < COOKIE_BASE_INDEX;
}

export class ClientOffsets {
  readonly #space = new OffsetSpace<Owner>();
  readonly #cookies = new Set<ClientCookie>();

  /** Claims region `index`'s window the first time the region is seen (alias regions included). */
  addRegion(index: number): void {
    const base = regionBase(index);
    if (index < Number(COOKIE_BASE_INDEX) && !this.#space.lookup(base))
      this.#space.reserveFixed(base, WINDOW, { kind: 'region', index });
  }

  /** Region index and position for a pread/pwrite offset; cookies are not readable (EINVAL). */
  resolve(offset: bigint, op: string): { index: number; pos: bigint } {
    const index = offset >> VFIO_PCI_OFFSET_SHIFT;
    if (offset < 0n || index >= COOKIE_BASE_INDEX) fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    return { index: Number(index), pos: offset & WINDOW_MASK };
  }

  /** The region window or cookie that holds `offset`. */
  lookup(offset: bigint): Range<Owner> | undefined {
    return this.#space.lookup(offset);
  }

  /** A cookie the server granted: given offsets of its own above the region windows. */
  addCookie(c: Omit<ClientCookie, 'base' | 'released' | 'mappings'>): ClientCookie {
    const cookie: ClientCookie = { ...c, base: 0n, released: false, mappings: 0 };
    const range = this.#space.allocate(
      cookie.size,
      { kind: 'cookie', cookie },
      COOKIE_BASE_INDEX << VFIO_PCI_OFFSET_SHIFT,
    );
    (cookie as { base: bigint }).base = range.base;
    this.#cookies.add(cookie);
    return cookie;
  }

  /** The live cookie whose offset is exactly `at`. */
  cookieAt(at: bigint): ClientCookie | undefined {
    const hit = this.#space.lookup(at);
    return hit?.owner.kind === 'cookie' && hit.base === at && !hit.owner.cookie.released
      ? hit.owner.cookie
      : undefined;
  }

  /** The driver released `c`: its offsets and fd go now, or with its last mapping. */
  release(c: ClientCookie): void {
    c.released = true;
    if (c.mappings === 0) this.#free(c);
  }

  /** A mapping through `c` was made (+1) or removed (-1). */
  mapped(c: ClientCookie, delta: 1 | -1): void {
    c.mappings += delta;
    if (delta < 0 && c.mappings === 0 && c.released) this.#free(c);
  }

  #free(c: ClientCookie): void {
    if (!this.#cookies.delete(c)) return;
    this.#space.release(c.base);
    closeFd(c.fd);
  }

  /** Frees every cookie (the client closes; their mappings are gone). */
  close(): void {
    for (const c of [...this.#cookies]) this.#free(c);
  }
}
