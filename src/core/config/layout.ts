/**
 * The device's own configuration space, before vfio-pci virtualizes it: what a
 * `pci_read_config_*` of the "hardware" returns for an emulated device built from a
 * `DeviceDescription`, plus the device's write masks (which bits the hardware lets a write
 * change, which are write-1-to-clear).
 *
 * It is the state vfio_pci_core_enable leaves a function in when vfio_config_init copies it
 * (drivers/vfio/pci/vfio_pci_core.c: vfio_pci_core_enable): BARs assigned by firmware,
 * memory/I/O decode on (pci_enable_device), bus master off (pci_clear_master), INTx not
 * disabled (the DisINTx bit cleared for PCI 2.3 devices).
 *
 * Register choices that a real device makes for itself follow QEMU's emulated devices where
 * the kernel gives no rule (hw/pci/pci.c: pci_init_wmask, pci_init_w1cmask; hw/pci/msi.c;
 * hw/pci/pcie.c), and the PCI/PCIe specifications otherwise.
 */
import { Errno } from '../../abi/errno.js';
import * as P from '../../abi/pci.js';
import { VfioError } from '../../errors.js';
import type { BarDescription, DeviceDescription } from '../description.js';

const OP = 'config space';

/**
 * Where firmware would put BARs. Memory BARs go top-down below the IOAPIC (0xfec00000), the
 * way SeaBIOS placed them on q35 (edu BAR0 0xfea00000, ivshmem BAR0 0xfeb95000 in
 * shared/tools/qemu-vfio/sample-output.txt); a 64-bit BAR that does not fit goes above 4 GiB.
 * I/O BARs go up from 0xc000.
 */
export const MEM32_WINDOW_BASE = 0xc000_0000n;
export const MEM32_WINDOW_TOP = 0xfec0_0000n;
export const MEM64_WINDOW_BASE = 0x80_0000_0000n;
/** 64-bit BARs larger than this are placed above 4 GiB straight away. */
export const MEM64_BELOW_4G_MAX = 256n << 20n;
export const IO_WINDOW_BASE = 0xc000n;
export const IO_WINDOW_TOP = 0x1_0000n;

/** Smallest BARs PCI allows: 16 bytes of memory, 4 bytes of I/O (PCI 3.0 §6.2.5.1). */
export const MIN_MEM_BAR_SIZE = 16;
export const MIN_IO_BAR_SIZE = 4;
/** I/O BARs beyond 256 bytes are not allowed by PCI 3.0 §6.2.5.1 ("should not"); x86 port space is 64 KiB. */
export const MAX_IO_BAR_SIZE = 256;
/** Largest 32-bit memory BAR: 2 GiB. Largest 64-bit BAR: 2^52 (exact as a JS number). */
export const MAX_MEM32_BAR_SIZE = 2 ** 31;
export const MAX_MEM64_BAR_SIZE = 2 ** 52;
/** Expansion ROM: address bits 31..11, so at least 2 KiB (PCI 3.0 §6.2.5.2); at most 16 MiB. */
export const MIN_ROM_SIZE = 2048;
export const MAX_ROM_SIZE = 16 << 20;

/** First byte after the standard header where capabilities may go. */
export const CAP_AREA_START = P.PCI_STD_HEADER_SIZEOF;
/**
 * Bytes each capability type reserves in the chain, so that its offset depends only on which
 * capabilities precede it, not on their variant (MSI is 10..24 bytes).
 */
export const CAP_SLOT_SIZE: Readonly<Record<number, number>> = {
  [P.PCI_CAP_ID_PM]: P.PCI_PM_SIZEOF,
  [P.PCI_CAP_ID_MSI]: 24,
  [P.PCI_CAP_ID_EXP]: P.PCI_EXP_VER2_SIZEOF,
  [P.PCI_CAP_ID_MSIX]: P.PCI_CAP_MSIX_SIZEOF,
};
/** The order capabilities are chained in. */
export const CAP_ORDER = [P.PCI_CAP_ID_PM, P.PCI_CAP_ID_MSI, P.PCI_CAP_ID_EXP, P.PCI_CAP_ID_MSIX] as const;

