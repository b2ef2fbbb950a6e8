/**
 * `vfio-ts migrate` as a process between two `vfio-ts serve` processes: ivshmem's shared memory
 * (what the device keeps across clients) arrives on the target; a foreign target is refused with
 * the errno and the source stays usable; bad arguments exit 2; --help.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { VfioUserClient } from '../../src/client/index.js';
import { type CliProcess, vfioTs as cli, servedProcess } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-migrate-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function stop(...ps: CliProcess[]): Promise<void> {
  for (const p of ps) p.child.kill('SIGTERM');
  for (const p of ps) assert.equal(await p.exit, 0, p.out());
}

const BAR2 = 2n << 40n;

test('migrate: ivshmem shared memory comes across; a foreign target is EINVAL and the source still runs', async () => {
  // Each server on another of serve's loops: the source polling (briefly), the target on libuv;
  // test/client/migrate.test.ts runs the default, a worker blocking in recvmsg.
  const a = await servedProcess('ivshmem', join(dir, 'a.sock'), ['--poll', '--poll-idle-ms', '20']);
  const b = await servedProcess('ivshmem', join(dir, 'b.sock'), ['--loop', 'libuv']);
  const e = await servedProcess('edu', join(dir, 'e.sock'));
  try {
    const data = new Uint8Array(8192).map((_, i) => (i * 37 + 11) & 0xff);
    const w = await VfioUserClient.connect(join(dir, 'a.sock'));
    await w.pwrite(BAR2 + 0x3000n, data);
    await w.close();
    const m = cli('migrate', '--from', join(dir, 'a.sock'), '--to', join(dir, 'b.sock'), '--json');
    assert.equal(await m.exit, 0, m.out());
    const r = JSON.parse(m.out()) as { precopy: boolean; streamBytes: number; rounds: number };
    assert.equal(r.precopy, true);
    assert.ok(r.streamBytes > 4 << 20, `the 4 MiB BAR2 and more: ${r.streamBytes}`);
    const t = await VfioUserClient.connect(join(dir, 'b.sock'));
    assert.deepEqual(await t.pread(BAR2 + 0x3000n, data.length), data);
    await t.close();
    // ivshmem into edu: the target refuses the stream; exit 1 with the errno.
    const bad = cli('migrate', '--from', join(dir, 'a.sock'), '--to', join(dir, 'e.sock'));
    assert.equal(await bad.exit, 1, bad.out());
    assert.match(bad.out(), /EINVAL/);
    const again = await VfioUserClient.connect(join(dir, 'a.sock'));
    assert.deepEqual(await again.pread(BAR2 + 0x3000n, data.length), data, 'the source kept its memory');
    await again.close();
  } finally {
    await stop(a, b, e);
  }
});

test('migrate: bad arguments exit 2 with the usage; --help exits 0', async () => {
  for (const args of [
    [],
    ['--from', 'x'],
    ['--from', 'x', '--to', 'x'],
    ['--from', 'x', '--to', 'y', '--rounds', '-1'],
  ]) {
    const p = cli('migrate', ...args);
    assert.equal(await p.exit, 2, args.join(' '));
    assert.match(p.out(), /^vfio-ts migrate: .*\(vfio-ts migrate --help\)\n$/);
  }
  const h = cli('migrate', '--help');
  assert.equal(await h.exit, 0);
  assert.match(h.out(), /--from SOCKET/);
});

test('migrate: a path that is no server is named in words, one line, exit 1', async () => {
  const plain = join(dir, 'plain');
  writeFileSync(plain, 'not a socket');
  const cases: [string[], RegExp][] = [
    [
      ['--from', plain, '--to', join(dir, 'b.sock')],
      /^vfio-ts migrate: \S+plain: ENOTSOCK \(not a socket: it is a regular file\)\n$/,
    ],
    [
      ['--from', join(dir, 'none.sock'), '--to', plain],
      /^vfio-ts migrate: \S+none\.sock: ENOENT \(no such file: neither a vfio-user socket nor a PCI address\)\n$/,
    ],
  ];
  for (const [args, re] of cases) {
    const m = cli('migrate', ...args);
    assert.equal(await m.exit, 1, m.out());
    assert.match(m.out(), re);
  }
});

test('migrate: a source busy with another client times out (--timeout) with ETIMEDOUT, exit 1', async () => {
  const a = await servedProcess('edu', join(dir, 'busy-a.sock'));
  const b = await servedProcess('edu', join(dir, 'busy-b.sock'));
  const holder = await VfioUserClient.connect(join(dir, 'busy-a.sock'));
  try {
    const m = cli(
      'migrate',
      '--from',
      join(dir, 'busy-a.sock'),
      '--to',
      join(dir, 'busy-b.sock'),
      '--timeout',
      '1',
    );
    assert.equal(await m.exit, 1, m.out());
    assert.match(m.out(), /^vfio-ts migrate: .*ETIMEDOUT/);
  } finally {
    await holder.close();
    await stop(a, b);
  }
});
