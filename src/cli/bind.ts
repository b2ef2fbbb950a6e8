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
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { VFIO_CDEV_DIR } from '../kernel/iommufd.js';
import { type BindResult, bindVfioPci, driverLeavesDmaToUser, unbindVfioPci } from '../kernel/sysfs.js';

function parse(args: string[], cmd: string): { bdf: string; json: boolean } {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.length !== 1 || rest[0]!.startsWith('-'))
    return fail(Errno.EINVAL, cmd, `usage: vfio-ts ${cmd} <pci-address> [--json]`);
  return { bdf: rest[0]!, json };
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

export async function run(args: string[]): Promise<number> {
  const { bdf, json } = parse(args, 'bind');
  const r = bindVfioPci(bdf);
  const nodes = deviceNodes(r);
  if (json) console.log(JSON.stringify({ ...r, nodes }));
  else {
    console.log(
      `${r.bdf}: bound to vfio-pci (was ${r.previousDriver ?? 'unbound'}), IOMMU group ${r.group}: ${nodes.join(', ') || 'no device node yet'}`,
    );
    for (const m of r.groupMembers)
      if (m.bdf !== r.bdf) console.log(`  group member ${m.bdf}: ${m.driver ?? 'no driver'}`);
  }
  if (!r.viable) {
    const others = r.groupMembers.filter((m) => !driverLeavesDmaToUser(m.driver));
    console.error(
      `vfio-ts bind: EBUSY: IOMMU group ${r.group} is not viable: ${others.map((m) => `${m.bdf} (${m.driver})`).join(', ')} must be unbound or bound to vfio-pci (or pci-stub) too; opening ${r.bdf} fails until then`,
    );
    return 1;
  }
  return 0;
}

export async function runUnbind(args: string[]): Promise<number> {
  const { bdf, json } = parse(args, 'unbind');
  const r = unbindVfioPci(bdf);
  if (json) console.log(JSON.stringify(r));
  else console.log(`${r.bdf}: released from vfio-pci; now ${r.driver ?? 'unbound'}`);
  return 0;
}
