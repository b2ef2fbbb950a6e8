/**
 * The command line as a user meets it, through the real entry point (dist/src/cli/main.js):
 * --help and -h on every command exit 0 and explain every flag the command takes, --version is
 * package.json's, and a wrong command line is one line on stderr with exit status 2.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { CommandSpec } from '../../src/cli/args.js';
import { BIND, UNBIND } from '../../src/cli/bind.js';
import { DEMO } from '../../src/cli/demo.js';
import { INFO } from '../../src/cli/info.js';
import { MIGRATE } from '../../src/cli/migrate.js';
import { NVME_IDENTIFY, NVME_PERF } from '../../src/cli/nvme.js';
import { SERVE } from '../../src/cli/serve.js';

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['dist/src/cli/main.js', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

const SPECS: CommandSpec[] = [DEMO, SERVE, INFO, BIND, UNBIND, MIGRATE, NVME_IDENTIFY, NVME_PERF];

for (const spec of SPECS) {
  test(`vfio-ts ${spec.name} --help and -h: exit 0, every flag explained`, () => {
    // A subcommand (`nvme perf`) is typed as two words.
    const words = spec.name.split(' ');
    const long = cli(...words, '--help');
    assert.equal(long.status, 0, long.err);
    assert.equal(long.err, '');
    assert.match(long.out, new RegExp(`^usage: vfio-ts ${spec.name}`));
    for (const f of [...spec.flags, { name: '--help', short: '-h' }]) {
      // Each flag starts its own line of the options list, its explanation beside it.
      const name = `${f.short ? `${f.short}, ` : ''}${f.name}`;
      assert.match(
        long.out,
        new RegExp(`\\n  ${name.replace(/[|]/g, '\\|')}[ A-Z|.0-9a-z]* {2,}\\S`),
        `${spec.name} ${f.name}`,
      );
    }
    assert.equal(cli(...words, '-h').out, long.out);
    assert.equal(cli('help', ...words).out, long.out);
  });
}

/** Each command's source and the flag tables it parses with. */
const SOURCES: [file: string, specs: CommandSpec[]][] = [
  ['demo', [DEMO]],
  ['serve', [SERVE]],
  ['info', [INFO]],
  ['bind', [BIND, UNBIND]],
  ['migrate', [MIGRATE]],
  ['nvme', [NVME_IDENTIFY, NVME_PERF]],
];

for (const [file, specs] of SOURCES)
  test(`src/cli/${file}.ts: every flag its source reads is in its table`, () => {
    // The parser is the table (parseArgs(spec)); a flag name read in the source but missing from
    // the table would never be set.
    const source = readFileSync(`src/cli/${file}.ts`, 'utf8');
    const read = new Set([...source.matchAll(/'(--[a-z0-9-]+)'/g)].map((m) => m[1]!));
    const documented = new Set(specs.flatMap((s) => s.flags.map((f) => f.name as string)));
    assert.ok(read.size > 0 || file === 'demo', `${file}.ts reads no flag`);
    for (const f of read)
      if (f !== '--help') assert.ok(documented.has(f), `${f} is read but in no table of ${file}.ts`);
  });

test('vfio-ts serve: each flag in its table is accepted', () => {
  const sample: Record<string, string> = {
    '--profile': '6.1',
    '--dma-layout': 'spec',
    '--allow-uid': 'self',
    '--size': '64M',
    '--cmb-size': '64K',
    '--loop': 'poll',
  };
  for (const f of SERVE.flags) {
    // Alone, every accepted flag ends at a usage error about what is missing; an unknown one
    // (or a value refused) earlier.
    const args = f.value === undefined ? [f.name] : [f.name, sample[f.name] ?? '64'];
    const r = cli(
      'serve',
      ...(f.name === '--device' ? ['--socket', '/tmp/x', ...args.slice(0, 1), 'frob'] : args),
    );
    assert.equal(r.status, 2, `${f.name}: ${r.err}`);
    assert.doesNotMatch(r.err, /unknown option|needs|must be/, f.name);
  }
});

test("vfio-ts nvme --help is each subcommand's help; help nvme perf is nvme perf --help", () => {
  const r = cli('nvme', '--help');
  assert.equal(r.status, 0, r.err);
  assert.equal(r.out, `${cli('nvme', 'identify', '--help').out}\n${cli('nvme', 'perf', '--help').out}`);
  assert.equal(cli('help', 'nvme').out, r.out);
});

test('vfio-ts --version prints package.json version', () => {
  const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = cli(flag);
    assert.equal(r.status, 0, r.err);
    assert.equal(r.out, `vfio-ts ${version}\n`);
  }
});