export interface BarLayout {
  /** BAR index 0..5 (the lower slot of a 64-bit BAR). */
  readonly index: number;
  readonly kind: BarDescription['kind'];
  readonly size: bigint;
  readonly prefetchable: boolean;
  /** Address firmware assigned. */
  readonly address: bigint;
  /** Low type bits of the BAR register (vfio_pci_config.c: vfio_generate_bar_flags). */
  readonly flags: number;
}

export interface CapLayout {
  readonly id: number;
  readonly offset: number;
  /** Length of the structure the device implements (not the slot it reserves). */
  readonly length: number;
}

export interface DeviceConfigLayout {
  readonly size: number;
  /** Initial contents. */
  readonly bytes: Uint8Array;
  /** Bits a write may change. */
  readonly wmask: Uint8Array;
  /** Bits a write of 1 clears. */
  readonly w1cmask: Uint8Array;
  readonly bars: readonly BarLayout[];
  readonly rom: { readonly size: bigint; readonly address: bigint } | undefined;
  readonly caps: readonly CapLayout[];
}

function isPow2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function bad(detail: string): never {
  throw new VfioError(Errno.EINVAL, OP, detail);
}

function checkU(n: number, bits: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** bits) bad(`${what} ${n} is not a ${bits}-bit value`);
}

/**
 * Validates the parts of a description config space depends on; throws VfioError(EINVAL) with
 * `op` (defineDevice names the device there).
 */
export function validateDescription(desc: DeviceDescription, op = OP): void {
  const bad: (detail: string) => never = (detail) => {
    throw new VfioError(Errno.EINVAL, op, detail);
  };
  const checkBits = (n: number, bits: number, what: string): void => {
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** bits) bad(`${what} ${n} is not a ${bits}-bit value`);
  };
  const id = desc.identity;
  checkBits(id.vendorId, 16, 'vendorId');
  checkBits(id.deviceId, 16, 'deviceId');
  checkBits(id.subsystemVendorId, 16, 'subsystemVendorId');
  checkBits(id.subsystemId, 16, 'subsystemId');
  checkBits(id.classCode, 24, 'classCode');
  checkBits(id.revision, 8, 'revision');
  if (!Number.isInteger(id.interruptPin) || id.interruptPin < 0 || id.interruptPin > 4) {
    bad(`interruptPin ${id.interruptPin} is not 0..4`);
  }
  if (desc.bars.length > P.PCI_STD_NUM_BARS) bad(`${desc.bars.length} BARs; a type 0 header has 6`);
  for (let i = 0; i < desc.bars.length; i++) {
    const bar = desc.bars[i];
    if (bar === undefined) continue;
    if (!isPow2(bar.size)) bad(`BAR${i} size ${bar.size} is not a power of two`);
    switch (bar.kind) {
      case 'io':
        if (bar.size < MIN_IO_BAR_SIZE || bar.size > MAX_IO_BAR_SIZE) bad(`BAR${i}: I/O size ${bar.size}`);
        if (bar.prefetchable) bad(`BAR${i}: an I/O BAR cannot be prefetchable`);
        break;
      case 'mem32':
        if (bar.size < MIN_MEM_BAR_SIZE || bar.size > MAX_MEM32_BAR_SIZE) bad(`BAR${i}: size ${bar.size}`);
        break;
      case 'mem64':
        if (bar.size < MIN_MEM_BAR_SIZE || bar.size > MAX_MEM64_BAR_SIZE) bad(`BAR${i}: size ${bar.size}`);
        if (i === P.PCI_STD_NUM_BARS - 1) bad('BAR5 cannot be 64-bit: it has no upper half');
        if (desc.bars[i + 1] !== undefined) bad(`BAR${i + 1} is the upper half of 64-bit BAR${i}`);
        i++;
        break;
      default:
        bad(`BAR${i}: unknown kind`);
    }
  }
  if (desc.rom !== undefined) {
    const s = desc.rom.size;
    if (!isPow2(s) || s < MIN_ROM_SIZE || s > MAX_ROM_SIZE) bad(`ROM size ${s}`);
  }
  if (desc.msi !== undefined) {
    const v = desc.msi.vectors;
    if (!isPow2(v) || v > P.PCI_MSI_VECTORS_MAX) bad(`MSI vectors ${v} is not 1, 2, 4, 8, 16 or 32`);
  }
  if (desc.msix !== undefined) {
    const x = desc.msix;
    if (!Number.isInteger(x.tableSize) || x.tableSize < 1 || x.tableSize > P.PCI_MSIX_VECTORS_MAX) {
      bad(`MSI-X table size ${x.tableSize} is not 1..2048`);
    }
    const pbaBytes = Math.ceil(x.tableSize / 64) * 8;
    for (const [what, bir, off, len] of [
      ['table', x.tableBar, x.tableOffset, x.tableSize * P.PCI_MSIX_ENTRY_SIZE],
      ['PBA', x.pbaBar, x.pbaOffset, pbaBytes],
    ] as const) {
      const bar = desc.bars[bir];
      if (!Number.isInteger(bir) || bar === undefined || bar.kind === 'io') {
        bad(`MSI-X ${what} BIR ${bir} is not an implemented memory BAR`);
      }
      if (!Number.isSafeInteger(off) || off < 0 || off % 8 !== 0 || off > 0xfffffff8) {
        bad(`MSI-X ${what} offset ${off} is not 8-byte aligned`);
      }
      if (off + len > bar.size) bad(`MSI-X ${what} (${len} bytes at ${off}) does not fit in BAR${bir}`);
    }
    // hw/pci/msix.c msix_init refuses a table and PBA that overlap in one BAR (-EINVAL,
    // "table & pba overlap, or they don't fit in BARs, or don't align").
    const tableEnd = x.tableOffset + x.tableSize * P.PCI_MSIX_ENTRY_SIZE;
    if (x.tableBar === x.pbaBar && x.tableOffset < x.pbaOffset + pbaBytes && x.pbaOffset < tableEnd) {
      bad(
        `MSI-X table (0x${x.tableOffset.toString(16)}..0x${tableEnd.toString(16)}) and PBA ` +
          `(0x${x.pbaOffset.toString(16)}..0x${(x.pbaOffset + pbaBytes).toString(16)}) overlap in BAR${x.tableBar}`,
      );
    }
  }
}

