/**
 * `npm run bench [-- --peer PATH [--peer-bar N]]`: every benchmark in bench/, one after the
 * other, each in its own process, every one given the same arguments. A section that fails is
 * reported and the run goes on; the exit status says whether all of them ran.
 */

import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The sections, in order (helpers such as lib, c and echo are not sections). */
const SECTIONS = ['native', 'core', 'cookies', 'dma-maps', 'dma-mapped', 'dma', 'fast-path', 'vfio-user'];

const failed: string[] = [];
for (const name of SECTIONS) {
  console.log(`\n== ${name}`);
  const r = spawnSync(process.execPath, [join(here, `${name}.js`), ...process.argv.slice(2)], {
    stdio: 'inherit',
  });
  if (r.status !== 0) failed.push(`${name} (${r.signal ?? `exit ${r.status}`})`);
}
if (failed.length > 0) {
  console.log(`\nsections that failed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
