/**
 * PCI configuration space decoded into facts: the type 0 header (PCI Local Bus 3.0 §6.1), the
 * BARs (§6.2.5.1), the capability list (§6.7) with PM (PCI PM 1.2 §3.2), MSI and MSI-X (PCI 3.0
 * §6.8), PCI Express (PCIe Base r4.0 §7.5.3) and vendor-specific capabilities, and the extended
 * capability list at 0x100 (PCIe §7.6). Pure: bytes in, data out. Register values are kept as
 * they are; src/driver/lspci.ts prints them the way lspci -vv does.
 *
 * A capability chain that loops or points outside the bytes read ends the walk with a `broken`
 * entry, as lspci prints `<chain looped>` / `<chain broken>`; nothing here throws on a device's
 * bytes except a header shorter than 64 bytes (MalformedError).
 */
import * as P from '../abi/pci.js';
import { MalformedError } from '../errors.js';

export type BarMemoryType = '32-bit' | '64-bit' | 'low-1M' | 'type 3';

export interface PciBar {
  readonly index: number;
  readonly io: boolean;
  /** Memory BARs: the type field (bits 2:1). */
  readonly memoryType?: BarMemoryType;
  readonly prefetchable: boolean;
  /** The base address as programmed (0: unassigned); a 64-bit BAR's upper half included. */
  readonly address: bigint;
}

export interface PciRom {
  readonly address: bigint;
  readonly enabled: boolean;
}

export type PciCapability =
  | {
      readonly kind: 'pm';
      readonly offset: number;
      readonly pmc: number;
      readonly pmcsr: number;
      readonly bridge: number;
    }
  | {
      readonly kind: 'msi';
      readonly offset: number;
      readonly control: number;
      readonly address: bigint;
      readonly data: number;
      /** Present with per-vector masking. */
      readonly mask?: number;
      readonly pending?: number;
    }
  | {
      readonly kind: 'msix';
      readonly offset: number;
      readonly control: number;
      readonly tableBar: number;
      readonly tableOffset: number;
      readonly pbaBar: number;
      readonly pbaOffset: number;
    }
  | {
      readonly kind: 'express';
      readonly offset: number;
      /** PCI Express Capabilities register (version, device/port type, slot, interrupt message). */
      readonly flags: number;
      readonly devcap: number;
      readonly devctl: number;
      readonly devsta: number;
      /** Link registers; absent for the types without a link (root complex integrated, event collector). */
      readonly link?: { readonly lnkcap: number; readonly lnkctl: number; readonly lnksta: number };
    }
  | { readonly kind: 'vendor'; readonly offset: number; readonly bytes: Uint8Array }
  | { readonly kind: 'other'; readonly offset: number; readonly id: number; readonly flags: number }
  | { readonly kind: 'broken'; readonly offset: number; readonly why: ChainBreak };

export type ChainBreak = 'looped' | 'broken' | 'unreadable';

export type PciExtCapability =
  | {
      readonly kind: 'ext';
      readonly offset: number;
      readonly id: number;
      readonly version: number;
      /** The capability's bytes after its header, up to the next one (or the end of what was read). */
      readonly body: Uint8Array;
    }
  | { readonly kind: 'broken'; readonly offset: number; readonly why: ChainBreak };

export interface PciConfig {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly command: number;
  readonly status: number;
  readonly revision: number;
  /** Base class, subclass, programming interface: 24 bits. */
  readonly classCode: number;
  readonly cacheLineSize: number;
  readonly latencyTimer: number;
  /** Header layout (bits 6:0); only type 0 has the fields below it decoded. */
  readonly headerType: number;
  readonly multiFunction: boolean;
  readonly bist: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  readonly interruptLine: number;
  /** 0 none, 1..4 INTA..INTD. */
  readonly interruptPin: number;
  readonly minGnt: number;
  readonly maxLat: number;
  readonly bars: readonly PciBar[];
  readonly rom?: PciRom;
  readonly capabilities: readonly PciCapability[];
  readonly extendedCapabilities: readonly PciExtCapability[];
}

