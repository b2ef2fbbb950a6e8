/**
 * Clients that die: `vfio-ts serve` (edu, and ivshmem for cookies and dma-bufs) runs as its own
 * process; a client process (client-proc.ts) is SIGKILLed KILL_ROUNDS times, at controlled
 * points (mid-message: header and half the body sent; mid-DMA: the server waits on its
 * DMA_READ; with every interrupt armed; holding mmap cookies and dma-buf fds with replies
 * unread) and at random ones (before connecting, negotiating, in the DMA loop). After each
 * death a probe client must be served correctly and the server's fd count (probe connected)
 * must equal its baseline exactly; RSS growth over the second half of the rounds must stay
 * under RSS_SECOND_HALF_LIMIT (a leak test, not a timing test).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { unixConnect } from '../../src/native/index.js';
import { RawClient } from '../fuzz/client.js';
import { Rng } from '../fuzz/prng.js';
import { concat, u32, u64 } from '../fuzz/server.js';

/** Rounds: each slot of KILL_PLAN in turn (controlled points twice as often as random ones). */
export const KILL_ROUNDS = 36;
/** Where each round's client is killed: a controlled stage (client-proc.ts modes) or random. */
export const KILL_PLAN = ['mid-message', 'mid-dma', 'armed', 'held', 'random', 'random'] as const;
/**
 * How much a server's resident set may grow over the second half of the rounds. Warm-up (JIT,
 * first allocations, heap growth) lands in the first half; a leak keeps growing in the second.
 */
export const RSS_SECOND_HALF_LIMIT = 8 * 1024 * 1024;

const MAIN = new URL('../../src/cli/main.js', import.meta.url).pathname;
const CLIENT = new URL('./client-proc.js', import.meta.url).pathname;

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function until(what: string, ok: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Connects, negotiates, checks GET_INFO (and edu's ID); returns the server's fd count meanwhile. */
async function probe(path: string, serverPid: number, edu = true): Promise<number> {
  const c = new RawClient(unixConnect(path));
  try {
    await c.negotiate();
    const info = await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
    assert.equal(info?.errno, 0, 'GET_INFO answered');
    if (!edu) return fdCount(serverPid);
    const id = await c.call(C.REGION_READ, concat(u64(0n), u32(0, 4)));
    assert.equal(id?.errno, 0);
    assert.equal(new DataView(id!.payload.buffer, id!.payload.byteOffset).getUint32(16, true), EDU_ID);
    return fdCount(serverPid);
  } finally {
    c.close();
  }
}

interface Served {
  readonly path: string;
  readonly proc: ChildProcess;
  log: string;
}

function serve(dir: string, device: 'edu' | 'ivshmem'): Served {
  const path = join(dir, `${device}.sock`);
  const proc = spawn(
    process.execPath,
    [MAIN, 'serve', '--device', device, '--socket', path, '--allow-uid', 'self'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const s: Served = { path, proc, log: '' };
  proc.stdout!.on('data', (d: Buffer) => {
    s.log += d.toString();
  });
  proc.stderr!.on('data', (d: Buffer) => {
    s.log += d.toString();
  });
  return s;
}

describe('clients killed at controlled and random points', () => {
  let dir: string;
  let edu: Served;
  let ivshmem: Served;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vfio-ts-kill-'));
    edu = serve(dir, 'edu');
    ivshmem = serve(dir, 'ivshmem');
    await until('the server sockets', () => existsSync(edu.path) && existsSync(ivshmem.path));
  });

  after(() => {
    edu.proc.kill('SIGTERM');
    ivshmem.proc.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('socket is created mode 0600', () => {
    assert.equal(statSync(edu.path).mode & 0o777, 0o600);
  });

  it(`${KILL_ROUNDS} clients SIGKILLed mid-message, mid-DMA, armed, holding cookies and dma-bufs, and at random: fds exact, RSS flat`, async () => {
    const rng = new Rng(77);
    const servers = [edu, ivshmem];
    // Warm up (JIT, first allocations), then take the baselines.
    for (let i = 0; i < 3; i++) for (const s of servers) await probe(s.path, s.proc.pid!, s === edu);
    const fdBase = new Map<Served, number>();
    for (const s of servers) fdBase.set(s, await probe(s.path, s.proc.pid!, s === edu));
    const rssAt = new Map<Served, number[]>(servers.map((s) => [s, [rss(s.proc.pid!)]]));
    const stages = new Map<string, number>();
    for (let round = 0; round < KILL_ROUNDS; round++) {
      const plan = KILL_PLAN[round % KILL_PLAN.length]!;
      const s = plan === 'held' ? ivshmem : edu;
      const child = spawn(process.execPath, [CLIENT, s.path, String(round + 1), plan], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      let target: string = plan;
      if (plan === 'random') {
        // Before connecting, while negotiating and mapping, or in the DMA loop.
        target = rng.pick(['spawn', 'connected', 'armed', 'armed'] as const);
        if (target !== 'spawn')
          await until(`client ${round} ${target}`, () => out.includes(target) || child.exitCode !== null);
        await new Promise((r) => setTimeout(r, rng.int(target === 'armed' ? 60 : 8)));
        target = `random:${target}`;
      } else {
        await until(`client ${round} ${plan}`, () => out.includes(plan) || child.exitCode !== null);
        assert.ok(out.split('\n').includes(plan), `client ${round} reached ${plan}: ${JSON.stringify(out)}`);
        await new Promise((r) => setTimeout(r, rng.int(5)));
      }
      child.kill('SIGKILL');
      await exited;
      stages.set(target, (stages.get(target) ?? 0) + 1);
      const fds = await probe(s.path, s.proc.pid!, s === edu);
      assert.equal(
        fds,
        fdBase.get(s),
        `round ${round} (killed at ${target}): server fds ${fds}, baseline ${fdBase.get(s)}\n${s.log}`,
      );
      for (const x of servers) rssAt.get(x)!.push(rss(x.proc.pid!));
    }
    const mid = Math.floor(KILL_ROUNDS / 2);
    const report: string[] = [];
    for (const s of servers) {
      const r = rssAt.get(s)!;
      const first = r[mid]! - r[0]!;
      const second = r[r.length - 1]! - r[mid]!;
      report.push(
        `${s === edu ? 'edu' : 'ivshmem'}: RSS ${(r[0]! / 2 ** 20).toFixed(1)} MiB, first half +${(first / 2 ** 20).toFixed(1)} MiB, second half +${(second / 2 ** 20).toFixed(1)} MiB`,
      );
      assert.ok(second < RSS_SECOND_HALF_LIMIT, `${report.at(-1)}: RSS kept growing`);
      assert.ok(!/internal error|uncaught/i.test(s.log), s.log);
    }
    console.log(
      `kill rounds: ${KILL_ROUNDS} (${[...stages].map(([k, v]) => `${k} ${v}`).join(', ')}); fds exactly at baseline after each; ${report.join('; ')}`,
    );
  });
});
