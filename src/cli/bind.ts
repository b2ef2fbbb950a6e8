/**
 * `vfio-ts bind <pci-address> [--json]` and `vfio-ts unbind <pci-address> [--json]`: hand a PCI
 * function to vfio-pci (driver_override, unbind from its driver, drivers_probe) or give it back
 * (src/kernel/sysfs.ts). Exit status 1 when the vfio-pci module is missing, the address is
 * unknown, or the IOMMU group is not viable (another device in it is bound to a driver that takes
 * DMA ownership: src/kernel/sysfs.ts groupViability). It names the device nodes a user opens: the
 * group's /dev/vfio/N and the device cdev /dev/vfio/devices/vfioN, whichever the kernel has (a
 * kernel built without CONFIG_VFIO_GROUP has only the cdev).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { jsonText } from '../driver/report-json.js';
import { VFIO_CDEV_DIR } from '../kernel/iommufd.js';
import { type BindResult, bindVfioPci, driverLeavesDmaToUser, unbindVfioPci } from '../kernel/sysfs.js';
import { CONSOLE, type CommandSpec, hasFlag, type Output, runCommand } from './args.js';
import { existingPciDevice } from './target.js';

const JSON_FLAG = {
  name: '--json',
  help: 'print the result as one JSON object (numbers as JSON numbers, see vfio-ts info --help)',
} as const;

export const BIND: CommandSpec = {
  name: 'bind',
  operands: 'PCI-ADDRESS',
  minOperands: 1,
  maxOperands: 1,
  description: `Binds the PCI function at PCI-ADDRESS (0000:00:03.0, or 00:03.0 in domain 0) to vfio-pci:
writes vfio-pci to its driver_override, unbinds it from its driver and asks the kernel to probe
it again (Documentation/driver-api/vfio.rst). Needs root and the vfio-pci module. Prints the
device's IOMMU group, the device nodes that open it (the group's /dev/vfio/N and the device cdev
/dev/vfio/devices/vfioN, whichever this kernel has) and the other devices in the group; exits 1 if the group is not viable (another
member is bound to a driver that does DMA), naming those devices.`,
  flags: [JSON_FLAG],
};

export const UNBIND: CommandSpec = {
  name: 'unbind',
  operands: 'PCI-ADDRESS',
  minOperands: 1,
  maxOperands: 1,
  description: `Gives the PCI function at PCI-ADDRESS back to the kernel: unbinds it from vfio-pci, clears
driver_override and lets the kernel probe it again (its own driver, if any, takes it).`,
  flags: [JSON_FLAG],
};

export function run(args: string[]): Promise<number> {
  return runBind(args, CONSOLE);
}

/** The device nodes that open `r`'s device: /dev/vfio/N (group path), /dev/vfio/devices/vfioN. */
export function deviceNodes(r: BindResult): string[] {
  const group = `/dev/vfio/${r.group}`;
  const nodes = existsSync(group) ? [group] : [];
  // sysfs lists vfio-dev/vfioN on every kernel since 6.1; the node exists only with the cdev.
  const cdev = r.cdev === undefined ? undefined : join(VFIO_CDEV_DIR, r.cdev);
  if (cdev !== undefined && existsSync(cdev)) nodes.push(cdev);
  return nodes;
}

export function runBind(args: string[], out: Output, sysfs?: string): Promise<number> {
  return runCommand(BIND, args, out, async (p) => {
    const r = bindVfioPci(existingPciDevice('bind', p.operands[0]!, sysfs), sysfs ? { sysfs } : {});
    const nodes = deviceNodes(r);
    if (hasFlag(p, '--json')) out.log(jsonText({ ...r, nodes }));
    else {
      out.log(
        `${r.bdf}: bound to vfio-pci (was ${r.previousDriver ?? 'unbound'}), IOMMU group ${r.group}: ${nodes.join(', ') || 'no device node yet'}`,
      );
      for (const m of r.groupMembers)
        if (m.bdf !== r.bdf) out.log(`  group member ${m.bdf}: ${m.driver ?? 'no driver'}`);
    }
    if (!r.viable) {
      const others = r.groupMembers.filter((m) => !driverLeavesDmaToUser(m.driver));
      out.error(
        `vfio-ts bind: EBUSY: IOMMU group ${r.group} is not viable: ${others.map((m) => `${m.bdf} (${m.driver})`).join(', ')} must be unbound or bound to vfio-pci (or pci-stub) too; opening ${r.bdf} fails until then`,
      );
      return 1;
    }
    return 0;
  });
}

export function runUnbind(args: string[], out: Output = CONSOLE, sysfs?: string): Promise<number> {
  return runCommand(UNBIND, args, out, async (p) => {
    const r = unbindVfioPci(existingPciDevice('unbind', p.operands[0]!, sysfs), sysfs ? { sysfs } : {});
    if (hasFlag(p, '--json')) out.log(jsonText(r));
    else out.log(`${r.bdf}: released from vfio-pci; now ${r.driver ?? 'unbound'}`);
    return 0;
  });
}
