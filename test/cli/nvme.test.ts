/**
 * `vfio-ts nvme identify|perf` against our NVMe device served by `vfio-ts serve --device nvme`
 * (a child process) on a temporary socket: text and --json, verified perf with the submission
 * queue in host memory and in the CMB (write-combining over vfio-user), checked on the device's
 * side by the server's shutdown line; the refusal to write over an image mke2fs made, --force;
 * --help naming every flag, and usage errors (exit 2) versus failures (exit 1).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PERF_FLAGS, parseSize, runWith } from '../../src/cli/nvme.js';
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
  it('--help explains every flag', async () => {
    const r = await cli(['perf', '--help']);
    assert.equal(r.status, 0);
    for (const flag of PERF_FLAGS) assert.match(r.out, new RegExp(`\\n {2}${flag} `), flag);
    assert.match(r.out, /identify .*--json/);
  });

  it('usage errors exit 2, failures exit 1', async () => {
    const table: [string[], number, RegExp][] = [
      [[], 2, /usage: vfio-ts nvme identify/],
      [['frobnicate', '/x'], 2, /unknown nvme command 'frobnicate'/],
      [['identify'], 2, /one <target> is needed/],
      [['perf', '/x', '--qd'], 2, /--qd needs a value/],
      [['perf', '/x', '--bogus'], 2, /unknown option --bogus/],
      [
        ['perf', '/nonexistent/nvme.sock', '--rw', 'sideways'],
        1,
        /--rw must be one of read, write, randread, randwrite/,
      ],
      [['perf', '/nonexistent/nvme.sock', '--rw', 'read', '--sq', 'gpu'], 1, /--sq must be host or cmb/],
      [['perf', '/nonexistent/nvme.sock', '--rw', 'read', '--qd', '0'], 1, /--qd needs an integer >= 1/],
      [['perf', '/nonexistent/nvme.sock', '--rw', 'read', '--bs', '4q'], 1, /size '4q'/],
      [['perf', '/nonexistent/nvme.sock', '--rw', 'read'], 1, /ENOENT|ECONNREFUSED/],
    ];
    for (const [args, status, re] of table) {
      const r = await cli(args);
      assert.equal(r.status, status, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re, args.join(' '));
    }
  });

  it('a target that is not a socket: one line naming it once, exit 1', async () => {
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

  it('sizes: 4k, 64K, 1m, 4096', () => {
    assert.deepEqual(['4k', '64K', '1m', '4096', '1g'].map(parseSize), [4096, 65536, 1 << 20, 4096, 1 << 30]);
    for (const bad of ['', '4kb', '-4k', '0', '1.5k']) assert.throws(() => parseSize(bad), /EINVAL/, bad);
  });
});