/** The field `mask` selects in a register value, shifted down (include/linux/bitfield.h FIELD_GET). */
export function field(value: number, mask: number): number {
  return ((value & mask) >>> 0) / (mask & -mask);
}

/** Each capability is at a dword-aligned offset; 48 fit in the 192 bytes after the header. */
const MAX_CAPABILITIES = (P.PCI_CFG_SPACE_SIZE - P.PCI_STD_HEADER_SIZEOF) / 4;
/** Extended capabilities: at most one per dword of the 3840 bytes after 0x100. */
const MAX_EXT_CAPABILITIES = (P.PCI_CFG_SPACE_EXP_SIZE - P.PCI_CFG_SPACE_SIZE) / 4;

class Reader {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  has(offset: number, length: number): boolean {
    return offset >= 0 && offset + length <= this.bytes.length;
  }
  u8(o: number): number {
    return this.view.getUint8(o);
  }
  u16(o: number): number {
    return this.view.getUint16(o, true);
  }
  u32(o: number): number {
    return this.view.getUint32(o, true);
  }
}

/** Decodes config space read from offset 0 (256 bytes, or 4096 for PCI Express). */
export function decodeConfig(bytes: Uint8Array): PciConfig {
  if (bytes.length < P.PCI_STD_HEADER_SIZEOF)
    throw new MalformedError(
      'config space',
      `${bytes.length} bytes, the header alone is ${P.PCI_STD_HEADER_SIZEOF}`,
    );
  const r = new Reader(bytes);
  const headerByte = r.u8(P.PCI_HEADER_TYPE);
  const headerType = headerByte & P.PCI_HEADER_TYPE_MASK;
  const type0 = headerType === P.PCI_HEADER_TYPE_NORMAL;
  const status = r.u16(P.PCI_STATUS);
  const capabilities =
    status & P.PCI_STATUS_CAP_LIST ? decodeCapabilities(r, r.u8(P.PCI_CAPABILITY_LIST) & ~3) : [];
  // lspci walks the extended list only behind a PCI Express (or PCI-X) capability (show_caps).
  const extended =
    capabilities.some((c) => c.kind === 'express' || (c.kind === 'other' && c.id === P.PCI_CAP_ID_PCIX)) &&
    r.has(P.PCI_CFG_SPACE_SIZE, 4)
      ? decodeExtCapabilities(r)
      : [];
  return {
    vendorId: r.u16(P.PCI_VENDOR_ID),
    deviceId: r.u16(P.PCI_DEVICE_ID),
    command: r.u16(P.PCI_COMMAND),
    status,
    revision: r.u8(P.PCI_REVISION_ID),
    classCode: r.u32(P.PCI_CLASS_REVISION) >>> 8,
    cacheLineSize: r.u8(P.PCI_CACHE_LINE_SIZE),
    latencyTimer: r.u8(P.PCI_LATENCY_TIMER),
    headerType,
    multiFunction: !!(headerByte & P.PCI_HEADER_TYPE_MFD),
    bist: r.u8(P.PCI_BIST),
    subsystemVendorId: type0 ? r.u16(P.PCI_SUBSYSTEM_VENDOR_ID) : 0,
    subsystemId: type0 ? r.u16(P.PCI_SUBSYSTEM_ID) : 0,
    interruptLine: r.u8(P.PCI_INTERRUPT_LINE),
    interruptPin: r.u8(P.PCI_INTERRUPT_PIN),
    minGnt: type0 ? r.u8(P.PCI_MIN_GNT) : 0,
    maxLat: type0 ? r.u8(P.PCI_MAX_LAT) : 0,
    bars: type0 ? decodeBars(r) : [],
    ...(type0 ? decodeRom(r) : {}),
    capabilities,
    extendedCapabilities: extended,
  };
}

