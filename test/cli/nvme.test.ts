/**
 * `vfio-ts nvme identify|perf` against our NVMe device served by `vfio-ts serve --device nvme`
 * (a child process) on a temporary socket: text and --json, verified perf with the submission
 * queue in host memory and in the CMB (write-combining over vfio-user), checked on the device's
 * side by the server's shutdown line; the refusal to write over an image mke2fs made, --force;
 * --help from each subcommand's flag table, and usage errors (exit 2, nothing opened) versus
 * failures (exit 1).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { helpText, parseArgs } from '../../src/cli/args.js';
import { NVME_COMMANDS, NVME_PERF, perfArgs, runWith } from '../../src/cli/nvme.js';
import {
  type DeviceCounts,
  IMAGE_BYTES,
  readImage,
  type ServedNvme,
  serveNvme,
} from '../driver/nvme/device-rig.js';

async function cli(args: string[]): Promise<{ status: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runWith(args, { log: (l) => out.push(l), error: (l) => err.push(l) });
  return { status, out: out.join('\n'), err: err.join('\n') };
}

/** What the device did in the next session the server logged, against the counts before it. */
async function session(server: ServedNvme, last: { counts: DeviceCounts }): Promise<DeviceCounts> {
  const now = await server.counts();
  const d = {
    commands: now.commands - last.counts.commands,
    sqesFromCmb: now.sqesFromCmb - last.counts.sqesFromCmb,
    reads: now.reads - last.counts.reads,
    writes: now.writes - last.counts.writes,
  };
  last.counts = now;
  return d;
}

describe('vfio-ts nvme against vfio-ts serve --device nvme', () => {
  let dir = '';
  let server: ServedNvme;
  const last = { counts: { commands: 0, sqesFromCmb: 0, reads: 0, writes: 0 } };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-cli-'));
    server = await serveNvme(dir, join(dir, 'disk.img'));
  });
  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('identify: model, serial, version, CMB with its WC paths, the namespace (text and --json)', async () => {
    const text = await cli(['identify', server.socket]);
    assert.equal(text.status, 0, text.err);
    assert.match(
      text.out,
      /\(vfio-user\): vfio-ts NVMe controller, serial vfiots-[0-9a-f]{12}, firmware \S+, NVMe 1\.4\.0/,
    );
    assert.match(
      text.out,
      /CMB: BAR2 offset 0x0 size 2097152 bytes, submission queues yes, completion queues no; write-combining via cookie, dma-buf, alias-region/,
    );
    assert.match(text.out, /largest transfer 524288 bytes/);
    assert.match(text.out, /namespace 1: 16384 blocks of 512 bytes \(8388608 bytes\)/);
    const json = await cli(['identify', server.socket, '--json']);
    assert.equal(json.status, 0, json.err);
    const r = JSON.parse(json.out);
    assert.equal(r.model, 'vfio-ts NVMe controller');
    assert.equal(r.transport, 'vfio-user');
    assert.equal(r.cmb.bar, 2);
    assert.equal(r.cmb.size, 0x200000);
    assert.deepEqual(r.cmb.wcPaths, ['cookie', 'dma-buf', 'alias-region']);
    assert.deepEqual(r.namespaces, [{ nsid: 1, blocks: 0x4000, blockBytes: 512, bytes: 0x800000 }]);
    // Two identify sessions: each shut the controller down, neither moved data.
    for (let i = 0; i < 2; i++) {
      const d = await session(server, last);
      assert.deepEqual([d.reads, d.writes, d.sqesFromCmb], [0, 0, 0]);
    }
  });

  for (const sq of ['host', 'cmb'] as const)
    it(`perf --rw randwrite --verify --sq ${sq}: IOPS, MB/s, p50/p99, every block checked, the SQ where asked`, async () => {
      const r = await cli([
        'perf',
        server.socket,
        '--rw',
        'randwrite',
        '--bs',
        '4k',
        '--qd',
        '4',
        '--seconds',
        '0.5',
        '--sq',
        sq,
        '--verify',
        '--json',
      ]);
      assert.equal(r.status, 0, r.err);
      const j = JSON.parse(r.out);
      assert.deepEqual([j.rw, j.bs, j.qd, j.sq, j.transport], ['randwrite', 4096, 4, sq, 'vfio-user']);
      if (sq === 'cmb') assert.deepEqual(j.cmbMapping, { via: 'cookie', attribute: 'wc' });
      assert.ok(j.ios > 0 && j.iops > 0 && j.mbPerSec > 0 && j.latencyUs.p99 >= j.latencyUs.p50);
      assert.ok(j.verifiedBlocks >= 8 && j.verifiedBlocks % 8 === 0, `${j.verifiedBlocks} blocks verified`);
      // The device's side: the I/Os written, the signature probe and the read-back, fetched from
      // the CMB with --sq cmb (every one) and from host memory otherwise (none).
      const d = await session(server, last);
      assert.equal(d.writes, j.ios);
      assert.equal(d.reads, 1 + j.verifiedBlocks / 8);
      assert.equal(d.sqesFromCmb, sq === 'cmb' ? d.reads + d.writes : 0);
    });

  it('perf --json with interrupts and a read mode, SQ in the CMB', async () => {
    const r = await cli([
      'perf',
      server.socket,
      '--rw',
      'randread',
      '--bs',
      '8k',
      '--qd',
      '2',
      '--seconds',
      '0.3',
      '--completions',
      'interrupt',
      '--sq',
      'cmb',
      '--json',
    ]);
    assert.equal(r.status, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(
      [j.rw, j.bs, j.qd, j.sq, j.completions, j.transport],
      ['randread', 8192, 2, 'cmb', 'interrupt', 'vfio-user'],
    );
    assert.ok(j.ios > 0 && j.iops > 0 && j.latencyUs.p99 >= j.latencyUs.p50);
    const d = await session(server, last);
    assert.deepEqual([d.reads, d.writes, d.sqesFromCmb], [j.ios, 0, j.ios]);
  });
});

