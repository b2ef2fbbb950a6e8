/** `npm run bench`: every benchmark in bench/, one after the other. */

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
for (const f of readdirSync(here)
  .filter((n) => n.endsWith('.js') && !['run.js', 'lib.js'].includes(n))
  .sort()) {
  console.log(`\n== ${f.replace(/\.js$/, '')}`);
  spawnSync(process.execPath, [join(here, f)], { stdio: 'inherit' });
}
