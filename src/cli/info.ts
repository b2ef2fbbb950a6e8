/**
 * `vfio-ts info <socket-path | pci-address> [--json]`: a device described the way `lspci -vv`
 * describes one, from the VFIO uAPI alone, over any backend: a vfio-user server's socket
 * (src/client) or a PCI device bound to vfio-pci (src/kernel, `0000:00:03.0` or `00:03.0`).
 *
 * Identity comes from config space (PCI spec, "Configuration Space Header": vendor 0x00,
 * device 0x02, revision 0x08, class 0x09, subsystem 0x2c/0x2e), everything else from
 * GET_INFO / GET_REGION_INFO (with the argsz exchange, capabilities decoded) / GET_IRQ_INFO, and
 * the write-combining paths from VfioDevice.wcPaths (which asks the device, docs/vfio-user-wc.md).
 */

import {
  aliasRegionBar,
  PCI_STD_NUM_BARS,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
} from '../abi/vfio.js';
import { VfioUserClient } from '../client/client.js';
import { type DeviceReport, describeDevice } from '../driver/describe.js';
import { VfioDevice } from '../driver/device.js';
import type { VfioDeviceFile } from '../driver/file.js';
import { MalformedError, VfioError } from '../errors.js';
import type { KernelDeviceFile, KernelOpened } from '../kernel/device.js';
import type { VfioRegionCap } from '../wire/vfio.js';

export interface Output {
  log(line: string): void;
  error(line: string): void;
}

/** What `info` learned: the device report plus how it was reached. */
export interface InfoReport extends DeviceReport {
  readonly target: string;
  readonly numRegions: number;
  readonly numIrqs: number;
  /** Kernel backend only: the group and container, or the device cdev and its iommufd IOAS. */
  readonly opened?: KernelOpened;
  /** vfio-user only: what VERSION settled. */
  readonly negotiated?: {
    readonly version: string;
    readonly maxDataXferSize: number;
    readonly maxMsgFds: number;
    readonly dmaLayout: string;
  };
}

const PCI_ADDRESS = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;

