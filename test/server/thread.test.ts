/**
 * ThreadedServer: the device and its server in a worker thread with a loop of their own
 * (src/server/loop.ts), 'blocking' (asleep in recvmsg) and 'poll' (spinning on it). Everything a
 * client relies on keeps working across the thread boundary: region access and posted writes in
 * order, device DMA into mapped client memory and through DMA_READ/DMA_WRITE messages, interrupt
 * eventfds, the BAR's mmap fd, the limits (fds per message, back-pressure, a stalled message),
 * framing errors, uid refusal, one client at a time, and stop with a client asleep in recvmsg;
 * fds of the process come back to their count.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VFIO_PCI_MSI_IRQ_INDEX } from '../../src/abi/vfio.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import {
  createDmaMemory,
  createMessageOnlyDmaMemory,
  Eventfd,
  VfioUserClient,
} from '../../src/client/index.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { VfioDevice } from '../../src/driver/device.js';
import type { DmaMemory } from '../../src/driver/file.js';
import { NvmeController } from '../../src/driver/nvme/index.js';
import { VfioError } from '../../src/errors.js';
import {
  closeFd,
  eventfdCreate,
  getuid,
  openFdCount,
  recvMsg,
  sendMsg,
  socketPair,
  unixConnect,
} from '../../src/native/index.js';
import {
  STOP_GRACE_MS,
  ThreadedServer,
  type ThreadedServerOptions,
  type ThreadLoopMode,
} from '../../src/server/index.js';
import { RawClient } from '../fuzz/client.js';
import { concat, message, u32, u64 } from '../fuzz/server.js';

const MODULE = new URL('./thread-device.js', import.meta.url);
const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-thread-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const access = (region: number, offset: bigint, count: number, data?: Uint8Array) =>
  concat(u64(offset), u32(region, count), data ?? new Uint8Array(0));
const le32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

function start(device: 'edu' | 'ivshmem', loop: ThreadLoopMode, opts: ThreadedServerOptions = {}) {
  const log: string[] = [];
  return ThreadedServer.start(
    { module: MODULE, export: 'device', arg: { name: device } },
    // A short spin keeps 'poll' from holding a CPU of this shared machine between tests.
    { loop, pollIdleMs: 20, log: (l) => log.push(l), ...opts },
  ).then((server) => ({ server, log }));
}

/** A RawClient on a socketpair whose other end the worker serves. */
function connect(server: ThreadedServer): RawClient {
  const [a, b] = socketPair();
  void server.adopt(b);
  return new RawClient(a);
}

/** A VfioDevice over our client, served by the worker. */
async function device(server: ThreadedServer): Promise<VfioDevice> {
  const [a, b] = socketPair();
  void server.adopt(b);
  return new VfioDevice(await VfioUserClient.fromFd(a));
}

/** edu's DMA registers: src, dst, count, then the command (start | to RAM | raise the interrupt). */
async function eduDma(d: VfioDevice, src: bigint, dst: bigint, toRam: boolean): Promise<void> {
  const regs = new Uint8Array(32);
  const v = new DataView(regs.buffer);
  v.setBigUint64(0, src, true);
  v.setBigUint64(8, dst, true);
  v.setBigUint64(16, 4096n, true);
  v.setUint32(24, 1 | (toRam ? 2 : 0) | 4, true);
  await d.write(0, 0x80, regs);
}

const IOVA = 0x10_0000n;
const EDU_BUFFER = 0x40000n;

