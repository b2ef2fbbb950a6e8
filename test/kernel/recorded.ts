/**
 * Kernel transcripts recorded from the differential test (VFIO_TS_RECORD=1 node --test
 * dist/test/kernel/differential.test.js), kept in the source tree so the model can be checked
 * against what Linux 6.1 and 7.3 answered on machines without QEMU (recorded.test.ts).
 * Format: { release, devices: { <name>: [[case name, result, 1 if info], ...] } }; run
 * `npx biome check --write test/kernel/recorded` after recording (the lint formats JSON).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type KernelLabel, repoRoot } from '../harness/index.js';
import type { ProbeCase } from './probe-sequence.js';

export interface RecordedKernel {
  readonly release: string;
  readonly devices: Readonly<Record<string, readonly (readonly [string, string, number?])[]>>;
}

export function recordedPath(label: KernelLabel): string {
  return join(repoRoot(), 'test', 'kernel', 'recorded', `linux-${label}.json`);
}

export function writeRecorded(
  label: KernelLabel,
  release: string,
  transcripts: readonly { name: string; cases?: readonly ProbeCase[] }[],
): void {
  const devices: Record<string, [string, string, number?][]> = {};
  for (const t of transcripts)
    if (t.cases) devices[t.name] = t.cases.map((c) => (c.info ? [c.name, c.result, 1] : [c.name, c.result]));
  const path = recordedPath(label);
  mkdirSync(join(path, '..'), { recursive: true });
  // One case per line: diffs of a re-recording stay readable.
  const body = Object.entries(devices)
    .map(
      ([name, cases]) =>
        `    ${JSON.stringify(name)}: [\n${cases.map((c) => `      ${JSON.stringify(c)}`).join(',\n')}\n    ]`,
    )
    .join(',\n');
  writeFileSync(path, `{\n  "release": ${JSON.stringify(release)},\n  "devices": {\n${body}\n  }\n}\n`);
}

export function readRecorded(label: KernelLabel): RecordedKernel {
  return JSON.parse(readFileSync(recordedPath(label), 'utf8')) as RecordedKernel;
}

/** Recorded cases as ProbeCases. */
export function recordedCases(r: RecordedKernel, device: string): ProbeCase[] {
  return (r.devices[device] ?? []).map(([name, result, info]) =>
    info ? { name, request: '', result, info: true } : { name, request: '', result },
  );
}
