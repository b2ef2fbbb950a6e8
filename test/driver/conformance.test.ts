/**
 * Runs the driver conformance table (cases.ts) on the in-process core and on our vfio-user
 * client talking to our server: every case must give exactly what the table says, on both, and
 * leave no fd open.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openFdCount } from '../../src/native/index.js';
import { BACKENDS, CASES, expected, type Json } from './cases.js';

for (const backend of BACKENDS) {
  describe(`driver conformance: ${backend.label ?? backend.name}`, () => {
    for (const c of CASES) {
      const want = expected(c, backend.name);
      // Every case states what both backends here give; a case without one is a table error.
      test(c.name, async () => {
        assert.notEqual(want, undefined, `no expectation for ${backend.name}`);
        const fdsBefore = openFdCount();
        const o = await backend.open(c.device);
        let got: Json;
        try {
          got = await c.run(o.dev);
        } finally {
          await o.close();
        }
        assert.deepEqual(got, want);
        // Everything the case opened (eventfds, memfds, mmap fds, sockets) is closed again.
        await new Promise((r) => setTimeout(r, 5));
        assert.equal(openFdCount(), fdsBefore, 'fd count after close');
      });
    }
  });
}
