/**
 * The differential probe: one fixed sequence of requests on a VFIO device file — the same bytes
 * whether the file is Linux's vfio-pci (src/kernel/device.ts, inside a QEMU guest) or the
 * in-process model (driver/local.ts over core/device.ts) — recorded as a transcript of cases
 * `{name, request, result}`. Two transcripts of the same device are compared case by case
 * (test/kernel/differential.test.ts); the kernel is the reference.
 *
 * `result` is `ok <ret> <out-hex>` / `n=<count> <hex>` / `errno <NAME>`. Cases marked `info`
 * read values only the real hardware or firmware can know (BAR addresses the guest BIOS assigned,
 * the interrupt line, register contents of the devices the model describes without registers:
 * nvme, e1000e, and every ROM): they are shown but not counted. BAR contents of the devices the
 * model implements (edu, ivshmem: `MODELLED_CONTENTS`) are counted. Where a firmware value is
 * read back after a write (BAR restore, reset), the case compares it with the same side's
 * earlier read ('same' / 'differs ...') and is counted. Case names are unique.
 * The sequence changes device state (IRQs, command register, reset) in a fixed order, so both
 * sides see the same history.
 */
import { errnoName } from '../../src/abi/errno.js';
import * as P from '../../src/abi/pci.js';
import {
  VFIO_BASE,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_IOEVENTFD,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_QUERY_GFX_PLANE,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_TYPE,
} from '../../src/abi/vfio.js';
import type { Mapping, VfioDeviceFile } from '../../src/driver/file.js';
import { VfioError } from '../../src/errors.js';
import {
  closeFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  eventfdCreate,
  eventfdRead,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  openPath,
} from '../../src/native/index.js';
import { hotResetStruct, putU32, putU64, u32, u64 } from '../../src/wire/vfio.js';

export interface ProbeCase {
  readonly name: string;
  /** What was asked, in short (hex of the input bytes for ioctls). */
  readonly request: string;
  readonly result: string;
  /** A value only the real device/firmware can know: reported, not counted as a difference. */
  readonly info?: boolean;
}

export interface ProbeTarget {
  readonly file: VfioDeviceFile;
  /** mmap(MAP_PRIVATE) of the device fd (the kernel refuses it); absent: the case is skipped. */
  mmapPrivate?(offset: bigint, length: number): Promise<Mapping>;
}

const PAGE = 4096n;
/**
 * vendor:device of the devices whose BAR contents the model implements (src/devices/edu.ts,
 * ivshmem.ts): their BAR reads are compared. nvme and e1000e are descriptions without registers.
 */
export const MODELLED_CONTENTS: ReadonlySet<string> = new Set(['1234:11e8', '1af4:1110']);
/** The command register's memory enable bit (PCI_COMMAND_MEMORY). */
const COMMAND_MEMORY = 0x2;
const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const h = (n: number | bigint): string => `0x${n.toString(16)}`;
const REGION_CONFIG = 7;

function errText(e: unknown): string {
  if (e instanceof VfioError) return `errno ${errnoName(e.errno)}`;
  throw e;
}

/** VFIO's _IO(VFIO_TYPE, VFIO_BASE + n): the unknown-ioctl probes. */
const vfioRaw = (n: number): number => (VFIO_TYPE << 8) | (VFIO_BASE + n);

export class Prober {
  readonly cases: ProbeCase[] = [];
  private regionOffset = new Map<number, bigint>();
  private regionSize = new Map<number, bigint>();
  private regionFlags = new Map<number, number>();
  private configSize = 256;
  /** The device's BAR contents are the model's (MODELLED_CONTENTS); set by `reads`. */
  private contentsModelled = false;
  private readonly names = new Set<string>();
  /** BAR registers as read before the memory-decode cases (bit 0: I/O space). */
  private readonly barFlags = new Map<number, number>();

  constructor(private readonly t: ProbeTarget) {}

  private get f(): VfioDeviceFile {
    return this.t.file;
  }

  /** @throws Error for a name already used: compareTranscripts matches cases by name. */
  add(name: string, request: string, result: string, info = false): void {
    if (this.names.has(name)) throw new Error(`probe case '${name}' twice`);
    this.names.add(name);
    this.cases.push(info ? { name, request, result, info } : { name, request, result });
  }

  /** An ioctl case; returns the buffer and result (undefined on error). */
  async io(name: string, request: number, arg: Uint8Array, info = false): Promise<number | undefined> {
    const req = hex(arg);
    try {
      const r = await this.f.ioctl(request, arg);
      this.add(name, req, `ok ${r} ${hex(arg)}`, info);
      return r;
    } catch (e) {
      this.add(name, req, errText(e), info);
      return undefined;
    }
  }

  private async cfgRead(off: number, len: number): Promise<Uint8Array | undefined> {
    try {
      return await this.f.pread(this.regionOffset.get(REGION_CONFIG)! + BigInt(off), len);
    } catch {
      return undefined;
    }
  }

  private async cfgRead32(off: number): Promise<number> {
    const b = await this.cfgRead(off, 4);
    return b && b.length === 4 ? u32(b, 0) : 0;
  }

  async read(name: string, offset: bigint, len: number, info = false, valueInfo = false): Promise<void> {
    try {
      const b = await this.f.pread(offset, len);
      if (valueInfo) {
        this.add(name, `pread ${h(offset)} ${len}`, `n=${b.length}`, info);
        this.add(`${name} value`, `pread ${h(offset)} ${len}`, `n=${b.length} ${hex(b)}`, true);
      } else this.add(name, `pread ${h(offset)} ${len}`, `n=${b.length} ${hex(b)}`, info);
    } catch (e) {
      this.add(name, `pread ${h(offset)} ${len}`, errText(e), info);
    }
  }

  async write(name: string, offset: bigint, data: Uint8Array, info = false): Promise<void> {
    try {
      const n = await this.f.pwrite(offset, data);
      this.add(name, `pwrite ${h(offset)} ${hex(data)}`, `n=${n}`, info);
    } catch (e) {
      this.add(name, `pwrite ${h(offset)} ${hex(data)}`, errText(e), info);
    }
  }

  async map(name: string, offset: bigint, length: number, priv = false): Promise<void> {
    let m: Mapping | undefined;
    try {
      if (priv) {
        if (!this.t.mmapPrivate) return;
        m = await this.t.mmapPrivate(offset, length);
      } else m = await this.f.mmap(offset, length);
      this.add(name, `mmap${priv ? ' private' : ''} ${h(offset)} ${h(length)}`, `ok len=${h(m.length)}`);
    } catch (e) {
      this.add(name, `mmap${priv ? ' private' : ''} ${h(offset)} ${h(length)}`, errText(e));
    } finally {
      m?.unmap();
    }
  }

  // ---------------------------------------------------------------------------------------------
  async run(): Promise<ProbeCase[]> {
    await this.deviceInfo();
    await this.regionInfo();
    await this.irqInfo();
    await this.unknownIoctls();
    await this.features();
    await this.dmaBuf();
    await this.mmaps();
    await this.reads();
    await this.config();
    await this.memoryDecode();
    await this.setIrqs();
    await this.lowPower();
    await this.reset();
    return this.cases;
  }

