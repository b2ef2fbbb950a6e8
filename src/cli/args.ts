/**
 * The command line's one argument parser, help format and failure report. Each command declares
 * its flags in a table (name, value placeholder, help); the parser, `--help` and the usage errors
 * all come from that table, so no flag is parsed without being explained.
 *
 * Conventions (those of getopt_long and the GNU coding standards' --help): `--flag VALUE` or
 * `--flag=VALUE`, `--` ends the options, `-h`/`--help` prints the help on stdout and exits 0, a
 * usage error is one line on stderr naming the problem and the help to read, exit status 2; a
 * failure is one line, exit status 1.
 */
import { Errno } from '../abi/errno.js';
import { MAX_TIMEOUT_MS } from '../client/client.js';
import { MalformedError, VfioError } from '../errors.js';

export interface Output {
  log(line: string): void;
  error(line: string): void;
}

export const CONSOLE: Output = { log: (l) => console.log(l), error: (l) => console.error(l) };

export interface FlagSpec {
  readonly name: `--${string}`;
  readonly short?: `-${string}`;
  /** The value's placeholder (`SECONDS`); absent for a flag without a value. */
  readonly value?: string;
  /** May be given more than once; every value is kept, in order. */
  readonly repeat?: boolean;
  /** What the flag does; `\n` starts a continuation line. */
  readonly help: string;
}

export interface CommandSpec {
  /** As typed after `vfio-ts` (`info`, `nvme perf`). */
  readonly name: string;
  /** The operands, as the usage line shows them (`SOCKET|PCI-ADDRESS`). */
  readonly operands: string;
  /** The usage line after `vfio-ts `, when the required flags belong in it (default: name, operands). */
  readonly synopsis?: string;
  readonly minOperands: number;
  readonly maxOperands: number;
  /** Paragraphs between the usage line and the options. */
  readonly description: string;
  readonly flags: readonly FlagSpec[];
  /** Text after the options (conventions, exit status). */
  readonly notes?: string;
}

/** A command line the command cannot run: exit status 2. */
export class UsageError extends VfioError {
  constructor(
    readonly command: string,
    readonly problem: string,
  ) {
    super(Errno.EINVAL, command, problem);
  }
}

export interface ParsedArgs {
  readonly help: boolean;
  readonly operands: readonly string[];
  /** Every value given per flag name (`''` for a flag without a value). */
  readonly flags: ReadonlyMap<string, readonly string[]>;
}

const HELP_FLAG: FlagSpec = { name: '--help', short: '-h', help: 'print this help and exit' };

/** Parses `args` by `spec`'s table; UsageError names the first problem. */
export function parseArgs(spec: CommandSpec, args: readonly string[]): ParsedArgs {
  const byName = new Map<string, FlagSpec>();
  for (const f of spec.flags) {
    byName.set(f.name, f);
    if (f.short) byName.set(f.short, f);
  }
  const flags = new Map<string, string[]>();
  const operands: string[] = [];
  const usage = (problem: string) => new UsageError(spec.name, problem);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      operands.push(...args.slice(i + 1));
      break;
    }
    if (a === '-h' || a === '--help') return { help: true, operands: [], flags: new Map() };
    if (!a.startsWith('-') || a === '-') {
      operands.push(a);
      continue;
    }
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    const name = eq < 0 ? a : a.slice(0, eq);
    const f = byName.get(name);
    if (!f) throw usage(`unknown option '${name}'`);
    let value = '';
    if (f.value !== undefined) {
      const v = eq < 0 ? args[++i] : a.slice(eq + 1);
      if (v === undefined || v === '') throw usage(`${f.name} needs a value (${f.value})`);
      value = v;
    } else if (eq >= 0) throw usage(`${f.name} takes no value`);
    const seen = flags.get(f.name);
    if (seen && !f.repeat) throw usage(`${f.name} given twice`);
    flags.set(f.name, [...(seen ?? []), value]);
  }
  if (operands.length < spec.minOperands)
    throw usage(spec.minOperands === 1 ? `${spec.operands} is missing` : `expects ${spec.operands}`);
  if (operands.length > spec.maxOperands)
    throw usage(
      spec.maxOperands === 0
        ? `takes no operand, not '${operands[0]}'`
        : `unexpected operand '${operands[spec.maxOperands]}' after ${spec.operands}`,
    );
  return { help: false, operands, flags };
}

export function hasFlag(p: ParsedArgs, name: string): boolean {
  return p.flags.has(name);
}

export function flagValue(p: ParsedArgs, name: string): string | undefined {
  return p.flags.get(name)?.[0];
}

/** A positive number (`0.5`, `10`) for `name`, or `dflt`; UsageError otherwise. */
export function positiveNumber(spec: CommandSpec, p: ParsedArgs, name: string, dflt: number): number {
  const v = flagValue(p, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n))
    throw new UsageError(spec.name, `${name} needs a positive number, not '${v}'`);
  return n;
}

