/**
 * Hostile-server scenarios about what a device hands out and asks for: the fds behind mmap
 * (region, cookie, dma-buf: too small, unsealed, not a file, shrunk), fds where none belong, and
 * the server's DMA_READ / DMA_WRITE into the client's memory.
 */
import assert from 'node:assert/strict';
import { Errno } from '../../../src/abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_DMA_BUF,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_TS_FEATURE_MMAP_COOKIE,
} from '../../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../../src/abi/vfio-user.js';
import { createMessageOnlyDmaMemory } from '../../../src/client/index.js';
import type { VfioError } from '../../../src/errors.js';
import {
  closeFd,
  eventfdCreate,
  ftruncate,
  MFD_CLOEXEC,
  memfdCreate,
  openFdCount,
} from '../../../src/native/index.js';
import { dmaBufStruct, dmaRangeStruct, FEATURE_DATA, mmapCookieStruct } from '../../../src/wire/vfio.js';
import { encodeDmaReadRequest, encodeDmaWriteRequest, encodeMessage } from '../../../src/wire/vfio-user.js';
import { sealedMemfd } from '../fake.js';
import { bar0Info, bar0With } from './device-scenarios.js';
import { BAR0_SIZE, type HostileServer, type Seen } from './server.js';
import { type Ctx, on, replyOutcome, type Scenario, u32 } from './table.js';

const IOVA = 0x10000n;

/** Answers FEATURE GETs of `feature` with `make` (probes say yes; other features ENOTTY). */
function feature(want: number, make: (s: Seen, srv: HostileServer, data: Uint8Array) => Promise<void>) {
  return on(C.DEVICE_FEATURE, (s, srv) => {
    const flags = new DataView(s.payload.buffer).getUint32(4, true);
    if ((flags & VFIO_DEVICE_FEATURE_MASK) !== want) return srv.error(s, Errno.ENOTTY);
    if (flags & VFIO_DEVICE_FEATURE_PROBE) return srv.reply(s, s.payload);
    return make(s, srv, s.payload.slice());
  });
}

/** A cookie reply for BAR `bar` of `size` with an fd of `fdSize` bytes (sealed). */
const cookie = (bar: number, size: bigint, fdSize = BAR0_SIZE) =>
  feature(VFIO_TS_FEATURE_MMAP_COOKIE, async (s, srv, p) => {
    mmapCookieStruct.write(p, { region_index: bar, offset: 0x1000n, size }, FEATURE_DATA);
    const fd = sealedMemfd(fdSize);
    try {
      await srv.reply(s, p, [fd]);
    } finally {
      closeFd(fd);
    }
  });

/** A DMA_WRITE from the server; its error reply thrown as the table expects. */
async function dmaWrite(srv: HostileServer, address: bigint, data: Uint8Array): Promise<Seen> {
  return replyOutcome(await srv.call(C.DMA_WRITE, encodeDmaWriteRequest({ address, data }, 'spec')));
}

/** Maps `size` bytes of message-only memory at IOVA; returns it. */
async function mapped(x: Ctx, size = 8192, access = { read: true, write: true }) {
  const m = createMessageOnlyDmaMemory(size);
  await x.client.dmaMap(IOVA, m, access);
  return m;
}

const untouched = (b: Uint8Array) =>
  assert.ok(
    b.every((v) => v === 0),
    'the server wrote client memory',
  );

/**
 * Maps 8 KiB at IOVA (unmapped again first when `unmap`), then the server sends DMA_WRITE
 * `payload` (or `data` at `address`): whatever the answer, our memory must still be all zero.
 */
async function strayWrite(
  x: Ctx,
  to: { address?: bigint; data?: Uint8Array; payload?: Uint8Array },
  opts: { access?: { read: boolean; write: boolean }; unmap?: boolean } = {},
): Promise<void> {
  const m = await mapped(x, 8192, opts.access);
  if (opts.unmap) await x.client.dmaUnmap(IOVA, 8192n);
  try {
    if (to.payload) replyOutcome(await x.srv.call(C.DMA_WRITE, to.payload));
    else await dmaWrite(x.srv, to.address ?? IOVA, to.data ?? Uint8Array.of(1));
  } finally {
    untouched(m.bytes);
  }
}

