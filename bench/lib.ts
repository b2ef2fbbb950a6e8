/**
 * Shared benchmark helpers: medians over rounds, printed as a table. Benchmarks print figures
 * (and ratios between rows, since these machines are shared and noisy); they assert nothing.
 */
import { pathToFileURL } from 'node:url';

export interface BenchRow {
  name: string;
  medianNs: number;
  minNs: number;
}

/** Median and minimum ns per call of `fn` over `rounds` rounds of `perRound` calls. */
export function measure(name: string, fn: () => void, perRound = 20000, rounds = 15): BenchRow {
  for (let i = 0; i < perRound; i++) fn(); // warm up the JIT and koffi's call paths
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perRound; i++) fn();
    samples.push(Number(process.hrtime.bigint() - t0) / perRound);
  }
  return summarize(name, samples);
}

/** The same for an async operation, awaited one at a time (a round trip, not a pipeline). */
export async function measureAsync(
  name: string,
  fn: () => Promise<unknown>,
  perRound = 2000,
  rounds = 11,
): Promise<BenchRow> {
  for (let i = 0; i < perRound; i++) await fn();
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < perRound; i++) await fn();
    samples.push(Number(process.hrtime.bigint() - t0) / perRound);
  }
  return summarize(name, samples);
}

function summarize(name: string, samples: number[]): BenchRow {
  samples.sort((a, b) => a - b);
  return { name, medianNs: samples[Math.floor(samples.length / 2)]!, minNs: samples[0]! };
}

/** Prints rows with ns/call, calls/s, and each row's ratio to the first. */
export function printTable(title: string, rows: readonly BenchRow[]): void {
  const w = Math.max(title.length, ...rows.map((r) => r.name.length));
  const base = rows[0]?.medianNs ?? 1;
  console.log(`${title.padEnd(w)}  median ns   min ns     calls/s  vs first`);
  for (const r of rows)
    console.log(
      `${r.name.padEnd(w)}  ${r.medianNs.toFixed(0).padStart(9)}  ${r.minNs.toFixed(0).padStart(7)}  ${(1e9 / r.medianNs).toFixed(0).padStart(10)}  ${(r.medianNs / base).toFixed(2).padStart(7)}x`,
    );
}

/** True when this module is the script node was started with. */
export function isMain(metaUrl: string): boolean {
  return !!process.argv[1] && metaUrl === pathToFileURL(process.argv[1]).href;
}
