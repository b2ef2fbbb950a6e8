/**
 * `vfio-ts nvme identify|perf` against the fake NVMe controller served by our vfio-user server
 * on a temporary socket: text and --json, verified perf with the submission queue in host
 * memory and in the CMB (a write-combining cookie over vfio-user), the refusal to write over a
 * filesystem, --help naming every flag, and usage errors (exit 2) versus failures (exit 1).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PERF_FLAGS, parseSize, runWith } from '../../src/cli/nvme.js';
import { VfioUserServer } from '../../src/server/index.js';
import { type FakeNvme, fakeNvmeDevice } from '../driver/nvme/fake-nvme.js';

async function cli(args: string[]): Promise<{ status: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runWith(args, { log: (l) => out.push(l), error: (l) => err.push(l) });
  return { status, out: out.join('\n'), err: err.join('\n') };
}

describe('vfio-ts nvme over a vfio-user socket', () => {
  let dir = '';
  let sock = '';
  let fake: FakeNvme;
  let server: VfioUserServer;
  let closeCore: () => void;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-cli-'));
    sock = join(dir, 'nvme.sock');
    const d = fakeNvmeDevice({ blocks: 8192, blockBytes: 512 });
    fake = d.fake;
    closeCore = () => d.core.close();
    server = new VfioUserServer(d.core);
    server.listen(sock);
  });
  after(async () => {
    await server.idle();
    server.stop();
    closeCore();
    rmSync(dir, { recursive: true, force: true });
  });

  it('identify: model, serial, version, CMB with its WC paths, the namespace (text and --json)', async () => {
    const text = await cli(['identify', sock]);
    assert.equal(text.status, 0, text.err);
    assert.match(text.out, /\(vfio-user\): vfio-ts fake nvme, serial FAKE0001, firmware 1\.0, NVMe 1\.4\.0/);
    assert.match(
      text.out,
      /CMB: BAR2 offset 0x0 size 1048576 bytes, submission queues yes, completion queues no; write-combining via cookie/,
    );
    assert.match(text.out, /namespace 1: 8192 blocks of 512 bytes \(4194304 bytes\)/);
    const json = await cli(['identify', sock, '--json']);
    assert.equal(json.status, 0, json.err);
    const r = JSON.parse(json.out);
    assert.equal(r.model, 'vfio-ts fake nvme');
    assert.equal(r.transport, 'vfio-user');
    assert.equal(r.cmb.bar, 2);
    assert.equal(r.cmb.size, 0x100000);
    assert.ok(r.cmb.wcPaths.includes('cookie'));
    assert.deepEqual(r.namespaces, [{ nsid: 1, blocks: 0x2000, blockBytes: 512, bytes: 0x400000 }]);
  });

  for (const sq of ['host', 'cmb'] as const)
    it(`perf --rw randwrite --verify --sq ${sq}: IOPS, MB/s, p50/p99, every block checked`, async () => {
      const r = await cli([
        'perf',
        sock,
        '--rw',
        'randwrite',
        '--bs',
        '4k',
        '--qd',
        '4',
        '--seconds',
        '0.3',
        '--sq',
        sq,
        '--verify',
      ]);
      assert.equal(r.status, 0, r.err);
      assert.match(
        r.out,
        new RegExp(
          `randwrite bs=4096 qd=4 sq=${sq === 'cmb' ? 'cmb \\(wc via cookie\\)' : 'host'} completions=poll`,
        ),
      );
      assert.match(r.out, /\d+ I\/Os in 0\.\d\d s: [\d.]+ IOPS, [\d.]+ MB\/s/);
      assert.match(r.out, /latency \(us\): p50 [\d.]+ {2}p99 [\d.]+/);
      assert.match(r.out, /verify: \d+ logical blocks checked, all as written/);
    });

  it('perf --json with interrupts and a read mode', async () => {
    const r = await cli([
      'perf',
      sock,
      '--rw',
      'randread',
      '--bs',
      '8k',
      '--qd',
      '2',
      '--seconds',
      '0.2',
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
    assert.deepEqual(j.cmbMapping, { via: 'cookie', attribute: 'wc' });
    assert.ok(j.ios > 0 && j.iops > 0 && j.latencyUs.p99 >= j.latencyUs.p50);
  });

  it('refuses to write over a filesystem (exit 1, naming it and --force); --force writes', async () => {
    fake.disk.set([0x58, 0x46, 0x53, 0x42], 0); // XFSB
    const r = await cli(['perf', sock, '--rw', 'write', '--seconds', '0.1']);
    assert.equal(r.status, 1);
    assert.match(r.err, /EPERM.*XFS filesystem.*--force/);
    const forced = await cli(['perf', sock, '--rw', 'write', '--seconds', '0.1', '--force']);
    assert.equal(forced.status, 0, forced.err);
    assert.notEqual(fake.disk[0], 0x58);
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

  it('sizes: 4k, 64K, 1m, 4096', () => {
    assert.deepEqual(['4k', '64K', '1m', '4096', '1g'].map(parseSize), [4096, 65536, 1 << 20, 4096, 1 << 30]);
    for (const bad of ['', '4kb', '-4k', '0', '1.5k']) assert.throws(() => parseSize(bad), /EINVAL/, bad);
  });
});
