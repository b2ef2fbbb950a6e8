/**
 * vfio-user round trips, every server driven by the same client: a small C client of our own
 * (bench/vfio-user-bench.c, compiled at run time), so that a comparison with another server is
 * client-neutral. One request in flight (posted writes aside); the client interleaves its rounds
 * over all servers, so that every server sees the same machine; medians of the rounds.
 *
 * Servers:
 *   - the C ping-pong of that file (a blocking C server with no protocol work): the ceiling;
 *   - `--peer PATH`: any vfio-user server binary, started as `PATH SOCKET` (libvfio-user's
 *     samples take their socket path that way; `--peer-bar N` names the BAR to access, 2 for
 *     the gpio sample); built outside this repository;
 *   - a Node echo through src/native under each candidate message loop (bench/echo.ts): the
 *     loop's own cost;
 *   - `vfio-ts serve --device edu` with each loop: a worker blocking in recvmsg (the default),
 *     a worker busy-polling (--poll), this thread's libuv (--loop libuv).
 *
 * Two placements: client and server on different CPUs (taskset: the client on CPU 0, servers on
 * CPU 1), which is how the issue measured; and wherever the scheduler puts them.
 * Then our own client (VfioUserClient, through the driver API) against our server and the peer.
 *
 * Run: `node dist/bench/vfio-user.js [--peer PATH] [--peer-bar N] [--rounds R] [--n N]`.
 */
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VfioUserClient } from '../src/client/index.js';
import { VfioDevice } from '../src/driver/device.js';
import { buildC, CAN_PIN, cpuSeconds, onCpu, type Proc, scratchDir, socketAppears, start } from './c.js';
import { isMain } from './lib.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ECHO = fileURLToPath(new URL('./echo.js', import.meta.url));

interface Args {
  peer?: string;
  peerBar: number;
  rounds: number;
  n: number;
}

function args(argv: readonly string[]): Args {
  const a: Args = { peerBar: 2, rounds: 11, n: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    if (argv[i] === '--peer' && v) a.peer = argv[++i]!;
    else if (argv[i] === '--peer-bar' && v) a.peerBar = Number(argv[++i]);
    else if (argv[i] === '--rounds' && v) a.rounds = Number(argv[++i]);
    else if (argv[i] === '--n' && v) a.n = Number(argv[++i]);
  }
  return a;
}

interface ServerSpec {
  readonly name: string;
  /** Which tables it appears in: the loop candidates, the per-size tables, or both. */
  readonly in: 'loops' | 'sizes' | 'both';
  readonly bar: number;
  argv(socket: string): string[];
}

const OPS = ['read:cfg:4', 'read:cfg:64', 'read:bar:4', 'read:bar:64', 'write:bar:4', 'write:bar:64'];
const POSTED = 'posted:bar:4';

function servers(bin: string, a: Args): ServerSpec[] {
  const node = process.execPath;
  const serve = (extra: string[]) => (s: string) => [
    node,
    MAIN,
    'serve',
    '--device',
    'edu',
    '--socket',
    s,
    ...extra,
  ];
  const list: ServerSpec[] = [
    { name: 'C ping-pong (ceiling)', in: 'both', bar: 0, argv: (s) => [bin, 'pong', s] },
  ];
  if (a.peer)
    list.push({ name: `peer: ${basename(a.peer)}`, in: 'both', bar: a.peerBar, argv: (s) => [a.peer!, s] });
  list.push(
    { name: 'Node echo, libuv poll', in: 'loops', bar: 0, argv: (s) => [node, ECHO, 'libuv', s] },
    { name: 'Node echo, blocking recvmsg', in: 'loops', bar: 0, argv: (s) => [node, ECHO, 'blocking', s] },
    { name: 'Node echo, busy poll', in: 'loops', bar: 0, argv: (s) => [node, ECHO, 'poll', s] },
    { name: 'vfio-ts serve (worker, blocking)', in: 'both', bar: 0, argv: serve([]) },
    // A short idle spin: it must not hold CPU 1 while the other servers' rounds run.
    { name: 'vfio-ts serve --poll', in: 'both', bar: 0, argv: serve(['--poll', '--poll-idle-ms', '1']) },
    { name: 'vfio-ts serve --loop libuv', in: 'both', bar: 0, argv: serve(['--loop', 'libuv']) },
  );
  return list;
}

interface OpResult {
  server: number;
  op: string;
  rates: number[];
  p50: number;
  p99: number;
  p999: number;
  unexpected: number;
}