/** The six BARs of a type 0 header; a 64-bit BAR takes the next slot as its upper half. */
function decodeBars(r: Reader): PciBar[] {
  const bars: PciBar[] = [];
  for (let i = 0; i < P.PCI_STD_NUM_BARS; i++) {
    const lo = r.u32(P.PCI_BASE_ADDRESS_0 + 4 * i);
    if (lo & P.PCI_BASE_ADDRESS_SPACE_IO) {
      bars.push({
        index: i,
        io: true,
        prefetchable: false,
        address: BigInt((lo & P.PCI_BASE_ADDRESS_IO_MASK) >>> 0),
      });
      continue;
    }
    const type = lo & P.PCI_BASE_ADDRESS_MEM_TYPE_MASK;
    let address = BigInt((lo & P.PCI_BASE_ADDRESS_MEM_MASK) >>> 0);
    if (type === P.PCI_BASE_ADDRESS_MEM_TYPE_64 && i + 1 < P.PCI_STD_NUM_BARS)
      address |= BigInt(r.u32(P.PCI_BASE_ADDRESS_0 + 4 * (i + 1))) << 32n;
    bars.push({
      index: i,
      io: false,
      memoryType: MEMORY_TYPES[type >> 1]!,
      prefetchable: !!(lo & P.PCI_BASE_ADDRESS_MEM_PREFETCH),
      address,
    });
    if (type === P.PCI_BASE_ADDRESS_MEM_TYPE_64) i++;
  }
  return bars;
}

const MEMORY_TYPES: readonly BarMemoryType[] = ['32-bit', 'low-1M', '64-bit', 'type 3'];

function decodeRom(r: Reader): { rom: PciRom } {
  const v = r.u32(P.PCI_ROM_ADDRESS);
  return {
    rom: { address: BigInt((v & P.PCI_ROM_ADDRESS_MASK) >>> 0), enabled: !!(v & P.PCI_ROM_ADDRESS_ENABLE) },
  };
}

function decodeCapabilities(r: Reader, first: number): PciCapability[] {
  const out: PciCapability[] = [];
  const seen = new Set<number>();
  for (let at = first; at !== 0; ) {
    if (!r.has(at, P.PCI_CAP_SIZEOF)) {
      out.push({ kind: 'broken', offset: at, why: 'unreadable' });
      break;
    }
    if (seen.has(at) || out.length >= MAX_CAPABILITIES) {
      out.push({ kind: 'broken', offset: at, why: 'looped' });
      break;
    }
    seen.add(at);
    const id = r.u8(at + P.PCI_CAP_LIST_ID);
    if (id === 0xff) {
      out.push({ kind: 'broken', offset: at, why: 'broken' });
      break;
    }
    out.push(decodeCapability(r, at, id));
    at = r.u8(at + P.PCI_CAP_LIST_NEXT) & ~3;
  }
  return out;
}

/** Reads `length` bytes at `at` if all are there, else undefined (lspci's config_fetch). */
function within<T>(r: Reader, at: number, length: number, read: () => T): T | undefined {
  return r.has(at, length) ? read() : undefined;
}

