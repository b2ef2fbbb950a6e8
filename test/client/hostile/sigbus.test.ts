/**
 * Why the client refuses unsealed fds by default (src/client/limits.ts UnsealedFdPolicy): a
 * server that shrinks the file behind a mapping kills the client with SIGBUS on its next touch.
 * Run in a child process (sigbus-child.ts), since under 'map' the child dies.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const child = fileURLToPath(new URL('./sigbus-child.js', import.meta.url));
/** The child under `policy` (none: the client's default). */
const run = (...policy: string[]) =>
  spawnSync(process.execPath, [child, ...policy], { encoding: 'utf8', timeout: 60_000 });

test("default policy 'refuse': an unsealed region fd is not mapped (EPERM); the process lives", () => {
  const r = run();
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /refused EPERM: mmap: EPERM \(region 0's fd from VFIO_USER_DEVICE_GET_REGION_INFO is not sealed/,
  );
});

test("policy 'map': the same fd is mapped, and the server shrinking it kills the client (SIGBUS)", () => {
  const r = run('map');
  assert.match(r.stdout, /^mapped$/m);
  assert.doesNotMatch(r.stdout, /touched after the shrink/);
  assert.equal(r.signal, 'SIGBUS', `status ${r.status}, stderr ${r.stderr}`);
});
