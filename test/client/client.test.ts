/**
 * The vfio-user client against a scripted fake server over a socketpair: negotiation, error
 * replies, timeouts, a server that hangs up, transfers split at max_data_xfer_size, SET_IRQS fd
 * runs, malformed replies, DMA_READ/DMA_WRITE answers, and fd counts that stay flat.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
} from '../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import {
  createDmaMemory,
  createMessageOnlyDmaMemory,
  Eventfd,
  VfioUserClient,
} from '../../src/client/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { closeFd, memfdCreate, openFdCount } from '../../src/native/index.js';
import { encodeFds, encodeVfioIrqSet, putU32 } from '../../src/wire/vfio.js';
import {
  type CapabilitiesInput,
  capabilitiesJson,
  decodeDmaReadReply,
  decodeIrqSet,
  decodeRegionReadRequest,
  encodeDmaReadRequest,
  encodeDmaWriteRequest,
  encodeEmpty,
  encodeMessage,
  encodeRegionInfoReply,
  encodeRegionReadReply,
  encodeReply,
  encodeVersion,
} from '../../src/wire/vfio-user.js';
import { FakeServer, sealedMemfd } from './fake.js';

async function rejectsWith(p: Promise<unknown>, errno: number): Promise<VfioError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof VfioError, `not a VfioError: ${e}`);
    assert.equal(e.code, new VfioError(errno, '').code, e.message);
    return e;
  }
  assert.fail(`resolved, expected errno ${errno}`);
}

/** A client connected to a fake server; both are closed when the test ends, pass or fail. */
async function connected(t: TestContext, caps?: CapabilitiesInput, timeoutMs = 2000) {
  const fake = new FakeServer(caps);
  t.after(() => fake.hangUp());
  const client = await VfioUserClient.fromFd(fake.clientFd, { timeoutMs });
  t.after(() => client.close());
  return { fake, client };
}

const settle = (ms = 10) => new Promise((r) => setTimeout(r, ms));

/** A config region of `size` bytes (READ|WRITE), no fd. */
function configInfo(index: number, size: bigint) {
  return encodeRegionInfoReply({ argsz: 32, flags: 3, index, capOffset: 0, size, offset: 0n, caps: [] });
}

test('VERSION: proposes 0.1 with our capabilities and takes the smaller limits', async (t) => {
  const { fake, client } = await connected(t, { maxMsgFds: 2, maxDataXferSize: 4096, writeMultiple: false });
  const v = fake.seen[0]!;
  assert.equal(v.command, C.VERSION);
  const text = new TextDecoder().decode(v.payload.subarray(4, -1));
  assert.deepEqual(JSON.parse(text), {
    capabilities: {
      max_msg_fds: 16,
      max_data_xfer_size: 1048576,
      pgsizes: 4096,
      write_multiple: false,
      // As QEMU proposes it (hw/vfio-user/proxy.c): our page and the largest report we take.
      migration: { pgsize: 4096, max_bitmap_size: 262144 },
    },
  });
  assert.deepEqual(
    { ...client.negotiated },
    {
      major: 0,
      minor: 1,
      maxDataXferSize: 4096,
      maxMsgFds: 2,
      maxDmaMaps: 65535,
      pgsizes: 4096n,
      writeMultiple: false,
      dmaLayout: 'spec',
    },
  );
});

test('VERSION: a reply with a higher minor or another major is refused, nothing leaks', async () => {
  const before = openFdCount();
  for (const [major, minor] of [
    [0, 2],
    [1, 0],
  ] as const) {
    const fake = new FakeServer({}, () => encodeVersion({ major, minor, json: capabilitiesJson({}) }));
    await rejectsWith(VfioUserClient.fromFd(fake.clientFd), Errno.EPROTONOSUPPORT);
    fake.hangUp();
  }
  await settle();
  assert.equal(openFdCount(), before);
});

test('an error reply rejects the request with its errno; 0 reads as EINVAL', async (t) => {
  const { fake, client } = await connected(t);
  fake.answer = () => ({ errno: Errno.EIO });
  const b = new Uint8Array(20);
  putU32(b, 0, 20);
  const e = await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b), Errno.EIO);
  assert.match(e.op, /DEVICE_GET_INFO/);
  // An error reply with errno 0 (the spec allows it): libvfio-user reads it as EINVAL.
  fake.answer = (s) => ({
    raw: encodeMessage({ msgId: s.msgId, command: s.command, flags: 0x21, error: 0 }),
  });
  await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b), Errno.EINVAL);
});