const median = (v: readonly number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)] ?? Number.NaN;
const ratio = (x: number, base: number | undefined) =>
  base === undefined || !Number.isFinite(base) ? '' : `${(x / base).toFixed(2)}x`;

/** Starts every server, runs the C client over all of them, prints the tables. */
async function roundTrips(bin: string, a: Args, dir: string, pinned: boolean): Promise<void> {
  const specs = servers(bin, a);
  const procs: Proc[] = [];
  const targets: string[] = [];
  const live: ServerSpec[] = [];
  try {
    for (const [i, spec] of specs.entries()) {
      const sock = join(dir, `s${i}-${pinned ? 'p' : 'f'}.sock`);
      const p = start(onCpu(pinned ? 1 : undefined, spec.argv(sock)));
      if (!(await socketAppears(sock, p))) {
        console.log(`(${spec.name} did not start: ${p.output().trim().split('\n').slice(-2).join(' ')})`);
        await p.stop();
        continue;
      }
      procs.push(p);
      live.push(spec);
      targets.push(`${sock}@${spec.bar}`);
    }
    const cpu0 = procs.map((p) => cpuSeconds(p.pid));
    const ops = [...OPS, POSTED].flatMap((o) => ['-o', o]);
    const client = start(
      onCpu(pinned ? 0 : undefined, [
        bin,
        'client',
        '-n',
        String(a.n),
        '-r',
        String(a.rounds),
        ...ops,
        ...targets,
      ]),
    );
    const code = await client.exited;
    if (code !== 0) {
      console.log(`(the C client failed: ${client.output().trim()})`);
      return;
    }
    const lines = client
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as OpResult & { messages?: number });
    const results = lines.filter((l) => l.op !== undefined);
    const messages = new Map(
      lines.filter((l) => l.messages !== undefined).map((l) => [l.server, l.messages!]),
    );
    const cpuUs = procs.map((p, i) => ((cpuSeconds(p.pid) - cpu0[i]!) * 1e6) / (messages.get(i) || 1));
    const where = pinned ? 'client on CPU 0, server on CPU 1' : 'placed by the scheduler';
    const peerIndex = live.findIndex((s) => s.name.startsWith('peer:'));
    const find = (op: string, server: number) => results.find((r) => r.op === op && r.server === server);
    const table = (title: string, op: string, which: 'loops' | 'sizes') => {
      const rows = results.filter(
        (r) => r.op === op && live[r.server]!.in !== (which === 'loops' ? 'sizes' : 'loops'),
      );
      const ceiling = median(find(op, 0)?.rates ?? []);
      const peer = peerIndex < 0 ? undefined : find(op, peerIndex);
      const posted = op.startsWith('posted');
      console.log(
        `${title.padEnd(38)}${'per s'.padStart(9)}${'vs ceil'.padStart(9)}${'vs peer'.padStart(9)}${'p50 µs'.padStart(9)}${'p99 µs'.padStart(9)}${'p50 vs peer'.padStart(13)}${'cpu µs/msg'.padStart(12)}`,
      );
      for (const r of rows) {
        const m = median(r.rates);
        const lat = posted ? ['', ''] : [(r.p50 / 1000).toFixed(1), (r.p99 / 1000).toFixed(1)];
        // A latency ratio the other way round: above 1, this server answers faster than the peer.
        const p50 = posted || !peer ? '' : ratio(peer.p50, r.p50);
        console.log(
          `  ${live[r.server]!.name.padEnd(36)}${m.toFixed(0).padStart(9)}${ratio(m, ceiling).padStart(9)}${ratio(m, peer ? median(peer.rates) : undefined).padStart(9)}${lat[0]!.padStart(9)}${lat[1]!.padStart(9)}${p50.padStart(13)}${cpuUs[r.server]!.toFixed(1).padStart(12)}${r.unexpected ? `  (${r.unexpected} unexpected replies)` : ''}`,
        );
      }
    };
    /** The issue's goal, on REGION_READ 4 B of config space: blocking >= 1.0x the peer, --poll >= 1.2x. */
    const goal = () => {
      const peer = peerIndex < 0 ? undefined : find('read:cfg:4', peerIndex);
      if (!peer) return;
      for (const [label, name, want] of [
        ['blocking', 'vfio-ts serve (worker, blocking)', 1.0],
        ['--poll', 'vfio-ts serve --poll', 1.2],
      ] as const) {
        const r = find(
          'read:cfg:4',
          live.findIndex((l) => l.name === name),
        );
        if (!r) continue;
        console.log(
          `  goal ${label} >= ${want.toFixed(1)}x the peer: round trips/s ${ratio(median(r.rates), median(peer.rates))}, p50 ${ratio(peer.p50, r.p50)}`,
        );
      }
    };
    console.log(`\nvfio-user round trips, one in flight, ${where}; medians of ${a.rounds} rounds of ${a.n}`);
    console.log('(cpu µs/msg: the server process over the whole run, every message it was sent)');
    table('message loops: REGION_READ 4 B config', 'read:cfg:4', 'loops');
    for (const op of OPS.slice(1)) {
      const [kind, where2, count] = op.split(':');
      const what = `${kind === 'read' ? 'REGION_READ' : 'REGION_WRITE'} ${count} B ${where2 === 'cfg' ? 'config' : 'trapped BAR'}`;
      table(what, op, 'sizes');
    }
    table('posted REGION_WRITE 4 B, 20000 in flight', POSTED, 'sizes');
    goal();
  } finally {
    for (const p of procs) await p.stop();
  }
}