function barFlags(bar: BarDescription): number {
  if (bar.kind === 'io') return P.PCI_BASE_ADDRESS_SPACE_IO;
  let f = P.PCI_BASE_ADDRESS_SPACE_MEMORY;
  if (bar.prefetchable) f |= P.PCI_BASE_ADDRESS_MEM_PREFETCH;
  if (bar.kind === 'mem64') f |= P.PCI_BASE_ADDRESS_MEM_TYPE_64;
  return f;
}

interface Placement {
  readonly key: number; // BAR index, or 6 for the ROM
  readonly size: bigint;
  readonly mem64: boolean;
}

/** Deterministic firmware-like address assignment; see the window constants above. */
function assignAddresses(desc: DeviceDescription): Map<number, bigint> {
  const out = new Map<number, bigint>();
  const mem: Placement[] = [];
  const io: Placement[] = [];
  desc.bars.forEach((bar, index) => {
    if (bar === undefined) return;
    const p = { key: index, size: BigInt(bar.size), mem64: bar.kind === 'mem64' };
    (bar.kind === 'io' ? io : mem).push(p);
  });
  if (desc.rom !== undefined) mem.push({ key: 6, size: BigInt(desc.rom.size), mem64: false });
  // Largest first, then by index: natural alignment wastes nothing between power-of-two sizes.
  const order = (a: Placement, b: Placement) =>
    a.size === b.size ? a.key - b.key : a.size > b.size ? -1 : 1;
  mem.sort(order);
  io.sort(order);

  let top = MEM32_WINDOW_TOP;
  let high = MEM64_WINDOW_BASE;
  for (const p of mem) {
    const below = (top - p.size) & ~(p.size - 1n);
    if ((!p.mem64 || p.size <= MEM64_BELOW_4G_MAX) && below >= MEM32_WINDOW_BASE) {
      out.set(p.key, below);
      top = below;
    } else if (p.mem64) {
      const at = (high + p.size - 1n) & ~(p.size - 1n);
      out.set(p.key, at);
      high = at + p.size;
    } else {
      bad(
        `32-bit memory BARs do not fit in ${MEM32_WINDOW_BASE.toString(16)}..${MEM32_WINDOW_TOP.toString(16)}`,
      );
    }
  }
  let port = IO_WINDOW_BASE;
  for (const p of io) {
    const at = (port + p.size - 1n) & ~(p.size - 1n);
    if (at + p.size > IO_WINDOW_TOP) bad('I/O BARs do not fit in 0xc000..0xffff');
    out.set(p.key, at);
    port = at + p.size;
  }
  return out;
}