test('a request without a reply times out (ETIMEDOUT) and drops the connection: a late reply matches nothing', async (t) => {
  const before = openFdCount();
  const { fake, client } = await connected(t, undefined, 50);
  fake.answer = () => ({ ignore: true });
  const b = new Uint8Array(20);
  putU32(b, 0, 20);
  const e = await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b), Errno.ETIMEDOUT);
  assert.equal(e.op, 'VFIO_USER_DEVICE_GET_INFO');
  assert.ok(client.connection.closed, 'a timeout takes the connection down');
  const late = fake.seen.at(-1)!;
  fake.sendRaw(encodeReply(late.msgId, late.command, new Uint8Array(16)));
  await settle();
  const next = await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b), Errno.ECONNRESET);
  assert.match(next.message, /VFIO_USER_DEVICE_GET_INFO: ECONNRESET \(connection dropped: .*ETIMEDOUT/);
  await client.close();
  fake.hangUp();
  await settle();
  assert.equal(openFdCount(), before);
});

test('the server hanging up rejects every pending request and every later one with ECONNRESET', async (t) => {
  const before = openFdCount();
  const { fake, client } = await connected(t);
  const b = () => {
    const x = new Uint8Array(20);
    putU32(x, 0, 20);
    return x;
  };
  // The client holds a region fd and a mapping of it when the server goes.
  const bar = sealedMemfd(8192);
  fake.answer = (s) =>
    s.command === C.DEVICE_GET_REGION_INFO
      ? {
          payload: encodeRegionInfoReply({
            argsz: 32,
            flags: 7,
            index: 0,
            capOffset: 0,
            size: 8192n,
            offset: 0n,
            caps: [],
          }),
          fds: [bar],
        }
      : { ignore: true };
  const m = await client.mmap(0n, 4096);
  closeFd(bar);
  m.bytes[0] = 1;
  const pending = [client.ioctl(VFIO_DEVICE_GET_INFO, b()), client.pread(4096n, 4)];
  await settle();
  fake.hangUp();
  for (const p of pending) await rejectsWith(p, Errno.ECONNRESET);
  assert.equal(client.connection.pendingCount, 0);
  await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b()), Errno.ECONNRESET);
  assert.equal(client.mappingCount, 1, 'mappings survive the connection until close');
  await client.close();
  assert.equal(client.mappingCount, 0);
  await rejectsWith(client.ioctl(VFIO_DEVICE_GET_INFO, b()), Errno.EBADF);
  await settle();
  assert.equal(openFdCount(), before);
});

test('pread/pwrite split at max_data_xfer_size and stop at a BAR end like the kernel', async (t) => {
  const { fake, client } = await connected(t, { maxDataXferSize: 4096 });
  const mem = new Uint8Array(10000).map((_, i) => i & 0xff);
  fake.answer = (s) => {
    if (s.command === C.DEVICE_GET_REGION_INFO) return { payload: configInfo(0, 10000n) };
    if (s.command === C.REGION_READ) {
      const r = decodeRegionReadRequest(s.payload);
      const at = Number(r.offset);
      return { payload: encodeRegionReadReply({ ...r, data: mem.slice(at, at + r.count) }) };
    }
    if (s.command === C.REGION_WRITE) return { payload: s.payload.slice(0, 16) };
    return { errno: Errno.EINVAL };
  };
  const base = 0n; // BAR0
  const got = await client.pread(base + 100n, 20000);
  assert.equal(got.length, 9900);
  assert.deepEqual(got, mem.subarray(100));
  const reads = fake.seen
    .filter((s) => s.command === C.REGION_READ)
    .map((s) => decodeRegionReadRequest(s.payload));
  assert.deepEqual(
    reads.map((r) => [Number(r.offset), r.count]),
    [
      [100, 4096],
      [4196, 4096],
      [8292, 1708],
    ],
  );
  assert.equal(await client.pwrite(base + 9000n, new Uint8Array(5000)), 1000);
  await rejectsWith(client.pread(base + 10000n, 1), Errno.EINVAL);
});

