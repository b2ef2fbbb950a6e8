/**
 * `vfio-ts bind <pci-address> [--json]` and `vfio-ts unbind <pci-address> [--json]`: hand a PCI
 * function to vfio-pci (driver_override, unbind from its driver, drivers_probe) or give it back
 * (src/kernel/sysfs.ts). Exit status 1 when the vfio-pci module is missing, the address is
 * unknown, or the IOMMU group is not viable (another device in it is bound to a driver that takes
 * DMA ownership: src/kernel/sysfs.ts groupViability).
 */
import { Errno } from '../abi/errno.js';
import { fail } from '../errors.js';
import { bindVfioPci, driverLeavesDmaToUser, unbindVfioPci } from '../kernel/sysfs.js';

function parse(args: string[], cmd: string): { bdf: string; json: boolean } {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.length !== 1 || rest[0]!.startsWith('-'))
    return fail(Errno.EINVAL, cmd, `usage: vfio-ts ${cmd} <pci-address> [--json]`);
  return { bdf: rest[0]!, json };
}

export async function run(args: string[]): Promise<number> {
  const { bdf, json } = parse(args, 'bind');
  const r = bindVfioPci(bdf);
  if (json) console.log(JSON.stringify(r));
  else {
    console.log(
      `${r.bdf}: bound to vfio-pci (was ${r.previousDriver ?? 'unbound'}), IOMMU group ${r.group}: /dev/vfio/${r.group}`,
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
