/**
 * Hostile-server scenarios about what a device reports and hands out: DEVICE_GET_INFO counts,
 * region and IRQ info, capability chains, region reads and writes, the fds behind mmap (region,
 * cookie, dma-buf: too small, unsealed, not a file), and the server's DMA_READ / DMA_WRITE.
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
import { describeDevice } from '../../../src/driver/describe.js';
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
import {
  decodeRegionInfoRequest,
  decodeRegionReadRequest,
  decodeRegionWriteRequest,
  encodeDeviceInfo,
  encodeDmaReadRequest,
  encodeDmaWriteRequest,
  encodeIrqInfo,
  encodeMessage,
  encodeRegionInfoReply,
  encodeRegionReadReply,
  encodeRegionWriteReply,
} from '../../../src/wire/vfio-user.js';
import { sealedMemfd } from '../fake.js';
import { BAR0_SIZE, type HostileServer, type Seen } from './server.js';
import { type Ctx, on, replyOutcome, type Scenario, u32 } from './table.js';

const IOVA = 0x10000n;
const RWM = 1 | 2 | 4;
const CAPS = 8;

/** Region 0's info with `over` fields changed (the honest one otherwise). */
function bar0Info(
  over: { flags?: number; size?: bigint; offset?: bigint; index?: number; argsz?: number } = {},
) {
  return encodeRegionInfoReply({
    argsz: over.argsz ?? 32,
    flags: over.flags ?? RWM,
    index: over.index ?? 0,
    capOffset: 0,
    size: over.size ?? BigInt(BAR0_SIZE),
    offset: over.offset ?? 0n,
    caps: [],
  });
}

/** Answers region 0's info with `info` and an fd the answer makes (closed once sent). */
const bar0With = (info: Uint8Array, makeFd: () => number) =>
  on(C.DEVICE_GET_REGION_INFO, async (s, srv) => {
    if (decodeRegionInfoRequest(s.payload).index !== 0) return srv.honest(s);
    const fd = makeFd();
    try {
      await srv.reply(s, info, [fd]);
    } finally {
      closeFd(fd);
    }
  });

/**
 * Region 0 with CAPS and the chain `caps` from offset `capOffset`: the 32-byte head alone
 * (argsz the whole) when the client asked with less, the whole otherwise.
 */
function capChain(caps: Uint8Array, capOffset = 32) {
  return on(C.DEVICE_GET_REGION_INFO, (s, srv) => {
    const full = new Uint8Array(32 + caps.length);
    full.set(bar0Info({ flags: RWM | CAPS, argsz: full.length }));
    new DataView(full.buffer).setUint32(12, capOffset, true);
    full.set(caps, 32);
    const asked = decodeRegionInfoRequest(s.payload).argsz;
    return srv.reply(s, asked >= full.length ? full : full.subarray(0, 32));
  });
}

/** A capability header (id u16, version u16, next u32) and its body. */
const cap = (id: number, next: number, body: Uint8Array = new Uint8Array(8)) => {
  const b = new Uint8Array(8 + body.length);
  b.set(u32(id | (1 << 16), next));
  b.set(body, 8);
  return b;
};

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

/** DEVICE_GET_INFO answered with these counts. */
const infoSays = (numRegions: number, numIrqs: number) =>
  on(C.DEVICE_GET_INFO, (s, srv) =>
    srv.reply(s, encodeDeviceInfo({ argsz: 16, flags: 3, numRegions, numIrqs })),
  );

