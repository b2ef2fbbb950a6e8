/**
 * A device, described the way `lspci -v` would, from the uAPI alone: config-space identity,
 * regions with their flags and capabilities, IRQs, and the write-combining paths per BAR.
 * Works over any backend (it only uses VfioDevice).
 */
import {
  PCI_CLASS_REVISION,
  PCI_DEVICE_ID,
  PCI_REVISION_ID,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
} from '../abi/pci.js';
import {
  PCI_STD_NUM_BARS,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_PREFETCH,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../abi/vfio.js';
import { VfioError } from '../errors.js';
import type { VfioRegionCap } from '../wire/vfio.js';
import type { VfioDevice, WcPath } from './device.js';

const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

export interface RegionReport {
  readonly index: number;
  readonly name: string;
  readonly size: bigint;
  readonly offset: bigint;
  readonly flags: readonly string[];
  readonly caps: readonly VfioRegionCap[];
  readonly wcPaths: readonly WcPath[];
  /** For `sysfs-resource-wc`: on which kernels the route works (the kernel backend says). */
  readonly wcNote?: string;
}
export interface IrqReport {
  readonly index: number;
  readonly name: string;
  readonly count: number;
  readonly flags: readonly string[];
}
export interface DeviceReport {
  readonly transport: string;
  readonly vendorId: number;
  readonly deviceId: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  readonly classCode: number;
  readonly revision: number;
  readonly reset: boolean;
  readonly regions: readonly RegionReport[];
  readonly irqs: readonly (IrqReport | { index: number; name: string; errno: string })[];
}

export function regionName(index: number): string {
  if (index < PCI_STD_NUM_BARS) return `BAR${index}`;
  if (index === VFIO_PCI_ROM_REGION_INDEX) return 'ROM';
  if (index === VFIO_PCI_CONFIG_REGION_INDEX) return 'CONFIG';
  if (index === VFIO_PCI_VGA_REGION_INDEX) return 'VGA';
  return `DEV${index - VFIO_PCI_NUM_REGIONS}`;
}

function flagNames(flags: number, table: [number, string][]): string[] {
  return table.filter(([bit]) => flags & bit).map(([, n]) => n);
}
const REGION_FLAGS: [number, string][] = [
  [VFIO_REGION_INFO_FLAG_READ, 'READ'],
  [VFIO_REGION_INFO_FLAG_WRITE, 'WRITE'],
  [VFIO_REGION_INFO_FLAG_MMAP, 'MMAP'],
  [VFIO_REGION_INFO_FLAG_CAPS, 'CAPS'],
  [VFIO_REGION_INFO_FLAG_PREFETCH, 'PREFETCH'],
];
const IRQ_FLAGS: [number, string][] = [
  [VFIO_IRQ_INFO_EVENTFD, 'EVENTFD'],
  [VFIO_IRQ_INFO_MASKABLE, 'MASKABLE'],
  [VFIO_IRQ_INFO_AUTOMASKED, 'AUTOMASKED'],
  [VFIO_IRQ_INFO_NORESIZE, 'NORESIZE'],
];

export async function describeDevice(dev: VfioDevice): Promise<DeviceReport> {
  const info = await dev.info();
  const cfg = await dev.readConfig(0, 0x30);
  const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
  const regions: RegionReport[] = [];
  for (const r of await dev.regions()) {
    if (r.size === 0n && r.flags === 0) continue;
    const wcPaths = r.index < PCI_STD_NUM_BARS ? await dev.wcPaths(r.index) : [];
    const route = wcPaths.includes('sysfs-resource-wc') ? dev.file.writeCombiningRoute?.(r.index) : undefined;
    const wcNote = route?.note;
    regions.push({
      index: r.index,
      name: regionName(r.index),
      size: r.size,
      offset: r.offset,
      flags: flagNames(r.flags, REGION_FLAGS),
      caps: r.caps,
      wcPaths,
      ...(wcNote === undefined ? {} : { wcNote }),
    });
  }
  const irqs: DeviceReport['irqs'][number][] = [];
  for (let i = 0; i < info.numIrqs; i++) {
    const name = IRQ_NAMES[i] ?? `IRQ${i}`;
    try {
      const q = await dev.irqInfo(i);
      irqs.push({ index: i, name, count: q.count, flags: flagNames(q.flags, IRQ_FLAGS) });
    } catch (e) {
      if (!(e instanceof VfioError)) throw e;
      irqs.push({ index: i, name, errno: e.code });
    }
  }
  return {
    transport: dev.transport,
    vendorId: v.getUint16(PCI_VENDOR_ID, true),
    deviceId: v.getUint16(PCI_DEVICE_ID, true),
    revision: v.getUint8(PCI_REVISION_ID),
    classCode: v.getUint32(PCI_CLASS_REVISION, true) >>> 8,
    subsystemVendorId: v.getUint16(PCI_SUBSYSTEM_VENDOR_ID, true),
    subsystemId: v.getUint16(PCI_SUBSYSTEM_ID, true),
    reset: !!(info.flags & VFIO_DEVICE_FLAGS_RESET),
    regions,
    irqs,
  };
}

const hex = (n: number | bigint, w = 0) => `0x${n.toString(16).padStart(w, '0')}`;

export function formatCap(c: VfioRegionCap): string {
  switch (c.kind) {
    case 'sparse-mmap':
      return `sparse mmap: ${c.areas.map((a) => `[${hex(a.offset)}+${hex(a.size)}]`).join(' ')}`;
    case 'type':
      return `type ${hex(c.type)} subtype ${c.subtype}`;
    case 'msix-mappable':
      return 'MSI-X table mappable';
    case 'unknown':
      return `capability id ${c.id} v${c.version} (${c.body.length} bytes)`;
  }
}

/**
 * The parts of a region mmap can reach: the sparse-mmap capability's areas when there is one
 * (vfio.h: "the sparse mmap capability ... describes the areas that may be mmap'd"), else the
 * whole region when it has the MMAP flag, else none.
 */
export function mmapAreas(
  r: Pick<RegionReport, 'size' | 'flags' | 'caps'>,
): { offset: bigint; size: bigint }[] {
  if (!r.flags.includes('MMAP')) return [];
  for (const c of r.caps) if (c.kind === 'sparse-mmap') return c.areas.filter((a) => a.size > 0n);
  return r.size > 0n ? [{ offset: 0n, size: r.size }] : [];
}

/** Text in the spirit of `lspci -v`. */
export function formatReport(r: DeviceReport, title = ''): string {
  const out = [
    `${title ? `${title}: ` : ''}[${hex(r.vendorId, 4).slice(2)}:${hex(r.deviceId, 4).slice(2)}] class ${hex(r.classCode, 6)} rev ${hex(r.revision, 2)} (${r.transport})`,
    `\tSubsystem: [${hex(r.subsystemVendorId, 4).slice(2)}:${hex(r.subsystemId, 4).slice(2)}]${r.reset ? ', reset supported' : ''}`,
  ];
  for (const g of r.regions) {
    out.push(
      `\tRegion ${g.index} (${g.name}): size ${hex(g.size)} at offset ${hex(g.offset)} [${g.flags.join(' ')}]`,
    );
    for (const c of g.caps) out.push(`\t\tCapability: ${formatCap(c)}`);
    const areas = mmapAreas(g);
    if (areas.length)
      out.push(
        `\t\tmmap areas: ${areas.map((a) => `[${hex(a.offset)}-${hex(a.offset + a.size - 1n)}]`).join(' ')}`,
      );
    if (g.wcPaths.length) out.push(`\t\tWrite-combining paths: ${g.wcPaths.join(', ')}`);
    if (g.wcNote) out.push(`\t\t  (${g.wcNote})`);
  }
  for (const q of r.irqs)
    out.push(
      'errno' in q
        ? `\tIRQ ${q.index} (${q.name}): ${q.errno}`
        : `\tIRQ ${q.index} (${q.name}): count ${q.count} [${q.flags.join(' ')}]`,
    );
  return out.join('\n');
}

/** JSON with bigints as hex strings. */
export function reportJson(r: DeviceReport): string {
  return JSON.stringify(
    r,
    (_k, v) => (typeof v === 'bigint' ? hex(v) : v instanceof Uint8Array ? [...v] : v),
    2,
  );
}