/** Little-endian stores into a config image. */
function put(buf: Uint8Array, pos: number, count: 1 | 2 | 4, val: number): void {
  for (let i = 0; i < count; i++) buf[pos + i] = (val >>> (8 * i)) & 0xff;
}

function msiLength(msi: NonNullable<DeviceDescription['msi']>): number {
  // vfio_pci_config.c: vfio_msi_cap_len
  return 10 + (msi.addr64 ? 4 : 0) + (msi.perVectorMask ? 10 : 0);
}

/** Builds the device's own configuration space. Throws VfioError(EINVAL) for a bad description. */
export function buildDeviceConfig(desc: DeviceDescription): DeviceConfigLayout {
  validateDescription(desc);
  const size = desc.pcie ? P.PCI_CFG_SPACE_EXP_SIZE : P.PCI_CFG_SPACE_SIZE;
  const bytes = new Uint8Array(size);
  const wmask = new Uint8Array(size);
  const w1cmask = new Uint8Array(size);
  const id = desc.identity;
  const addresses = assignAddresses(desc);

  // --- header ---------------------------------------------------------------------------------
  put(bytes, P.PCI_VENDOR_ID, 2, id.vendorId);
  put(bytes, P.PCI_DEVICE_ID, 2, id.deviceId);
  put(bytes, P.PCI_REVISION_ID, 1, id.revision);
  put(bytes, P.PCI_CLASS_PROG, 1, id.classCode & 0xff);
  put(bytes, P.PCI_CLASS_DEVICE, 2, id.classCode >>> 8);
  put(bytes, P.PCI_HEADER_TYPE, 1, P.PCI_HEADER_TYPE_NORMAL);
  put(bytes, P.PCI_SUBSYSTEM_VENDOR_ID, 2, id.subsystemVendorId);
  put(bytes, P.PCI_SUBSYSTEM_ID, 2, id.subsystemId);
  put(bytes, P.PCI_INTERRUPT_PIN, 1, id.interruptPin);
  // Firmware writes the line; 0xff is "unknown / not connected" on x86 (PCI 3.0 §6.2.4 footnote).
  put(bytes, P.PCI_INTERRUPT_LINE, 1, id.interruptPin ? 0xff : 0);
  // hw/pci/pci.c: pci_init_wmask, pci_init_w1cmask
  wmask[P.PCI_CACHE_LINE_SIZE] = 0xff;
  wmask[P.PCI_INTERRUPT_LINE] = 0xff;
  put(
    wmask,
    P.PCI_COMMAND,
    2,
    P.PCI_COMMAND_IO |
      P.PCI_COMMAND_MEMORY |
      P.PCI_COMMAND_MASTER |
      P.PCI_COMMAND_SERR |
      P.PCI_COMMAND_INTX_DISABLE,
  );
  put(
    w1cmask,
    P.PCI_STATUS,
    2,
    P.PCI_STATUS_PARITY |
      P.PCI_STATUS_SIG_TARGET_ABORT |
      P.PCI_STATUS_REC_TARGET_ABORT |
      P.PCI_STATUS_REC_MASTER_ABORT |
      P.PCI_STATUS_SIG_SYSTEM_ERROR |
      P.PCI_STATUS_DETECTED_PARITY,
  );

  // --- BARs -----------------------------------------------------------------------------------
  const bars: BarLayout[] = [];
  desc.bars.forEach((bar, index) => {
    if (bar === undefined) return;
    const address = addresses.get(index)!;
    const flags = barFlags(bar);
    const sz = BigInt(bar.size);
    bars.push({ index, kind: bar.kind, size: sz, prefetchable: !!bar.prefetchable, address, flags });
    const pos = P.PCI_BASE_ADDRESS_0 + 4 * index;
    const mask = ~(sz - 1n);
    put(bytes, pos, 4, Number(address & 0xffff_ffffn) | flags);
    put(wmask, pos, 4, Number(mask & 0xffff_ffffn) & (bar.kind === 'io' ? ~3 : ~0xf));
    if (bar.kind === 'mem64') {
      put(bytes, pos + 4, 4, Number(address >> 32n));
      put(wmask, pos + 4, 4, Number((mask >> 32n) & 0xffff_ffffn));
    }
  });
  // Firmware (SeaBIOS pci_bios_init_device on QEMU's q35) sets I/O, memory and SERR# on every
  // function, whatever BARs it has, and pci_enable_device keeps them: vfio_config_init copies
  // 0x0103 for edu, nvme and e1000e alike (seen on Linux 6.1 and 7.3 in the differential test).
  put(bytes, P.PCI_COMMAND, 2, P.PCI_COMMAND_IO | P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_SERR);

  let rom: DeviceConfigLayout['rom'];
  if (desc.rom !== undefined) {
    const address = addresses.get(6)!;
    const sz = BigInt(desc.rom.size);
    rom = { size: sz, address };
    // The host assigns the ROM an address but leaves it disabled (enable bit 0).
    put(bytes, P.PCI_ROM_ADDRESS, 4, Number(address));
    put(wmask, P.PCI_ROM_ADDRESS, 4, (Number(~(sz - 1n) & 0xffff_ffffn) | P.PCI_ROM_ADDRESS_ENABLE) >>> 0);
  }

  // --- capabilities -----------------------------------------------------------------------------
  const present = CAP_ORDER.filter(
    (c) =>
      (c === P.PCI_CAP_ID_PM && desc.pm) ||
      (c === P.PCI_CAP_ID_MSI && desc.msi !== undefined) ||
      (c === P.PCI_CAP_ID_EXP && desc.pcie) ||
      (c === P.PCI_CAP_ID_MSIX && desc.msix !== undefined),
  );
  const caps: CapLayout[] = [];
  let cursor = CAP_AREA_START;
  let prevNext = P.PCI_CAPABILITY_LIST;
  const placed = placement(desc, present);
  for (const capId of placed ? placed.map((c) => c.id) : present) {
    const at = placed ? placed.find((c) => c.id === capId)!.offset : cursor;
    cursor += CAP_SLOT_SIZE[capId]!;
    bytes[prevNext] = at;
    bytes[at + P.PCI_CAP_LIST_ID] = capId;
    prevNext = at + P.PCI_CAP_LIST_NEXT;
    caps.push({ id: capId, offset: at, length: buildCap(desc, capId, at, bytes, wmask, w1cmask) });
  }
  if (caps.length) put(bytes, P.PCI_STATUS, 2, P.PCI_STATUS_CAP_LIST);
  // With no extended capabilities the dword at 0x100 stays 0 (PCIe 4.0 §7.6.2: "a Capability ID
  // of 0000h, Capability Version of 0h, and Next Capability Offset of 000h").
  const ext = desc.extendedCapabilities ?? [];
  if (ext.length) {
    if (!desc.pcie) bad('extended capabilities need a PCI Express device');
    if (ext[0]!.offset !== P.PCI_CFG_SPACE_SIZE) bad('the first extended capability must be at 0x100');
    for (const [i, e] of ext.entries()) {
      const next = ext[i + 1]?.offset ?? 0;
      if (
        e.offset % 4 ||
        e.offset < P.PCI_CFG_SPACE_SIZE ||
        e.offset > size - 4 ||
        (next && next <= e.offset)
      )
        bad(`extended capability at 0x${e.offset.toString(16)}`);
      checkU(e.id, 16, 'extended capability id');
      checkU(e.version, 4, 'extended capability version');
      // PCIe 4.0 §7.6.3: ID [15:0], version [19:16], next offset [31:20].
      put(bytes, e.offset, 4, (e.id | (e.version << 16) | (next << 20)) >>> 0);
    }
  }
  return { size, bytes, wmask, w1cmask, bars, rom, caps };
}

