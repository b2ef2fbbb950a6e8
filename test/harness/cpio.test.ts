/**
 * The newc writer and the marker parser, without QEMU. The archive is listed by cpio(1) when it
 * is installed (scripts/provision.sh installs it), so the format is checked by another reader.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { requireOrSkip } from '../helpers/env.js';
import { archivePath, writeCpio } from './cpio.js';
import { parseMarkers } from './qemu.js';

describe('newc cpio writer', () => {
  const archive = writeCpio([
    { kind: 'file', path: '/etc/vfio-ts/nonce', data: Buffer.from('abc\n') },
    { kind: 'symlink', path: 'bin/sh', target: '/bin/busybox' },
    { kind: 'dir', path: '/tmp', mode: 0o1777 },
    { kind: 'file', path: '/odd', data: Buffer.from('12345'), mode: 0o755 },
  ]);

  it('starts with the newc magic and ends with the trailer, padded to 512', () => {
    assert.equal(archive.subarray(0, 6).toString('ascii'), '070701');
    assert.ok(archive.includes(Buffer.from('TRAILER!!!\0')));
    assert.equal(archive.length % 512, 0);
  });

  it('is read back by cpio(1) with parents added', (t) => {
    const which = spawnSync('cpio', ['--version']);
    if (!requireOrSkip(t, which.status === 0 ? undefined : 'cpio(1)', 'apt-get install cpio')) return;
    const r = spawnSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const names = r.stdout
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).slice(8).join(' '));
    assert.deepEqual(names, [
      'etc',
      'etc/vfio-ts',
      'etc/vfio-ts/nonce',
      'bin',
      'bin/sh -> /bin/busybox',
      'tmp',
      'odd',
    ]);
    assert.match(r.stdout, /^drwxrwxrwt .* tmp$/m);
    assert.match(r.stdout, /^-rwxr-xr-x .* 5 .* odd$/m);
  });

  it('keeps every path inside the root and rejects the root itself', () => {
    for (const bad of ['', '/', '..', '/..', '.']) assert.throws(() => archivePath(bad), /bad path/);
    assert.equal(archivePath('/a/./b//c'), 'a/b/c');
    assert.equal(archivePath('../x'), 'x');
    assert.equal(archivePath('/a/../../x'), 'x');
  });
});

describe('guest markers', () => {
  it('extracts the script output and status, ignoring a different nonce', () => {
    const text =
      'boot noise\n@@VFIO-TS-GUEST-BEGIN n1@@\nhello\n@@VFIO-TS-GUEST-END n0 status=0@@\n' +
      '@@VFIO-TS-GUEST-END n1 status=3@@\n[ 1.0] reboot: Power down\n';
    assert.deepEqual(parseMarkers(text, 'n1'), {
      output: 'hello\n@@VFIO-TS-GUEST-END n0 status=0@@\n',
      status: 3,
    });
    assert.deepEqual(parseMarkers('boot noise only\n', 'n1'), { output: '', status: undefined });
  });
});