for (const loop of ['blocking', 'poll'] as const) {
  describe(`ThreadedServer, ${loop} loop`, () => {
    test('region access, posted writes applied in order, VERSION first', async () => {
      const before = openFdCount();
      const { server } = await start('edu', loop);
      const c = connect(server);
      try {
        assert.equal((await c.call(C.REGION_READ, access(0, 0n, 4)))?.errno, Errno.EINVAL, 'before VERSION');
        await c.negotiate();
        const id = await c.call(C.REGION_READ, access(0, 0n, 4));
        assert.equal(le32(id!.payload, 16), EDU_ID);
        // Posted writes of the liveness register (it stores the complement), back to back in
        // one sendmsg with a read behind them: the read sees the last one.
        const posted = [1, 2, 3, 0xabcd].map((v, i) =>
          message(100 + i, C.REGION_WRITE, access(0, 4n, 4, u32(v)), VfioUserFlags.NO_REPLY),
        );
        c.send(concat(...posted));
        const live = await c.call(C.REGION_READ, access(0, 4n, 4));
        assert.equal(le32(live!.payload, 16), ~0xabcd >>> 0);
        // A read past the region's end and a bad region: EINVAL, as in-process.
        assert.equal((await c.call(C.REGION_READ, access(0, 0xffffen, 4)))?.errno, Errno.EINVAL);
        assert.equal((await c.call(C.REGION_READ, access(9, 0n, 4)))?.errno, Errno.EINVAL);
      } finally {
        c.close();
        await server.idle();
        await server.stop();
      }
      assert.equal(server.served, 1);
      assert.equal(server.lastClose?.kind, 'eof');
      assert.equal(openFdCount(), before);
    });

    for (const [kind, make] of [
      ['mapped client memory (memfd)', () => createDmaMemory(3 * 4096)],
      ['DMA_READ/DMA_WRITE messages (no fd)', () => createMessageOnlyDmaMemory(3 * 4096)],
    ] as const) {
      test(`edu DMA through ${kind}; its interrupt comes with no further message`, async () => {
        // A tick of a minute: the worker must turn its event loop because the device's DMA left
        // promises behind (src/server/loop.ts), not because a sleep ran out.
        const { server } = await start('edu', loop, { loopTickMs: 60_000 });
        const d = await device(server);
        const mem: DmaMemory & { close?: () => void } = make();
        const irq = new Eventfd();
        try {
          await d.dmaMap(IOVA, mem);
          await d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [irq.fd]);
          const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
          mem.bytes.set(pattern, 0);
          await eduDma(d, IOVA, EDU_BUFFER, false);
          assert.ok((await irq.wait(10_000)) !== null, 'interrupt after RAM -> device');
          await d.write32(0, 0x64, 0x100); // ack
          assert.deepEqual(await d.read(0, EDU_BUFFER, 4096), pattern);
          await eduDma(d, EDU_BUFFER, IOVA + 4096n, true);
          assert.ok((await irq.wait(10_000)) !== null, 'interrupt after device -> RAM');
          assert.deepEqual(mem.bytes.slice(4096, 8192), pattern);
          await d.disableIrqs(VFIO_PCI_MSI_IRQ_INDEX);
          await d.dmaUnmap(IOVA, BigInt(mem.size));
        } finally {
          irq.close();
          await d.close();
          mem.close?.();
          await server.idle();
          await server.stop();
        }
      });
    }

    test('device work on the thread pool (a disk write and fdatasync): its interrupt comes with no further message', {
      timeout: 30_000,
    }, async () => {
      // A tick of a minute, and the client sends nothing after its write: the loop must wake
      // when the disk write and the fdatasync finish in the thread pool, not at the next tick.
      const file = join(dir, `echo-${loop}.bin`);
      const server = await ThreadedServer.start(
        { module: MODULE, export: 'diskEcho', arg: { file } },
        { loop, pollIdleMs: 20, loopTickMs: 60_000 },
      );
      const d = await device(server);
      const irq = new Eventfd();
      try {
        await d.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [irq.fd]);
        for (const [offset, value] of [
          [8, 0x1234_5678],
          [12, 0xcafe_f00d],
        ] as const) {
          await d.write32(0, offset, value);
          assert.ok((await irq.wait(20_000)) !== null, `interrupt after the write at ${offset}`);
          assert.equal(readFileSync(file).readUInt32LE(offset), value);
        }
        await d.disableIrqs(VFIO_PCI_MSI_IRQ_INDEX);
      } finally {
        irq.close();
        await d.close();
        await server.idle();
        await server.stop();
      }
    });

    test('nvme on a disk file, a tick of a minute: the thread pool and the engine wake the loop; stop flushes', {
      timeout: 60_000,
    }, async () => {
      // A loop that slept until a tick to see a disk write finish, or the controller's fetch
      // (deferred behind the doorbell), would take a minute per command.
      const disk = join(dir, `nvme-${loop}.img`);
      const log: string[] = [];
      const server = await ThreadedServer.start(
        { module: MODULE, export: 'nvmeDisk', arg: { disk, size: 4 << 20 } },
        { loop, pollIdleMs: 20, loopTickMs: 60_000, log: (l) => log.push(l) },
      );
      const dev = await device(server);
      const ctrl = await NvmeController.open(dev, { completions: 'interrupt', ioQueues: 1 });
      const pattern = Uint8Array.from({ length: 64 << 10 }, (_, i) => (i * 13 + (i >> 9)) & 0xff);
      try {
        const qp = await ctrl.createQueuePair({ depth: 32 });
        const buf = await ctrl.alloc(pattern.length);
        buf.bytes.set(pattern);
        // 16 writes of 4 KiB in flight together (8 blocks of 512 bytes each), from one buffer.
        await Promise.all(
          Array.from({ length: 16 }, (_, i) =>
            qp.write(1, BigInt(i * 8), 8, {
              iova: buf.iova + BigInt(i * 4096),
              bytes: buf.bytes.subarray(i * 4096),
            }),
          ),
        );
        await qp.flush(1);
        buf.bytes.fill(0);
        await qp.read(1, 0n, 128, buf);
        assert.deepEqual(buf.bytes.subarray(0, pattern.length), pattern);
      } finally {
        await ctrl.close();
        await dev.close();
        await server.idle();
        await server.stop();
      }
      assert.deepEqual(new Uint8Array(readFileSync(disk).subarray(0, pattern.length)), pattern);
      assert.ok(!log.some((l) => /internal error|fatal/.test(l)), log.join('\n'));
    });

    test("ivshmem BAR2 through the worker's mmap fd: a write in the mapping is what REGION_READ sees", async () => {
      const { server } = await start('ivshmem', loop);
      const d = await device(server);
      try {
        const m = await d.map(2, { length: 4096 });
        m.bytes.set([9, 8, 7, 6], 64);
        assert.deepEqual([...(await d.read(2, 64, 4))], [9, 8, 7, 6]);
        m.unmap();
      } finally {
        await d.close();
        await server.idle();
        await server.stop();
      }
    });

    test('limits: fds beyond max_msg_fds EINVAL and closed; back-pressure; a stalled message drops the client', async () => {
      const before = openFdCount();
      const { server, log } = await start('edu', loop, {
        limits: { maxMsgFds: 2, maxPendingRequests: 4, messageStallMs: 100 },
      });
      try {
        const c = connect(server);
        await c.negotiate();
        const efd = eventfdCreate();
        const set = u32(20, 0x24, VFIO_PCI_MSI_IRQ_INDEX, 0, 3);
        assert.equal((await c.call(C.DEVICE_SET_IRQS, set, [efd, efd, efd]))?.errno, Errno.EINVAL);
        closeFd(efd);
        // 200 reads sent without reading a reply: the worker stops reading at 4 queued replies
        // and resumes as they drain; every reply comes, in order.
        const n = 200;
        const reads = Array.from({ length: n }, (_, i) => message(1000 + i, C.REGION_READ, access(0, 0n, 4)));
        for (const m of reads) sendMsg(c.fd, [m]);
        for (let i = 0; i < n; i++) {
          const f = await c.next(10_000);
          assert.equal(f?.header.msgId, 1000 + i);
          assert.equal(le32(f!.payload, 16), EDU_ID);
        }
        // Half a message, then nothing: dropped after messageStallMs.
        c.send(message(7, C.REGION_READ, access(0, 0n, 4)).subarray(0, 20));
        await server.idle();
        assert.equal(server.lastClose?.kind, 'error');
        assert.match(server.lastClose?.error ?? '', /incomplete/);
        c.close();
        // A framing error (msg_size below 16): closed, and the next client is served.
        const f = connect(server);
        await f.negotiate();
        const bad = message(8, C.DEVICE_GET_INFO, u32(16, 0, 0, 0));
        new DataView(bad.buffer).setUint32(4, 8, true);
        f.send(bad);
        await server.idle();
        assert.equal(server.lastClose?.kind, 'framing');
        f.close();
        const g = connect(server);
        await g.negotiate();
        assert.equal((await g.call(C.DEVICE_GET_INFO, u32(16, 0, 0, 0)))?.errno, 0);
        g.close();
        await server.idle();
      } finally {
        await server.stop();
      }
      assert.ok(!log.some((l) => l.includes('internal error')), log.join('\n'));
      assert.equal(openFdCount(), before);
    });

    test('listen: clients one at a time through the socket, a uid not allowed is refused, stop with one asleep', async () => {
      const before = openFdCount();
      const path = join(dir, `${loop}.sock`);
      const { server } = await start('edu', loop, { allowUids: [getuid()] });
      server.listen(path);
      const first = new RawClient(unixConnect(path));
      const second = new RawClient(unixConnect(path)); // waits in the backlog
      await first.negotiate();
      assert.equal(server.client?.peer?.uid, getuid());
      first.close();
      await second.negotiate(); // served once the first is gone
      assert.equal(server.served, 2);
      // Stop while the worker sleeps in recvmsg (or spins) on the second client.
      await server.stop();
      assert.equal(await second.next(5000), undefined, 'EOF');
      assert.equal(second.eof, true);
      second.close();
      assert.equal(server.lastClose?.kind, 'local');
      assert.equal(openFdCount(), before);
      rmSync(path, { force: true });

      const picky = (await start('edu', loop, { allowUids: [getuid() + 1] })).server;
      const [a, b] = socketPair();
      await assert.rejects(
        picky.adopt(b),
        (e: unknown) => e instanceof VfioError && e.errno === Errno.EACCES,
      );
      assert.equal(picky.refused, 1);
      closeFd(a);
      await picky.stop();
    });
  });
}

