/** `npm start` is `vfio-ts demo`: it must exit 0 with every check passing, through the real CLI. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

test('vfio-ts demo maps ivshmem BAR2 WC through all four paths and exits 0', () => {
  const r = spawnSync(process.execPath, ['dist/src/cli/main.js', 'demo'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  for (const path of ['rfc-region-flags', 'cookie', 'alias-region', 'dma-buf'])
    assert.match(r.stdout, new RegExp(`ok +${path}: attribute wc, via ${path}, region read matches`));
  assert.match(r.stdout, /\[READ WRITE MMAP PREFETCH\]\n\t\tmmap areas: \[0x0-0x3fffff\]\n/);
  // The nvme model's MSI-X table (0x2000) is not among BAR0's mmap areas.
  assert.match(r.stdout, /Capability: sparse mmap: \[0x0\+0x2000\]\n\t\tmmap areas: \[0x0-0x1fff\]\n/);
  // ...and its BAR0, memory but not prefetchable, has no WC path: every path asks the one gate.
  const nvme = r.stdout.slice(r.stdout.indexOf('nvme model'), r.stdout.indexOf('Write-combining mappings'));
  assert.match(nvme, /Region 0 \(BAR0\)/);
  assert.doesNotMatch(nvme, /Write-combining paths/);
  assert.match(r.stdout, /ok +nvme BAR0 refuses WC: map WC: EOPNOTSUPP/);
  assert.match(r.stdout, /demo: (\d+) of \1 checks passed/);
});

test('vfio-ts with no command prints usage and exits 2; an unknown command exits 2', () => {
  const none = spawnSync(process.execPath, ['dist/src/cli/main.js'], { encoding: 'utf8' });
  assert.equal(none.status, 2);
  assert.match(none.stdout, /usage: vfio-ts <command>/);
  const bad = spawnSync(process.execPath, ['dist/src/cli/main.js', 'frobnicate'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown command 'frobnicate'/);
});