export const DEVICE_SCENARIOS: readonly Scenario[] = [
  // -------------------------------------------------------------------------- device info
  {
    name: 'num_regions 0xffffffff: refused at once, no region asked for',
    kind: 'device info',
    answer: infoSays(0xffffffff, 5),
    run: (x) => describeDevice(x.dev),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /num_regions 4294967295 > 100/ },
    after: (x) => assert.equal(x.srv.count(C.DEVICE_GET_REGION_INFO), 0),
  },
  {
    name: 'num_irqs 0xffffffff',
    kind: 'device info',
    answer: infoSays(9, 0xffffffff),
    run: (x) => describeDevice(x.dev),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /num_irqs 4294967295 > 50/ },
  },
  {
    name: 'a DEVICE_GET_INFO reply of 4 bytes',
    kind: 'device info',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.reply(s, u32(16))),
    run: (x) => x.dev.info(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /payload is 4 bytes/ },
  },
  {
    name: 'a DEVICE_GET_INFO reply of 4 KiB',
    kind: 'device info',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.reply(s, new Uint8Array(4096))),
    run: (x) => x.dev.info(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /4096 bytes; at most 256/ },
  },
  // -------------------------------------------------------------------------- region info
  {
    name: 'region info for another index',
    kind: 'region info',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, bar0Info({ index: 3 }))),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /asked for region 0, got 3/ },
  },
  {
    name: 'region info longer than our argsz',
    kind: 'region info',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, new Uint8Array(40).fill(0, 0))),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /40 bytes; at most 32/ },
  },
  {
    name: 'region info whose argsz grows with every ask (an endless argsz exchange)',
    kind: 'region info',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => {
      const asked = decodeRegionInfoRequest(s.payload).argsz;
      return srv.reply(s, bar0Info({ flags: RWM | CAPS, argsz: asked + 8 }));
    }),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /asked for argsz 40, then 48/ },
    after: (x) => assert.equal(x.srv.count(C.DEVICE_GET_REGION_INFO), 2),
  },
  {
    name: 'region info with argsz 16',
    kind: 'region info',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, bar0Info({ argsz: 16 }))),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /argsz 16 < 32/ },
  },
  {
    name: 'region info of 20 bytes',
    kind: 'region info',
    answer: on(C.DEVICE_GET_REGION_INFO, (s, srv) => srv.reply(s, new Uint8Array(20))),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /payload is 20 bytes/ },
  },
  // ------------------------------------------------------------------------ region access
  {
    name: 'a config read answered short: EIO, not a RangeError in describeDevice',
    kind: 'region access',
    answer: on(C.REGION_READ, (s, srv) => {
      const q = decodeRegionReadRequest(s.payload);
      return srv.reply(s, encodeRegionReadReply({ ...q, data: new Uint8Array(q.count - 1) }));
    }),
    run: (x) => describeDevice(x.dev),
    expect: { code: 'EIO', op: 'VFIO_USER_REGION_READ', detail: /region 7 at 0x0: \d+ of \d+ bytes/ },
  },
  {
    name: 'a read answered with more bytes than asked',
    kind: 'region access',
    answer: on(C.REGION_READ, (s, srv) => {
      const q = decodeRegionReadRequest(s.payload);
      return srv.reply(s, encodeRegionReadReply({ ...q, data: new Uint8Array(q.count + 4) }));
    }),
    run: (x) => x.dev.readConfig(0, 48),
    expect: { code: 'EPROTO', op: 'VFIO_USER_REGION_READ', detail: /68 bytes; at most 64/ },
  },
  {
    name: 'a read reply whose count is not its data length',
    kind: 'region access',
    answer: on(C.REGION_READ, (s, srv) => {
      const q = decodeRegionReadRequest(s.payload);
      const p = encodeRegionReadReply({ ...q, data: new Uint8Array(q.count - 8) });
      new DataView(p.buffer).setUint32(12, q.count, true);
      return srv.reply(s, p);
    }),
    run: (x) => x.dev.readConfig(0, 48),
    expect: { code: 'EPROTO', op: 'VFIO_USER_REGION_READ', detail: /count 48 but 40 data bytes/ },
  },
  {
    name: 'a write answered short',
    kind: 'region access',
    answer: on(C.REGION_WRITE, (s, srv) => {
      const q = decodeRegionWriteRequest(s.payload);
      return srv.reply(s, encodeRegionWriteReply({ ...q, count: q.data.length - 1 }));
    }),
    run: (x) => x.dev.writeConfig(4, new Uint8Array(2)),
    expect: { code: 'EIO', op: 'VFIO_USER_REGION_WRITE', detail: /1 of 2 bytes/ },
  },
  // ----------------------------------------------------------------------------- IRQ info
  {
    name: 'IRQ info for another index',
    kind: 'IRQ info',
    answer: on(C.DEVICE_GET_IRQ_INFO, (s, srv) =>
      srv.reply(s, encodeIrqInfo({ argsz: 16, flags: 1, index: 4, count: 1 })),
    ),
    run: (x) => x.dev.irqInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_IRQ_INFO', detail: /asked for IRQ index 0, got 4/ },
  },
  {
    name: 'IRQ count 0xffffffff',
    kind: 'IRQ info',
    answer: on(C.DEVICE_GET_IRQ_INFO, (s, srv) =>
      srv.reply(s, encodeIrqInfo({ argsz: 16, flags: 1, index: 2, count: 0xffffffff })),
    ),
    run: (x) => x.dev.irqInfo(2),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_IRQ_INFO', detail: /count 4294967295 > 2048/ },
  },
  // -------------------------------------------------------------------- capability chains
  {
    name: 'a capability whose next points at itself',
    kind: 'capability chains',
    answer: capChain(cap(2, 32)),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /points back to 32/ },
  },
  {
    name: 'a capability whose next points past the payload',
    kind: 'capability chains',
    answer: capChain(cap(2, 4096)),
    run: (x) => x.dev.regionInfo(0),
    expect: {
      code: 'EPROTO',
      op: 'VFIO_USER_DEVICE_GET_REGION_INFO',
      detail: /points to 4096, past the payload/,
    },
  },
  {
    name: 'a sparse-mmap capability with 0xffffffff areas',
    kind: 'capability chains',
    answer: capChain(cap(1, 0, u32(0xffffffff, 0))),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /4294967295 areas do not fit/ },
  },
  {
    name: 'a sparse area whose offset + size passes 2^64',
    kind: 'capability chains',
    answer: capChain(
      cap(1, 0, new Uint8Array([...u32(1, 0), ...u32(0, 0x80000000), ...u32(0x1000, 0x80000000)])),
    ),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /wraps past 2\^64/ },
  },
  {
    name: 'a chain of 65 capabilities',
    kind: 'capability chains',
    answer: capChain(
      new Uint8Array(
        Array.from({ length: 65 }, (_, i) => [...cap(2, i === 64 ? 0 : 32 + 16 * (i + 1))]).flat(),
      ),
    ),
    run: (x) => x.dev.regionInfo(0),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_REGION_INFO', detail: /more than 64 capabilities/ },
  },
  {
    name: 'cap_offset inside the region-info struct',
    kind: 'capability chains',
    answer: capChain(cap(2, 0), 8),
    run: (x) => x.dev.regionInfo(0),
    expect: {
      code: 'EPROTO',
      op: 'VFIO_USER_DEVICE_GET_REGION_INFO',
      detail: /offset 8 does not move past 31/,
    },
  },
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
