/**
 * The one JSON form of a device report (`vfio-ts info --json`, `reportJson`).
 *
 * Convention: every integer is a JSON number, written exactly: IDs, register values, addresses,
 * offsets and sizes alike, never a hex string. JSON numbers have no size limit; a reader that
 * parses them as doubles (JavaScript's JSON.parse, jq before 1.7) is exact up to 2^53, which
 * every physical address (52 bits on x86-64 and arm64), BAR size and VFIO region offset
 * (index << 40) stays below. Strings are names (from pci.ids, present only when it has them)
 * and enumerations (flags, capability kinds, WC paths); booleans are decoded bits.
 */
import * as P from '../abi/pci.js';
import { VFIO_PCI_ROM_REGION_INDEX } from '../abi/vfio.js';
import type { DeviceReport } from './describe.js';
import { capabilityName, expressTypeName, extCapabilityName, type KernelFacts, linkSpeed } from './lspci.js';
import { field, type PciCapability, type PciExtCapability } from './pci-config.js';
import type { PciIdDatabase } from './pci-ids.js';

export interface JsonExtras {
  /** The socket path or PCI address the report is of. */
  readonly target?: string;
  /** What the transport settled (vfio-user: VERSION). */
  readonly protocol?: Readonly<Record<string, unknown>>;
  /** How the kernel backend opened the device (its group, or its device cdev and IOAS). */
  readonly opened?: Readonly<Record<string, unknown>>;
  readonly names?: PciIdDatabase | undefined;
  /** What sysfs says of a device the kernel knows (the IRQ, IOMMU group and driver). */
  readonly kernel?: KernelFacts;
}

/** JSON text with bigints as exact JSON numbers and byte arrays as arrays of numbers. */
export function jsonText(value: unknown): string {
  // JSON.stringify has no bigint: each is marked as a string no real string can equal (it
  // begins with a NUL), and the marks are replaced by their digits afterwards.
  const text = JSON.stringify(
    value,
    (_k, v) => (typeof v === 'bigint' ? `\u0000bigint:${v}` : v instanceof Uint8Array ? [...v] : v),
    2,
  );
  return text.replace(/"\\u0000bigint:(-?\d+)"/g, '$1');
}

function capabilityJson(c: PciCapability): Record<string, unknown> {
  const head = { offset: c.offset, kind: c.kind };
  switch (c.kind) {
    case 'pm':
      return {
        ...head,
        name: 'Power Management',
        version: c.pmc & P.PCI_PM_CAP_VER_MASK,
        pmc: c.pmc,
        pmcsr: c.pmcsr,
        powerState: `D${c.pmcsr & P.PCI_PM_CTRL_STATE_MASK}`,
      };
    case 'msi':
      return {
        ...head,
        name: 'MSI',
        control: c.control,
        enabled: !!(c.control & P.PCI_MSI_FLAGS_ENABLE),
        vectorsEnabled: 1 << field(c.control, P.PCI_MSI_FLAGS_QSIZE),
        vectorsCapable: 1 << field(c.control, P.PCI_MSI_FLAGS_QMASK),
        maskable: !!(c.control & P.PCI_MSI_FLAGS_MASKBIT),
        address64: !!(c.control & P.PCI_MSI_FLAGS_64BIT),
        address: c.address,
        data: c.data,
        ...(c.mask === undefined ? {} : { mask: c.mask, pending: c.pending }),
      };
    case 'msix':
      return {
        ...head,
        name: 'MSI-X',
        control: c.control,
        enabled: !!(c.control & P.PCI_MSIX_FLAGS_ENABLE),
        masked: !!(c.control & P.PCI_MSIX_FLAGS_MASKALL),
        tableSize: (c.control & P.PCI_MSIX_FLAGS_QSIZE) + 1,
        tableBar: c.tableBar,
        tableOffset: c.tableOffset,
        pbaBar: c.pbaBar,
        pbaOffset: c.pbaOffset,
      };
    case 'express':
      return {
        ...head,
        name: 'Express',
        version: c.flags & P.PCI_EXP_FLAGS_VERS,
        type: expressTypeName(c.flags),
        flags: c.flags,
        devcap: c.devcap,
        devctl: c.devctl,
        devsta: c.devsta,
        ...(c.link
          ? {
              link: {
                ...c.link,
                maxSpeed: linkSpeed(c.link.lnkcap & P.PCI_EXP_LNKCAP_SLS),
                maxWidth: field(c.link.lnkcap, P.PCI_EXP_LNKCAP_MLW),
                speed: linkSpeed(c.link.lnksta & P.PCI_EXP_LNKSTA_CLS),
                width: field(c.link.lnksta, P.PCI_EXP_LNKSTA_NLW),
              },
            }
          : {}),
      };
    case 'vendor':
      return { ...head, name: 'Vendor Specific Information', length: c.bytes[2] ?? 0 };
    case 'other': {
      const name = capabilityName(c.id);
      return { ...head, id: c.id, ...(name ? { name } : {}), flags: c.flags };
    }
    case 'broken':
      return { ...head, why: c.why };
  }
}

