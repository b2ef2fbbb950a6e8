/** `vfio-ts` as a child process for tests: its output collected, its exit awaited. */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../harness/index.js';

export interface CliProcess {
  readonly child: ChildProcess;
  /** stdout and stderr so far, interleaved as they came. */
  out(): string;
  readonly exit: Promise<number | null>;
}

/** `vfio-ts ...args` from the build (dist/src/cli/main.js). */
export function vfioTs(...args: string[]): CliProcess {
  const child = spawn(process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const add = (d: string) => {
    text += d;
  };
  child.stdout?.setEncoding('utf8').on('data', add);
  child.stderr?.setEncoding('utf8').on('data', add);
  return { child, out: () => text, exit: new Promise((r) => child.once('exit', (code) => r(code))) };
}

/** `vfio-ts serve --device NAME --socket PATH ...extra`, once it says it is serving. */
export async function servedProcess(
  device: string,
  socket: string,
  extra: readonly string[] = [],
  timeoutMs = 20_000,
): Promise<CliProcess> {
  const s = vfioTs('serve', '--device', device, '--socket', socket, ...extra);
  const end = Date.now() + timeoutMs;
  while (!/serving/.test(s.out())) {
    if (Date.now() > end) throw new Error(`vfio-ts serve ${device} did not start: ${s.out()}`);
    if (s.child.exitCode !== null) throw new Error(`vfio-ts serve ${device} exited: ${s.out()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return s;
}