test('SET_IRQS sends eventfds as SCM_RIGHTS in runs of max_msg_fds, runs of -1 without fds', async (t) => {
  const { fake, client } = await connected(t, { maxMsgFds: 2 });
  fake.answer = () => ({ payload: encodeEmpty() });
  const e = [new Eventfd(), new Eventfd(), new Eventfd(), new Eventfd()];
  const fds = [e[0]!.fd, -1, -1, e[1]!.fd, e[2]!.fd, e[3]!.fd];
  await client.ioctl(
    VFIO_DEVICE_SET_IRQS,
    encodeVfioIrqSet({
      flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: 2,
      start: 0,
      count: fds.length,
      data: encodeFds(fds),
    }),
  );
  const sent = fake.seen
    .filter((s) => s.command === C.DEVICE_SET_IRQS)
    .map((s) => {
      const q = decodeIrqSet(s.payload);
      return [q.start, q.count, s.nfds, s.payload.length];
    });
  assert.deepEqual(sent, [
    [0, 1, 1, 20],
    [1, 2, 0, 20],
    [3, 2, 2, 20],
    [5, 1, 1, 20],
  ]);
  for (const x of e) x.close();
});

test('malformed replies are EPROTO: a looping capability chain, two fds on one reply', async (t) => {
  const before = openFdCount();
  const { fake, client } = await connected(t);
  const looping = configInfo(0, 4096n);
  putU32(looping, 4, 3 | 8); // CAPS
  putU32(looping, 12, 32);
  const withCap = new Uint8Array(48);
  withCap.set(looping);
  withCap.set(Uint8Array.of(2, 0, 1, 0, 32, 0, 0, 0), 32); // next points at itself
  putU32(withCap, 0, 48);
  const m1 = memfdCreate('a', 4096);
  const m2 = memfdCreate('b', 4096);
  let n = 0;
  fake.answer = () => (n++ === 0 ? { payload: withCap } : { payload: configInfo(0, 4096n), fds: [m1, m2] });
  const dev = new VfioDevice(client);
  await rejectsWith(dev.regionInfo(0), Errno.EPROTO);
  await rejectsWith(dev.regionInfo(0), Errno.EPROTO);
  closeFd(m1);
  closeFd(m2);
  await client.close();
  fake.hangUp();
  await settle();
  assert.equal(openFdCount(), before);
});

test('DMA_READ/DMA_WRITE from the server are answered from the mapped memory; EFAULT outside it', async (t) => {
  const { fake, client } = await connected(t);
  fake.answer = () => ({ payload: encodeEmpty() });
  const mem = createMessageOnlyDmaMemory(8192);
  mem.bytes.set([1, 2, 3, 4], 100);
  await client.dmaMap(0x1000n, mem);
  assert.equal(fake.seen.at(-1)!.nfds, 0);
  const r = await fake.call(C.DMA_READ, encodeDmaReadRequest({ address: 0x1000n + 100n, count: 4 }));
  assert.deepEqual([...decodeDmaReadReply(r.payload, 'spec').data], [1, 2, 3, 4]);
  const w = await fake.call(
    C.DMA_WRITE,
    encodeDmaWriteRequest({ address: 0x1000n + 200n, data: Uint8Array.of(9, 8) }, 'spec'),
  );
  assert.equal(w.header.flags & 0x20, 0);
  assert.deepEqual([...mem.bytes.subarray(200, 202)], [9, 8]);
  const bad = await fake.call(C.DMA_READ, encodeDmaReadRequest({ address: 0x1000n + 8190n, count: 4 }));
  assert.equal(bad.header.error, Errno.EFAULT);
  const memfd = createDmaMemory(4096);
  await client.dmaMap(0x10000n, memfd);
  assert.equal(fake.seen.at(-1)!.nfds, 1, 'DMA_MAP of memfd memory carries the fd');
  await client.dmaUnmap(0x1000n, 8192n);
  const gone = await fake.call(C.DMA_READ, encodeDmaReadRequest({ address: 0x1000n, count: 4 }));
  assert.equal(gone.header.error, Errno.EFAULT);
  memfd.close();
});