test('ThreadedServer: a device module that fails rejects start with its errno; the libuv loop is refused', async () => {
  await assert.rejects(
    ThreadedServer.start({ module: MODULE, export: 'noSuchExport' }),
    (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
  );
  await assert.rejects(
    ThreadedServer.start(
      { module: MODULE, export: 'device', arg: { name: 'edu' } },
      {
        loop: 'libuv' as ThreadLoopMode,
      },
    ),
    (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
  );
  await assert.rejects(
    ThreadedServer.start(
      { module: MODULE, export: 'device', arg: { name: 'edu' } },
      { limits: { maxMsgFds: 0 } },
    ),
    (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
  );
});

test("ThreadedServer: stop() resolves once the device's close has settled, past STOP_GRACE_MS", async () => {
  // A close that takes longer than the grace a stopped worker gets to exit: stop() waits for
  // it (a namespace's fdatasync: the device's settled()) before the worker is asked to go, so
  // it is never cut short.
  const marker = join(dir, 'slow-close.done');
  const server = await ThreadedServer.start({
    module: MODULE,
    export: 'slowClose',
    arg: { ms: STOP_GRACE_MS + 500, marker },
  });
  await server.stop();
  assert.equal(readFileSync(marker, 'utf8'), 'closed');
});

test('ThreadedServer: a worker that exits on its own is reported (onError; by default an uncaught error)', async () => {
  let report: (e: unknown) => void = () => {};
  const caught = new Promise<unknown>((resolve) => {
    report = resolve;
  });
  const server = await ThreadedServer.start(
    { module: MODULE, export: 'exitSoon', arg: { name: 'edu' } },
    { onError: (e) => report(e) },
  );
  // A worker's teardown after process.exit can take a while, with nothing of this thread's
  // holding its event loop open meanwhile: a timer does.
  const keepAlive = setInterval(() => {}, 1000);
  const e = await caught;
  clearInterval(keepAlive);
  assert.ok(e instanceof VfioError && e.errno === Errno.EIO, String(e));
  assert.match((e as Error).message, /worker exited \(code 3\)/);
  // A connection handed over now (as the listening side does for each client) is closed, not
  // leaked: adopt owns the fd from the call on.
  const fdsBefore = openFdCount();
  const [mine, peer] = socketPair();
  await assert.rejects(server.adopt(mine), (x: unknown) => x instanceof VfioError && x.errno === Errno.EIO);
  closeFd(peer);
  assert.equal(openFdCount(), fdsBefore);
  await server.stop(); // nothing left to stop; resolves
});

test("ThreadedServer: a worker that exits with a client connected: the client's socket is closed (it sees the end of the stream)", async () => {
  let report: (e: unknown) => void = () => {};
  const caught = new Promise<unknown>((resolve) => {
    report = resolve;
  });
  const server = await ThreadedServer.start(
    { module: MODULE, export: 'exitSoon', arg: { name: 'edu', exitAfterMs: 500 } },
    { onError: (e) => report(e) },
  );
  const keepAlive = setInterval(() => {}, 1000);
  const [mine, peer] = socketPair();
  try {
    await server.adopt(mine);
    assert.ok(server.client, 'served');
    // Waiting for the client to go: the worker's death ends the wait (no client is left).
    const idle = server.idle();
    const e = await caught;
    assert.match((e as Error).message, /worker exited \(code 3\)/);
    assert.equal(server.client, undefined);
    // Closed by this thread once the worker was gone: EOF, not EAGAIN for ever.
    const r = recvMsg(peer, 64, 0);
    assert.ok(r !== null, 'the server side is still open: the client would wait for ever');
    assert.equal(r.data.length, 0);
    assert.equal(await within(idle, 10_000), 'settled', 'idle() still blocked after the worker died');
  } finally {
    clearInterval(keepAlive);
    closeFd(peer);
  }
  await server.stop();
});

/** 'settled' once `p` resolves, 'timeout' if it has not after `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<'settled' | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  try {
    return await Promise.race([p.then(() => 'settled' as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

for (const [exportName, why] of [
  ['exitSoon', /worker exited \(code 3\)/],
  ['throwSoon', /the device module failed/],
] as const) {
  test(`ThreadedServer: a listening server whose worker dies (${exportName}) stops listening, removes its socket, reports once`, async () => {
    const before = openFdCount();
    const path = join(dir, `dies-${exportName}.sock`);
    const errors: Error[] = [];
    // A device with no fd of its own: the count then covers all this side must close.
    const server = await ThreadedServer.start(
      { module: MODULE, export: exportName, arg: { name: 'fdless' } },
      { onError: (e) => errors.push(e) },
    );
    server.listen(path);
    const keepAlive = setInterval(() => {}, 1000);
    try {
      for (let waited = 0; errors.length === 0 && waited < 20_000; waited += 20)
        await new Promise((r) => setTimeout(r, 20));
      assert.equal(errors.length, 1, 'reported');
      assert.match(errors[0]!.message, why);
      // Its exit comes after its error: wait for both, then nothing more is reported.
      await server.idle();
      await new Promise((r) => setTimeout(r, 200));
      // Nobody accepts and closes clients at once: the path is gone, a connect fails.
      assert.equal(existsSync(path), false, 'the socket is removed');
      assert.throws(
        () => unixConnect(path),
        (e: unknown) => e instanceof VfioError && e.errno === Errno.ENOENT,
      );
      assert.throws(
        () => server.listen(path),
        (e: unknown) => e instanceof VfioError && e.errno === Errno.EIO,
      );
      await server.stop(); // nothing left to stop; resolves
      assert.equal(errors.length, 1, 'reported once');
    } finally {
      clearInterval(keepAlive);
      rmSync(path, { force: true });
    }
    assert.equal(openFdCount(), before);
  });
}

test('ThreadedServer: an adopt the worker never took is failed and its fd closed once the worker has exited', async () => {
  let report: (e: unknown) => void = () => {};
  const caught = new Promise<unknown>((resolve) => {
    report = resolve;
  });
  const before = openFdCount();
  const gate = new SharedArrayBuffer(8);
  const flags = new Int32Array(gate);
  const server = await ThreadedServer.start(
    { module: MODULE, export: 'exitOnGate', arg: { name: 'fdless', gate } },
    { onError: (e) => report(e) },
  );
  const keepAlive = setInterval(() => {}, 1000);
  try {
    // The worker's thread is held: the adopt posted now is still in its queue when it exits.
    while (Atomics.load(flags, 0) === 0) await new Promise((r) => setTimeout(r, 10));
    const [mine, peer] = socketPair();
    const adopted = server.adopt(mine);
    Atomics.store(flags, 1, 1);
    Atomics.notify(flags, 1);
    await assert.rejects(adopted, (e: unknown) => e instanceof VfioError && e.errno === Errno.EIO);
    assert.match(String(await caught), /worker exited \(code 3\)/);
    // Closed by this thread: the client sees the end of the stream, and no fd is left.
    const r = recvMsg(peer, 64, 0);
    assert.ok(r !== null, 'the handed-over socket is still open: leaked');
    assert.equal(r.data.length, 0);
    closeFd(peer);
  } finally {
    clearInterval(keepAlive);
  }
  await server.stop();
  assert.equal(openFdCount(), before);
});
