/**
 * Mappings of the server's memory: region fds (from DEVICE_GET_REGION_INFO), mmap cookie fds and
 * dma-buf fds (from DEVICE_FEATURE), mapped MAP_SHARED into this process.
 *
 * A mapping of a file is only as good as the file's size: a page past its end raises SIGBUS on
 * the first touch, which kills the process (no error can be returned from a memory access). The
 * server chooses the fd, so before every mmap the client checks it (docs/robustness.md, "The
 * client"):
 *
 *   1. sealed against shrinking? fcntl(F_GET_SEALS) has F_SEAL_SHRINK (memfd_create(2), "File
 *      sealing"): then no one, the server included, can ever make it smaller. Our server's memory
 *      is sealed (src/runtime.ts allocateShared). An unsealed fd is refused EPERM, unless the
 *      client was made with `unsealedFds: 'map'` (limits.ts UnsealedFdPolicy);
 *   2. large enough now? fstat: every page of [offset, offset + length) must lie inside the file
 *      (the last one may be partial: the kernel fills it with zeros), else EPROTO. Sealing first
 *      and sizing second means the size cannot change between the check and the mmap.
 *
 * vfio_pci_core_mmap refuses a mapping past the BAR (EINVAL) and the client keeps that rule too,
 * against the region size and sparse areas the server reported.
 */
import { Errno } from '../abi/errno.js';
import { VFIO_PCI_OFFSET_SHIFT, VFIO_REGION_INFO_FLAG_MMAP } from '../abi/vfio.js';
import type { MappingPath, MemoryAttribute } from '../core/device.js';
import { PAGE_SIZE, roundUp } from '../core/offsets.js';
import type { Mapping } from '../driver/file.js';
import { fail, VfioError } from '../errors.js';
import {
  F_SEAL_SHRINK,
  fstatSize,
  getSeals,
  MAP_SHARED,
  mmap,
  PROT_READ,
  PROT_WRITE,
} from '../native/index.js';
import type { DmaBuf } from './ioctl.js';
import type { UnsealedFdPolicy } from './limits.js';
import { type ClientOffsets, inRegionWindows } from './offsets.js';
import type { RegionTable } from './regions.js';

/** What an fd to be mapped came from, for the error that refuses it. */
interface FdOrigin {
  readonly what: string;
  readonly command: string;
}

export class ClientMappings {
  readonly #live = new Set<Mapping>();

  constructor(
    private readonly regions: RegionTable,
    private readonly offsets: ClientOffsets,
    private readonly dmabufs: ReadonlyMap<number, DmaBuf>,
    private readonly unsealed: UnsealedFdPolicy,
  ) {}

  /** Live mappings made through this client. */
  get count(): number {
    return this.#live.size;
  }

