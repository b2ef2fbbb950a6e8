/**
 * Clients that die: `vfio-ts serve` runs as its own process; a client process
 * (client-proc.ts: VERSION, DMA_MAP with a memfd and without, INTx/MSI/ERR/REQ eventfds, then
 * edu DMA in a loop with split messages and unanswered DMA_READs) is SIGKILLed at a random
 * moment, KILL_ROUNDS times. After each death a probe client must be served correctly, and the
 * server's fd count (with the probe connected) must equal the one measured at the start; its
 * RSS may not grow past RSS_GROWTH_LIMIT over the run.
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

export const KILL_ROUNDS = 30;
/** How much the server's resident set may grow over all rounds (GC noise included). */
export const RSS_GROWTH_LIMIT = 48 * 1024 * 1024;

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

/** Connects, negotiates, checks GET_INFO and edu's ID; returns the server's fd count meanwhile. */
async function probe(path: string, serverPid: number): Promise<number> {
  const c = new RawClient(unixConnect(path));
  try {
    await c.negotiate();
    const info = await c.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
    assert.equal(info?.errno, 0, 'GET_INFO answered');
    const id = await c.call(C.REGION_READ, concat(u64(0n), u32(0, 4)));
    assert.equal(id?.errno, 0);
    assert.equal(new DataView(id!.payload.buffer, id!.payload.byteOffset).getUint32(16, true), EDU_ID);
    return fdCount(serverPid);
  } finally {
    c.close();
  }
}

describe('clients killed at random points', () => {
  let dir: string;
  let path: string;
  let server: ChildProcess;
  let log = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vfio-ts-kill-'));
    path = join(dir, 'edu.sock');
    server = spawn(
      process.execPath,
      [MAIN, 'serve', '--device', 'edu', '--socket', path, '--allow-uid', 'self'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    server.stdout!.on('data', (d: Buffer) => {
      log += d.toString();
    });
    server.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
    });
    await until('the server socket', () => existsSync(path));
  });

  after(() => {
    server.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('socket is created mode 0600', () => {
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });

  it(`${KILL_ROUNDS} clients SIGKILLed mid-message, mid-DMA, with interrupts armed: fds and RSS stay flat`, async () => {
    const pid = server.pid!;
    const rng = new Rng(77);
    // Warm up (JIT, first allocations), then take the baseline.
    for (let i = 0; i < 3; i++) await probe(path, pid);
    const fdBase = await probe(path, pid);
    const rssBase = rss(pid);
    const stages = new Map<string, number>();
    for (let round = 0; round < KILL_ROUNDS; round++) {
      const child = spawn(process.execPath, [CLIENT, path, String(round + 1)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
      });
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      // Kill before connecting, while negotiating and mapping, or with everything armed.
      const target = rng.pick(['spawn', 'connected', 'armed', 'armed', 'armed'] as const);
      if (target !== 'spawn')
        await until(`client ${round} ${target}`, () => out.includes(target) || child.exitCode !== null);
      await new Promise((r) => setTimeout(r, rng.int(target === 'armed' ? 60 : 8)));
      child.kill('SIGKILL');
      await exited;
      stages.set(target, (stages.get(target) ?? 0) + 1);
      const fds = await probe(path, pid);
      assert.equal(
        fds,
        fdBase,
        `round ${round} (killed at ${target}): server fds ${fds}, baseline ${fdBase}\n${log}`,
      );
    }
    const grown = rss(pid) - rssBase;
    console.log(
      `kill rounds: ${KILL_ROUNDS} (${[...stages].map(([k, v]) => `${k} ${v}`).join(', ')}); server fds ${fdBase} before and after; RSS ${(rssBase / 2 ** 20).toFixed(1)} MiB, grew ${(grown / 2 ** 20).toFixed(1)} MiB`,
    );
    assert.ok(grown < RSS_GROWTH_LIMIT, `RSS grew ${grown} bytes`);
    assert.ok(!/internal error|uncaught/i.test(log), log);
  });
});
