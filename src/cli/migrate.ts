/**
 * `vfio-ts migrate --from SOCKET --to SOCKET [--rounds N] [--json]`
 *
 * Migrates the device served at one vfio-user socket into the one served at another
 * (src/driver/migrate.ts; docs/migration.md): pre-copy where the source offers it, stop-and-copy,
 * resume on the target; the source is left STOP. This command owns no guest memory, so there are
 * no dirty-page rounds: what moves is the device's own state. Both servers serve one client at a
 * time and reset a device when its client leaves (as vfio-pci does when the last user closes it),
 * so what a client sees afterwards is what the device keeps across clients (ivshmem's shared
 * memory); a VMM migrates with the library call while it holds both devices. An NVMe namespace
 * on a --disk file is storage, not device state: both servers are expected to serve one file.
 */
import type { VfioUserClient } from '../client/index.js';
import { MIGRATE_MAX_ROUNDS, migrate } from '../driver/migrate.js';
import { jsonText } from '../driver/report-json.js';
import {
  CONSOLE,
  type CommandSpec,
  flagValue,
  hasFlag,
  type Output,
  runCommand,
  timeoutFlag,
  UsageError,
} from './args.js';
import { connectSocket } from './target.js';

/** Each request's reply must come within this (ClientOptions.timeoutMs); --timeout sets it. */
export const DEFAULT_MIGRATE_TIMEOUT_S = 10;

export const MIGRATE: CommandSpec = {
  name: 'migrate',
  operands: '',
  synopsis: 'migrate --from SOCKET --to SOCKET [options]',
  minOperands: 0,
  maxOperands: 0,
  description: `Live-migrates the device served at --from into the device of the same kind served at --to
(vfio-user migration v2, docs/migration.md): pre-copy where the source offers it, stop-and-copy,
then the target runs and the source is left STOP. A stream the target refuses (another device, a
damaged one) fails with EINVAL and the source runs again. This command owns no guest memory, so
there are no dirty-page rounds; each server resets its device when this client leaves, so what
lasts is what the device keeps across clients (ivshmem's shared memory). An NVMe namespace on a
--disk file is storage, not device state: the two servers should serve the same file.`,
  flags: [
    { name: '--from', value: 'SOCKET', help: 'the vfio-user socket of the device to migrate (the source)' },
    { name: '--to', value: 'SOCKET', help: 'the vfio-user socket of a device of the same kind (the target)' },
    {
      name: '--rounds',
      value: 'N',
      help: `most pre-copy rounds (default ${MIGRATE_MAX_ROUNDS}; 0: stop-and-copy only)`,
    },
    {
      name: '--timeout',
      value: 'SECONDS',
      help: `give up when a server does not answer a request within SECONDS (default\n${DEFAULT_MIGRATE_TIMEOUT_S}; a state change gets a longer limit of its own), failing with ETIMEDOUT;\na server busy with another client never answers VERSION, so this too`,
    },
    { name: '--json', help: 'print the result as one JSON object' },
  ],
};

export function run(args: string[]): Promise<number> {
  return runMigrate(args, CONSOLE);
}

export function runMigrate(args: string[], out: Output): Promise<number> {
  return runCommand(MIGRATE, args, out, async (p) => {
    const from = flagValue(p, '--from');
    const to = flagValue(p, '--to');
    if (from === undefined || to === undefined)
      throw new UsageError('migrate', '--from and --to are required');
    if (from === to) throw new UsageError('migrate', '--from and --to name the same socket');
    const r = flagValue(p, '--rounds');
    const rounds = r === undefined ? MIGRATE_MAX_ROUNDS : Number(r);
    if (!Number.isSafeInteger(rounds) || rounds < 0)
      throw new UsageError('migrate', `--rounds needs a whole number of 0 or more, not '${r}'`);
    const timeoutMs = timeoutFlag(MIGRATE, p, DEFAULT_MIGRATE_TIMEOUT_S);
    const source = await connectSocket(from, { timeoutMs });
    let target: VfioUserClient | undefined;
    try {
      target = await connectSocket(to, { timeoutMs });
      const res = await migrate(source, target, { maxRounds: rounds });
      if (hasFlag(p, '--json')) out.log(jsonText({ from, to, ...res }));
      else
        out.log(
          `migrated ${from} -> ${to}: ${res.streamBytes} bytes of device state` +
            (res.precopy
              ? ` (${res.precopyBytes} in ${res.rounds} pre-copy rounds)`
              : ' (stop-and-copy only)') +
            `, downtime ${res.downtimeMs.toFixed(1)} ms`,
        );
      return 0;
    } finally {
      await target?.close();
      await source.close();
    }
  });
}