const CAP_IDS = {
  pm: P.PCI_CAP_ID_PM,
  msi: P.PCI_CAP_ID_MSI,
  pcie: P.PCI_CAP_ID_EXP,
  msix: P.PCI_CAP_ID_MSIX,
} as const;

/**
 * The description's own capability layout (chain order and offsets), validated: every present
 * capability listed once, dword aligned inside 0x40..0xff, no overlap of the reserved slots.
 */
function placement(
  desc: DeviceDescription,
  present: readonly number[],
): { id: number; offset: number }[] | undefined {
  const list = desc.capabilityLayout;
  if (list === undefined) return undefined;
  const out = list.map((c) => ({ id: CAP_IDS[c.cap], offset: c.offset }));
  const ids = new Set<number>(out.map((c) => c.id));
  if (ids.size !== out.length || out.length !== present.length || present.some((id) => !ids.has(id)))
    bad('capabilityLayout must list each present capability exactly once');
  // A placed capability takes the length its structure has (MSI: 10..24 bytes), not a slot.
  const len = (id: number) =>
    id === P.PCI_CAP_ID_MSI
      ? msiLength(desc.msi!)
      : id === P.PCI_CAP_ID_EXP
        ? pcieLength(desc)
        : CAP_SLOT_SIZE[id]!;
  const spans = out.map((c) => [c.offset, c.offset + len(c.id)] as const).sort((a, b) => a[0] - b[0]);
  for (const [i, [s, e]] of spans.entries()) {
    if (s % 4 || s < CAP_AREA_START || e > P.PCI_CFG_SPACE_SIZE) bad(`capability at 0x${s.toString(16)}`);
    const next = spans[i + 1];
    if (next && next[0] < e) bad(`capabilities at 0x${s.toString(16)} and 0x${next[0].toString(16)} overlap`);
  }
  return out;
}

