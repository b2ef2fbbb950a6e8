/**
 * `vfio-ts info <socket-path | pci-address>`: a device described the way `lspci -nn -vv`
 * describes one, from its config space read through VFIO, then what VFIO says of it, over any
 * backend: a vfio-user server's socket (src/client) or a PCI device bound to vfio-pci
 * (src/kernel). The text is src/driver/describe.ts formatReport, the JSON its reportJson.
 */

import { Errno } from '../abi/errno.js';
import { VfioUserClient } from '../client/client.js';
import { type DeviceReport, describeDevice, formatReport } from '../driver/describe.js';
import { VfioDevice } from '../driver/device.js';
import { sizeText } from '../driver/format.js';
import type { KernelFacts } from '../driver/lspci.js';
import { PCI_IDS_PATHS, PciIdDatabase } from '../driver/pci-ids.js';
import { reportJson } from '../driver/report-json.js';
import { fail, MalformedError } from '../errors.js';
import { KernelDeviceFile, type KernelOpened } from '../kernel/device.js';
import { isBdf, normalizeBdf } from '../kernel/sysfs.js';
import {
  CONSOLE,
  type CommandSpec,
  flagValue,
  hasFlag,
  type Output,
  runCommand,
  timeoutFlag,
} from './args.js';
import { kernelFacts, openTarget, type TargetOptions } from './target.js';

/** A vfio-user request's reply must come within this (ClientOptions.timeoutMs); --timeout sets it. */
export const DEFAULT_INFO_TIMEOUT_S = 10;

export const INFO: CommandSpec = {
  name: 'info',
  operands: 'SOCKET|PCI-ADDRESS',
  minOperands: 1,
  maxOperands: 1,
  description: `Describes a device the way lspci -nn -vv does, from its config space read through VFIO:
names from the system's pci.ids (numbers alone without it), Control and Status, the BARs (type,
prefetchable, size), Capabilities (PM, MSI, MSI-X, PCI Express, vendor-specific; extended ones by
name). Then what VFIO says: the transport (for a PCI address, how the device was opened: through
its group in a container, or its device cdev bound to /dev/iommu), every region (offset in the device fd, size, flags,
capabilities, write-combining paths for BARs) and every IRQ index.
SOCKET is a vfio-user server's UNIX socket (vfio-ts serve); PCI-ADDRESS (0000:00:03.0, or 00:03.0)
a device bound to vfio-pci (vfio-ts bind). Numbers follow lspci: hex without 0x for addresses,
offsets and registers, sizes in binary units ([size=4M]), counts in decimal.`,
  flags: [
    {
      name: '--json',
      help: 'one JSON object instead of text. Every integer is a JSON number (IDs, registers,\naddresses, sizes: decimal, exact); names and flags are strings',
    },
    {
      name: '--pci-ids',
      value: 'FILE',
      help: `read names from FILE (pci.ids format) instead of the system's\n(${PCI_IDS_PATHS.slice(0, 2).join(', ')})`,
    },
    {
      name: '--timeout',
      value: 'SECONDS',
      help: `give up when a vfio-user server does not answer a request within SECONDS\n(default ${DEFAULT_INFO_TIMEOUT_S}); the command then fails with ETIMEDOUT`,
    },
  ],
  notes: `The VFIO line of a vfio-user device shows the protocol version VFIO_USER_VERSION settled on
(QEMU docs/interop/vfio-user.rst, "Version"): the client proposes major.minor (this client 0.1,
QEMU 0.0), the server answers the same major and a minor no higher (this project's server: 0).
0.0 is the version QEMU speaks; features are negotiated as capabilities beside it
(max_data_xfer_size, max_msg_fds), shown on the same line.
Exit status: 0 described, 1 the device could not be opened or stopped answering, 2 usage.`,
};

