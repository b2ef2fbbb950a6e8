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
  // The devices print as `vfio-ts info` prints them: lspci's lines, then VFIO's, one number format.
  assert.match(r.stdout, /^ivshmem \S.*\[1af4:1110\] \(rev 01\)\n/);
  assert.match(r.stdout, /\n\tRegion 2: Memory at [0-9a-f]+ \(64-bit, prefetchable\) \[size=4M\]\n/);
  assert.match(
    r.stdout,
    /\n\tVFIO region 2 \(BAR2\): offset 20000000000 \[size=4M\] \[READ WRITE MMAP PREFETCH\]\n\t\tWrite-combining: cookie, dma-buf, alias-region, rfc-region-flags\n/,
  );
  assert.doesNotMatch(r.stdout, /0x[0-9a-f]/, 'numbers in one format: hex without 0x, as lspci');
  // The nvme model's MSI-X table (0x2000) is not among BAR0's mmap areas, and its BAR0, memory
  // but not prefetchable, has no WC path: every path asks the one gate.
  const nvme = r.stdout.slice(r.stdout.indexOf('\nnvme-model'), r.stdout.indexOf('Write-combining mappings'));
  assert.match(
    nvme,
    /\n\tCapabilities: \[40\] MSI-X: Enable- Count=65 Masked-\n\t\tVector table: BAR=0 offset=00002000\n/,
  );
  assert.match(
    nvme,
    /\n\tVFIO region 0 \(BAR0\): offset 0 \[size=16K\] \[READ WRITE MMAP CAPS\]\n\t\tSparse mmap: 0-1fff \[size=8K\]\n\t\tWrite-combining: none\n/,
  );
  assert.match(r.stdout, /ok +nvme BAR0 refuses WC: map WC: EOPNOTSUPP/);
  assert.match(r.stdout, /ok +identification register: 010000ed/);
  assert.match(r.stdout, /demo: (\d+) of \1 checks passed/);
});
