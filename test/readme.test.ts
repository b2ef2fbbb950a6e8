/** The README's library example, run as written (with the package name pointed at dist/). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';

test('README example runs and prints what its comment says', () => {
  const readme = readFileSync('README.md', 'utf8');
  const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block, 'README has a ```ts block');
  const dir = mkdtempSync(join(tmpdir(), 'vfio-readme-'));
  try {
    const file = join(dir, 'example.mjs');
    writeFileSync(file, block.replace(`from 'vfio-ts'`, `from '${resolve('dist/src/index.js')}'`));
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    const promised = /\/\/ (cookie wc .*)$/m.exec(block)?.[1];
    assert.equal(r.stdout.trim(), promised);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
