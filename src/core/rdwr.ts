/**
 * Region reads and writes, as drivers/vfio/pci/vfio_pci_rdwr.c does them: vfio_pci_bar_rw for
 * BARs and the ROM (through vfio_pci_core_do_io_rw's naturally aligned pieces), vfio_pci_vga_rw,
 * and the config region through vfio_pci_config.c (ConfigSpace).
 */
import { Errno } from '../abi/errno.js';
import {
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../abi/vfio.js';
import { fail } from '../errors.js';
import { view } from '../wire/vfio.js';
import type { DeviceBehaviour, RegisterHandlers } from './behaviour.js';
import { getLE, setLE } from './config/map.js';
import type { ConfigSpace } from './config.js';
import type { MsixDescription } from './description.js';
import type { DeviceRegion, RegionTable } from './regions.js';

/** Bytes of one MSI-X table entry (PCI 3.0 §6.8.2). */
const MSIX_ENTRY_SIZE = 16;

export class RegionAccess {
  constructor(
    private readonly regions: RegionTable,
    private readonly config: ConfigSpace,
    private readonly behaviour: DeviceBehaviour,
    private readonly msix: MsixDescription | undefined,
    /** 8-byte trapped accesses (Linux >= 6.11, the 7.3 profile). */
    private readonly wide: boolean,
  ) {}

  /**
   * pread/pwrite of `buf.length` bytes of `region` at `pos`. Like the kernel: an access starting
   * at or past the region's end is EINVAL, one that crosses it is cut short (vfio_pci_bar_rw:
   * count = min(count, end - pos)). Returns the bytes transferred (a view of `buf`).
   */
  rw(region: DeviceRegion, pos: bigint, buf: Uint8Array, write: boolean): Uint8Array {
    // A position from 2^53 up is past every region's end however it rounds (no region is that
    // large; the config region's range check refuses it too).
    const n = this.access(region, Number(pos), buf, write);
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  /**
   * pread into all of `dst` at a position held in a number (the vfio-user server's hot path):
   * `rw`'s checks and errnos, and nothing allocated for config space or a memory BAR. Returns
   * the bytes read (fewer where the region ends).
   */
  readInto(region: DeviceRegion, pos: number, dst: Uint8Array): number {
    return this.access(region, pos, dst, false);
  }

  private access(region: DeviceRegion, pos: number, buf: Uint8Array, write: boolean): number {
    const op = write ? 'pwrite' : 'pread';
    const index = region.index;
    const rwFlag = write ? VFIO_REGION_INFO_FLAG_WRITE : VFIO_REGION_INFO_FLAG_READ;
    if (!(region.flags & rwFlag)) fail(Errno.EINVAL, op, `region ${index} at 0x${pos.toString(16)}`);
    // The config region has its own range check: the whole access must fit, else EFAULT
    // (vfio_config_do_rw via vfio_pci_config_rw; ConfigSpace throws CONFIG_RANGE_ERRNO).
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (write) this.config.write(pos, buf);
      else this.config.readInto(pos, buf);
      return buf.length;
    }
    const size = Number(region.size);
    if (pos >= size) fail(Errno.EINVAL, op, `region ${index} at 0x${pos.toString(16)}`);
    const count = Math.min(buf.length, size - pos);
    const part = count === buf.length ? buf : buf.subarray(0, count);
    if (index === VFIO_PCI_ROM_REGION_INDEX) {
      if (write) fail(Errno.EINVAL, op, 'ROM is read-only');
      // The memory enable bit is not virtualized (only INTx disable is): a clear bit reaches the
      // device, which stops decoding, so pci_map_rom's pci_get_rom_size finds no 0x55AA signature
      // and returns NULL before any test_mem check: vfio_pci_bar_rw fails ENOMEM (seen on 6.1
      // and 7.3 with e1000e's ROM).
      if (!this.config.memoryEnabled) fail(Errno.ENOMEM, op, 'ROM not readable: memory decode disabled');
      part.set(this.regions.rom!.subarray(pos, pos + count));
      return count;
    }
    if (index === VFIO_PCI_VGA_REGION_INDEX) {
      if (!write) part.fill(0xff);
      return count;
    }
    this.barRw(index, pos, part, write);
    return count;
  }

  /**
   * __vfio_pci_memory_enabled, asked by vfio_pci_core_ioread/iowrite##size when test_mem (the
   * resource is IORESOURCE_MEM): with the memory enable bit clear in vconfig, or the function in
   * D3hot, the access is EIO. I/O BARs are not tested (PCI_COMMAND_IO is never consulted): the
   * access reaches the device, which decodes it or not as its own I/O enable says.
   */
  private assertMemoryEnabled(op: string, index: number): void {
    if (!this.config.memoryEnabled) fail(Errno.EIO, op, `region ${index}: memory decode disabled`);
  }

  /**
   * BAR access: memory-backed BARs read and write their memory; trapped BARs go to the behaviour in
   * naturally aligned pieces, the widest that fits: 4/2/1 bytes on 6.1, 8/4/2/1 on 7.3 (see
   * DeviceBehaviour). The MSI-X table reads as 0xff and drops writes, as vfio_pci_bar_rw's
   * "x_start/x_end" exclusion does; only accesses outside it are memory-tested (EIO), so an
   * access that falls wholly in the table succeeds with memory decode off.
   */
  private barRw(bar: number, at: number, part: Uint8Array, write: boolean): void {
    const b = this.regions.bar(bar)!;
    const mem = this.regions.memoryOf(bar);
    // The MSI-X table's byte range in this BAR (not page-rounded), or none. Only the table:
    // vfio_pci_bar_rw excludes [msix_offset, msix_offset + msix_size); the PBA reads through
    // (seen on 6.1 and 7.3 with nvme and e1000e).
    const holeStart = this.msix?.tableBar === bar ? this.msix.tableOffset : Number.POSITIVE_INFINITY;
    const holeEnd = this.msix?.tableBar === bar ? holeStart + this.msix.tableSize * MSIX_ENTRY_SIZE : 0;
    const testMem = b.kind !== 'io';
    let i = 0;
    while (i < part.length) {
      const pos = at + i;
      if (pos >= holeStart && pos < holeEnd) {
        const n = Math.min(part.length - i, holeEnd - pos);
        if (!write) part.fill(0xff, i, i + n);
        i += n;
        continue;
      }
      // The first access fails the whole pread/pwrite: do_io_rw returns the error, not a count.
      if (testMem) this.assertMemoryEnabled(write ? 'pwrite' : 'pread', bar);
      const limit = Math.min(part.length - i, (holeStart > pos ? holeStart : Number.POSITIVE_INFINITY) - pos);
      if (!testMem && !this.config.ioEnabled) {
        // An I/O BAR with I/O decode off: the command bit reaches the device (only INTx disable
        // is virtualized), which no longer decodes the port: reads all-ones, writes go nowhere
        // (seen on 6.1 and 7.3 with e1000e's BAR2).
        if (!write) part.fill(0xff, i, i + limit);
        i += limit;
      } else if (b.backing === 'trapped' || !mem) {
        i += this.trapped(bar, pos, part, i, limit, write);
      } else {
        if (write) mem.bytes.set(part.subarray(i, i + limit), pos);
        else part.set(mem.bytes.subarray(pos, pos + limit), i);
        i += limit;
      }
    }
  }

  /**
   * One trapped access at `pos`, bytes `i..` of `part`, at most `limit` bytes: returns its size.
   * An 8-byte access to a BAR whose handler takes at most 4 is two 4-byte accesses, low half
   * first, as QEMU's memory core splits an access wider than a region's `.impl.max_access_size`
   * (system/memory.c access_with_adjusted_size).
   */
  private trapped(
    bar: number,
    pos: number,
    part: Uint8Array,
    i: number,
    limit: number,
    write: boolean,
  ): number {
    const h =
      this.behaviour.bars?.[bar] ?? fail(Errno.EIO, write ? 'pwrite' : 'pread', `BAR${bar}: no handler`);
    if (this.wide && pos % 8 === 0 && limit >= 8) {
      if (this.regions.bar(bar)!.maxAccessSize === 4) {
        this.register(h, pos, part, i, 4, write);
        this.register(h, pos + 4, part, i + 4, 4, write);
      } else {
        const dv = view(part);
        if (write) h.write(pos, 8, dv.getBigUint64(i, true));
        else dv.setBigUint64(i, BigInt.asUintN(64, h.read(pos, 8)), true);
      }
      return 8;
    }
    const size: 1 | 2 | 4 = pos % 4 === 0 && limit >= 4 ? 4 : pos % 2 === 0 && limit >= 2 ? 2 : 1;
    this.register(h, pos, part, i, size, write);
    return size;
  }

  /**
   * One access of 1, 2 or 4 bytes, little endian as vfio_pci_core_do_io_rw's
   * le32_to_cpu/cpu_to_le32 give the device (no DataView made: the server's hot path).
   */
  private register(
    h: RegisterHandlers,
    pos: number,
    part: Uint8Array,
    i: number,
    size: 1 | 2 | 4,
    write: boolean,
  ): void {
    if (write) h.write(pos, size, BigInt(getLE(part, i, size)));
    else setLE(part, i, size, Number(BigInt.asUintN(size * 8, h.read(pos, size))));
  }
}