describe('vfio-ts nvme perf against an image holding a filesystem', () => {
  it('refuses to write over an ext4 mke2fs made (exit 1, naming it and --force), --verify too; --force writes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-cli-ext4-'));
    const image = join(dir, 'ext4.img');
    execFileSync('truncate', ['-s', String(IMAGE_BYTES), image]);
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', image]);
    const server = await serveNvme(dir, image);
    try {
      const perf = (...extra: string[]) =>
        cli(['perf', server.socket, '--seconds', '0.2', '--qd', '2', ...extra]);
      for (const args of [
        ['--rw', 'write'],
        ['--rw', 'randwrite', '--sq', 'cmb'],
        ['--rw', 'randread', '--verify'],
      ]) {
        const r = await perf(...args);
        assert.equal(r.status, 1, args.join(' '));
        assert.match(r.err, /EPERM.*ext2\/3\/4 filesystem.*refusing to write to it \(--force writes anyway/);
      }
      assert.deepEqual([...readImage(image, 1080, 2)], [0x53, 0xef], 'the superblock is intact');
      const read = await perf('--rw', 'randread');
      assert.equal(read.status, 0, read.err);
      for (let i = 0; i < 4; i++) assert.equal((await server.counts()).writes, 0, 'nothing written');
      const forced = await perf('--rw', 'write', '--force');
      assert.equal(forced.status, 0, forced.err);
      assert.ok((await server.counts()).writes > 0);
      assert.notDeepEqual([...readImage(image, 1080, 2)], [0x53, 0xef], 'the forced write went over it');
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
describe('vfio-ts nvme arguments', () => {
  it('--help: each subcommand explains every flag in its table; nvme --help is both', async () => {
    const both = await cli(['--help']);
    assert.equal(both.status, 0, both.err);
    for (const [name, spec] of Object.entries(NVME_COMMANDS)) {
      const r = await cli([name, '--help']);
      assert.equal(r.status, 0, r.err);
      assert.equal(r.out, helpText(spec));
      assert.match(r.out, new RegExp(`^usage: vfio-ts nvme ${name} SOCKET\\|PCI-ADDRESS`));
      for (const f of spec.flags) assert.match(r.out, new RegExp(`\\n {2}${f.name} `), `${name} ${f.name}`);
      assert.equal((await cli([name, '/x', '-h'])).out, r.out);
      assert.ok(both.out.includes(r.out), `nvme --help holds nvme ${name} --help`);
    }
    assert.deepEqual(
      NVME_PERF.flags.map((f) => f.name),
      [
        '--rw',
        '--bs',
        '--qd',
        '--seconds',
        '--sq',
        '--completions',
        '--verify',
        '--force',
        '--nsid',
        '--size',
        '--json',
      ],
    );
  });

  it('usage errors: one line naming the problem and its help, exit 2, before the target is opened', async () => {
    // The target does not exist: opening it would fail (exit 1, ENOENT), so exit 2 means the
    // command line was refused first.
    const T = '/nonexistent/nvme.sock';
    const perfHelp = '(vfio-ts nvme perf --help)';
    const table: [string[], string][] = [
      [[], 'vfio-ts nvme: identify or perf is missing (vfio-ts nvme --help)'],
      [
        ['frobnicate', T],
        "vfio-ts nvme: unknown nvme command 'frobnicate' (identify or perf) (vfio-ts nvme --help)",
      ],
      [
        ['--json', 'identify', T],
        "vfio-ts nvme: unknown option '--json' (identify or perf comes first) (vfio-ts nvme --help)",
      ],
      [['identify'], 'vfio-ts nvme identify: SOCKET|PCI-ADDRESS is missing (vfio-ts nvme identify --help)'],
      [
        ['identify', T, '/y'],
        `vfio-ts nvme identify: unexpected operand '/y' after SOCKET|PCI-ADDRESS (vfio-ts nvme identify --help)`,
      ],
      [
        ['identify', T, '--rw', 'read'],
        "vfio-ts nvme identify: unknown option '--rw' (vfio-ts nvme identify --help)",
      ],
      [['perf', T], `vfio-ts nvme perf: --rw is required: read, write, randread or randwrite ${perfHelp}`],
      [
        ['perf', T, '--rw', 'sideways'],
        `vfio-ts nvme perf: --rw must be read, write, randread or randwrite, not 'sideways' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--qd', '0'],
        `vfio-ts nvme perf: --qd needs an integer from 1 to 4095, not '0' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--qd', '4096'],
        `vfio-ts nvme perf: --qd needs an integer from 1 to 4095, not '4096' ${perfHelp}`,
      ],
      [['perf', T, '--rw', 'read', '--qd'], `vfio-ts nvme perf: --qd needs a value (N) ${perfHelp}`],
      [
        ['perf', T, '--rw', 'read', '--bs', '3'],
        `vfio-ts nvme perf: --bs needs a multiple of 512 bytes (the smallest NVMe logical block), not '3' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--bs', '4q'],
        `vfio-ts nvme perf: --bs needs a byte count (4096, 4k, 64K, 1m), not '4q' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--size', '1.5k'],
        `vfio-ts nvme perf: --size needs a byte count (4096, 4k, 64K, 1m), not '1.5k' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--sq', 'gpu'],
        `vfio-ts nvme perf: --sq must be host or cmb, not 'gpu' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--completions', 'irq'],
        `vfio-ts nvme perf: --completions must be poll or interrupt, not 'irq' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--seconds', '0'],
        `vfio-ts nvme perf: --seconds needs a positive number, not '0' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--nsid', '0'],
        `vfio-ts nvme perf: --nsid needs an integer from 1 to 4294967294, not '0' ${perfHelp}`,
      ],
      [
        ['perf', T, '--rw', 'read', '--nsid', '4294967295'],
        `vfio-ts nvme perf: --nsid needs an integer from 1 to 4294967294, not '4294967295' ${perfHelp}`,
      ],
      [['perf', T, '--rw', 'read', '--verify=yes'], `vfio-ts nvme perf: --verify takes no value ${perfHelp}`],
      [['perf', T, '--bogus'], `vfio-ts nvme perf: unknown option '--bogus' ${perfHelp}`],
    ];
    for (const [args, line] of table) {
      const r = await cli(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.err}`);
      assert.equal(r.err, line, args.join(' '));
      assert.equal(r.out, '', args.join(' '));
    }
  });

  it('--rw sideways, --qd 0, --bs 3 and an unknown flag: exit 2 with one line', async () => {
    for (const bad of [['--rw', 'sideways'], ['--qd', '0'], ['--bs', '3'], ['--frobnicate']]) {
      const r = await cli([
        'perf',
        '/nonexistent/nvme.sock',
        ...(bad[0] === '--rw' ? [] : ['--rw', 'read']),
        ...bad,
      ]);
      assert.equal(r.status, 2, `${bad.join(' ')}: ${r.err}`);
      assert.match(r.err, /^vfio-ts nvme perf: [^\n]+ \(vfio-ts nvme perf --help\)$/, bad.join(' '));
      assert.ok(r.err.includes(bad[0]!), `the line names ${bad[0]}: ${r.err}`);
    }
  });

  it('sizes as fio writes them: 4k, 64K, 1m, 4096, 1g; defaults without flags', () => {
    const parse = (...args: string[]) => perfArgs(parseArgs(NVME_PERF, ['/x', '--rw', 'randread', ...args]));
    assert.deepEqual(
      ['4k', '64K', '1m', '4096', '1g'].map((bs) => parse('--bs', bs).bs),
      [4096, 65536, 1 << 20, 4096, 1 << 30],
    );
    assert.equal(parse('--size', '2m').size, 2n << 20n);
    assert.deepEqual(parse(), {
      rw: 'randread',
      bs: 4096,
      qd: 1,
      seconds: 5,
      sq: 'host',
      completions: 'poll',
      verify: false,
      force: false,
      nsid: 1,
      size: undefined,
    });
  });

  it('failures exit 1: a missing socket, and a target that is not a socket named once', async () => {
    const missing = await cli(['perf', '/nonexistent/nvme.sock', '--rw', 'read']);
    assert.equal(missing.status, 1, missing.err);
    assert.match(missing.err, /^vfio-ts nvme perf: \/nonexistent\/nvme\.sock: ENOENT/);
    const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-args-'));
    try {
      const file = join(dir, 'plain');
      writeFileSync(file, 'not a socket');
      const r = await cli(['identify', file]);
      assert.equal(r.status, 1, r.err);
      assert.equal(r.err, `vfio-ts nvme identify: ${file}: ENOTSOCK (not a socket: it is a regular file)`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
