/**
 * The server's named limits (src/server/limits.ts, docs/robustness.md): each breach gets its
 * documented errno or outcome; back-pressure keeps a flooding client's queued replies bounded
 * without dropping any; --allow-uid (SO_PEERCRED) refuses other uids before reading a byte.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { VfioError } from '../../src/errors.js';
import {
  closeFd,
  eventfdCreate,
  getuid,
  memfdCreate,
  sendMsg,
  socketPair,
  waitReadable,
} from '../../src/native/index.js';
import { parseJson } from '../../src/wire/vfio-user.js';
import { RawClient } from '../fuzz/client.js';
import { concat, message, u32, u64, versionPayload } from '../fuzz/server.js';
import { rig } from './rig.js';

const dmaMap = (iova: bigint, size: bigint) => concat(u32(32, 3), u64(0n), u64(iova), u64(size));

/** After a client was dropped: a new one negotiates and gets GET_INFO answered. */
async function nextClientIsServed(r: ReturnType<typeof rig>): Promise<void> {
  const d = r.connect();
  await d.negotiate();
  assert.equal((await d.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0);
  d.close();
  await r.server.idle();
}

describe('limits: each breach gets its errno', () => {
  it('VERSION offers the configured limits', async () => {
    const r = rig('edu', { limits: { maxDataXferSize: 8192, maxMsgFds: 2, maxDmaMaps: 3 } });
    const c = r.connect();
    const reply = await c.call(C.VERSION, versionPayload(0));
    assert.equal(reply?.errno, 0);
    const text = Buffer.from(reply!.payload.subarray(4, reply!.payload.length - 1)).toString();
    const caps = (parseJson(text) as { capabilities: Record<string, unknown> }).capabilities;
    assert.equal(caps.max_data_xfer_size, 8192);
    assert.equal(caps.max_msg_fds, 2);
    assert.equal(caps.max_dma_maps, 3);
    c.close();
    await r.server.idle();
    r.close();
  });

  it('max DMA maps: the next DMA_MAP is EINVAL (libvfio-user); unmapping makes room', async () => {
    const r = rig('edu', { limits: { maxDmaMaps: 2 } });
    const c = r.connect();
    await c.negotiate();
    const mfd = memfdCreate('ram', 0x4000);
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x10000n, 0x1000n), [mfd]))?.errno, 0);
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x20000n, 0x1000n), [mfd]))?.errno, 0);
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x30000n, 0x1000n), [mfd]))?.errno, Errno.EINVAL);
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x30000n, 0x1000n)))?.errno, Errno.EINVAL);
    // At the limit an identical re-map is still success (checked before the count, as there).
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x20000n, 0x1000n), [mfd]))?.errno, 0);
    assert.equal(r.device.dma.count, 2);
    const unmap = concat(u32(24, 0), u64(0x10000n), u64(0x1000n));
    assert.equal((await c.call(C.DMA_UNMAP, unmap))?.errno, 0);
    assert.equal((await c.call(C.DMA_MAP, dmaMap(0x30000n, 0x1000n), [mfd]))?.errno, 0);
    closeFd(mfd);
    c.close();
    await r.server.idle();
    r.close();
  });

  it('max data per read/write: count above it is EINVAL, at it works', async () => {
    // A message size with room for more than the transfer limit, so the write reaches the check.
    const r = rig('ivshmem', { limits: { maxDataXferSize: 4096, maxMessageSize: 8192 } });
    const c = r.connect();
    await c.negotiate();
    const read = (n: number) => concat(u64(0n), u32(2, n));
    assert.equal((await c.call(C.REGION_READ, read(4096)))?.payload.length, 16 + 4096);
    assert.equal((await c.call(C.REGION_READ, read(4097)))?.errno, Errno.EINVAL);
    const write = concat(u64(0n), u32(2, 4097), new Uint8Array(4097));
    assert.equal((await c.call(C.REGION_WRITE, write))?.errno, Errno.EINVAL);
    c.close();
    await r.server.idle();
    r.close();
  });

  it('max fds per message: more fds than negotiated is EINVAL and every fd is closed', async () => {
    const r = rig('edu', { limits: { maxMsgFds: 1 } });
    const c = r.connect();
    await c.negotiate();
    const efds = [eventfdCreate(), eventfdCreate()];
    const reply = await c.call(C.DEVICE_SET_IRQS, u32(20, 0x24, 1, 0, 2), efds);
    assert.equal(reply?.errno, Errno.EINVAL);
    for (const fd of efds) closeFd(fd);
    c.close();
    await r.server.idle();
    r.close();
  });

  it('max message size: a larger msg_size gets EINVAL, then the connection is closed (framing); the next client works', async () => {
    const r = rig('edu', { limits: { maxMessageSize: 1024 } });
    const c = r.connect();
    await c.negotiate();
    const big = message(7, C.REGION_WRITE, concat(u64(4n), u32(0, 2000), new Uint8Array(2000)));
    c.send(big);
    // libvfio-user is_valid_header: EINVAL for the command; then the stream cannot go on.
    const f = await c.next(2000);
    assert.equal(f?.header.msgId, 7);
    assert.equal(f?.header.error, Errno.EINVAL);
    assert.equal(await c.next(2000), undefined);
    assert.ok(c.eof, 'the server hung up');
    c.close();
    await r.server.idle();
    assert.equal(r.server.lastClose?.kind, 'framing');
    await nextClientIsServed(r);
    r.close();
  });
});