test('vfio-ts --help lists every command; no command is a usage error', () => {
  const help = cli('--help');
  assert.equal(help.status, 0);
  for (const c of ['demo', 'serve', 'info', 'bind', 'unbind', 'migrate', 'nvme'])
    assert.match(help.out, new RegExp(`\\n  ${c} +\\S`));
  const none = cli();
  assert.equal(none.status, 2);
  assert.equal(none.out, '');
  assert.match(none.err, /^usage: vfio-ts <command>/);
});

test('a wrong command line: one line naming the problem and where help is, exit 2', () => {
  const cases: [string[], string][] = [
    [['frobnicate'], "vfio-ts: unknown command 'frobnicate' (vfio-ts --help lists the commands)"],
    [['--frob'], "vfio-ts: unknown option '--frob' (vfio-ts --help lists the commands)"],
    [['info'], 'vfio-ts info: SOCKET|PCI-ADDRESS is missing (vfio-ts info --help)'],
    [['info', '/x', '--bogus'], "vfio-ts info: unknown option '--bogus' (vfio-ts info --help)"],
    [
      ['info', '/x', '--timeout', 'soon'],
      "vfio-ts info: --timeout needs a positive number, not 'soon' (vfio-ts info --help)",
    ],
    [
      ['bind', '12:34'],
      "vfio-ts bind: '12:34' is not a PCI address (domain:bus:device.function, e.g. 0000:00:03.0) (vfio-ts bind --help)",
    ],
    [['unbind'], 'vfio-ts unbind: PCI-ADDRESS is missing (vfio-ts unbind --help)'],
    [['migrate', '--from', '/x'], 'vfio-ts migrate: --from and --to are required (vfio-ts migrate --help)'],
    [
      ['migrate', '--from', '/x', '--to', '/y', '--rounds', 'many'],
      "vfio-ts migrate: --rounds needs a whole number of 0 or more, not 'many' (vfio-ts migrate --help)",
    ],
    [
      ['migrate', '--from', '/x', '--to', '/y', '--timeout', 'soon'],
      "vfio-ts migrate: --timeout needs a positive number, not 'soon' (vfio-ts migrate --help)",
    ],
    [['demo', 'now'], "vfio-ts demo: takes no operand, not 'now' (vfio-ts demo --help)"],
    [
      ['serve', '--socket', '/tmp/x'],
      'vfio-ts serve: --device NAME or --module FILE is required (vfio-ts serve --help)',
    ],
    [
      ['serve', '--device', 'frob', '--socket', '/tmp/x'],
      'vfio-ts serve: unknown device frob (edu, ivshmem, nvme) (vfio-ts serve --help)',
    ],
    [
      ['serve', '--device', 'nvme', '--socket', '/tmp/x'],
      'vfio-ts serve: nvme needs --disk, and only nvme takes it (vfio-ts serve --help)',
    ],
    [
      ['serve', '--device', 'nvme', '--disk', '/tmp/d', '--cmb-size', '3K', '--socket', '/tmp/x'],
      'vfio-ts serve: --cmb-size must be a power of two, 4K or more (vfio-ts serve --help)',
    ],
    [
      ['serve', '--device', 'edu', '--size', 'big', '--socket', '/tmp/x'],
      'vfio-ts serve: --size needs a byte count (e.g. 64M), not big (vfio-ts serve --help)',
    ],
    [
      ['serve', '--device', 'edu', '--device', 'ivshmem', '--socket', '/tmp/x'],
      'vfio-ts serve: --device given twice (vfio-ts serve --help)',
    ],
    [['serve', '--verbose', '--bogus'], "vfio-ts serve: unknown option '--bogus' (vfio-ts serve --help)"],
    [
      ['serve', '--profile', '5.4'],
      'vfio-ts serve: --profile must be 6.1 or 7.3, not 5.4 (vfio-ts serve --help)',
    ],
    [
      ['nvme', 'perf', '/x', '--bogus'],
      "vfio-ts nvme perf: unknown option '--bogus' (vfio-ts nvme perf --help)",
    ],
    [
      ['nvme', 'perf', '/x', '--rw', 'sideways'],
      "vfio-ts nvme perf: --rw must be read, write, randread or randwrite, not 'sideways' (vfio-ts nvme perf --help)",
    ],
    [['nvme'], 'vfio-ts nvme: identify or perf is missing (vfio-ts nvme --help)'],
  ];
  for (const [args, line] of cases) {
    const r = cli(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.err}`);
    assert.equal(r.err, `${line}\n`, args.join(' '));
    assert.equal(r.out, '');
  }
});
