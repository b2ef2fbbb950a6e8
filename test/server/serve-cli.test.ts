/**
 * `vfio-ts serve` as a process: socket mode, refusing a live socket, replacing a stale one,
 * connect/disconnect log lines with the peer's pid and uid, clean shutdown on SIGINT/SIGTERM,
 * each message loop (a worker blocking or polling, or this thread's libuv); a device module
 * (`--module`) under each loop and every way loading one can fail; `--help`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { VfioUserClient } from '../../src/client/index.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { VfioDevice } from '../../src/driver/device.js';
import { closeFd, unixConnect, unixListen } from '../../src/native/index.js';
import { repoRoot } from '../harness/index.js';
import { access, errnoOf, le, qemuVersionPayload, rawPeer } from './raw.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-serve-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Served {
  child: ChildProcess;
  out(): string;
  exit: Promise<number | null>;
}

function serve(socket: string, ...extra: string[]): Served {
  return serveWith([], socket, ...extra);
}

/** `vfio-ts serve` with extra Node options before the script (a --import that crashes it). */
function serveWith(nodeArgs: string[], socket: string, ...extra: string[]): Served {
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      join(repoRoot(), 'dist/src/cli/main.js'),
      'serve',
      '--device',
      'edu',
      '--socket',
      socket,
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let text = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    text += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    text += d;
  });
  return { child, out: () => text, exit: new Promise((r) => child.once('exit', (code) => r(code))) };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('serve: 0600 socket, one log line per connect/disconnect, refuses a live socket, SIGINT exits 0', async () => {
  const sock = join(dir, 'a.sock');
  const a = serve(sock, '--verbose');
  try {
    await until(() => /serving edu/.test(a.out()), 'the server to start');
    assert.equal(statSync(sock).mode & 0o777, 0o600);
    const p = rawPeer(unixConnect(sock));
    const f = await p.call(C.VERSION, qemuVersionPayload());
    assert.equal(errnoOf(f), 0);
    p.close();
    await until(() => /disconnected/.test(a.out()), 'the disconnect line');
    assert.match(
      a.out(),
      new RegExp(`client 1 connected \\(pid ${process.pid}, uid ${process.getuid?.()}\\)`),
    );
    assert.match(a.out(), /client 1: msg \d+ cmd VFIO_USER_VERSION \d+B: ok/);
    // A second server on the same path: refused, the first one keeps its socket.
    const b = serve(sock);
    assert.equal(await b.exit, 1);
    assert.match(b.out(), /live socket/);
    assert.equal(statSync(sock).isSocket(), true);
  } finally {
    a.child.kill('SIGINT');
  }
  assert.equal(await a.exit, 0, a.out());
  assert.match(a.out(), /SIGINT: shutting down/);
  assert.throws(() => statSync(sock), 'socket removed');
});

test('serve: a stale socket is replaced; a file that is not a socket is refused', async () => {
  const stale = join(dir, 'stale.sock');
  closeFd(unixListen(stale)); // bound, then nobody listens: connect gets ECONNREFUSED
  const s = serve(stale);
  try {
    await until(() => /serving edu/.test(s.out()), 'the server to start');
    const fd = unixConnect(stale);
    closeFd(fd);
  } finally {
    s.child.kill('SIGTERM');
  }
  assert.equal(await s.exit, 0, s.out());
  const file = join(dir, 'file');
  writeFileSync(file, 'not a socket');
  const t = serve(file);
  assert.equal(await t.exit, 1);
  assert.match(t.out(), /not a socket/);
  assert.equal(statSync(file).isFile(), true, 'left alone');
});

test('serve: a SIGTERM sent the moment "serving" is printed still shuts down cleanly', async () => {
  // The handlers must be in place before the line that tells a supervisor we are up: with them
  // installed after it, about one start in seven died of the signal's default action here.
  for (let i = 0; i < 12; i++) {
    const sock = join(dir, `race-${i}.sock`);
    const s = serve(sock);
    // Signal from the data event itself, not from a polling loop, so the window is hit.
    const onData = () => {
      if (!/serving edu/.test(s.out())) return;
      s.child.stdout?.off('data', onData);
      s.child.kill('SIGTERM');
    };
    s.child.stdout?.on('data', onData);
    assert.equal(await s.exit, 0, `start ${i}: ${s.out()}`);
    assert.match(s.out(), /SIGTERM: shutting down/);
    assert.throws(() => statSync(sock), 'socket removed');
  }
});

