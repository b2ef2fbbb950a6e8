/**
 * This thread's libuv loop as src/native/event-loop.ts sees it: the request count follows an fs
 * request in the thread pool (so the struct offset it reads is libuv's), and the backend fd
 * becomes readable in poll(2) when that request finishes, before the event loop has run.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { closeFd, eventLoop, POLL_WAKE, POLLIN, pollOne, socketPair } from '../../src/native/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-event-loop-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('eventLoop: a thread-pool request is counted while in flight and wakes poll(2) on the fd when done', async () => {
  const uv = eventLoop();
  assert.equal(eventLoop(), uv, 'one per thread');
  assert.ok(uv.fd >= 0);
  const fh = await open(join(dir, 'f'), 'w');
  // A socket that never becomes readable: only libuv's fd can end the wait.
  const [a, b] = socketPair();
  try {
    for (const op of ['write', 'datasync'] as const) {
      await new Promise((r) => setImmediate(r)); // nothing of ours left in flight
      const before = uv.activeRequests;
      let done = false;
      const p = (op === 'write' ? fh.write(new Uint8Array(4096), 0, 4096, 0) : fh.datasync()).then(() => {
        done = true;
      });
      assert.equal(uv.activeRequests, before + 1, `${op} in flight`);
      const ev = pollOne(a, POLLIN, 10_000, uv.fd);
      assert.equal(ev, POLL_WAKE, `${op}: libuv's fd readable, the socket not`);
      assert.equal(done, false, 'the completion has not run yet: the event loop has not turned');
      await p;
      // (Another request in flight at `before` may have finished meanwhile, none can have begun.)
      assert.ok(
        uv.activeRequests <= before,
        `${op} finished: ${uv.activeRequests} in flight, ${before} before`,
      );
    }
  } finally {
    await fh.close();
    closeFd(a);
    closeFd(b);
  }
});
