#!/usr/bin/env node
/**
 * vfio-ts command line. Each command lives in its own module exporting
 * `run(args: string[]): Promise<number>` (the exit status), loaded only when used; each parses
 * its arguments from a declared flag table (src/cli/args.ts), so `vfio-ts <command> --help`
 * explains every flag it takes.
 */
import { readFileSync } from 'node:fs';
import { CONSOLE, reportFailure } from './args.js';

type Runner = (args: string[]) => Promise<number>;
interface CommandModule {
  run: Runner;
  runUnbind?: Runner;
}

/** command → [module under src/cli, exported runner, one-line summary] */
const COMMANDS: Record<string, [module: string, fn: keyof CommandModule, summary: string]> = {
  demo: [
    'demo',
    'run',
    'build edu, ivshmem and nvme in-process, map a BAR write-combining through every path',
  ],
  serve: [
    'serve',
    'run',
    'serve a device over vfio-user on a UNIX socket: edu, ivshmem, nvme on a disk file, or a module',
  ],
  info: ['info', 'run', 'describe a device like lspci -vv, then its VFIO regions, IRQs and WC paths'],
  bind: ['bind', 'run', 'hand a PCI device to vfio-pci'],
  unbind: ['bind', 'runUnbind', 'give a PCI device back to the kernel'],
  migrate: ['migrate', 'run', 'live-migrate a device from one vfio-user server to another'],
  nvme: ['nvme', 'run', 'the userspace NVMe driver: identify, and perf (a small fio)'],
};

/** package.json's version: dist/src/cli/main.js → ../../../package.json, in the repo and installed. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version?: unknown;
  };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

function usage(): string {
  const lines = [
    'usage: vfio-ts <command> [options]     (vfio-ts <command> --help explains each)',
    '       vfio-ts --version',
    '',
    'commands:',
  ];
  for (const [name, [, , summary]] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(8)} ${summary}`);
  lines.push('', 'Exit status: 0 success, 1 failure (one line on stderr says why), 2 bad command line.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  let [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V') {
    console.log(`vfio-ts ${packageVersion()}`);
    return 0;
  }
  // `help nvme perf` is `nvme perf --help`: a command's subcommand keeps its own help.
  if (cmd === 'help' && rest[0] && COMMANDS[rest[0]]) [cmd, rest] = [rest[0], [...rest.slice(1), '--help']];
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    (cmd === undefined ? console.error : console.log)(usage());
    return cmd === undefined ? 2 : 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(
      `vfio-ts: ${cmd.startsWith('-') ? 'unknown option' : 'unknown command'} '${cmd}' (vfio-ts --help lists the commands)`,
    );
    return 2;
  }
  try {
    const m = (await import(`./${c[0]}.js`)) as CommandModule;
    return await m[c[1]]!(rest);
  } catch (e) {
    return reportFailure(cmd, e, CONSOLE);
  }
}

// `vfio-ts info ... | head`: a reader that goes away ends the output, not with a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code !== 'EPIPE') throw e;
  process.exit(process.exitCode ?? 0);
});
process.exitCode = await main(process.argv.slice(2));