/**
 * A preload that throws from a timer once `path` exists: an uncaught error in a running server,
 * injected from outside (the server has no test hook for it).
 */
const crashOnceServing = (path: string) => [
  '--import',
  `data:text/javascript,import { existsSync } from 'node:fs'; const t = setInterval(() => { if (existsSync(${JSON.stringify(path)})) { clearInterval(t); setTimeout(() => { throw new Error('injected crash'); }, 100); } }, 10);`,
];

test('serve: an uncaught error exits 1 and still removes the socket', async () => {
  const sock = join(dir, 'crash.sock');
  const s = serveWith(crashOnceServing(sock), sock);
  assert.equal(await s.exit, 1, s.out());
  assert.match(s.out(), /serving edu/);
  assert.match(s.out(), /injected crash/);
  assert.throws(() => statSync(sock), 'socket removed on the error exit');
});

test('serve: a socket that replaced ours at the path is left alone, on SIGTERM and on an error exit', async () => {
  for (const how of ['SIGTERM', 'crash'] as const) {
    const sock = join(dir, `taken-${how}.sock`);
    const s = how === 'crash' ? serveWith(crashOnceServing(`${sock}.taken`), sock) : serve(sock);
    await until(() => /serving edu/.test(s.out()), 'the server to start');
    // Someone else takes the path: our socket is unlinked and a new one bound there.
    rmSync(sock);
    const theirs = unixListen(sock);
    try {
      if (how === 'crash')
        writeFileSync(`${sock}.taken`, ''); // now let the server crash
      else s.child.kill('SIGTERM');
      assert.equal(await s.exit, how === 'crash' ? 1 : 0, s.out());
      assert.equal(statSync(sock).isSocket(), true, `${how}: the other socket is still there`);
      closeFd(unixConnect(sock)); // and still the one that listens
    } finally {
      closeFd(theirs);
      rmSync(sock, { force: true });
    }
  }
});