function decodeCapability(r: Reader, at: number, id: number): PciCapability {
  const flags = r.u16(at + P.PCI_CAP_FLAGS);
  const other: PciCapability = { kind: 'other', offset: at, id, flags };
  switch (id) {
    case P.PCI_CAP_ID_PM:
      return (
        within(r, at, P.PCI_PM_SIZEOF, () => ({
          kind: 'pm' as const,
          offset: at,
          pmc: flags,
          pmcsr: r.u16(at + P.PCI_PM_CTRL),
          bridge: r.u8(at + P.PCI_PM_PPB_EXTENSIONS),
        })) ?? other
      );
    case P.PCI_CAP_ID_MSI: {
      const is64 = !!(flags & P.PCI_MSI_FLAGS_64BIT);
      const maskable = !!(flags & P.PCI_MSI_FLAGS_MASKBIT);
      // What lspci's cap_msi fetches: through Message Data, and the mask and pending bits.
      const end = maskable
        ? (is64 ? P.PCI_MSI_PENDING_64 : P.PCI_MSI_PENDING_32) + 4
        : (is64 ? P.PCI_MSI_DATA_64 : P.PCI_MSI_DATA_32) + 2;
      return (
        within(r, at, end, () => {
          const lo = BigInt(r.u32(at + P.PCI_MSI_ADDRESS_LO));
          const hi = is64 ? BigInt(r.u32(at + P.PCI_MSI_ADDRESS_HI)) : 0n;
          const maskAt = at + (is64 ? P.PCI_MSI_MASK_64 : P.PCI_MSI_MASK_32);
          return {
            kind: 'msi' as const,
            offset: at,
            control: flags,
            address: (hi << 32n) | lo,
            data: r.u16(at + (is64 ? P.PCI_MSI_DATA_64 : P.PCI_MSI_DATA_32)),
            ...(maskable ? { mask: r.u32(maskAt), pending: r.u32(maskAt + 4) } : {}),
          };
        }) ?? other
      );
    }
    case P.PCI_CAP_ID_MSIX:
      return (
        within(r, at, P.PCI_CAP_MSIX_SIZEOF, () => {
          const table = r.u32(at + P.PCI_MSIX_TABLE);
          const pba = r.u32(at + P.PCI_MSIX_PBA);
          return {
            kind: 'msix' as const,
            offset: at,
            control: flags,
            tableBar: table & P.PCI_MSIX_TABLE_BIR,
            tableOffset: (table & P.PCI_MSIX_TABLE_OFFSET) >>> 0,
            pbaBar: pba & P.PCI_MSIX_PBA_BIR,
            pbaOffset: (pba & P.PCI_MSIX_PBA_OFFSET) >>> 0,
          };
        }) ?? other
      );
    case P.PCI_CAP_ID_EXP: {
      const type = field(flags, P.PCI_EXP_FLAGS_TYPE);
      const hasLink = type !== P.PCI_EXP_TYPE_RC_END && type !== P.PCI_EXP_TYPE_RC_EC;
      return (
        within(
          r,
          at,
          hasLink ? P.PCI_CAP_EXP_ENDPOINT_SIZEOF_V1 : P.PCI_CAP_EXP_RC_ENDPOINT_SIZEOF_V1,
          () => ({
            kind: 'express' as const,
            offset: at,
            flags,
            devcap: r.u32(at + P.PCI_EXP_DEVCAP),
            devctl: r.u16(at + P.PCI_EXP_DEVCTL),
            devsta: r.u16(at + P.PCI_EXP_DEVSTA),
            ...(hasLink
              ? {
                  link: {
                    lnkcap: r.u32(at + P.PCI_EXP_LNKCAP),
                    lnkctl: r.u16(at + P.PCI_EXP_LNKCTL),
                    lnksta: r.u16(at + P.PCI_EXP_LNKSTA),
                  },
                }
              : {}),
          }),
        ) ?? other
      );
    }
    case P.PCI_CAP_ID_VNDR: {
      // The byte after the next pointer is the capability's length (PCI 3.0 §6.7, "Vendor Specific").
      const length = flags & 0xff;
      return {
        kind: 'vendor',
        offset: at,
        bytes: r.bytes.slice(at, at + Math.max(length, P.PCI_CAP_SIZEOF)),
      };
    }
    default:
      return other;
  }
}

function decodeExtCapabilities(r: Reader): PciExtCapability[] {
  const out: PciExtCapability[] = [];
  const seen = new Set<number>();
  for (let at = P.PCI_CFG_SPACE_SIZE; ; ) {
    if (!r.has(at, 4)) {
      out.push({ kind: 'broken', offset: at, why: 'unreadable' });
      break;
    }
    const header = r.u32(at);
    // An empty first header (0) or all-ones (nothing there) ends the list (lspci show_ext_caps).
    if (header === 0 || header === 0xffffffff) break;
    if (seen.has(at) || out.length >= MAX_EXT_CAPABILITIES) {
      out.push({ kind: 'broken', offset: at, why: 'looped' });
      break;
    }
    seen.add(at);
    const next = P.PCI_EXT_CAP_NEXT(header);
    if (next !== 0 && next < P.PCI_CFG_SPACE_SIZE) {
      out.push({ kind: 'broken', offset: next, why: 'broken' });
      break;
    }
    const end = next > at ? next : r.bytes.length;
    out.push({
      kind: 'ext',
      offset: at,
      id: P.PCI_EXT_CAP_ID(header),
      version: P.PCI_EXT_CAP_VER(header),
      body: r.bytes.slice(at + 4, Math.min(end, r.bytes.length)),
    });
    if (next === 0) break;
    at = next;
  }
  return out;
}
