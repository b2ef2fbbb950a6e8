/**
 * A device described from the VFIO uAPI alone, over any backend (it only uses VfioDevice): its
 * config space decoded the way `lspci -vv` reads it (pci-config.ts, lspci.ts), then what VFIO
 * says of it (GET_INFO, GET_REGION_INFO with capabilities, GET_IRQ_INFO) and the
 * write-combining paths per BAR (VfioDevice.wcPaths). `formatReport` is the one text form
 * (`vfio-ts info`, the demo), `reportJson` the one JSON form (conventions in its comment).
 */
import { Errno } from '../abi/errno.js';
import { PCI_STD_HEADER_SIZEOF } from '../abi/pci.js';
import {
  aliasRegionBar,
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
import { fail, VfioError } from '../errors.js';
import type { VfioRegionCap } from '../wire/vfio.js';
import type { VfioDevice, WcPath } from './device.js';
import { hex, rangeText, sizeTag } from './format.js';
import { type KernelFacts, lspciLines } from './lspci.js';
import { decodeConfig, type PciConfig } from './pci-config.js';
import type { PciIdDatabase } from './pci-ids.js';

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
  /** Config space, decoded. */
  readonly config: PciConfig;
  readonly reset: boolean;
  readonly numRegions: number;
  readonly numIrqs: number;
  readonly regions: readonly RegionReport[];
  /** One per IRQ index; an index the device does not have answers EINVAL (vfio_pci_ioctl_get_irq_info). */
  readonly irqs: readonly (IrqReport | { index: number; name: string; errno: string })[];
}