/** `00:03.0` → `0000:00:03.0`; undefined when `s` is not a PCI address. */
export function pciAddress(s: string): string | undefined {
  const m = PCI_ADDRESS.exec(s);
  if (!m) return undefined;
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2]!.toLowerCase()}:${m[3]!.toLowerCase()}.${m[4]}`;
}

const USAGE = 'usage: vfio-ts info <socket-path | pci-address> [--json]';

export async function run(args: string[]): Promise<number> {
  return runWith(args, { log: (l) => console.log(l), error: (l) => console.error(l) });
}

export async function runWith(args: string[], out: Output): Promise<number> {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.length !== 1 || rest[0]!.startsWith('-')) {
    out.error(USAGE);
    return 2;
  }
  const target = rest[0]!;
  let file: VfioDeviceFile;
  try {
    file = await open(target);
  } catch (e) {
    if (e instanceof InfoError) {
      out.error(`vfio-ts info: ${e.message}`);
      return 1;
    }
    if (e instanceof VfioError) {
      out.error(`vfio-ts info: ${target}: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const dev = new VfioDevice(file);
  try {
    const report = await collectInfo(dev, target);
    out.log(json ? JSON.stringify(infoJson(report), null, 2) : formatInfo(report));
    return 0;
  } catch (e) {
    if (e instanceof VfioError || e instanceof MalformedError) {
      out.error(`vfio-ts info: ${target}: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    await dev.close();
  }
}

class InfoError extends Error {}

async function open(target: string): Promise<VfioDeviceFile> {
  const bdf = pciAddress(target);
  if (bdf === undefined) return VfioUserClient.connect(target);
  // The kernel backend is loaded only when asked for (it needs /dev/vfio and root). Its entry
  // point is src/kernel/index.ts, or src/kernel/device.ts where no index exists yet.
  let mod: { openKernelDevice?: (bdf: string) => Promise<VfioDeviceFile> } = {};
  let why = '';
  for (const path of ['../kernel/index.js', '../kernel/device.js']) {
    try {
      mod = (await import(path)) as typeof mod;
      if (typeof mod.openKernelDevice === 'function') break;
      why = `${path} exports no openKernelDevice()`;
    } catch (e) {
      why = e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e);
    }
  }
  if (typeof mod.openKernelDevice !== 'function')
    throw new InfoError(
      `${bdf} is a PCI address, but the kernel backend (src/kernel) is not available in this build (${why})`,
    );
  return mod.openKernelDevice(bdf);
}

export async function collectInfo(dev: VfioDevice, target: string): Promise<InfoReport> {
  const info = await dev.info();
  const base = await describeDevice(dev);
  const file = dev.file;
  const negotiated =
    file instanceof VfioUserClient
      ? {
          version: `${file.negotiated.major}.${file.negotiated.minor}`,
          maxDataXferSize: file.negotiated.maxDataXferSize,
          maxMsgFds: file.negotiated.maxMsgFds,
          dmaLayout: file.negotiated.dmaLayout,
        }
      : undefined;
  const opened = file.transport === 'kernel' ? (file as KernelDeviceFile).opened : undefined;
  return {
    ...base,
    target,
    numRegions: info.numRegions,
    numIrqs: info.numIrqs,
    ...(opened ? { opened } : {}),
    ...(negotiated ? { negotiated } : {}),
  };
}

/** BAR0..5, ROM, CONFIG, VGA; a WC alias region by the BAR its type capability names. */
export function regionLabel(index: number, caps: readonly VfioRegionCap[]): string {
  if (index < PCI_STD_NUM_BARS) return `BAR${index}`;
  if (index === VFIO_PCI_ROM_REGION_INDEX) return 'ROM';
  if (index === VFIO_PCI_CONFIG_REGION_INDEX) return 'CONFIG';
  if (index === VFIO_PCI_VGA_REGION_INDEX) return 'VGA';
  const t = caps.find((c) => c.kind === 'type');
  const bar = t?.kind === 'type' ? aliasRegionBar(t.type, t.subtype) : undefined;
  if (bar !== undefined) return `BAR${bar} WC alias`;
  return `device-specific ${index}`;
}

/** PCI base class names (PCI Code and ID Assignment Specification, section 1), the common ones. */
const CLASS_NAMES: Record<number, string> = {
  0: 'Unclassified device',
  1: 'Mass storage controller',
  2: 'Network controller',
  3: 'Display controller',
  4: 'Multimedia controller',
  5: 'Memory controller',
  6: 'Bridge',
  7: 'Communication controller',
  8: 'Generic system peripheral',
  12: 'Serial bus controller',
  18: 'Processing accelerators',
  255: 'Unassigned class',
};

const hex = (n: number | bigint, w = 0) => n.toString(16).padStart(w, '0');

/** lspci's size notation: 256, 4K, 1M, 2G. */
export function sizeText(size: bigint): string {
  for (const [unit, shift] of [
    ['G', 30n],
    ['M', 20n],
    ['K', 10n],
  ] as const)
    if (size >= 1n << shift && size % (1n << shift) === 0n) return `${size >> shift}${unit}`;
  return size.toString();
}

function capLines(c: VfioRegionCap): string[] {
  switch (c.kind) {
    case 'sparse-mmap':
      return [
        `Sparse mmap: ${c.areas.length} area${c.areas.length === 1 ? '' : 's'}`,
        ...c.areas.map(
          (a) => `\tmmap [0x${hex(a.offset)}-0x${hex(a.offset + a.size - 1n)}] size=${sizeText(a.size)}`,
        ),
      ];
    case 'type':
      return [`Type: 0x${hex(c.type)} subtype 0x${hex(c.subtype)}`];
    case 'msix-mappable':
      return ['MSI-X table mappable'];
    case 'unknown':
      return [`Capability ${c.id} version ${c.version} (${c.body.length} bytes)`];
  }
}

function openedText(o: KernelOpened): string {
  return o.path === 'group'
    ? `group ${o.node} in container /dev/vfio/vfio`
    : `device cdev ${o.node} bound to /dev/iommu (devid ${o.devid}, IOAS ${o.ioas})`;
}

/** Text in the manner of `lspci -vv`: a title line, then tab-indented facts. */
export function formatInfo(r: InfoReport): string {
  const cls = CLASS_NAMES[r.classCode >> 16] ?? 'Class';
  const lines = [
    `${r.target}: ${cls} [${hex(r.classCode >> 8, 4)}]: Device ${hex(r.vendorId, 4)}:${hex(r.deviceId, 4)} (rev ${hex(r.revision, 2)}) (prog-if ${hex(r.classCode & 0xff, 2)})`,
    `\tSubsystem: Device ${hex(r.subsystemVendorId, 4)}:${hex(r.subsystemId, 4)}`,
    `\tVFIO: ${r.transport}${r.opened ? `, ${openedText(r.opened)}` : ''}${r.negotiated ? ` ${r.negotiated.version}, max_data_xfer_size ${r.negotiated.maxDataXferSize}, max_msg_fds ${r.negotiated.maxMsgFds}, DMA_READ/WRITE layout ${r.negotiated.dmaLayout}` : ''}`,
    `\tDevice: ${r.numRegions} regions, ${r.numIrqs} IRQs, reset ${r.reset ? '+' : '-'}`,
  ];
  for (const g of r.regions) {
    lines.push(
      `\tRegion ${g.index} (${regionLabel(g.index, g.caps)}): size=${sizeText(g.size)} offset=0x${hex(g.offset)} [${g.flags.join(' ')}]`,
    );
    for (const c of g.caps) for (const l of capLines(c)) lines.push(`\t\t${l}`);
    if (g.index < PCI_STD_NUM_BARS && g.flags.includes('MMAP'))
      lines.push(`\t\tWrite-combining: ${g.wcPaths.length ? g.wcPaths.join(', ') : 'none'}`);
    if (g.wcNote) lines.push(`\t\t\t${g.wcNote}`);
  }
  for (const q of r.irqs)
    lines.push(
      'errno' in q
        ? `\tIRQ ${q.index} (${q.name}): ${q.errno}`
        : `\tIRQ ${q.index} (${q.name}): count=${q.count} [${q.flags.join(' ')}]`,
    );
  return lines.join('\n');
}

/** One JSON object with the same facts; 64-bit values as hex strings, ids as numbers. */
export function infoJson(r: InfoReport): Record<string, unknown> {
  return {
    target: r.target,
    transport: r.transport,
    ...(r.opened ? { opened: r.opened } : {}),
    ...(r.negotiated ? { negotiated: r.negotiated } : {}),
    vendorId: r.vendorId,
    deviceId: r.deviceId,
    subsystemVendorId: r.subsystemVendorId,
    subsystemId: r.subsystemId,
    classCode: r.classCode,
    revision: r.revision,
    reset: r.reset,
    numRegions: r.numRegions,
    numIrqs: r.numIrqs,
    regions: r.regions.map((g) => ({
      index: g.index,
      name: regionLabel(g.index, g.caps),
      size: `0x${hex(g.size)}`,
      offset: `0x${hex(g.offset)}`,
      flags: g.flags,
      caps: g.caps.map((c) =>
        c.kind === 'sparse-mmap'
          ? {
              kind: c.kind,
              areas: c.areas.map((a) => ({ offset: `0x${hex(a.offset)}`, size: `0x${hex(a.size)}` })),
            }
          : c.kind === 'unknown'
            ? { kind: c.kind, id: c.id, version: c.version, bytes: c.body.length }
            : c,
      ),
      wcPaths: g.wcPaths,
      ...(g.wcNote === undefined ? {} : { wcNote: g.wcNote }),
    })),
    irqs: r.irqs,
  };
}