function extCapabilityJson(c: PciExtCapability): Record<string, unknown> {
  if (c.kind === 'broken') return { offset: c.offset, kind: c.kind, why: c.why };
  const name = extCapabilityName(c.id);
  return { offset: c.offset, id: c.id, version: c.version, ...(name ? { name } : {}) };
}

/** The report as one plain object (bigints kept: jsonText writes them exactly). */
export function reportObject(r: DeviceReport, extras: JsonExtras = {}): Record<string, unknown> {
  const c = r.config;
  const db = extras.names;
  const named = (key: string, name: string | undefined) => (name === undefined ? {} : { [key]: name });
  const size = (i: number) => r.regions.find((g) => g.index === i)?.size ?? 0n;
  return {
    ...(extras.target === undefined ? {} : { target: extras.target }),
    transport: r.transport,
    ...(extras.protocol ? { protocol: extras.protocol } : {}),
    ...(extras.opened ? { opened: extras.opened } : {}),
    ...(extras.kernel ? { kernel: extras.kernel } : {}),
    vendorId: c.vendorId,
    ...named('vendor', db?.vendor(c.vendorId)),
    deviceId: c.deviceId,
    ...named('device', db?.device(c.vendorId, c.deviceId)),
    subsystemVendorId: c.subsystemVendorId,
    ...named('subsystemVendor', db?.vendor(c.subsystemVendorId)),
    subsystemId: c.subsystemId,
    ...named('subsystem', db?.subsystem(c.vendorId, c.deviceId, c.subsystemVendorId, c.subsystemId)),
    classCode: c.classCode,
    ...named('class', db?.classCodeName(c.classCode)),
    revision: c.revision,
    headerType: c.headerType,
    command: c.command,
    status: c.status,
    interruptPin: c.interruptPin,
    interruptLine: c.interruptLine,
    bars: c.bars.map((b) => ({
      index: b.index,
      space: b.io ? 'io' : 'memory',
      ...(b.memoryType ? { type: b.memoryType } : {}),
      prefetchable: b.prefetchable,
      address: b.address,
      size: size(b.index),
    })),
    ...(c.rom
      ? { rom: { address: c.rom.address, enabled: c.rom.enabled, size: size(VFIO_PCI_ROM_REGION_INDEX) } }
      : {}),
    capabilities: c.capabilities.map(capabilityJson),
    extendedCapabilities: c.extendedCapabilities.map(extCapabilityJson),
    reset: r.reset,
    numRegions: r.numRegions,
    numIrqs: r.numIrqs,
    regions: r.regions.map((g) => ({
      index: g.index,
      name: g.name,
      offset: g.offset,
      size: g.size,
      flags: g.flags,
      caps: g.caps.map((k) =>
        k.kind === 'unknown' ? { kind: k.kind, id: k.id, version: k.version, bytes: k.body.length } : k,
      ),
      wcPaths: g.wcPaths,
      ...(g.wcNote === undefined ? {} : { wcNote: g.wcNote }),
    })),
    irqs: r.irqs,
  };
}

/** The report as JSON text, by the convention above. */
export function reportJson(r: DeviceReport, extras: JsonExtras = {}): string {
  return jsonText(reportObject(r, extras));
}