export const MEMORY_SCENARIOS: readonly Scenario[] = [
  // -------------------------------------------------------------------------------- mmaps
  {
    name: 'a region fd smaller than the region: EPROTO, never SIGBUS',
    kind: 'mmaps',
    answer: bar0With(bar0Info(), () => sealedMemfd(4096)),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: {
      code: 'EPROTO',
      op: 'mmap',
      detail: /region 0's fd .* holds 0x1000 bytes; the mapping needs 0x0\+0x2000/,
    },
  },
  {
    name: 'a region fd offset past the fd end',
    kind: 'mmaps',
    answer: bar0With(bar0Info({ offset: 1n << 20n }), () => sealedMemfd(BAR0_SIZE)),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: { code: 'EPROTO', op: 'mmap', detail: /needs 0x100000\+0x2000/ },
  },
  {
    name: 'a region fd offset not page aligned',
    kind: 'mmaps',
    answer: bar0With(bar0Info({ offset: 100n }), () => sealedMemfd(3 * BAR0_SIZE)),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: { code: 'EINVAL', op: 'mmap' },
  },
  {
    name: 'an unsealed region memfd: refused by default (a shrink would SIGBUS us)',
    kind: 'mmaps',
    answer: bar0With(bar0Info(), () => memfdCreate('unsealed', BAR0_SIZE, MFD_CLOEXEC)),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: { code: 'EPERM', op: 'mmap', detail: /not sealed against shrinking \(F_SEAL_SHRINK\)/ },
  },
  {
    name: "an unsealed region memfd with unsealedFds: 'map': mapped after the size check",
    kind: 'mmaps',
    options: { unsealedFds: 'map' },
    answer: bar0With(bar0Info(), () => memfdCreate('unsealed', BAR0_SIZE, MFD_CLOEXEC)),
    run: async (x) => {
      const m = await x.client.mmap(0n, BAR0_SIZE);
      m.bytes[BAR0_SIZE - 1] = 0x5a;
      assert.equal(m.bytes[BAR0_SIZE - 1], 0x5a);
      m.unmap();
    },
    expect: 'ok',
  },
  {
    name: "an unsealed region memfd too small, with unsealedFds: 'map'",
    kind: 'mmaps',
    options: { unsealedFds: 'map' },
    answer: bar0With(bar0Info(), () => memfdCreate('unsealed', 4096, MFD_CLOEXEC)),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: { code: 'EPROTO', op: 'mmap', detail: /holds 0x1000 bytes/ },
  },
  {
    name: "an eventfd as a region fd, with unsealedFds: 'map' (no size to map)",
    kind: 'mmaps',
    options: { unsealedFds: 'map' },
    answer: bar0With(bar0Info(), () => eventfdCreate()),
    run: (x) => x.client.mmap(0n, BAR0_SIZE),
    expect: { code: 'EPROTO', op: 'mmap', detail: /holds 0x0 bytes/ },
  },
  {
    name: 'a sealed region fd: the server cannot shrink it under our mapping',
    kind: 'mmaps',
    run: async (x) => {
      const m = await x.client.mmap(0n, BAR0_SIZE);
      try {
        ftruncate(x.srv.bar0, 0);
      } finally {
        // Still there: with the seal the last page cannot have gone.
        assert.equal(m.bytes[BAR0_SIZE - 1], 0);
        m.unmap();
      }
    },
    expect: { code: 'EPERM', op: 'ftruncate' },
  },
  {
    name: 'an fd on a region without the MMAP flag is closed, not kept',
    kind: 'fds',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, bar0Info({ flags: 3 }), [srv.bar0])),
    run: async (x) => {
      const before = openFdCount();
      await x.dev.regionInfo(0);
      assert.equal(openFdCount(), before);
      await x.client.mmap(0n, BAR0_SIZE);
    },
    expect: { code: 'EINVAL', op: 'mmap', detail: /region 0 cannot be mapped/ },
  },
  {
    name: 'two fds on one region-info reply',
    kind: 'fds',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, bar0Info(), [srv.bar0, srv.bar0])),
    run: (x) => x.dev.regionInfo(0),
    expect: {
      code: 'EPROTO',
      op: 'VFIO_USER_DEVICE_GET_REGION_INFO',
      detail: /2 fds on the reply; it takes at most 1/,
    },
  },
  {
    name: 'an mmap cookie whose fd is smaller than the cookie',
    kind: 'mmaps',
    answer: cookie(0, BigInt(BAR0_SIZE), 4096),
    run: async (x) => {
      const c = await x.dev.mmapCookie(0, 'uc');
      return x.client.mmap(c.offset, BAR0_SIZE);
    },
    expect: {
      code: 'EPROTO',
      op: 'mmap',
      detail: /BAR 0's mmap cookie from VFIO_USER_DEVICE_FEATURE holds 0x1000/,
    },
  },
  {
    name: 'an mmap cookie for another BAR',
    kind: 'mmaps',
    answer: cookie(2, BigInt(BAR0_SIZE)),
    run: (x) => x.dev.mmapCookie(0, 'uc'),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_FEATURE', detail: /cookie for BAR 2, asked for 0/ },
  },
  {
    name: 'an mmap cookie of 2^64-1 bytes',
    kind: 'mmaps',
    answer: cookie(0, (1n << 64n) - 1n),
    run: (x) => x.dev.mmapCookie(0, 'uc'),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_FEATURE', detail: /cookie size 0xffffffffffffffff/ },
  },
  {
    name: 'a dma-buf fd smaller than its range',
    kind: 'mmaps',
    answer: feature(VFIO_DEVICE_FEATURE_DMA_BUF, async (s, srv, p) => {
      const fd = sealedMemfd(4096);
      try {
        await srv.reply(s, p, [fd]);
      } finally {
        closeFd(fd);
      }
    }),
    run: async (x) => {
      const fd = await x.dev.exportDmaBuf(0, [{ offset: 0n, length: BigInt(BAR0_SIZE) }]);
      try {
        return await x.client.mmapDmaBuf(fd, 0n, BAR0_SIZE);
      } finally {
        await x.client.closeFd(fd);
      }
    },
    expect: {
      code: 'EPROTO',
      op: 'mmap',
      detail: /BAR 0's dma-buf from VFIO_USER_DEVICE_FEATURE holds 0x1000/,
    },
  },
  {
    name: "a dma-buf reply that rewrites the ranges: ours are mapped, not the server's",
    kind: 'mmaps',
    answer: feature(VFIO_DEVICE_FEATURE_DMA_BUF, (s, srv, p) => {
      const at = FEATURE_DATA + dmaBufStruct.offsetOf('dma_ranges');
      dmaRangeStruct.write(p, { offset: 1n << 30n, length: 1n << 30n }, at);
      return srv.reply(s, p, [srv.bar0]);
    }),
    run: async (x) => {
      const fd = await x.dev.exportDmaBuf(0, [{ offset: 0n, length: BigInt(BAR0_SIZE) }]);
      try {
        const m = await x.client.mmapDmaBuf(fd, 0n, BAR0_SIZE);
        m.unmap();
      } finally {
        await x.client.closeFd(fd);
      }
    },
    expect: 'ok',
  },
  // ------------------------------------------------------------------------- DMA requests
  {
    name: 'a DMA_READ larger than the negotiated max_data_xfer_size',
    kind: 'DMA requests',
    caps: { maxDataXferSize: 4096 },
    run: async (x) => {
      await mapped(x);
      replyOutcome(await x.srv.call(C.DMA_READ, encodeDmaReadRequest({ address: IOVA, count: 4097 })));
    },
    expect: { code: 'E2BIG', op: 'VFIO_USER_DMA_READ' },
  },
  {
    name: 'a DMA_WRITE larger than the negotiated max_data_xfer_size lands nowhere',
    kind: 'DMA requests',
    caps: { maxDataXferSize: 4096 },
    run: (x) => strayWrite(x, { data: new Uint8Array(4097).fill(0xee) }),
    expect: { code: 'E2BIG', op: 'VFIO_USER_DMA_WRITE' },
  },
  {
    name: 'a partial DMA_UNMAP is refused (type1 v2) and never sent',
    kind: 'DMA requests',
    run: async (x) => {
      await mapped(x);
      try {
        await x.client.dmaUnmap(IOVA + 4096n, 4096n);
      } finally {
        assert.equal(x.srv.count(C.DMA_UNMAP), 0);
      }
    },
    expect: {
      code: 'EINVAL',
      op: 'VFIO_USER_DMA_UNMAP',
      detail: /would split the mapping at 0x10000\+0x2000/,
    },
  },
  {
    name: 'a DMA_WRITE after the unmap',
    kind: 'DMA requests',
    run: (x) => strayWrite(x, { address: IOVA + 4096n, data: Uint8Array.of(1, 2, 3) }, { unmap: true }),
    expect: { code: 'EFAULT', op: 'VFIO_USER_DMA_WRITE' },
  },
  {
    name: 'a DMA_UNMAP the server fails: the range is gone from our side all the same',
    kind: 'DMA requests',
    answer: on(C.DMA_UNMAP, (s, srv) => srv.error(s, Errno.EBUSY)),
    run: (x) => mapped(x).then(() => x.client.dmaUnmap(IOVA, 8192n)),
    expect: { code: 'EBUSY', op: 'VFIO_USER_DMA_UNMAP' },
    after: (x) =>
      assert.rejects(dmaWrite(x.srv, IOVA, Uint8Array.of(1)), (e: VfioError) => e.code === 'EFAULT'),
  },
  {
    name: 'a DMA_WRITE straddling the end of a mapping',
    kind: 'DMA requests',
    run: (x) => strayWrite(x, { address: IOVA + 8190n, data: Uint8Array.of(1, 2, 3, 4) }),
    expect: { code: 'EFAULT', op: 'VFIO_USER_DMA_WRITE' },
  },
  {
    name: 'a DMA_WRITE into a read-only mapping',
    kind: 'DMA requests',
    run: (x) => strayWrite(x, {}, { access: { read: true, write: false } }),
    expect: { code: 'EPERM', op: 'VFIO_USER_DMA_WRITE' },
  },
  {
    name: 'a DMA_READ whose address + count passes 2^64',
    kind: 'DMA requests',
    run: async (x) => {
      const p = new Uint8Array([...u32(0xfffff000, 0xffffffff), ...u32(0x2000, 0)]);
      replyOutcome(await x.srv.call(C.DMA_READ, p));
    },
    expect: { code: 'EINVAL', op: 'VFIO_USER_DMA_READ' },
  },
  {
    name: 'a DMA_WRITE whose count is not its data length',
    kind: 'DMA requests',
    run: (x) =>
      strayWrite(x, {
        payload: new Uint8Array([...u32(Number(IOVA), 0), ...u32(64, 0), ...new Uint8Array(8).fill(9)]),
      }),
    expect: { code: 'EINVAL', op: 'VFIO_USER_DMA_WRITE', detail: /the client answered/ },
  },
  {
    name: 'a command the server may not send',
    kind: 'DMA requests',
    run: async (x) => replyOutcome(await x.srv.call(0x7777, new Uint8Array(8))),
    expect: { code: 'EINVAL', op: 'VFIO_USER_COMMAND_30583' },
  },
  {
    name: 'a DMA_READ with NO_REPLY is served without a reply',
    kind: 'DMA requests',
    run: async (x) => {
      await mapped(x);
      const req = encodeMessage(
        { msgId: 9, command: C.DMA_READ, flags: 0x10 },
        encodeDmaReadRequest({ address: IOVA, count: 8 }),
      );
      await x.srv.send(req);
      return x.dev.info();
    },
    expect: 'ok',
  },
];
