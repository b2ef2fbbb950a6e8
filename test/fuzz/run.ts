/**
 * The fuzzers as a long run (`npm run fuzz` = `node dist/test/fuzz/run.js --long`):
 *
 *   node dist/test/fuzz/run.js [--long] [--seconds N] [--seed S] [--harness core|wire|server|nvme]...
 *
 * Without --long: a quick pass (a few seconds). With --long: each harness runs rounds with seeds
 * S, S+1, ... until its share of N seconds (default 300) is used. Prints, per harness, the inputs
 * tried, crashes and leaks, and every crash report with its seed and input as hex; exits 1 when
 * anything was found. Run from the repository root (the seed corpus is read from test/vectors).
 */
import { fuzzCore } from './core.js';
import { fuzzNvme } from './nvme.js';
import { crash, type FuzzStats, newStats, seedFrom, summary } from './prng.js';
import { fuzzServer } from './server.js';
import { fuzzWire } from './wire.js';

type Harness = 'core' | 'wire' | 'server' | 'nvme';
const ALL: Harness[] = ['core', 'wire', 'server', 'nvme'];

interface Args {
  long: boolean;
  seconds: number;
  seed: number;
  harnesses: Harness[];
}

function parse(argv: string[]): Args {
  const a: Args = { long: false, seconds: 300, seed: seedFrom(process.env.FUZZ_SEED), harnesses: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--long') a.long = true;
    else if (arg === '--seconds') a.seconds = Number(value());
    else if (arg === '--seed') a.seed = Number(value()) >>> 0;
    else if (arg === '--harness') {
      const h = value();
      if (!ALL.includes(h as Harness)) throw new Error(`--harness must be one of ${ALL.join(', ')}`);
      a.harnesses.push(h as Harness);
    } else throw new Error(`unknown argument ${arg}`);
  }
  if (a.harnesses.length === 0) a.harnesses = ALL;
  if (!(a.seconds > 0)) throw new Error('--seconds must be positive');
  return a;
}

/** One round of a harness with one seed. */
async function round(h: Harness, seed: number, long: boolean): Promise<FuzzStats[]> {
  const n = long ? 1 : 0.2;
  switch (h) {
    case 'core':
      return [
        fuzzCore({ seed, iterations: Math.round(50000 * n), device: 'edu', env: 'heap' }),
        fuzzCore({ seed, iterations: Math.round(50000 * n), device: 'ivshmem', env: 'heap' }),
        fuzzCore({ seed, iterations: Math.round(20000 * n), device: 'edu', env: 'heap', profile: '6.1' }),
        fuzzCore({
          seed,
          iterations: Math.round(10000 * n),
          device: seed % 2 ? 'edu' : 'ivshmem',
          env: 'native',
        }),
      ];
    case 'wire':
      return [fuzzWire({ seed, iterations: Math.round(100000 * n) })];
    case 'nvme':
      return [
        await fuzzNvme({ seed, steps: Math.round(20000 * n), remote: false }),
        await fuzzNvme({ seed, steps: Math.round(10000 * n), remote: true }),
      ];
    case 'server':
      return [
        await fuzzServer({
          seed,
          batches: Math.round(300 * n),
          device: seed % 2 ? 'edu' : 'ivshmem',
          // Every third round with small limits: back-pressure and the limit checks under fuzz.
          ...(seed % 3 === 0
            ? { limits: { maxPendingBytes: 8192, maxDataXferSize: 4096, maxMsgFds: 2, maxDmaMaps: 2 } }
            : {}),
        }),
      ];
  }
}

async function main(): Promise<number> {
  const a = parse(process.argv.slice(2));
  const share = (a.seconds * 1000) / a.harnesses.length;
  console.log(
    `fuzz: seed ${a.seed}, ${a.long ? `long, ${a.seconds} s` : 'quick'}, harnesses ${a.harnesses.join(', ')}`,
  );
  let bad = 0;
  for (const h of a.harnesses) {
    const started = Date.now();
    let tried = 0;
    let crashes = 0;
    let leaks = 0;
    let rounds = 0;
    const reports: string[] = [];
    for (let seed = a.seed; ; seed = (seed + 1) >>> 0) {
      let results: FuzzStats[];
      try {
        results = await round(h, seed, a.long);
      } catch (e) {
        // A harness that throws is a finding too (e.g. the server refusing a fresh client).
        const s = newStats(h, seed);
        crash(s, `seed ${seed}: harness threw ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        results = [s];
      }
      for (const s of results) {
        tried += s.tried;
        crashes += s.crashCount;
        leaks += s.leaks.length;
        if (s.crashCount || s.leaks.length) {
          console.log(summary(s));
          reports.push(...s.crashes, ...s.leaks);
        }
      }
      rounds++;
      if (!a.long || Date.now() - started >= share) break;
    }
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `${h}: ${tried} inputs tried in ${rounds} rounds (seeds ${a.seed}..${(a.seed + rounds - 1) >>> 0}), ${secs} s: ${crashes} crashes, ${leaks} leaks`,
    );
    for (const r of reports.slice(0, 20)) console.log(`  ${r}`);
    bad += crashes + leaks;
  }
  return bad === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 2;
  },
);
