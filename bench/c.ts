/**
 * The C side of the benchmarks: bench/vfio-user-bench.c (a vfio-user client and a ping-pong
 * peer, ours) compiled with gcc at run time into a temporary directory, and small helpers to run
 * processes pinned to a CPU and to read their CPU time.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SOURCE = fileURLToPath(new URL('../../bench/vfio-user-bench.c', import.meta.url));

/** A scratch directory for this run (sockets, the binary), removed at exit. */
export function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-bench-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Compiles the C client/peer; returns its path, or undefined (with the reason printed) without gcc. */
export function buildC(dir: string): string | undefined {
  const out = join(dir, 'vfio-user-bench');
  const r = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', out, SOURCE], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    console.log(`(gcc failed, no C client: ${r.error?.message ?? r.stderr.trim()})`);
    return undefined;
  }
  return out;
}

/** taskset is there and there are two CPUs to put client and server on. */
export const CAN_PIN = existsSync('/usr/bin/taskset') && cpus().length >= 2;

/** argv run on `cpu` (taskset), or as is when `cpu` is undefined. */
export function onCpu(cpu: number | undefined, argv: readonly string[]): string[] {
  return cpu === undefined || !CAN_PIN ? [...argv] : ['/usr/bin/taskset', '-c', String(cpu), ...argv];
}

export interface Proc {
  readonly pid: number;
  readonly exited: Promise<number | null>;
  /** Its output so far (stdout and stderr). */
  output(): string;
  stop(): Promise<void>;
}

/** Starts `argv` in the background, output kept. */
export function start(argv: readonly string[]): Proc {
  const [file, ...args] = argv;
  const child = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    text += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    text += d;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    pid: child.pid ?? -1,
    exited,
    output: () => text,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** utime + stime of process `pid` (all its threads), in seconds; 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, USER_HZ = 100
  } catch {
    return 0;
  }
}

/** Waits until `path` exists (a server's socket) or `proc` exits; false on exit or after `ms`. */
export async function socketAppears(path: string, proc: Proc, ms = 10_000): Promise<boolean> {
  let gone = false;
  void proc.exited.then(() => {
    gone = true;
  });
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (gone || Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}