  private async deviceInfo(): Promise<void> {
    for (const argsz of [0, 8, 15, 16, 18, 20, 22, 24, 32]) {
      const b = new Uint8Array(32).fill(0xa5);
      putU32(b, 0, argsz);
      await this.io(`DEVICE_GET_INFO argsz=${argsz}`, VFIO_DEVICE_GET_INFO, b);
    }
  }

  private regionBuf(index: number, argsz: number, size = Math.max(argsz, 32)): Uint8Array {
    const b = new Uint8Array(size);
    putU32(b, 0, argsz);
    putU32(b, 8, index);
    return b;
  }

  private async regionInfo(): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const b = this.regionBuf(i, 32);
      const r = await this.io(`REGION_INFO ${i} argsz=32`, VFIO_DEVICE_GET_REGION_INFO, b);
      if (r === undefined) continue;
      this.regionOffset.set(i, u64(b, 24));
      this.regionSize.set(i, u64(b, 16));
      this.regionFlags.set(i, u32(b, 4));
      const want = u32(b, 0);
      if (want > 32 && want <= 4096) {
        const b2 = this.regionBuf(i, want);
        await this.io(`REGION_INFO ${i} argsz=${want}`, VFIO_DEVICE_GET_REGION_INFO, b2);
        // Asking with more than needed: argsz stays what the caller gave.
        const b3 = this.regionBuf(i, want + 16);
        await this.io(`REGION_INFO ${i} argsz=${want}+16`, VFIO_DEVICE_GET_REGION_INFO, b3);
      }
    }
    for (const i of [99, 0xffff_ffff])
      await this.io(`REGION_INFO ${h(i)}`, VFIO_DEVICE_GET_REGION_INFO, this.regionBuf(i, 32));
    for (const argsz of [0, 8, 16, 31])
      for (const i of [0, REGION_CONFIG])
        await this.io(
          `REGION_INFO ${i} bad argsz=${argsz}`,
          VFIO_DEVICE_GET_REGION_INFO,
          this.regionBuf(i, argsz, 64),
        );
    for (const i of [0, 2, REGION_CONFIG]) {
      const g = this.regionBuf(i, 32);
      putU32(g, 4, 0xffff_ffff);
      await this.io(`REGION_INFO ${i} garbage flags`, VFIO_DEVICE_GET_REGION_INFO, g);
      const c = this.regionBuf(i, 32);
      putU32(c, 12, 0xdead_beef);
      putU64(c, 16, 0x1234_5678_9abc_def0n);
      putU64(c, 24, 0xffff_ffff_ffff_ffffn);
      await this.io(`REGION_INFO ${i} garbage cap_offset/size/offset`, VFIO_DEVICE_GET_REGION_INFO, c);
    }
  }

  private async irqInfo(): Promise<void> {
    const buf = (index: number, argsz: number) => {
      const b = new Uint8Array(32);
      putU32(b, 0, argsz);
      putU32(b, 8, index);
      return b;
    };
    for (const i of [0, 1, 2, 3, 4, 5, 99])
      await this.io(`IRQ_INFO ${i}`, VFIO_DEVICE_GET_IRQ_INFO, buf(i, 16));
    for (const argsz of [0, 8, 15])
      await this.io(`IRQ_INFO 0 bad argsz=${argsz}`, VFIO_DEVICE_GET_IRQ_INFO, buf(0, argsz));
    const g = buf(1, 16);
    putU32(g, 4, 0xffff_ffff);
    putU32(g, 12, 0xffff_ffff);
    await this.io('IRQ_INFO 1 garbage flags/count', VFIO_DEVICE_GET_IRQ_INFO, g);
    await this.io('IRQ_INFO 1 argsz=32', VFIO_DEVICE_GET_IRQ_INFO, buf(1, 32));
  }

  private async unknownIoctls(): Promise<void> {
    const zero = (n: number, argsz: number) => {
      const b = new Uint8Array(n);
      putU32(b, 0, argsz);
      return b;
    };
    await this.io('ioctl VFIO_BASE+21', vfioRaw(21), zero(32, 8));
    await this.io('ioctl VFIO_BASE+50', vfioRaw(50), zero(32, 8));
    await this.io('ioctl VFIO_BASE+22', vfioRaw(22), zero(32, 8));
    await this.io('ioctl GET_PCI_HOT_RESET_INFO argsz=4', VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, zero(64, 4));
    await this.io('ioctl GET_PCI_HOT_RESET_INFO argsz=12', VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, zero(64, 12));
    await this.io('ioctl PCI_HOT_RESET argsz=4', VFIO_DEVICE_PCI_HOT_RESET, zero(64, 4));
    await this.io(
      'ioctl PCI_HOT_RESET argsz=12 garbage flags',
      VFIO_DEVICE_PCI_HOT_RESET,
      (() => {
        const b = zero(64, 12);
        putU32(b, 4, 0xffff);
        return b;
      })(),
    );
    // The group list against how the fd was opened (vfio_pci_ioctl_pci_hot_reset): 7.3 refuses an
    // empty list on a group fd and a list on a cdev fd; 6.1 probes the reset first (ENODEV).
    const reset = (count: number, fds: number) =>
      hotResetStruct.encode({ argsz: hotResetStruct.size + 4 * fds, count }, 64 - hotResetStruct.size);
    await this.io('ioctl PCI_HOT_RESET count=0', VFIO_DEVICE_PCI_HOT_RESET, reset(0, 0));
    const one = reset(1, 1);
    new DataView(one.buffer).setInt32(hotResetStruct.offsetOf('group_fds'), -1, true);
    await this.io('ioctl PCI_HOT_RESET count=1 fd -1', VFIO_DEVICE_PCI_HOT_RESET, one);
    await this.io('ioctl QUERY_GFX_PLANE', VFIO_DEVICE_QUERY_GFX_PLANE, zero(128, 72));
    await this.io('ioctl IOEVENTFD argsz=4', VFIO_DEVICE_IOEVENTFD, zero(64, 4));
    const ioe = zero(64, 32);
    putU32(ioe, 4, 0xff); // flags: unknown size bits
    await this.io('ioctl IOEVENTFD garbage flags', VFIO_DEVICE_IOEVENTFD, ioe);
    const ioe2 = zero(64, 32);
    putU32(ioe2, 4, 4); // 4-byte
    putU64(ioe2, 8, this.regionOffset.get(0) ?? 0n); // offset: BAR0
    putU64(ioe2, 16, 0n);
    new DataView(ioe2.buffer).setInt32(24, -1, true); // fd -1: delete (none exists)
    await this.io('ioctl IOEVENTFD delete nonexistent', VFIO_DEVICE_IOEVENTFD, ioe2);
    // minsz is offsetofend(fd), 28: the trailing reserved word is not needed.
    const ioe28 = ioe2.slice(0, 28);
    putU32(ioe28, 0, 28);
    await this.io('ioctl IOEVENTFD argsz=28 delete nonexistent', VFIO_DEVICE_IOEVENTFD, ioe28);
    const ioe3 = ioe2.slice();
    putU32(ioe3, 4, 3); // size 3: hweight8 != 1
    await this.io('ioctl IOEVENTFD size 3', VFIO_DEVICE_IOEVENTFD, ioe3);
    const ioeNeg = ioe2.slice();
    new DataView(ioeNeg.buffer).setInt32(24, -2, true); // fd < -1
    await this.io('ioctl IOEVENTFD fd -2', VFIO_DEVICE_IOEVENTFD, ioeNeg);
  }

  private async features(): Promise<void> {
    const feat = (flags: number, argsz = 8, size = 64) => {
      const b = new Uint8Array(size);
      putU32(b, 0, argsz);
      putU32(b, 4, flags >>> 0);
      return b;
    };
    const G = VFIO_DEVICE_FEATURE_GET;
    const S = VFIO_DEVICE_FEATURE_SET;
    const PR = VFIO_DEVICE_FEATURE_PROBE;
    for (let n = 0; n <= 12; n++) {
      await this.io(`FEATURE ${n} PROBE|GET`, VFIO_DEVICE_FEATURE, feat(PR | G | n));
      await this.io(`FEATURE ${n} PROBE|SET`, VFIO_DEVICE_FEATURE, feat(PR | S | n));
    }
    await this.io('FEATURE 11 PROBE|GET|SET', VFIO_DEVICE_FEATURE, feat(PR | G | S | 11));
    await this.io('FEATURE 3 PROBE|GET|SET', VFIO_DEVICE_FEATURE, feat(PR | G | S | 3));
    await this.io('FEATURE 0xf001 PROBE|GET', VFIO_DEVICE_FEATURE, feat(PR | G | 0xf001));
    await this.io('FEATURE argsz=4', VFIO_DEVICE_FEATURE, feat(PR | G | 11, 4));
    await this.io('FEATURE unknown flag 1<<19', VFIO_DEVICE_FEATURE, feat((1 << 19) | PR | G | 11));
    await this.io('FEATURE 11 neither GET nor SET', VFIO_DEVICE_FEATURE, feat(11));
    await this.io('FEATURE 11 GET|SET', VFIO_DEVICE_FEATURE, feat(G | S | 11, 24));
    await this.io('FEATURE 11 GET argsz=8', VFIO_DEVICE_FEATURE, feat(G | 11, 8));
    await this.io('FEATURE 0 GET (VF token)', VFIO_DEVICE_FEATURE, feat(G | 0, 24));
    await this.io('FEATURE 0 SET (VF token) argsz=8', VFIO_DEVICE_FEATURE, feat(S | 0, 8));
    await this.io('FEATURE 3 GET (low power entry)', VFIO_DEVICE_FEATURE, feat(G | 3, 8));
    await this.io('FEATURE 5 SET (low power exit)', VFIO_DEVICE_FEATURE, feat(S | 5, 8));
    await this.io('FEATURE 10 PROBE|SET (bus master)', VFIO_DEVICE_FEATURE, feat(PR | S | 10, 8));
  }

  /** VFIO_DEVICE_FEATURE_DMA_BUF (7.3): exports, refusals, and mmap of an exported fd. */
  private async dmaBuf(): Promise<void> {
    let openFlags = O_RDWR | O_CLOEXEC;
    const req = (region: number, flags: number, ranges: [bigint, bigint][], nr = ranges.length) => {
      const b = new Uint8Array(8 + 16 + 16 * Math.max(1, ranges.length));
      putU32(b, 0, b.length);
      putU32(b, 4, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF);
      putU32(b, 8, region);
      putU32(b, 12, openFlags);
      putU32(b, 16, flags >>> 0);
      putU32(b, 20, nr);
      ranges.forEach(([o, l], i) => {
        putU64(b, 24 + 16 * i, o);
        putU64(b, 32 + 16 * i, l);
      });
      return b;
    };
    const exp = async (name: string, b: Uint8Array, mapIt = false) => {
      const r = hex(b);
      try {
        const fd = await this.f.ioctl(VFIO_DEVICE_FEATURE, b);
        this.add(name, r, fd > 0 ? 'ok fd' : `ok ${fd}`);
        if (mapIt && fd > 0) {
          try {
            const m = await this.f.mmapDmaBuf(fd, 0n, 4096);
            this.add(`${name} mmap`, 'mmap dma-buf 0 0x1000', 'ok');
            m.unmap();
          } catch (e) {
            this.add(`${name} mmap`, 'mmap dma-buf 0 0x1000', errText(e));
          }
        }
        if (fd > 0) await this.f.closeFd(fd);
      } catch (e) {
        this.add(name, r, errText(e));
      }
    };
    for (let bar = 0; bar < 6; bar++) {
      const size = this.regionSize.get(bar) ?? 0n;
      if (size < PAGE) {
        await exp(`DMA_BUF bar${bar} (size ${h(size)}) flags=0`, req(bar, 0, [[0n, PAGE]]));
        continue;
      }
      await exp(`DMA_BUF bar${bar} flags=0`, req(bar, 0, [[0n, PAGE]]), true);
      await exp(`DMA_BUF bar${bar} whole`, req(bar, 0, [[0n, size]]));
      await exp(`DMA_BUF bar${bar} flags=1<<28 (ATTR_WC)`, req(bar, 1 << 28, [[0n, PAGE]]));
      await exp(`DMA_BUF bar${bar} flags=1<<5`, req(bar, 1 << 5, [[0n, PAGE]]));
      await exp(`DMA_BUF bar${bar} range past the BAR`, req(bar, 0, [[size, PAGE]]));
      await exp(`DMA_BUF bar${bar} range crossing the end`, req(bar, 0, [[size - PAGE, 2n * PAGE]]));
      await exp(`DMA_BUF bar${bar} unaligned offset`, req(bar, 0, [[1n, PAGE]]));
      await exp(`DMA_BUF bar${bar} unaligned length`, req(bar, 0, [[0n, 100n]]));
      await exp(`DMA_BUF bar${bar} zero length`, req(bar, 0, [[0n, 0n]]));
      await exp(`DMA_BUF bar${bar} nr_ranges=0`, req(bar, 0, [[0n, PAGE]], 0));
      await exp(`DMA_BUF bar${bar} overflowing range`, req(bar, 0, [[0xffff_ffff_ffff_f000n, 2n * PAGE]]));
      await exp(
        `DMA_BUF bar${bar} two ranges`,
        req(bar, 0, [
          [0n, PAGE],
          [PAGE, PAGE],
        ]),
      );
    }
    if ((this.regionSize.get(2) ?? 0n) >= PAGE) {
      openFlags = O_CLOEXEC; // O_RDONLY: a writable mmap of it is EACCES before the exporter is asked
      await exp('DMA_BUF bar2 read-only fd', req(2, 0, [[0n, PAGE]]), true);
      openFlags = O_RDWR | O_CLOEXEC;
    }
    await exp('DMA_BUF region 6 (ROM)', req(6, 0, [[0n, PAGE]]));
    await exp('DMA_BUF region 7 (config)', req(7, 0, [[0n, PAGE]]));
    await exp('DMA_BUF region 99', req(99, 0, [[0n, PAGE]]));
    const short = req(2, 0, [[0n, PAGE]]);
    putU32(short, 0, 8 + 8);
    await exp('DMA_BUF argsz short of the header', short);
  }

  private async mmaps(): Promise<void> {
    await this.map('mmap config region', this.regionOffset.get(REGION_CONFIG) ?? 7n << 40n, 4096);
    await this.map('mmap ROM region', this.regionOffset.get(6) ?? 6n << 40n, 4096);
    await this.map('mmap VGA region offset', 8n << 40n, 4096);
    await this.map('mmap region 9 offset', 9n << 40n, 4096);
    for (let bar = 0; bar < 6; bar++) {
      const off = this.regionOffset.get(bar) ?? BigInt(bar) << 40n;
      const size = this.regionSize.get(bar) ?? 0n;
      const flags = this.regionFlags.get(bar) ?? 0;
      const len = Number(((size + PAGE - 1n) / PAGE) * PAGE) || 4096;
      await this.map(
        `mmap bar${bar} whole (mmap flag ${flags & VFIO_REGION_INFO_FLAG_MMAP ? 1 : 0})`,
        off,
        len,
      );
      if (size === 0n) continue;
      await this.map(`mmap bar${bar} private`, off, len, true);
      await this.map(`mmap bar${bar} beyond`, off, len + 4096);
      await this.map(`mmap bar${bar} at end`, off + BigInt(len), 4096);
      await this.map(`mmap bar${bar} first page`, off, 4096);
      if (len > 4096) await this.map(`mmap bar${bar} last page`, off + BigInt(len) - PAGE, 4096);
    }
  }

  /** vendor:device as the config region reads it, e.g. '1234:11e8'. */
  private async deviceId(): Promise<string> {
    const id = await this.cfgRead32(0);
    const x = (n: number) => n.toString(16).padStart(4, '0');
    return `${x(id & 0xffff)}:${x(id >>> 16)}`;
  }

  /** Are region `i`'s contents the model's business? Config yes, BARs of modelled devices, no ROM. */
  private valueCounted(i: number): boolean {
    return i === REGION_CONFIG || (i < 6 && this.contentsModelled);
  }

  private async reads(): Promise<void> {
    this.contentsModelled = MODELLED_CONTENTS.has(await this.deviceId());
    for (let i = 0; i < 9; i++) {
      const off = this.regionOffset.get(i) ?? BigInt(i) << 40n;
      const size = this.regionSize.get(i);
      if (size === undefined || size === 0n) {
        await this.read(`pread region ${i} (empty) at 0`, off, 4);
        await this.write(`pwrite region ${i} (empty) at 0`, off, new Uint8Array(4));
        continue;
      }
      // BAR and ROM contents are the device's; config space is the model's business.
      const valueInfo = !this.valueCounted(i);
      await this.read(`pread region ${i} at 0`, off, 4, false, valueInfo);
      await this.read(`pread region ${i} at end-4`, off + size - 4n, 4, false, valueInfo);
      await this.read(`pread region ${i} at end-1`, off + size - 1n, 1, false, valueInfo);
      await this.read(`pread region ${i} at end`, off + size, 4);
      await this.read(`pread region ${i} across end`, off + size - 2n, 4, false, valueInfo);
      await this.read(`pread region ${i} 3 bytes at 1`, off + 1n, 3, false, valueInfo);
      await this.write(`pwrite region ${i} at end`, off + size, new Uint8Array(4));
    }
    for (const i of [0, 2, REGION_CONFIG]) {
      const off = this.regionOffset.get(i);
      const size = this.regionSize.get(i);
      if (off === undefined || !size) continue;
      await this.read(`pread region ${i} 0 bytes at 0`, off, 0);
      await this.read(`pread region ${i} 0 bytes at end`, off + size, 0);
      await this.read(`pread region ${i} 8 bytes at 0`, off, 8, false, !this.valueCounted(i));
      await this.read(`pread region ${i} 2 bytes at 1`, off + 1n, 2, false, !this.valueCounted(i));
    }
    await this.read('pread offset 9<<40', 9n << 40n, 4);
    await this.read('pread offset 0xffff<<40', 0xffffn << 40n, 4);
  }

  // ---------------------------------------------------------------------------------------------
  // Config space
  // ---------------------------------------------------------------------------------------------
  /** Dwords whose value comes from the platform (BIOS-assigned BARs, interrupt line). */
  private static platformDword(off: number): boolean {
    return (off >= 0x10 && off < 0x28) || off === 0x30 || off === 0x3c;
  }

  private async config(): Promise<void> {
    const base = this.regionOffset.get(REGION_CONFIG);
    if (base === undefined) return;
    this.configSize = Number(this.regionSize.get(REGION_CONFIG) ?? 256n);
    const cfg = (o: number) => base + BigInt(o);
    for (let o = 0; o < 0x100; o += 4) await this.read(`config[${h(o)}]`, cfg(o), 4, Prober.platformDword(o));
    const named = new Set<string>();
    for (const [o, n] of [
      [0, 1],
      [0, 2],
      [0, 8],
      [1, 3],
      [2, 4],
      [0x3e, 4],
      [0xfe, 4],
      [0xff, 1],
      [0x100, 4],
      [this.configSize - 4, 4],
      [this.configSize - 2, 4],
      [this.configSize, 4],
    ] as const) {
      // On a 256-byte config space, configSize - 2 and configSize repeat 0xfe and 0x100.
      const name = `config read ${h(o)} len ${n}`;
      if (named.has(name)) continue;
      named.add(name);
      await this.read(name, cfg(o), n, o >= 0x10 && o < 0x28);
    }
    await this.readMasked('config read 64 bytes at 0', cfg(0), 64);
    // Capability walk (PCI 3.0 §6.7), through the device file.
    const caps: string[] = [];
    let at = (await this.cfgRead32(0x34)) & 0xfc;
    const capAt = new Map<number, number>();
    for (let n = 0; at && n < 48; n++) {
      const hdr = await this.cfgRead32(at);
      caps.push(`${h(hdr & 0xff)}@${h(at)}`);
      if (!capAt.has(hdr & 0xff)) capAt.set(hdr & 0xff, at);
      at = (hdr >> 8) & 0xfc;
    }
    this.add('capability list', 'walk from 0x34', caps.join(' '));
    const capDwords = new Set<number>();
    for (const [, off] of capAt)
      for (let o = off; o < Math.min(off + 0x40, 0x100); o += 4) if (o >= 0x40) capDwords.add(o);
    for (const o of [...capDwords].sort((a, b) => a - b)) await this.read(`cap dword ${h(o)}`, cfg(o), 4);
    if (this.configSize > 256) {
      const ext: string[] = [];
      let e = 0x100;
      for (let n = 0; e && n < 64; n++) {
        const hdr = await this.cfgRead32(e);
        ext.push(`${h(hdr & 0xffff)}v${(hdr >>> 16) & 0xf}@${h(e)}`);
        await this.read(`ext cap header ${h(e)}`, cfg(e), 4);
        e = (hdr >>> 20) & 0xffc;
      }
      this.add('extended capability list', 'walk from 0x100', ext.join(' '));
      for (const o of [0x104, 0x200, 0x400, 0xffc])
        if (o < this.configSize) await this.read(`config ext ${h(o)}`, cfg(o), 4);
    }

    // BAR sizing (vfio_bar_fixup): all-ones, read back the size mask, restore.
    for (const o of [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30]) {
      const orig = (await this.cfgRead(o, 4)) ?? new Uint8Array(4);
      await this.write(`BAR ${h(o)} write all-ones`, cfg(o), new Uint8Array([0xff, 0xff, 0xff, 0xff]));
      await this.read(`BAR ${h(o)} sized`, cfg(o), 4);
      await this.write(`BAR ${h(o)} restore`, cfg(o), orig);
      await this.readSame(`BAR ${h(o)} restored`, cfg(o), orig);
    }
    const w16 = (v: number) => new Uint8Array([v & 0xff, (v >> 8) & 0xff]);
    const origCmd = (await this.cfgRead(4, 2)) ?? w16(0);
    for (const v of [0x0000, 0x0007, 0x0406, 0xffff, 0x0002]) {
      await this.write(`command write ${h(v)}`, cfg(4), w16(v));
      await this.read(`command after ${h(v)}`, cfg(4), 2);
    }
    await this.write('command restore', cfg(4), origCmd);
    await this.read('command restored', cfg(4), 2);
    await this.write('status write 0xffff', cfg(6), w16(0xffff));
    await this.read('status after', cfg(6), 2);
    await this.write('vendor id write', cfg(0), w16(0));
    await this.read('vendor id after', cfg(0), 4);
    await this.write('revision/class write', cfg(8), new Uint8Array([0, 0, 0, 0]));
    await this.read('revision/class after', cfg(8), 4);
    await this.write('cache line size write', cfg(0xc), new Uint8Array([0x10]));
    await this.read('cache line size after', cfg(0xc), 4);
    await this.write('latency timer write', cfg(0xd), new Uint8Array([0x40]));
    await this.read('latency timer after', cfg(0xc), 4);
    await this.write('BIST write', cfg(0xf), new Uint8Array([0x40]));
    await this.read('BIST after', cfg(0xc), 4);
    await this.write('interrupt line write', cfg(0x3c), new Uint8Array([0x0a]));
    await this.read('interrupt line after', cfg(0x3c), 1);
    await this.write('interrupt pin write', cfg(0x3d), new Uint8Array([0x04]));
    await this.read('interrupt pin after', cfg(0x3d), 1);
    await this.write('cap pointer write', cfg(0x34), new Uint8Array([0x80]));
    await this.read('cap pointer after', cfg(0x34), 1);
    await this.write('subsystem write', cfg(0x2c), new Uint8Array(4));
    await this.read('subsystem after', cfg(0x2c), 4);
    await this.write('config write across end', cfg(this.configSize - 2), new Uint8Array(4));
    await this.write('config write at end', cfg(this.configSize), new Uint8Array(4));
    await this.write('config write 0x40 (unused or cap)', cfg(0x40), new Uint8Array(4));
    for (const [id, off] of capAt) {
      await this.write(`cap ${h(id)} header write`, cfg(off), w16(0xffff));
      await this.read(`cap ${h(id)} header after`, cfg(off), 4);
      if (id === P.PCI_CAP_ID_MSI) {
        await this.write('MSI address write', cfg(off + 4), new Uint8Array([0x00, 0x10, 0xe0, 0xfe]));
        await this.read('MSI address after', cfg(off + 4), 4);
        await this.write('MSI control write enable', cfg(off + 2), w16(0x0071));
        await this.read('MSI control after', cfg(off + 2), 2);
        await this.write('MSI control write 0', cfg(off + 2), w16(0));
        await this.read('MSI control after 0', cfg(off + 2), 2);
      }
      if (id === P.PCI_CAP_ID_MSIX) {
        await this.write('MSI-X control write enable|mask', cfg(off + 2), w16(0xc000));
        await this.read('MSI-X control after', cfg(off + 2), 2);
        await this.write('MSI-X table offset write', cfg(off + 4), new Uint8Array(4));
        await this.read('MSI-X table offset after', cfg(off + 4), 4);
        await this.write('MSI-X control write 0', cfg(off + 2), w16(0));
        // MSI-X table and PBA through the BAR: vfio_pci_bar_rw keeps them out of reach.
        const table = await this.cfgRead32(off + 4);
        const pba = await this.cfgRead32(off + 8);
        const tOff = this.regionOffset.get(table & 7);
        const pOff = this.regionOffset.get(pba & 7);
        if (tOff !== undefined) await this.read('MSI-X table via pread', tOff + BigInt(table & ~7), 4);
        if (pOff !== undefined) await this.read('MSI-X PBA via pread', pOff + BigInt(pba & ~7), 4);
        if (tOff !== undefined)
          await this.write('MSI-X table via pwrite', tOff + BigInt(table & ~7), new Uint8Array(4));
      }
      if (id === P.PCI_CAP_ID_PM) {
        await this.read('PM control', cfg(off + 4), 2);
        await this.write('PM control write PME status', cfg(off + 4), w16(0x8000));
        await this.read('PM control after', cfg(off + 4), 2);
      }
      if (id === P.PCI_CAP_ID_EXP) {
        await this.write('PCIe device control write', cfg(off + 8), w16(0x0000));
        await this.read('PCIe device control after', cfg(off + 8), 2);
        await this.write('PCIe device status write', cfg(off + 0xa), w16(0xffff));
        await this.read('PCIe device status after', cfg(off + 0xa), 2);
        await this.write('PCIe link control write', cfg(off + 0x10), w16(0x0000));
        await this.read('PCIe link control after', cfg(off + 0x10), 2);
        await this.write('PCIe device control2 write', cfg(off + 0x28), w16(0x0000));
        await this.read('PCIe device control2 after', cfg(off + 0x28), 2);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Interrupts
  // ---------------------------------------------------------------------------------------------
  private irqSet(
    flags: number,
    index: number,
    start: number,
    count: number,
    data: Uint8Array = new Uint8Array(0),
    argsz?: number,
  ) {
    const b = new Uint8Array(Math.max(64, 20 + data.length));
    putU32(b, 0, argsz ?? 20 + data.length);
    putU32(b, 4, flags);
    putU32(b, 8, index);
    putU32(b, 12, start);
    putU32(b, 16, count);
    b.set(data, 20);
    return b;
  }

  private fds(...fds: number[]): Uint8Array {
    const b = new Uint8Array(4 * fds.length);
    for (const [i, fd] of fds.entries()) new DataView(b.buffer).setInt32(4 * i, fd, true);
    return b;
  }

  private async irq(
    name: string,
    flags: number,
    index: number,
    start: number,
    count: number,
    data?: Uint8Array,
    argsz?: number,
  ) {
    const b = this.irqSet(flags, index, start, count, data, argsz);
    const req = hex(b.subarray(0, 20));
    try {
      const r = await this.f.ioctl(VFIO_DEVICE_SET_IRQS, b);
      this.add(name, req, `ok ${r}`);
    } catch (e) {
      this.add(name, req, errText(e));
    }
  }

  private counter(name: string, efd: number): void {
    let v: bigint | null = null;
    try {
      v = eventfdRead(efd);
    } catch (e) {
      this.add(name, 'eventfd read', errText(e));
      return;
    }
    this.add(name, 'eventfd read', `count=${v ?? 0n}`);
  }

  private async setIrqs(): Promise<void> {
    const NONE = VFIO_IRQ_SET_DATA_NONE;
    const BOOL = VFIO_IRQ_SET_DATA_BOOL;
    const EFD = VFIO_IRQ_SET_DATA_EVENTFD;
    const TRIG = VFIO_IRQ_SET_ACTION_TRIGGER;
    const MASK = VFIO_IRQ_SET_ACTION_MASK;
    const UNMASK = VFIO_IRQ_SET_ACTION_UNMASK;
    await this.irq('SET_IRQS argsz=0', NONE | TRIG, 0, 0, 0, undefined, 0);
    await this.irq('SET_IRQS argsz=19', NONE | TRIG, 0, 0, 0, undefined, 19);
    await this.irq('SET_IRQS index 5', NONE | TRIG, 5, 0, 0);
    await this.irq('SET_IRQS index 0xffffffff', NONE | TRIG, 0xffff_ffff, 0, 0);
    await this.irq('SET_IRQS unknown flag 1<<6', NONE | TRIG | (1 << 6), 1, 0, 0);
    await this.irq('SET_IRQS two data types', NONE | BOOL | TRIG, 1, 0, 1, new Uint8Array([1]));
    await this.irq('SET_IRQS two actions', NONE | MASK | UNMASK, 0, 0, 1);
    await this.irq('SET_IRQS no data type', TRIG, 1, 0, 1);
    await this.irq('SET_IRQS no action', NONE, 1, 0, 1);
    await this.irq('SET_IRQS start beyond count', NONE | TRIG, 1, 5, 1);
    await this.irq('SET_IRQS count overflow', NONE | TRIG, 2, 1, 0xffff_ffff);
    await this.irq('SET_IRQS start+count > max', NONE | TRIG, 1, 0, 64);
    await this.irq('SET_IRQS eventfd argsz short', EFD | TRIG, 1, 0, 1, this.fds(-1), 20);
    await this.irq('SET_IRQS bool argsz short', BOOL | TRIG, 1, 0, 1, new Uint8Array(0), 20);
    for (let i = 0; i < 5; i++) {
      await this.irq(`SET_IRQS ${i} disable (NONE|TRIGGER count 0)`, NONE | TRIG, i, 0, 0);
      await this.irq(`SET_IRQS ${i} NONE|TRIGGER count 1 (not enabled)`, NONE | TRIG, i, 0, 1);
      await this.irq(`SET_IRQS ${i} MASK count 1`, NONE | MASK, i, 0, 1);
      await this.irq(`SET_IRQS ${i} UNMASK count 1`, NONE | UNMASK, i, 0, 1);
      await this.irq(`SET_IRQS ${i} eventfd -1`, EFD | TRIG, i, 0, 1, this.fds(-1));
    }
    const nul = openPath('/dev/null', O_RDONLY | O_CLOEXEC);
    const efd = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK);
    const efd2 = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      for (let i = 0; i < 5; i++) {
        await this.irq(`SET_IRQS ${i} eventfd = /dev/null`, EFD | TRIG, i, 0, 1, this.fds(nul));
        await this.irq(`SET_IRQS ${i} eventfd = closed fd`, EFD | TRIG, i, 0, 1, this.fds(1_000_000));
      }
      const cmdOff = (this.regionOffset.get(REGION_CONFIG) ?? 7n << 40n) + 4n;
      // INTx
      await this.irq('INTx enable eventfd', EFD | TRIG, 0, 0, 1, this.fds(efd));
      await this.irq('INTx loopback trigger', NONE | TRIG, 0, 0, 1);
      this.counter('INTx eventfd after loopback', efd);
      await this.irq('INTx loopback while masked', NONE | TRIG, 0, 0, 1);
      this.counter('INTx eventfd after second loopback', efd);
      await this.irq('INTx unmask', NONE | UNMASK, 0, 0, 1);
      await this.irq('INTx mask bool 1', BOOL | MASK, 0, 0, 1, new Uint8Array([1]));
      await this.irq('INTx unmask bool 0', BOOL | UNMASK, 0, 0, 1, new Uint8Array([0]));
      await this.irq('INTx unmask bool 1', BOOL | UNMASK, 0, 0, 1, new Uint8Array([1]));
      await this.irq('INTx mask eventfd', EFD | MASK, 0, 0, 1, this.fds(efd2));
      await this.irq('INTx unmask eventfd', EFD | UNMASK, 0, 0, 1, this.fds(efd2));
      await this.irq('INTx unmask eventfd -1', EFD | UNMASK, 0, 0, 1, this.fds(-1));
      await this.irq('INTx start 1', NONE | TRIG, 0, 1, 1);
      await this.irq('MSI enable while INTx on', EFD | TRIG, 1, 0, 1, this.fds(efd2));
      await this.read('command with INTx on', cmdOff, 2);
      await this.irq('INTx disable', NONE | TRIG, 0, 0, 0);
      // MSI
      await this.irq('MSI enable eventfd', EFD | TRIG, 1, 0, 1, this.fds(efd));
      await this.readMsiControl('MSI control with MSI on', P.PCI_CAP_ID_MSI);
      await this.irq('MSI loopback trigger', NONE | TRIG, 1, 0, 1);
      this.counter('MSI eventfd after loopback', efd);
      await this.irq('MSI loopback bool', BOOL | TRIG, 1, 0, 1, new Uint8Array([1]));
      this.counter('MSI eventfd after bool loopback', efd);
      await this.irq('MSI enable second time (same count)', EFD | TRIG, 1, 0, 1, this.fds(efd2));
      await this.irq('MSI-X enable while MSI on', EFD | TRIG, 2, 0, 1, this.fds(efd2));
      await this.irq('INTx enable while MSI on', EFD | TRIG, 0, 0, 1, this.fds(efd2));
      await this.irq('MSI disable', NONE | TRIG, 1, 0, 0);
      await this.readMsiControl('MSI control after disable', P.PCI_CAP_ID_MSI);
      // MSI-X
      await this.irq('MSI-X enable eventfd', EFD | TRIG, 2, 0, 1, this.fds(efd));
      await this.readMsiControl('MSI-X control with MSI-X on', P.PCI_CAP_ID_MSIX);
      await this.irq('MSI-X loopback trigger', NONE | TRIG, 2, 0, 1);
      this.counter('MSI-X eventfd after loopback', efd);
      await this.irq('MSI-X vector 1 eventfd (resize)', EFD | TRIG, 2, 1, 1, this.fds(efd2));
      await this.irq('MSI-X disable', NONE | TRIG, 2, 0, 0);
      await this.irq('MSI-X enable 3 vectors (fd, -1, fd)', EFD | TRIG, 2, 0, 3, this.fds(efd, -1, efd2));
      await this.irq('MSI-X bool loopback 3 vectors', BOOL | TRIG, 2, 0, 3, new Uint8Array([1, 1, 1]));
      this.counter('MSI-X vector 0 after bool loopback', efd);
      this.counter('MSI-X vector 2 after bool loopback', efd2);
      await this.irq('MSI-X loopback vector 1 (no fd)', NONE | TRIG, 2, 1, 1);
      await this.irq('MSI-X loopback beyond enabled', NONE | TRIG, 2, 3, 1);
      await this.irq('MSI-X clear vector 2', EFD | TRIG, 2, 2, 1, this.fds(-1));
      await this.irq('MSI-X loopback vector 2 after clear', NONE | TRIG, 2, 2, 1);
      this.counter('MSI-X vector 2 after clear and loopback', efd2);
      await this.irq('MSI-X mask bool', BOOL | MASK, 2, 0, 1, new Uint8Array([1]));
      await this.irq('MSI-X disable again', NONE | TRIG, 2, 0, 0);
      await this.irq('MSI disable when off', NONE | TRIG, 1, 0, 0);
      await this.irq('MSI enable 2 vectors', EFD | TRIG, 1, 0, 2, this.fds(efd, efd2));
      await this.irq('MSI disable after 2', NONE | TRIG, 1, 0, 0);
      await this.readMsiControl('MSI-X control after disable', P.PCI_CAP_ID_MSIX);
      // ERR and REQ
      for (const i of [3, 4]) {
        await this.irq(`SET_IRQS ${i} eventfd`, EFD | TRIG, i, 0, 1, this.fds(efd));
        await this.irq(`SET_IRQS ${i} loopback`, NONE | TRIG, i, 0, 1);
        this.counter(`SET_IRQS ${i} eventfd after loopback`, efd);
        await this.irq(`SET_IRQS ${i} bool loopback`, BOOL | TRIG, i, 0, 1, new Uint8Array([1]));
        this.counter(`SET_IRQS ${i} eventfd after bool loopback`, efd);
        await this.irq(`SET_IRQS ${i} clear`, EFD | TRIG, i, 0, 1, this.fds(-1));
        await this.irq(`SET_IRQS ${i} loopback after clear`, NONE | TRIG, i, 0, 1);
      }
    } finally {
      closeFd(nul);
      closeFd(efd);
      closeFd(efd2);
    }
  }

  private async readMsiControl(name: string, id: number): Promise<void> {
    let at = (await this.cfgRead32(0x34)) & 0xfc;
    for (let n = 0; at && n < 48; n++) {
      const hdr = await this.cfgRead32(at);
      if ((hdr & 0xff) === id) {
        await this.read(name, (this.regionOffset.get(REGION_CONFIG) ?? 0n) + BigInt(at + 2), 2);
        return;
      }
      at = (hdr >> 8) & 0xfc;
    }
    this.add(name, 'capability', 'absent');
  }

  /** DEVICE_FEATURE low power entry/exit (vfio_pci_core_pm_entry/_exit) and access meanwhile. */
  private async lowPower(): Promise<void> {
    const cfg = this.regionOffset.get(REGION_CONFIG) ?? 7n << 40n;
    const feat = (flags: number, argsz = 8) => {
      const b = new Uint8Array(16);
      putU32(b, 0, argsz);
      putU32(b, 4, flags);
      return b;
    };
    const S = VFIO_DEVICE_FEATURE_SET;
    await this.io('LOW_POWER_EXIT while not in low power', VFIO_DEVICE_FEATURE, feat(S | 5));
    await this.io('LOW_POWER_ENTRY', VFIO_DEVICE_FEATURE, feat(S | 3));
    await this.io('LOW_POWER_ENTRY twice', VFIO_DEVICE_FEATURE, feat(S | 3));
    await this.read('config vendor in low power', cfg, 4);
    await this.read('config PM cap walk in low power', cfg + 0x34n, 1);
    const bar0 = this.regionOffset.get(0);
    if (bar0 !== undefined && (this.regionSize.get(0) ?? 0n) > 0n) {
      await this.read('BAR0 read in low power', bar0, 4, false, !this.valueCounted(0));
      await this.map('mmap BAR0 in low power', bar0, 4096);
    }
    await this.io('DEVICE_RESET in low power', VFIO_DEVICE_RESET, new Uint8Array(8));
    await this.io('LOW_POWER_EXIT', VFIO_DEVICE_FEATURE, feat(S | 5));
    await this.io('LOW_POWER_EXIT twice', VFIO_DEVICE_FEATURE, feat(S | 5));
    if (bar0 !== undefined && (this.regionSize.get(0) ?? 0n) > 0n)
      await this.read('BAR0 read after low power', bar0, 4, false, !this.valueCounted(0));
    await this.read('command after low power', cfg + 4n, 2);
  }

  private async reset(): Promise<void> {
    const cfg = this.regionOffset.get(REGION_CONFIG) ?? 7n << 40n;
    const bar0 = (await this.cfgRead(0x10, 4)) ?? new Uint8Array(4);
    await this.f.pwrite(cfg + 4n, new Uint8Array([0x06, 0x04])).catch(() => 0);
    await this.io('DEVICE_RESET', VFIO_DEVICE_RESET, new Uint8Array(8));
    await this.read('command after reset', cfg + 4n, 2);
    await this.readSame('BAR0 after reset', cfg + 0x10n, bar0);
  }

  /**
   * A read whose value is the platform's, compared with the same side's earlier value `before`:
   * 'n=4 same' or 'n=4 differs (<before> -> <now>)'. Counted; the raw value is kept as info.
   */
  private async readSame(name: string, offset: bigint, before: Uint8Array): Promise<void> {
    try {
      const b = await this.f.pread(offset, before.length);
      const same = hex(b) === hex(before);
      this.add(
        name,
        `pread ${h(offset)} ${before.length}`,
        `n=${b.length} ${same ? 'same' : `differs (${hex(before)} -> ${hex(b)})`}`,
      );
      this.add(`${name} value`, `pread ${h(offset)} ${before.length}`, `n=${b.length} ${hex(b)}`, true);
    } catch (e) {
      this.add(name, `pread ${h(offset)} ${before.length}`, errText(e));
    }
  }

  /**
   * A config read from offset 0 with the platform's bytes (BARs 0x10-0x27, ROM 0x30-0x33,
   * interrupt line 0x3c) shown as 'xx': counted; the raw bytes are kept as info.
   */
  private async readMasked(name: string, offset: bigint, len: number): Promise<void> {
    try {
      const b = await this.f.pread(offset, len);
      const masked = [...b]
        .map((v, o) =>
          Prober.platformDword(o & ~3) && o !== 0x3d && o < 0x3e ? 'xx' : v.toString(16).padStart(2, '0'),
        )
        .join('');
      this.add(name, `pread ${h(offset)} ${len}`, `n=${b.length} ${masked}`);
      this.add(`${name} value`, `pread ${h(offset)} ${len}`, `n=${b.length} ${hex(b)}`, true);
    } catch (e) {
      this.add(name, `pread ${h(offset)} ${len}`, errText(e));
    }
  }

  /** Offset of the first capability `id` in the config space (walk from 0x34), or undefined. */
  private async capOffset(id: number): Promise<number | undefined> {
    let at = (await this.cfgRead32(0x34)) & 0xfc;
    for (let n = 0; at && n < 48; n++) {
      const hdr = await this.cfgRead32(at);
      if ((hdr & 0xff) === id) return at;
      at = (hdr >> 8) & 0xfc;
    }
    return undefined;
  }

  /**
   * Memory decode off (vfio_pci_core_do_io_rw's test_mem, __vfio_pci_memory_enabled): BAR and ROM
   * access with the command register's memory bit clear, then with it restored. mmap and
   * DMA_BUF export succeed (the kernel faults / revokes later); the probe never touches a mapping.
   */
  private async memoryDecode(): Promise<void> {
    const cfg = this.regionOffset.get(REGION_CONFIG);
    if (cfg === undefined) return;
    const orig = (await this.cfgRead(4, 2)) ?? new Uint8Array([0x03, 0x01]);
    for (let i = 0; i < 6; i++) this.barFlags.set(i, await this.cfgRead32(0x10 + 4 * i));
    const off = new Uint8Array([orig[0]! & ~COMMAND_MEMORY, orig[1]!]);
    await this.write('memory off: command write', cfg + 4n, off);
    await this.read('memory off: command after', cfg + 4n, 2);
    for (let i = 0; i < 6; i++) {
      const at = this.regionOffset.get(i);
      if (at === undefined || !this.regionSize.get(i)) continue;
      await this.read(`memory off: pread bar${i}`, at, 4, false, !this.valueCounted(i));
    }
    const bar0 = this.regionOffset.get(0);
    const bar0Size = this.regionSize.get(0) ?? 0n;
    if (bar0 !== undefined && bar0Size >= 8n) {
      await this.read('memory off: pread bar0 8 bytes', bar0, 8, false, !this.valueCounted(0));
      await this.write('memory off: pwrite bar0 at 4', bar0 + 4n, new Uint8Array(4));
    }
    const rom = this.regionOffset.get(6);
    if (rom !== undefined && this.regionSize.get(6))
      await this.read('memory off: pread ROM', rom, 4, false, true);
    const msix = await this.capOffset(P.PCI_CAP_ID_MSIX);
    if (msix !== undefined) {
      const table = await this.cfgRead32(msix + 4);
      const tOff = this.regionOffset.get(table & 7);
      if (tOff !== undefined)
        await this.read('memory off: pread MSI-X table', tOff + BigInt(table & ~7), 16, false, false);
    }
    if (bar0 !== undefined && (this.regionFlags.get(0) ?? 0) & VFIO_REGION_INFO_FLAG_MMAP)
      await this.map('memory off: mmap bar0 first page', bar0, 4096);
    const dmaBar = [0, 1, 2, 3, 4, 5].find((i) => (this.regionSize.get(i) ?? 0n) >= PAGE);
    if (dmaBar !== undefined) {
      const b = new Uint8Array(8 + 16 + 16);
      putU32(b, 0, b.length);
      putU32(b, 4, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF);
      putU32(b, 8, dmaBar);
      putU32(b, 12, O_RDWR | O_CLOEXEC);
      putU32(b, 20, 1);
      putU64(b, 32, PAGE);
      const name = `memory off: DMA_BUF bar${dmaBar}`;
      try {
        const fd = await this.f.ioctl(VFIO_DEVICE_FEATURE, b);
        this.add(name, hex(b), fd > 0 ? 'ok fd' : `ok ${fd}`);
        if (fd > 0) await this.f.closeFd(fd);
      } catch (e) {
        this.add(name, hex(b), errText(e));
      }
    }
    await this.write('memory off: command restore', cfg + 4n, orig);
    await this.read('memory off: command restored', cfg + 4n, 2);
    if (bar0 !== undefined && bar0Size > 0n)
      await this.read('memory on again: pread bar0', bar0, 4, false, !this.valueCounted(0));
    if (rom !== undefined && this.regionSize.get(6))
      await this.read('memory on again: pread ROM', rom, 4, false, true);
    // I/O decode off: vfio-pci tests only memory; the I/O BAR access goes to the device.
    const ioBars = [0, 1, 2, 3, 4, 5].filter(
      (i) => this.regionSize.get(i) && (this.barFlags.get(i) ?? 0) & 1,
    );
    if (ioBars.length === 0) return;
    await this.write('io off: command write', cfg + 4n, new Uint8Array([orig[0]! & ~1, orig[1]!]));
    for (const i of ioBars)
      await this.read(`io off: pread bar${i}`, this.regionOffset.get(i)!, 4, false, !this.valueCounted(i));
    if (bar0 !== undefined && bar0Size > 0n && !ioBars.includes(0))
      await this.read('io off: pread bar0 (memory)', bar0, 4, false, !this.valueCounted(0));
    await this.write('io off: command restore', cfg + 4n, orig);
    await this.read('io off: command restored', cfg + 4n, 2);
  }
}

/** Runs the whole sequence on `target`. */
export function runProbe(target: ProbeTarget): Promise<ProbeCase[]> {
  return new Prober(target).run();
}

export interface CaseDiff {
  readonly name: string;
  readonly kernel: string | undefined;
  readonly model: string | undefined;
  readonly info: boolean;
}

/** Compares two transcripts by case name (first occurrence), keeping the kernel's order. */
export function compareTranscripts(kernel: readonly ProbeCase[], model: readonly ProbeCase[]): CaseDiff[] {
  const m = new Map<string, ProbeCase>();
  for (const c of model) if (!m.has(c.name)) m.set(c.name, c);
  const seen = new Set<string>();
  const out: CaseDiff[] = [];
  for (const k of kernel) {
    if (seen.has(k.name)) continue;
    seen.add(k.name);
    const other = m.get(k.name);
    if (other?.result !== k.result)
      out.push({
        name: k.name,
        kernel: k.result,
        model: other?.result,
        info: k.info === true || other?.info === true,
      });
  }
  for (const c of model)
    if (!seen.has(c.name)) {
      seen.add(c.name);
      out.push({ name: c.name, kernel: undefined, model: c.result, info: c.info === true });
    }
  return out;
}
