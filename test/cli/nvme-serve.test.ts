/**
 * `vfio-ts nvme identify|perf` against `vfio-ts serve --device nvme --disk`: our userspace driver
 * against our controller, served by the command line with each message loop — a worker blocking
 * in recvmsg (the default), a worker polling (--poll), this thread's libuv (--loop libuv). The
 * controller's disk I/O runs in the thread pool and its doorbells schedule microtasks; verified
 * random writes with interrupts must complete under every loop, SIGTERM must stop the server
 * cleanly (the namespace flushed and closed, the socket removed), and the image must hold what
 * was written.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runWith } from '../../src/cli/nvme.js';
import { repoRoot } from '../harness/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-serve-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DISK_BYTES = 8 << 20;
/** The verify pattern's first bytes in every block perf writes (src/driver/nvme/perf.ts). */
const STAMP = Buffer.from('VFTS');

async function cli(args: string[]): Promise<{ status: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runWith(args, { log: (l) => out.push(l), error: (l) => err.push(l) });
  return { status, out: out.join('\n'), err: err.join('\n') };
}

function serve(socket: string, disk: string, extra: string[]) {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      `${repoRoot()}/dist/src/cli/main.js`,
      'serve',
      '--device',
      'nvme',
      '--disk',
      disk,
      '--size',
      String(DISK_BYTES),
      '--socket',
      socket,
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out: () => out, exit };
}

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(ok(), `timed out waiting for ${what}`);
}

describe('vfio-ts nvme against vfio-ts serve --device nvme --disk', () => {
  for (const [loop, extra] of [
    ['blocking', []],
    ['poll', ['--poll', '--poll-idle-ms', '20']],
    ['libuv', ['--loop', 'libuv']],
  ] as const) {
    it(`${loop} loop: identify, verified random writes with interrupts, SIGTERM, the data on disk`, async () => {
      const sock = join(dir, `${loop}.sock`);
      const disk = join(dir, `${loop}.img`);
      const s = serve(sock, disk, [...extra]);
      try {
        await until(() => /serving nvme/.test(s.out()), 'the server to start');
        assert.match(s.out(), new RegExp(`${loop} loop`));
        const id = await cli(['identify', sock]);
        assert.equal(id.status, 0, `${id.err}\n${s.out()}`);
        assert.match(id.out, /vfio-ts NVMe controller, serial vfiots-[0-9a-f]{12}/);
        assert.match(id.out, new RegExp(`namespace 1: \\d+ blocks of 512 bytes \\(${DISK_BYTES} bytes\\)`));
        const perf = await cli([
          'perf',
          sock,
          '--rw',
          'randwrite',
          '--qd',
          '8',
          '--seconds',
          '0.5',
          '--completions',
          'interrupt',
          '--verify',
        ]);
        assert.equal(perf.status, 0, `${perf.err}\n${s.out()}`);
        assert.match(perf.out, /verify: \d+ logical blocks checked, all as written/);
      } finally {
        s.child.kill('SIGTERM');
      }
      assert.equal(await s.exit, 0, s.out());
      assert.match(s.out(), /SIGTERM: shutting down/);
      assert.doesNotMatch(s.out(), /closing the namespace|internal error/);
      assert.equal(existsSync(sock), false, 'socket removed');
      // The blocks perf wrote are in the image, stamped with its pattern.
      const image = readFileSync(disk);
      assert.equal(image.length, DISK_BYTES);
      let stamped = 0;
      for (let at = 0; at < image.length; at += 512) if (image.subarray(at, at + 4).equals(STAMP)) stamped++;
      assert.ok(stamped > 0, 'no block of the image carries the verify pattern');
    });
  }
});