/** Our client (VfioUserClient through VfioDevice) against our server and the peer. */
async function ourClient(a: Args, dir: string): Promise<void> {
  const targets: { name: string; argv: (s: string) => string[]; region: number }[] = [
    {
      name: 'vfio-ts serve (worker, blocking)',
      argv: (s) => [process.execPath, MAIN, 'serve', '--device', 'edu', '--socket', s],
      region: 7,
    },
  ];
  if (a.peer) targets.push({ name: `peer: ${basename(a.peer)}`, argv: (s) => [a.peer!, s], region: 7 });
  const open: { name: string; dev: VfioDevice; proc: Proc }[] = [];
  try {
    for (const [i, t] of targets.entries()) {
      const sock = join(dir, `c${i}.sock`);
      const proc = start(t.argv(sock));
      if (!(await socketAppears(sock, proc))) {
        console.log(`(${t.name} did not start)`);
        await proc.stop();
        continue;
      }
      try {
        open.push({ name: t.name, dev: new VfioDevice(await VfioUserClient.connect(sock)), proc });
      } catch (e) {
        console.log(`(our client could not use ${t.name}: ${e instanceof Error ? e.message : String(e)})`);
        await proc.stop();
      }
    }
    const samples = open.map(() => [] as number[]);
    const lat = open.map(() => [] as number[]);
    for (const o of open) for (let i = 0; i < a.n / 10; i++) await o.dev.read(7, 0, 4);
    for (let r = 0; r < a.rounds; r++) {
      for (const [k, o] of open.entries()) {
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < a.n; i++) {
          const t = process.hrtime.bigint();
          await o.dev.read(7, 0, 4);
          lat[k]!.push(Number(process.hrtime.bigint() - t));
        }
        samples[k]!.push((a.n * 1e9) / Number(process.hrtime.bigint() - t0));
      }
    }
    console.log(
      '\nour client (VfioUserClient, VfioDevice.read of 4 B config), one in flight, placed by the scheduler',
    );
    console.log(
      `${''.padEnd(38)}${'per s'.padStart(9)}${'vs first'.padStart(9)}${'p50 µs'.padStart(9)}${'p99 µs'.padStart(9)}`,
    );
    const first = median(samples[0] ?? []);
    for (const [k, o] of open.entries()) {
      const l = lat[k]!.sort((x, y) => x - y);
      const q = (f: number) => ((l[Math.floor(f * l.length)] ?? 0) / 1000).toFixed(1);
      const m = median(samples[k]!);
      console.log(
        `  ${o.name.padEnd(36)}${m.toFixed(0).padStart(9)}${ratio(m, first).padStart(9)}${q(0.5).padStart(9)}${q(0.99).padStart(9)}`,
      );
    }
  } finally {
    for (const o of open) {
      await o.dev.close().catch(() => {});
      await o.proc.stop();
    }
  }
}

export async function runVfioUserBench(argv: readonly string[]): Promise<void> {
  const a = args(argv);
  const dir = scratchDir();
  const bin = buildC(dir);
  if (!bin) return;
  if (!a.peer)
    console.log('(no --peer PATH: no vfio-user server binary to compare with; see docs/performance.md)');
  if (CAN_PIN) await roundTrips(bin, a, dir, true);
  else console.log('(taskset missing or one CPU: no pinned placement)');
  await roundTrips(bin, a, dir, false);
  await ourClient(a, dir);
}

if (isMain(import.meta.url)) await runVfioUserBench(process.argv.slice(2));
