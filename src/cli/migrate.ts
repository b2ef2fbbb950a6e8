/**
 * `vfio-ts migrate --from SOCKET --to SOCKET [--rounds N] [--json]`
 *
 * Migrates the device served at one vfio-user socket into the one served at another
 * (src/driver/migrate.ts; docs/migration.md): pre-copy where the source offers it, stop-and-copy,
 * resume on the target; the source is left STOP. This command owns no guest memory, so there are
 * no dirty-page rounds: what moves is the device's own state. Both servers serve one client at a
 * time and reset a device when its client leaves (as vfio-pci does when the last user closes it),
 * so what a client sees afterwards is what the device keeps across clients (ivshmem's shared
 * memory, an NVMe namespace); a VMM migrates with the library call while it holds both devices.
 */
import { VfioUserClient } from '../client/index.js';
import { MIGRATE_MAX_ROUNDS, migrate } from '../driver/migrate.js';

const USAGE = `usage: vfio-ts migrate --from SOCKET --to SOCKET [options]

  --from SOCKET     the vfio-user socket of the device to migrate (the source)
  --to SOCKET       the vfio-user socket of a device of the same kind (the target)
  --rounds N        most pre-copy rounds (default ${MIGRATE_MAX_ROUNDS}; 0: stop-and-copy only)
  --json            print the result as JSON
  --help, -h        this text

Pre-copy where the source offers it, stop-and-copy, then the target runs and the source is left
STOP. A stream the target refuses (another device, a damaged one) leaves the source RUNNING.
This command owns no guest memory, so no dirty-page rounds (docs/migration.md).`;

interface Args {
  from: string;
  to: string;
  rounds: number;
  json: boolean;
}

function parse(args: string[]): Args | string {
  const out: Partial<Args> = { rounds: MIGRATE_MAX_ROUNDS, json: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = (): string | undefined => args[++i];
    switch (a) {
      case '--from':
      case '--to': {
        const v = value();
        if (!v) return `${a} needs a socket path`;
        out[a === '--from' ? 'from' : 'to'] = v;
        break;
      }
      case '--rounds': {
        const v = Number(value());
        if (!Number.isSafeInteger(v) || v < 0) return '--rounds needs a whole number of 0 or more';
        out.rounds = v;
        break;
      }
      case '--json':
        out.json = true;
        break;
      default:
        return `unknown option '${a}'`;
    }
  }
  if (!out.from || !out.to) return '--from and --to are required';
  if (out.from === out.to) return '--from and --to name the same socket';
  return out as Args;
}

export async function run(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const a = parse(args);
  if (typeof a === 'string') {
    console.error(`vfio-ts migrate: ${a}\n${USAGE}`);
    return 2;
  }
  const source = await VfioUserClient.connect(a.from);
  let target: VfioUserClient | undefined;
  try {
    target = await VfioUserClient.connect(a.to);
    const r = await migrate(source, target, { maxRounds: a.rounds });
    if (a.json) console.log(JSON.stringify({ from: a.from, to: a.to, ...r }));
    else
      console.log(
        `migrated ${a.from} -> ${a.to}: ${r.streamBytes} bytes of device state` +
          (r.precopy ? ` (${r.precopyBytes} in ${r.rounds} pre-copy rounds)` : ' (stop-and-copy only)') +
          `, downtime ${r.downtimeMs.toFixed(1)} ms`,
      );
    return 0;
  } finally {
    await target?.close();
    await source.close();
  }
}