test('serve without --verbose: connect and disconnect lines only, no per-message lines', async () => {
  const sock = join(dir, 'quiet.sock');
  const s = serve(sock);
  try {
    await until(() => /serving edu/.test(s.out()), 'the server to start');
    const p = rawPeer(unixConnect(sock));
    assert.equal(errnoOf(await p.call(C.VERSION, qemuVersionPayload())), 0);
    assert.equal(
      errnoOf(
        await p.call(C.DEVICE_GET_INFO, new Uint8Array([16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
      ),
      0,
    );
    assert.notEqual(errnoOf(await p.call(C.DEVICE_GET_IRQ_INFO, new Uint8Array(16))), 0); // an error reply too
    p.close();
    await until(() => /disconnected/.test(s.out()), 'the disconnect line');
  } finally {
    s.child.kill('SIGTERM');
  }
  assert.equal(await s.exit, 0, s.out());
  const out = s.out();
  assert.match(out, /client 1 connected/);
  assert.match(out, /client 1 disconnected: .*; 3 messages/);
  assert.doesNotMatch(out, /msg \d+ (cmd|reply)/, 'no per-message trace');
  assert.doesNotMatch(out, /VFIO_USER_/, 'no command names');
  assert.equal(out.trim().split('\n').length, 4, `serving, connected, disconnected, SIGTERM:\n${out}`);
});

test('serve: bad arguments exit 2 with the usage', async () => {
  const s = spawn(
    process.execPath,
    [join(repoRoot(), 'dist/src/cli/main.js'), 'serve', '--device', 'nope', '--socket', join(dir, 'x')],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let err = '';
  s.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const code = await new Promise<number | null>((r) => s.once('exit', (c) => r(c)));
  assert.equal(code, 2);
  assert.match(err, /unknown device nope/);
});

test('serve --loop: blocking (the default), --poll and libuv all serve; verbose traces come from the worker too', async () => {
  const runs: [string, string[]][] = [
    ['blocking', []],
    ['poll', ['--poll', '--poll-idle-ms', '5']],
    ['libuv', ['--loop', 'libuv']],
    ['blocking', ['--loop', 'blocking', '--verbose']],
  ];
  for (const [label, extra] of runs) {
    const sock = join(dir, `loop-${label}-${extra.length}.sock`);
    const s = serve(sock, ...extra);
    try {
      await until(() => /serving edu/.test(s.out()), `the ${label} server to start`);
      assert.match(s.out(), new RegExp(`${label} loop`));
      const p = rawPeer(unixConnect(sock));
      assert.equal(errnoOf(await p.call(C.VERSION, qemuVersionPayload())), 0);
      const id = await p.call(C.REGION_READ, access(0, 0n, 4));
      assert.equal(le(id.payload).getUint32(16, true), EDU_ID, label);
      p.close();
      await until(() => /disconnected/.test(s.out()), 'the disconnect line');
    } finally {
      s.child.kill('SIGTERM');
    }
    assert.equal(await s.exit, 0, s.out());
    if (extra.includes('--verbose')) assert.match(s.out(), /msg \d+ cmd VFIO_USER_REGION_READ 32B: ok/);
    assert.throws(() => statSync(sock), 'socket removed');
  }
});

test('serve: bad loop options exit 2', async () => {
  for (const [args, why] of [
    [['--loop', 'spin'], /--loop must be blocking, poll or libuv/],
    [['--poll', '--poll-idle-ms', '-1'], /--poll-idle-ms needs an integer >= 0 or never/],
    [['--poll-idle-ms', '5'], /--poll-idle-ms is for --poll \(--loop poll\) only/],
    [['--poll', '--loop', 'libuv'], /--poll is --loop poll, not --loop libuv/],
  ] as const) {
    const s = serve(join(dir, 'bad-loop.sock'), ...args);
    assert.equal(await s.exit, 2);
    assert.match(s.out(), why);
  }
});

/** Runs `vfio-ts serve ARGS` to its exit; its output. */
async function serveOnce(...args: string[]): Promise<{ code: number | null; out: string }> {
  const s = spawn(process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  s.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  s.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const code = await new Promise<number | null>((r) => s.once('exit', (c) => r(c)));
  return { code, out };
}

/** A device module as a user writes it (the library imported by file URL: it is not installed in tmp). */
function deviceModule(name: string, body: string): string {
  const path = join(dir, name);
  const lib = pathToFileURL(join(repoRoot(), 'dist/src/index.js')).href;
  writeFileSync(path, `import { defineDevice } from ${JSON.stringify(lib)};\n${body}\n`);
  return path;
}

/** `vfio-ts serve ARGS` started; its output so far, and its exit. */
function spawnServe(...args: string[]): Served {
  const child = spawn(process.execPath, [join(repoRoot(), 'dist/src/cli/main.js'), 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (text += d));
  return { child, out: () => text, exit: new Promise((r) => child.once('exit', (c) => r(c))) };
}

/** The loops `vfio-ts serve` offers, by their flags: a worker blocking (the default) or polling, or this thread. */
const LOOPS: readonly [string, string[]][] = [
  ['blocking', []],
  ['poll', ['--poll', '--poll-idle-ms', '5']],
  ['libuv', ['--loop', 'libuv']],
];

for (const [loop, flags] of LOOPS)
  test(`serve --module (${loop} loop): the default export of a device module, built and served by that loop's thread`, async () => {
    const mod = deviceModule(
      `answer-${loop}.mjs`,
      `import { isMainThread } from 'node:worker_threads';
      export default defineDevice({
        name: 'answer',
        identity: { vendorId: 0x1b36, deviceId: 0x4242, classCode: 0xff0000 },
        bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
        // Offset 0x10 reads 1 when the device was built in the main thread.
        create: () => ({ bars: { 0: { read: (offset) => offset === 0x10 ? BigInt(isMainThread) : BigInt(offset) + 42n, write() {} } } }),
      });`,
    );
    const sock = join(dir, `module-${loop}.sock`);
    const s = spawnServe('--module', mod, '--socket', sock, ...flags);
    try {
      await until(() => /serving answer/.test(s.out()), `the server to start\n${s.out()}`);
      assert.match(s.out(), new RegExp(`${loop} loop`));
      const dev = new VfioDevice(await VfioUserClient.connect(sock));
      const info = await dev.info();
      assert.equal(info.numRegions >= 9, true);
      assert.equal(await dev.read32(0, 8), 50);
      assert.equal(await dev.read32(0, 0x10), loop === 'libuv' ? 1 : 0, 'built in the thread that serves it');
      assert.equal((await dev.read(7, 0, 4)).join(), [0x36, 0x1b, 0x42, 0x42].join(), 'vendor and device id');
      await dev.close();
    } finally {
      s.child.kill('SIGTERM');
    }
    assert.equal(await s.exit, 0, s.out());
    assert.throws(() => statSync(sock), 'socket removed');
  });

for (const [loop, flags] of LOOPS)
  test(`serve --device ivshmem (${loop} loop): BAR2 keeps what a client wrote for the next client`, async () => {
    // A client leaving resets the device; ivshmem's shared memory is not the device's to clear.
    const sock = join(dir, `ivshmem-${loop}.sock`);
    const s = spawnServe('--device', 'ivshmem', '--socket', sock, ...flags);
    try {
      await until(() => /serving ivshmem/.test(s.out()), `the server to start\n${s.out()}`);
      const first = new VfioDevice(await VfioUserClient.connect(sock));
      await first.write32(2, 0x100, 0xcafef00d);
      const m = await first.map(2, { length: 4096 });
      m.bytes.set([1, 2, 3, 4], 0x200); // through the BAR's fd, as QEMU writes it
      m.unmap();
      await first.close();
      await until(() => /client 1 disconnected/.test(s.out()), 'the first client to go');
      const next = new VfioDevice(await VfioUserClient.connect(sock));
      assert.equal(await next.read32(2, 0x100), 0xcafef00d);
      assert.deepEqual([...(await next.read(2, 0x200, 4))], [1, 2, 3, 4]);
      await next.close();
    } finally {
      s.child.kill('SIGTERM');
    }
    assert.equal(await s.exit, 0, s.out());
  });

test('serve --module: a module that is no device, a definition with a bad field, a missing file, TypeScript', async () => {
  const cases: [string, string, RegExp][] = [
    [
      deviceModule('none.mjs', 'export default { name: "x" };'),
      'x.sock',
      /the default export is not a device definition/,
    ],
    [
      deviceModule(
        'bad.mjs',
        `export default defineDevice({ name: 'bad', identity: { vendorId: 1, deviceId: 2, classCode: 3 },
           bars: [{ index: 0, kind: 'mem32', size: 3000, backing: 'memory' }] });`,
      ),
      'y.sock',
      /defineDevice bad: EINVAL \(BAR0 size 3000 is not a power of two\)/,
    ],
    [join(dir, 'missing.mjs'), 'z.sock', /ENOENT \(cannot load .*missing\.mjs/],
    [join(dir, 'device.ts'), 'w.sock', /compile the module first/],
  ];
  // The same one line whether the worker loaded the module (the default) or this thread did.
  for (const loop of [[], ['--loop', 'libuv']])
    for (const [mod, sock, want] of cases) {
      const r = await serveOnce('--module', mod, '--socket', join(dir, sock), ...loop);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, want);
      assert.equal(r.out.trim().split('\n').length, 1, r.out);
      assert.throws(() => statSync(join(dir, sock)), 'no socket left behind');
    }
  const both = await serveOnce('--module', 'a.js', '--device', 'edu', '--socket', join(dir, 'v.sock'));
  assert.equal(both.code, 2);
  assert.match(both.out, /give one of --device and --module/);
});

test('serve --help: exit 0, every flag explained', async () => {
  const r = await serveOnce('--help');
  assert.equal(r.code, 0);
  for (const flag of [
    '--device',
    '--module',
    '--disk',
    '--size',
    '--cmb-size',
    '--socket',
    '--verbose',
    '--profile',
    '--dma-layout',
    '--allow-uid',
    '--max-mmap-cookies',
    '--max-message-size',
    '--max-data-xfer-size',
    '--max-msg-fds',
    '--max-dma-maps',
    '--max-pending-bytes',
    '--max-pending-requests',
    '--message-stall-ms',
  ])
    assert.ok(r.out.includes(flag), `${flag} in\n${r.out}`);
});