  /** mmap of the device fd at `offset`: a region window or an mmap cookie. */
  async mmap(offset: bigint, length: number): Promise<Mapping> {
    const op = 'mmap';
    if (!Number.isSafeInteger(length) || length <= 0 || offset < 0n || offset % PAGE_SIZE)
      fail(Errno.EINVAL, op, 'length 0 or offset not page aligned');
    const len = roundUp(BigInt(length), PAGE_SIZE);
    let hit = this.offsets.lookup(offset);
    if (!hit && inRegionWindows(offset)) {
      await this.regions.getOrEinval(Number(offset >> VFIO_PCI_OFFSET_SHIFT), op);
      hit = this.offsets.lookup(offset);
    }
    if (!hit) return fail(Errno.EINVAL, op, `offset 0x${offset.toString(16)}`);
    const pos = offset - hit.base;
    if (hit.owner.kind === 'cookie') {
      const c = hit.owner.cookie;
      if (c.released) fail(Errno.EINVAL, op, 'cookie released');
      if (pos + len > c.size) fail(Errno.EINVAL, op, 'beyond the BAR');
      const origin = { what: `BAR ${c.bar}'s mmap cookie`, command: 'VFIO_USER_DEVICE_FEATURE' };
      this.offsets.mapped(c, 1);
      try {
        // vfio-user-wc.md §3: the cookie's fd offset 0 is BAR offset 0.
        return this.#map(c.fd, pos, length, origin, c.attribute, 'cookie', () => this.offsets.mapped(c, -1));
      } catch (e) {
        this.offsets.mapped(c, -1);
        throw e;
      }
    }
    const r = await this.regions.getOrEinval(hit.owner.index, op, true);
    if (!(r.flags & VFIO_REGION_INFO_FLAG_MMAP) || r.fd === undefined)
      fail(Errno.EINVAL, op, `region ${r.index} cannot be mapped`);
    if (pos + len > roundUp(r.size, PAGE_SIZE)) fail(Errno.EINVAL, op, 'beyond the region');
    if (r.sparse && !r.sparse.some((a) => pos >= a.offset && pos + len <= a.offset + a.size))
      fail(Errno.EINVAL, op, 'outside the sparse mmap areas');
    const origin = { what: `region ${r.index}'s fd`, command: 'VFIO_USER_DEVICE_GET_REGION_INFO' };
    return this.#map(
      r.fd,
      r.fdOffset + pos,
      length,
      origin,
      r.alias ? 'wc' : 'uc',
      r.alias ? 'alias-region' : 'region',
    );
  }

  /** mmap of a dma-buf fd at `offset` into the BAR ranges it stands for. */
  mmapDmaBuf(fd: number, offset: bigint, length: number): Mapping {
    const op = 'mmap dma-buf';
    const d = this.dmabufs.get(fd) ?? fail(Errno.EBADF, op, `fd ${fd}`);
    if (!Number.isSafeInteger(length) || length <= 0 || offset < 0n || offset % PAGE_SIZE)
      fail(Errno.EINVAL, op, 'alignment');
    // vfio-user-wc.md §2: dma-buf offset X inside range k is fd offset ranges[k].offset + (X - L(k)).
    let at = offset;
    for (const r of d.ranges) {
      if (at < r.length) {
        if (at + BigInt(length) > r.length) fail(Errno.EINVAL, op, 'mapping spans two ranges');
        const origin = { what: `BAR ${d.bar}'s dma-buf`, command: 'VFIO_USER_DEVICE_FEATURE' };
        return this.#map(fd, r.offset + at, length, origin, d.attribute, 'dma-buf');
      }
      at -= r.length;
    }
    return fail(Errno.EINVAL, op, 'beyond the dma-buf');
  }

  /** The two checks of this file's header, then mmap. */
  #checkFd(fd: number, fdOffset: bigint, length: number, from: FdOrigin): void {
    const op = 'mmap';
    let seals = 0;
    try {
      seals = getSeals(fd);
    } catch (e) {
      // EINVAL: a file that cannot be sealed at all (not a memfd): unsealed.
      if (!(e instanceof VfioError)) throw e;
    }
    if (!(seals & F_SEAL_SHRINK) && this.unsealed === 'refuse')
      fail(
        Errno.EPERM,
        op,
        `${from.what} from ${from.command} is not sealed against shrinking (F_SEAL_SHRINK); a server that shrinks it would kill us with SIGBUS (the client option unsealedFds: 'map' trusts it)`,
      );
    const size = fstatSize(fd);
    const end = fdOffset + BigInt(length);
    if (end > roundUp(size, PAGE_SIZE))
      fail(
        Errno.EPROTO,
        op,
        `${from.what} from ${from.command} holds 0x${size.toString(16)} bytes; the mapping needs 0x${fdOffset.toString(16)}+0x${length.toString(16)}`,
      );
  }

  #map(
    fd: number,
    fdOffset: bigint,
    length: number,
    from: FdOrigin,
    attribute: MemoryAttribute,
    via: MappingPath,
    onUnmap?: () => void,
  ): Mapping {
    this.#checkFd(fd, fdOffset, length, from);
    const m = mmap(fd, fdOffset, length, PROT_READ | PROT_WRITE, MAP_SHARED);
    let live = true;
    const mapping: Mapping = {
      bytes: m.bytes,
      length,
      attribute,
      via,
      unmap: () => {
        if (!live) return;
        live = false;
        m.unmap();
        this.#live.delete(mapping);
        onUnmap?.();
      },
    };
    this.#live.add(mapping);
    return mapping;
  }

  /** Unmaps every mapping (the client closes). */
  close(): void {
    for (const m of [...this.#live]) m.unmap();
  }
}
