/**
 * The DMA request window (src/server/dma-window.ts): requests past its byte or count limit wait
 * in order of arrival; a request larger than the window still goes alone; closing fails the
 * waiting ones with ECONNRESET.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioError } from '../../src/errors.js';
import { RequestWindow } from '../../src/server/dma-window.js';

const tick = () => new Promise((r) => setImmediate(r));

test('requests wait, in order, for bytes and for a slot', async () => {
  const w = new RequestWindow(100, 3);
  const order: string[] = [];
  const take = (name: string, cost: number) => w.acquire(cost).then(() => order.push(name));
  await take('a', 60);
  await take('b', 40);
  const c = take('c', 10); // 110 bytes > 100: waits
  const d = take('d', 1); // fits, but c is first in line: waits too
  await tick();
  assert.deepEqual(order, ['a', 'b']);
  assert.deepEqual([w.outstanding, w.queued], [2, 2]);
  w.release(60);
  await Promise.all([c, d]);
  assert.deepEqual(order, ['a', 'b', 'c', 'd']);
  assert.equal(w.outstanding, 3);
  const e = take('e', 1); // three outstanding: the count limit
  await tick();
  assert.equal(w.queued, 1);
  w.release(1);
  await e;
  assert.deepEqual(order, ['a', 'b', 'c', 'd', 'e']);
});

test('a request larger than the window goes when nothing else is outstanding', async () => {
  const w = new RequestWindow(100, 3);
  await w.acquire(500);
  const next = w.acquire(1);
  await tick();
  assert.equal(w.queued, 1);
  w.release(500);
  await next;
  assert.equal(w.outstanding, 1);
});

test('close fails the waiting requests and later ones with ECONNRESET', async () => {
  const w = new RequestWindow(10, 1);
  await w.acquire(5);
  const waiting = w.acquire(5);
  w.close();
  const reset = (e: unknown) => e instanceof VfioError && e.errno === Errno.ECONNRESET;
  await assert.rejects(waiting, reset);
  await assert.rejects(w.acquire(1), reset);
});
