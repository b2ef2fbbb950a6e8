/** The command line's one parser, help format and failure report (src/cli/args.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  byteCountFlag,
  type CommandSpec,
  choiceFlag,
  flagValue,
  helpText,
  integerFlag,
  orList,
  parseArgs,
  positiveNumber,
  reportFailure,
  timeoutFlag,
  UsageError,
} from '../../src/cli/args.js';
import { MalformedError, VfioError } from '../../src/errors.js';

const SPEC: CommandSpec = {
  name: 'thing',
  operands: 'TARGET',
  minOperands: 1,
  maxOperands: 1,
  description: 'Does a thing.',
  flags: [
    { name: '--json', help: 'JSON out' },
    { name: '--timeout', value: 'SECONDS', help: 'how long\nto wait' },
    { name: '--allow', value: 'UID', repeat: true, help: 'who' },
    { name: '--verbose', short: '-v', help: 'say more' },
  ],
  notes: 'Exit status: 0.',
};

test('flags with and without values, --flag=value, repeats, short names, --', () => {
  const p = parseArgs(SPEC, ['--timeout=3', 'x', '--json', '--allow', '1', '-v', '--allow=2']);
  assert.deepEqual(p.operands, ['x']);
  assert.equal(flagValue(p, '--timeout'), '3');
  assert.deepEqual(p.flags.get('--allow'), ['1', '2']);
  assert.deepEqual(p.flags.get('--verbose'), ['']);
  assert.equal(p.help, false);
  assert.deepEqual(parseArgs(SPEC, ['--', '--json']).operands, ['--json']);
  assert.deepEqual(parseArgs(SPEC, ['-']).operands, ['-']);
  // Options are read left to right: an unknown one before --help is still an error.
  assert.throws(() => parseArgs(SPEC, ['--bogus', '-h']), /unknown option '--bogus'/);
});

test('--help or -h anywhere wins over what follows it', () => {
  for (const args of [['--help'], ['x', '-h'], ['--json', '--help', '--bogus']])
    assert.equal(parseArgs(SPEC, args).help, true);
});

test('each usage error names its problem', () => {
  const cases: [string[], RegExp][] = [
    [[], /^TARGET is missing$/],
    [['a', 'b'], /^unexpected operand 'b' after TARGET$/],
    [['x', '--bogus'], /^unknown option '--bogus'$/],
    [['x', '-q'], /^unknown option '-q'$/],
    [['x', '--timeout'], /^--timeout needs a value \(SECONDS\)$/],
    [['x', '--timeout='], /^--timeout needs a value \(SECONDS\)$/],
    [['x', '--json=yes'], /^--json takes no value$/],
    [['x', '--json', '--json'], /^--json given twice$/],
  ];
  for (const [args, re] of cases) {
    assert.throws(
      () => parseArgs(SPEC, args),
      (e: unknown) => e instanceof UsageError && e.errno === Errno.EINVAL && re.test(e.problem),
      args.join(' '),
    );
  }
  assert.throws(
    () => parseArgs({ ...SPEC, maxOperands: 0, minOperands: 0 }, ['y']),
    /takes no operand, not 'y'/,
  );
});

test('positiveNumber: a default, a fraction, and refusals', () => {
  const n = (args: string[]) => positiveNumber(SPEC, parseArgs(SPEC, ['x', ...args]), '--timeout', 10);
  assert.equal(n([]), 10);
  assert.equal(n(['--timeout', '0.25']), 0.25);
  for (const bad of ['0', '-1', 'soon', 'Infinity'])
    assert.throws(() => n(['--timeout', bad]), UsageError, bad);
});

test('integerFlag: a default, the range, each refusal naming it', () => {
  const n = (args: string[], max?: number) =>
    integerFlag(SPEC, parseArgs(SPEC, ['x', ...args]), '--timeout', 7, 1, max);
  assert.equal(n([]), 7);
  assert.equal(n(['--timeout', '1']), 1);
  assert.equal(n(['--timeout', '4095'], 4095), 4095);
  const problem = (args: string[], max?: number) => {
    try {
      n(args, max);
    } catch (e) {
      assert.ok(e instanceof UsageError);
      return e.problem;
    }
    return assert.fail(`${args.join(' ')} accepted`);
  };
  assert.equal(problem(['--timeout', '0']), "--timeout needs an integer >= 1, not '0'");
  assert.equal(problem(['--timeout', '4096'], 4095), "--timeout needs an integer from 1 to 4095, not '4096'");
  for (const bad of ['1.5', 'two', '-1', '9007199254740993'])
    assert.throws(() => n(['--timeout', bad]), UsageError, bad);
});

test('choiceFlag and orList: one of a list, undefined when not given', () => {
  const modes = ['read', 'write', 'randread'] as const;
  const c = (args: string[]) => choiceFlag(SPEC, parseArgs(SPEC, ['x', ...args]), '--timeout', modes);
  assert.equal(c([]), undefined);
  assert.equal(c(['--timeout', 'write']), 'write');
  assert.throws(
    () => c(['--timeout', 'sideways']),
    (e: unknown) =>
      e instanceof UsageError && e.problem === "--timeout must be read, write or randread, not 'sideways'",
  );
  assert.deepEqual(
    [orList([]), orList(['a']), orList(['a', 'b']), orList(['a', 'b', 'c'])],
    ['', 'a', 'a or b', 'a, b or c'],
  );
});

test('byteCountFlag: binary suffixes in either case, undefined when not given', () => {
  const b = (args: string[]) => byteCountFlag(SPEC, parseArgs(SPEC, ['x', ...args]), '--timeout');
  assert.equal(b([]), undefined);
  assert.deepEqual(
    ['4k', '64K', '1m', '4096', '1g', '2T'].map((v) => b(['--timeout', v])),
    [4096, 65536, 1 << 20, 4096, 1 << 30, 2 * 2 ** 40],
  );
  for (const bad of ['4kb', '-4k', '0', '1.5k', 'k', '4 k'])
    assert.throws(
      () => b(['--timeout', bad]),
      (e: unknown) =>
        e instanceof UsageError &&
        e.problem === `--timeout needs a byte count (4096, 4k, 64K, 1m), not '${bad}'`,
      bad,
    );
});

test('timeoutFlag: whole ms a client takes, else a usage error before anything is opened', () => {
  const ms = (args: string[]) => timeoutFlag(SPEC, parseArgs(SPEC, ['x', ...args]), 10);
  assert.equal(ms([]), 10_000);
  assert.equal(ms(['--timeout', '0.25']), 250);
  assert.equal(ms(['--timeout', '0.0015']), 2);
  assert.equal(ms(['--timeout', '2147483.647']), 0x7fff_ffff);
  for (const bad of ['0.0001', '2147484', '3000000', '0'])
    assert.throws(() => ms(['--timeout', bad]), UsageError, bad);
});

test('helpText lists every flag, aligned, continuation lines indented under their flag', () => {
  const text = helpText(SPEC);
  assert.equal(
    text,
    [
      'usage: vfio-ts thing TARGET [options]',
      '',
      'Does a thing.',
      '',
      'options:',
      '  --json             JSON out',
      '  --timeout SECONDS  how long',
      '                     to wait',
      '  --allow UID        who',
      '  -v, --verbose      say more',
      '  -h, --help         print this help and exit',
      '',
      'Exit status: 0.',
    ].join('\n'),
  );
  assert.match(
    helpText({ ...SPEC, synopsis: 'thing --allow UID TARGET' }),
    /^usage: vfio-ts thing --allow UID TARGET\n/,
  );
});

test('reportFailure: usage 2 with the help to read, our errors 1, a bug 1 without a stack', () => {
  const lines: string[] = [];
  const out = { log: (l: string) => lines.push(`out ${l}`), error: (l: string) => lines.push(`err ${l}`) };
  assert.equal(reportFailure('thing', new UsageError('thing', 'TARGET is missing'), out), 2);
  assert.equal(
    reportFailure('thing', new VfioError(Errno.ETIMEDOUT, '/x.sock', 'no reply in 10 ms'), out),
    1,
  );
  assert.equal(reportFailure('thing', new MalformedError('pci.ids', 'line 3: junk'), out), 1);
  const before = process.env.VFIO_TS_DEBUG;
  delete process.env.VFIO_TS_DEBUG;
  try {
    assert.equal(
      reportFailure('thing', new RangeError('Offset is outside the bounds of the DataView'), out),
      1,
    );
  } finally {
    if (before !== undefined) process.env.VFIO_TS_DEBUG = before;
  }
  assert.deepEqual(lines, [
    'err vfio-ts thing: TARGET is missing (vfio-ts thing --help)',
    'err vfio-ts thing: /x.sock: ETIMEDOUT (no reply in 10 ms)',
    'err vfio-ts thing: malformed pci.ids: line 3: junk',
    'err vfio-ts thing: internal error: RangeError: Offset is outside the bounds of the DataView (a bug in vfio-ts; VFIO_TS_DEBUG=1 prints the stack)',
  ]);
});