function placed(desc: DeviceDescription, cap: 'pm' | 'pcie') {
  return desc.capabilityLayout?.find((c) => c.cap === cap);
}

/** Length of the PCIe capability structure: version 1 endpoint (20 bytes) or version 2 (60). */
function pcieLength(desc: DeviceDescription): number {
  return placed(desc, 'pcie')?.pcieVersion === 1 ? P.PCI_CAP_EXP_ENDPOINT_SIZEOF_V1 : P.PCI_EXP_VER2_SIZEOF;
}

/** Fills one capability's registers; returns the length of the structure. */
function buildCap(
  desc: DeviceDescription,
  capId: number,
  at: number,
  bytes: Uint8Array,
  wmask: Uint8Array,
  w1cmask: Uint8Array,
): number {
  switch (capId) {
    case P.PCI_CAP_ID_PM: {
      // PMC: version 3 (PCI PM 1.2), no D1/D2, no PME. PMCSR: D0. No_Soft_Reset is clear only
      // when a power-management reset is this device's reset method (a resettable
      // conventional-PCI device); drivers/pci/pci.c: pci_pm_reset needs NoSoftRst-.
      const pl = placed(desc, 'pm');
      put(bytes, at + P.PCI_PM_PMC, 2, pl?.pmc ?? 3);
      const noSoftReset = pl?.pmNoSoftReset ?? !(!!desc.resettable && !desc.pcie);
      put(bytes, at + P.PCI_PM_CTRL, 2, noSoftReset ? P.PCI_PM_CTRL_NO_SOFT_RESET : 0);
      put(wmask, at + P.PCI_PM_CTRL, 2, P.PCI_PM_CTRL_STATE_MASK);
      return P.PCI_PM_SIZEOF;
    }
    case P.PCI_CAP_ID_MSI: {
      const msi = desc.msi!;
      const mmc = Math.log2(msi.vectors);
      let flags = mmc << 1;
      if (msi.addr64) flags |= P.PCI_MSI_FLAGS_64BIT;
      if (msi.perVectorMask) flags |= P.PCI_MSI_FLAGS_MASKBIT;
      put(bytes, at + P.PCI_MSI_FLAGS, 2, flags);
      // hw/pci/msi.c: msi_init write masks
      put(wmask, at + P.PCI_MSI_FLAGS, 2, P.PCI_MSI_FLAGS_QSIZE | P.PCI_MSI_FLAGS_ENABLE);
      put(wmask, at + P.PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
      if (msi.addr64) put(wmask, at + P.PCI_MSI_ADDRESS_HI, 4, 0xffffffff);
      put(wmask, at + (msi.addr64 ? P.PCI_MSI_DATA_64 : P.PCI_MSI_DATA_32), 2, 0xffff);
      if (msi.perVectorMask) {
        const bits = msi.vectors === 32 ? 0xffffffff : (1 << msi.vectors) - 1;
        put(wmask, at + (msi.addr64 ? P.PCI_MSI_MASK_64 : P.PCI_MSI_MASK_32), 4, bits);
      }
      return msiLength(msi);
    }
    case P.PCI_CAP_ID_EXP: {
      // A version 2 PCI Express endpoint on a x1 2.5 GT/s link, registers at their reset values
      // (PCIe 4.0 §7.5.3): Device Control has Relaxed Ordering and No Snoop enabled and a 512-byte
      // Max_Read_Request_Size. FLR is advertised when the device is resettable.
      const pl = placed(desc, 'pcie');
      const version = pl?.pcieVersion ?? 2;
      put(bytes, at + P.PCI_EXP_FLAGS, 2, version | ((pl?.pcieType ?? P.PCI_EXP_TYPE_ENDPOINT) << 4));
      let devcap = P.PCI_EXP_DEVCAP_RBER;
      if (pl?.pcieFlr ?? desc.resettable) devcap |= P.PCI_EXP_DEVCAP_FLR;
      const qemu = pl?.pcieStyle === 'qemu';
      put(bytes, at + P.PCI_EXP_DEVCAP, 4, devcap >>> 0);
      put(
        bytes,
        at + P.PCI_EXP_DEVCTL,
        2,
        qemu ? 0 : P.PCI_EXP_DEVCTL_RELAX_EN | P.PCI_EXP_DEVCTL_NOSNOOP_EN | P.PCI_EXP_DEVCTL_READRQ_512B,
      );
      put(
        wmask,
        at + P.PCI_EXP_DEVCTL,
        2,
        P.PCI_EXP_DEVCTL_CERE |
          P.PCI_EXP_DEVCTL_NFERE |
          P.PCI_EXP_DEVCTL_FERE |
          P.PCI_EXP_DEVCTL_URRE |
          P.PCI_EXP_DEVCTL_RELAX_EN |
          P.PCI_EXP_DEVCTL_PAYLOAD |
          P.PCI_EXP_DEVCTL_NOSNOOP_EN |
          P.PCI_EXP_DEVCTL_READRQ,
      );
      put(
        w1cmask,
        at + P.PCI_EXP_DEVSTA,
        2,
        P.PCI_EXP_DEVSTA_CED | P.PCI_EXP_DEVSTA_NFED | P.PCI_EXP_DEVSTA_FED | P.PCI_EXP_DEVSTA_URD,
      );
      // hw/pci/pcie.c pcie_cap_fill_link_regs adds ASPM L0s support (PCI_EXP_LNKCAP_ASPMS_0S).
      put(bytes, at + P.PCI_EXP_LNKCAP, 4, P.PCI_EXP_LNKCAP_SLS_2_5GB | (1 << 4) | (qemu ? 0x400 : 0));
      put(bytes, at + P.PCI_EXP_LNKSTA, 2, P.PCI_EXP_LNKSTA_CLS_2_5GB | P.PCI_EXP_LNKSTA_NLW_X1);
      if (version === 1) return P.PCI_CAP_EXP_ENDPOINT_SIZEOF_V1;
      if (qemu) {
        // hw/pci/pcie.c pcie_cap_v2_init: DEVCAP2 = EFF | EETLPP (bits 20, 21); no link cap 2.
        put(bytes, at + P.PCI_EXP_DEVCAP2, 4, (1 << 20) | (1 << 21));
        return P.PCI_EXP_VER2_SIZEOF;
      }
      put(bytes, at + P.PCI_EXP_LNKCAP2, 4, P.PCI_EXP_LNKCAP2_SLS_2_5GB);
      put(bytes, at + P.PCI_EXP_LNKCTL2, 2, P.PCI_EXP_LNKCTL2_TLS_2_5GT);
      return P.PCI_EXP_VER2_SIZEOF;
    }
    case P.PCI_CAP_ID_MSIX: {
      const x = desc.msix!;
      put(bytes, at + P.PCI_MSIX_FLAGS, 2, x.tableSize - 1);
      put(bytes, at + P.PCI_MSIX_TABLE, 4, (x.tableOffset | x.tableBar) >>> 0);
      put(bytes, at + P.PCI_MSIX_PBA, 4, (x.pbaOffset | x.pbaBar) >>> 0);
      put(wmask, at + P.PCI_MSIX_FLAGS, 2, P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL);
      return P.PCI_CAP_MSIX_SIZEOF;
    }
    default:
      return bad(`capability ${capId}`);
  }
}
