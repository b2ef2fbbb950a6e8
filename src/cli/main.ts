#!/usr/bin/env node
/**
 * vfio-ts command line. Each command lives in its own module exporting
 * `run(args: string[]): Promise<number>` (the exit status), loaded only when used.
 */
import { MalformedError, VfioError } from '../errors.js';

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
    'build the example devices in-process and map BARs write-combining through every path',
  ],
  serve: [
    'serve',
    'run',
    'serve a device over vfio-user: serve --device <edu|ivshmem|nvme> --socket <path> [--disk <file>] [--verbose]',
  ],
  info: ['info', 'run', 'describe a device like lspci -vv: info <socket-path | pci-address> [--json]'],
  bind: ['bind', 'run', 'bind a PCI device to vfio-pci: bind <pci-address>'],
  unbind: ['bind', 'runUnbind', 'give a PCI device back to the kernel: unbind <pci-address>'],
  migrate: [
    'migrate',
    'run',
    'migrate a device between two vfio-user servers: migrate --from <socket> --to <socket> (migrate --help)',
  ],
  nvme: [
    'nvme',
    'run',
    'userspace NVMe driver: nvme identify|perf <socket-path | pci-address> (nvme --help)',
  ],
};

async function load(module: string, fn: keyof CommandModule): Promise<Runner> {
  const m = (await import(`./${module}.js`)) as CommandModule;
  const runner = m[fn];
  if (!runner) throw new Error(`src/cli/${module}.ts exports no ${fn}()`);
  return runner;
}

function usage(): string {
  const lines = ['usage: vfio-ts <command> [options]', '', 'commands:'];
  for (const [name, [, , summary]] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(8)} ${summary}`);
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    console.log(usage());
    return cmd ? 0 : 2;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`vfio-ts: unknown command '${cmd}'\n${usage()}`);
    return 2;
  }
  try {
    return await (await load(c[0], c[1]))(rest);
  } catch (e) {
    if (e instanceof VfioError || e instanceof MalformedError) {
      console.error(`vfio-ts ${cmd}: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