/** A whole number from `min` to `max` for `name`, or `dflt`; UsageError otherwise. */
export function integerFlag(
  spec: CommandSpec,
  p: ParsedArgs,
  name: string,
  dflt: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const v = flagValue(p, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new UsageError(
      spec.name,
      max === Number.MAX_SAFE_INTEGER
        ? `${name} needs an integer >= ${min}, not '${v}'`
        : `${name} needs an integer from ${min} to ${max}, not '${v}'`,
    );
  return n;
}

/** `a`, `a or b`, `a, b or c`: the choices a usage error lists. */
export function orList(choices: readonly string[]): string {
  return choices.length < 2 ? choices.join('') : `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;
}

/** `name`'s value when it is one of `choices`, undefined when not given; UsageError otherwise. */
export function choiceFlag<T extends string>(
  spec: CommandSpec,
  p: ParsedArgs,
  name: string,
  choices: readonly T[],
): T | undefined {
  const v = flagValue(p, name);
  if (v === undefined || (choices as readonly string[]).includes(v)) return v as T | undefined;
  throw new UsageError(spec.name, `${name} must be ${orList(choices)}, not '${v}'`);
}

/** `name`'s value as a byteCount, undefined when not given; UsageError otherwise. */
export function byteCountFlag(spec: CommandSpec, p: ParsedArgs, name: string): number | undefined {
  const v = flagValue(p, name);
  if (v === undefined) return undefined;
  const n = byteCount(v);
  if (n === undefined)
    throw new UsageError(spec.name, `${name} needs a byte count (4096, 4k, 64K, 1m), not '${v}'`);
  return n;
}

/**
 * A byte count with an optional binary suffix, either case (`4096`, `4k`, `16M`, `1G`, `2T`), as
 * fio and QEMU write sizes; undefined unless it is a positive safe integer.
 */
export function byteCount(v: string): number | undefined {
  const m = /^(\d+)([KMGT]?)$/i.exec(v);
  if (!m) return undefined;
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * `--timeout SECONDS` as the whole milliseconds a vfio-user client takes (ClientOptions.timeoutMs:
 * 1 to MAX_TIMEOUT_MS), or `dflt` seconds; UsageError otherwise, before anything is opened (the
 * client would refuse 0.0001 or 3000000 itself, as a failure, once the socket was checked).
 */
export function timeoutFlag(spec: CommandSpec, p: ParsedArgs, dflt: number): number {
  const ms = Math.round(positiveNumber(spec, p, '--timeout', dflt) * 1000);
  if (ms < 1 || ms > MAX_TIMEOUT_MS)
    throw new UsageError(
      spec.name,
      `--timeout needs 0.001 to ${MAX_TIMEOUT_MS / 1000} seconds, not '${flagValue(p, '--timeout')}'`,
    );
  return ms;
}

const USAGE_PREFIX = 'usage: vfio-ts ';

export function usageLine(spec: CommandSpec): string {
  if (spec.synopsis) return `${USAGE_PREFIX}${spec.synopsis}`;
  return `${USAGE_PREFIX}${spec.name}${spec.operands ? ` ${spec.operands}` : ''}${spec.flags.length ? ' [options]' : ''}`;
}

/** The `--help` text: usage, description, every flag with its help, notes. */
export function helpText(spec: CommandSpec): string {
  const flags = [...spec.flags, HELP_FLAG];
  const left = flags.map((f) => `${f.short ? `${f.short}, ` : ''}${f.name}${f.value ? ` ${f.value}` : ''}`);
  const width = Math.max(...left.map((l) => l.length)) + 2;
  const lines = [usageLine(spec), '', spec.description, '', 'options:'];
  flags.forEach((f, i) => {
    const [first, ...more] = f.help.split('\n');
    lines.push(`  ${left[i]!.padEnd(width)}${first}`);
    for (const m of more) lines.push(`  ${' '.repeat(width)}${m}`);
  });
  if (spec.notes) lines.push('', spec.notes);
  return lines.join('\n');
}

/** Set to print the stack of an unexpected error (a bug) after its one line. */
export const DEBUG_ENV = 'VFIO_TS_DEBUG';

/**
 * One line on `out.error` for a failed command, and its exit status: 2 for a usage error (with
 * the help to read), 1 for a failure. An error that is neither ours nor a usage error is a bug in
 * vfio-ts: still one line, the stack only with VFIO_TS_DEBUG set.
 */
export function reportFailure(command: string, e: unknown, out: Output): number {
  const prefix = `vfio-ts ${command}`;
  if (e instanceof UsageError) {
    out.error(`${prefix}: ${e.problem} (vfio-ts ${command} --help)`);
    return 2;
  }
  if (e instanceof VfioError || e instanceof MalformedError) {
    out.error(`${prefix}: ${e.message}`);
    return 1;
  }
  const err = e instanceof Error ? e : undefined;
  out.error(
    `${prefix}: internal error: ${err ? `${err.name}: ${err.message}` : String(e)} (a bug in vfio-ts; ${DEBUG_ENV}=1 prints the stack)`,
  );
  if (process.env[DEBUG_ENV] && err?.stack) out.error(err.stack);
  return 1;
}

/** Runs `body` with `spec`'s arguments parsed: --help, usage errors and failures handled. */
export async function runCommand(
  spec: CommandSpec,
  args: readonly string[],
  out: Output,
  body: (p: ParsedArgs) => Promise<number>,
): Promise<number> {
  try {
    const p = parseArgs(spec, args);
    if (p.help) {
      out.log(helpText(spec));
      return 0;
    }
    return await body(p);
  } catch (e) {
    return reportFailure(spec.name, e, out);
  }
}