describe('a client that stalls mid-message', () => {
  it('is dropped after messageStallMs (ETIMEDOUT), and the next client is served', async () => {
    const r = rig('edu', { limits: { messageStallMs: 200 } });
    const c = r.connect();
    await c.negotiate();
    // Half a header, then nothing: the single-client server must not wait for ever.
    c.send(message(9, C.DEVICE_GET_INFO, u32(16, 0, 0, 0)).subarray(0, 7));
    const t0 = Date.now();
    assert.equal(await c.next(5000), undefined);
    assert.ok(c.eof, 'the server hung up');
    assert.ok(Date.now() - t0 >= 150, 'not before the limit');
    c.close();
    await r.server.idle();
    const last = r.server.lastClose;
    assert.ok(
      last?.kind === 'error' && last.error instanceof VfioError && last.error.errno === Errno.ETIMEDOUT,
    );
    await nextClientIsServed(r);
    r.close();
  });

  it('a whole message that arrives slowly but within the limit is served', async () => {
    const r = rig('edu', { limits: { messageStallMs: 2000 } });
    const c = r.connect();
    await c.negotiate();
    const m = message(9, C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
    c.send(m.subarray(0, 7));
    await new Promise((res) => setTimeout(res, 300));
    c.send(m.subarray(7));
    const reply = await c.next(2000);
    assert.ok(reply && !(reply.header.flags & 0x20), 'a success reply');
    c.close();
    await r.server.idle();
    r.close();
  });
});

describe('back-pressure: a client that never reads cannot grow the server', () => {
  it('reading pauses at maxPendingBytes; every request is answered once the client reads', async () => {
    const limit = 1 << 20;
    const r = rig('ivshmem', { limits: { maxPendingBytes: limit } });
    const c = r.connect();
    await c.negotiate();
    const replySize = 16 + 16 + 65536;
    const req = message(1, C.REGION_READ, concat(u64(0n), u32(2, 65536)));
    let sent = 0;
    let maxQueued = 0;
    // Flood until the socket refuses more (the server has stopped reading), letting it run.
    for (let idle = 0; idle < 50; ) {
      const n = sendMsg(c.fd, [req]);
      if (n === null) {
        idle++;
        await new Promise((res) => setTimeout(res, 2));
      } else {
        assert.equal(n, req.length);
        sent++;
        idle = 0;
      }
      maxQueued = Math.max(maxQueued, r.server.client?.session.channel.queuedBytes ?? 0);
      if (sent > 100000) break;
    }
    const t = r.server.client!.session.channel;
    assert.ok(t.paused, 'reading paused');
    assert.ok(!t.closed, 'the client was not dropped');
    // Bounded: the limit plus the reply that crossed it.
    assert.ok(maxQueued <= limit + replySize, `queued ${maxQueued} bytes`);
    assert.ok(sent * replySize > 4 * limit, `the flood (${sent} requests) outgrew the limit`);
    // Now read: every request gets its reply.
    let got = 0;
    while (got < sent) {
      const f = await c.next(5000);
      assert.ok(f, `reply ${got} of ${sent}`);
      assert.equal(f.bytes.length, replySize);
      got++;
    }
    assert.ok(!t.paused);
    c.close();
    await r.server.idle();
    r.close();
  });
});

describe('--allow-uid (SO_PEERCRED)', () => {
  it('a peer whose uid is not allowed is closed before a byte is read; an allowed one is served', async () => {
    const other = rig('edu', { allowUids: [getuid() + 1] });
    const [a, b] = socketPair();
    assert.throws(
      () => other.server.adopt(b),
      (e: unknown) => e instanceof VfioError && e.errno === Errno.EACCES,
    );
    assert.equal(other.server.refused, 1);
    await waitReadable(a, 1000);
    const c = new RawClient(a);
    c.poll();
    assert.ok(c.eof, 'the refused client sees EOF');
    c.close();
    other.close();

    const own = rig('edu', { allowUids: [getuid()] });
    const d = own.connect();
    await d.negotiate();
    assert.equal((await d.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0);
    d.close();
    await own.server.idle();
    own.close();
  });
});

describe('vfio-ts serve: limit options', () => {
  const main = new URL('../../src/cli/main.js', import.meta.url).pathname;
  const serve = (...args: string[]) =>
    spawnSync(
      process.execPath,
      [main, 'serve', '--device', 'edu', '--socket', '/nonexistent/x.sock', ...args],
      {
        encoding: 'utf8',
      },
    );
  for (const [args, message] of [
    [['--max-dma-maps', '0'], '--max-dma-maps needs an integer >= 1'],
    [['--max-message-size', '15'], '--max-message-size needs an integer >= 16'],
    [['--max-msg-fds', 'many'], '--max-msg-fds needs an integer >= 1'],
    [['--max-pending-bytes', '-1'], '--max-pending-bytes needs an integer >= 1'],
    [['--allow-uid', 'root'], '--allow-uid needs a uid or self'],
  ] as const) {
    it(`${args.join(' ')} is refused before anything is served`, () => {
      const r = serve(...args);
      assert.equal(r.status, 2, r.stderr);
      assert.ok(r.stderr.includes(message), r.stderr);
    });
  }
  it('the usage (--help: exit 0, on stdout) names every limit option', () => {
    const r = serve('--help');
    assert.equal(r.status, 0, r.stderr);
    for (const o of [
      '--allow-uid',
      '--max-message-size',
      '--max-data-xfer-size',
      '--max-msg-fds',
      '--max-dma-maps',
      '--max-pending-bytes',
    ])
      assert.ok(r.stdout.includes(o), o);
  });
});