/** BAR0..5, ROM, CONFIG, VGA; a WC alias region by the BAR its type capability names; DEVn after. */
export function regionName(index: number, caps: readonly VfioRegionCap[] = []): string {
  if (index < PCI_STD_NUM_BARS) return `BAR${index}`;
  if (index === VFIO_PCI_ROM_REGION_INDEX) return 'ROM';
  if (index === VFIO_PCI_CONFIG_REGION_INDEX) return 'CONFIG';
  if (index === VFIO_PCI_VGA_REGION_INDEX) return 'VGA';
  const t = caps.find((c) => c.kind === 'type');
  const bar = t?.kind === 'type' ? aliasRegionBar(t.type, t.subtype) : undefined;
  return bar !== undefined ? `BAR${bar} WC alias` : `DEV${index - VFIO_PCI_NUM_REGIONS}`;
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

/**
 * Asks the device everything the report holds. Any failure but an IRQ index's EINVAL fails the
 * whole report (a server that stops answering is ETIMEDOUT here, not a line of the report).
 */
export async function describeDevice(dev: VfioDevice): Promise<DeviceReport> {
  const info = await dev.info();
  const regions: RegionReport[] = [];
  for (const r of await dev.regions()) {
    if (r.size === 0n && r.flags === 0) continue;
    const wcPaths = r.index < PCI_STD_NUM_BARS ? await dev.wcPaths(r.index) : [];
    const route = wcPaths.includes('sysfs-resource-wc') ? dev.file.writeCombiningRoute?.(r.index) : undefined;
    const wcNote = route?.note;
    regions.push({
      index: r.index,
      name: regionName(r.index, r.caps),
      size: r.size,
      offset: r.offset,
      flags: flagNames(r.flags, REGION_FLAGS),
      caps: r.caps,
      wcPaths,
      ...(wcNote === undefined ? {} : { wcNote }),
    });
  }
  const configRegion = regions.find((g) => g.index === VFIO_PCI_CONFIG_REGION_INDEX);
  if (!configRegion) fail(Errno.ENODEV, 'config space', 'the device reports no config region');
  const want = Number(configRegion.size);
  const bytes = await dev.readConfig(0, want);
  if (bytes.length < Math.min(want, PCI_STD_HEADER_SIZEOF) || bytes.length > want)
    fail(Errno.EIO, 'read config space', `the device returned ${bytes.length} of ${want} bytes`);
  const config = decodeConfig(bytes);
  const irqs: DeviceReport['irqs'][number][] = [];
  for (let i = 0; i < info.numIrqs; i++) {
    const name = IRQ_NAMES[i] ?? `IRQ${i}`;
    try {
      const q = await dev.irqInfo(i);
      irqs.push({ index: i, name, count: q.count, flags: flagNames(q.flags, IRQ_FLAGS) });
    } catch (e) {
      if (!(e instanceof VfioError && e.errno === Errno.EINVAL)) throw e;
      irqs.push({ index: i, name, errno: e.code });
    }
  }
  return {
    transport: dev.transport,
    vendorId: config.vendorId,
    deviceId: config.deviceId,
    revision: config.revision,
    classCode: config.classCode,
    subsystemVendorId: config.subsystemVendorId,
    subsystemId: config.subsystemId,
    config,
    reset: !!(info.flags & VFIO_DEVICE_FLAGS_RESET),
    numRegions: info.numRegions,
    numIrqs: info.numIrqs,
    regions,
    irqs,
  };
}

export function formatCap(c: VfioRegionCap): string {
  switch (c.kind) {
    case 'sparse-mmap':
      return `Sparse mmap: ${c.areas.length ? c.areas.map((a) => rangeText(a.offset, a.size)).join(', ') : 'no areas'}`;
    case 'type':
      return `Type: ${hex(c.type, 8)} subtype ${c.subtype}`;
    case 'msix-mappable':
      return 'MSI-X table mappable';
    case 'unknown':
      return `Capability ${c.id} version ${c.version} (${c.body.length} bytes)`;
  }
}

export interface FormatOptions {
  /** Where lspci prints the slot: the socket path or PCI address (default `device`). */
  readonly title?: string;
  /** Names for the IDs (lspci -nn); numbers alone without. */
  readonly names?: PciIdDatabase;
  /**
   * What follows `VFIO: <transport>, ` on its line (vfio-user: the protocol version and limits;
   * the kernel: its group and container, or its device cdev and IOAS).
   */
  readonly transportDetail?: string;
  /** For a device the kernel knows: what lspci adds from sysfs. */
  readonly kernel?: KernelFacts;
}

/** The sizes lspci takes from sysfs, here from the BAR and ROM regions. */
function regionSizes(r: DeviceReport): { bars: bigint[]; rom: bigint } {
  const size = (i: number) => r.regions.find((g) => g.index === i)?.size ?? 0n;
  return {
    bars: Array.from({ length: PCI_STD_NUM_BARS }, (_, i) => size(i)),
    rom: size(VFIO_PCI_ROM_REGION_INDEX),
  };
}

/** `lspci -nn -vv` text for the device, then its VFIO regions, IRQs and write-combining paths. */
export function formatReport(r: DeviceReport, opts: FormatOptions | string = {}): string {
  const o: FormatOptions = typeof opts === 'string' ? { title: opts } : opts;
  const out = lspciLines(r.config, o.title ?? 'device', regionSizes(r), o.names, o.kernel);
  out.push(
    `\tVFIO: ${r.transport}${o.transportDetail ? `, ${o.transportDetail}` : ''}`,
    `\tVFIO device: ${r.numRegions} regions, ${r.numIrqs} IRQ indexes, ${r.reset ? 'reset supported' : 'no reset'}`,
  );
  for (const g of r.regions) {
    out.push(
      `\tVFIO region ${g.index} (${g.name}): offset ${hex(g.offset)}${sizeTag(g.size)} [${g.flags.join(' ')}]`,
    );
    for (const c of g.caps) out.push(`\t\t${formatCap(c)}`);
    if (g.index < PCI_STD_NUM_BARS && g.flags.includes('MMAP'))
      out.push(`\t\tWrite-combining: ${g.wcPaths.length ? g.wcPaths.join(', ') : 'none'}`);
    if (g.wcNote) out.push(`\t\t\t${g.wcNote}`);
  }
  for (const q of r.irqs)
    out.push(
      'errno' in q
        ? `\tVFIO IRQ ${q.index} (${q.name}): ${q.errno}`
        : `\tVFIO IRQ ${q.index} (${q.name}): count ${q.count} [${q.flags.join(' ')}]`,
    );
  return out.join('\n');
}

export { reportJson } from './report-json.js';