/** What `info` learned: the device report plus how it was reached. */
export interface InfoReport extends DeviceReport {
  readonly target: string;
  /** A PCI address: what lspci reads from sysfs beside config space. */
  readonly kernel?: KernelFacts;
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

export interface InfoOptions extends TargetOptions {
  /** pci.ids files to try (tests); the system's by default. */
  readonly pciIds?: readonly string[];
}

export function run(args: string[]): Promise<number> {
  return runWith(args, CONSOLE);
}

export function runWith(args: string[], out: Output, opts: InfoOptions = {}): Promise<number> {
  return runCommand(INFO, args, out, async (p) => {
    const target = p.operands[0]!;
    const timeoutMs = timeoutFlag(INFO, p, DEFAULT_INFO_TIMEOUT_S);
    const idsFile = flagValue(p, '--pci-ids');
    const names = loadNames(idsFile ? [idsFile] : (opts.pciIds ?? PCI_IDS_PATHS), idsFile !== undefined, out);
    const dev = new VfioDevice(await openTarget('info', target, { ...opts, timeoutMs }));
    try {
      const report = await collectInfo(dev, target, opts);
      out.log(hasFlag(p, '--json') ? infoJson(report, names) : formatInfo(report, names));
      return 0;
    } finally {
      await dev.close();
    }
  });
}

/**
 * The names database, or undefined (numbers only). A file named on the command line must load;
 * the system's may be missing, and one that cannot be parsed is a warning, not a failure.
 */
function loadNames(paths: readonly string[], required: boolean, out: Output): PciIdDatabase | undefined {
  try {
    const db = PciIdDatabase.load(paths);
    if (!db && required) fail(Errno.ENOENT, paths[0]!, 'cannot read this pci.ids file');
    return db;
  } catch (e) {
    if (required || !(e instanceof MalformedError)) throw e;
    out.error(`vfio-ts info: warning: ${e.message}; IDs shown as numbers`);
    return undefined;
  }
}

export async function collectInfo(
  dev: VfioDevice,
  target: string,
  opts: TargetOptions = {},
): Promise<InfoReport> {
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
  const opened = file instanceof KernelDeviceFile ? file.opened : undefined;
  const kernel = isBdf(target) ? kernelFacts(normalizeBdf(target), opts.sysfs) : undefined;
  return {
    ...base,
    target,
    ...(negotiated ? { negotiated } : {}),
    ...(opened ? { opened } : {}),
    ...(kernel ? { kernel } : {}),
  };
}

/** How a kernel device was opened (src/kernel/device.ts openKernelDevice), for the VFIO line. */
export function openedText(o: KernelOpened): string {
  return o.path === 'group'
    ? `group ${o.node} in container /dev/vfio/vfio`
    : `device cdev ${o.node} bound to /dev/iommu (devid ${o.devid}, IOAS ${o.ioas})`;
}

/** What the VFIO line says after the transport: the vfio-user protocol, or how the kernel's device was opened. */
function transportDetail(r: InfoReport): string | undefined {
  const n = r.negotiated;
  if (n)
    return `protocol ${n.version}, max_data_xfer_size ${sizeText(n.maxDataXferSize)}, max_msg_fds ${n.maxMsgFds}, DMA_READ/WRITE layout ${n.dmaLayout}`;
  return r.opened ? openedText(r.opened) : undefined;
}

/** The text: formatReport with the vfio-user protocol or the kernel's open path on the VFIO line. */
export function formatInfo(r: InfoReport, names?: PciIdDatabase): string {
  const detail = transportDetail(r);
  return formatReport(r, {
    title: r.target,
    ...(names ? { names } : {}),
    ...(r.kernel ? { kernel: r.kernel } : {}),
    ...(detail ? { transportDetail: detail } : {}),
  });
}

/** The JSON: reportJson with what the text adds, the target, the transport's details and sysfs's facts. */
export function infoJson(r: InfoReport, names?: PciIdDatabase): string {
  return reportJson(r, {
    target: r.target,
    ...(names ? { names } : {}),
    ...(r.negotiated ? { protocol: r.negotiated } : {}),
    ...(r.opened ? { opened: r.opened } : {}),
    ...(r.kernel ? { kernel: r.kernel } : {}),
  });
}
