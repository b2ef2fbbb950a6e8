/**
 * Hostile-server scenarios about what a device reports: DEVICE_GET_INFO counts, region and IRQ
 * info, capability chains, region reads and writes.
 */
import assert from 'node:assert/strict';
import { VfioUserCommand as C } from '../../../src/abi/vfio-user.js';
import { describeDevice } from '../../../src/driver/describe.js';
import { closeFd } from '../../../src/native/index.js';
import {
  decodeRegionInfoRequest,
  decodeRegionReadRequest,
  decodeRegionWriteRequest,
  encodeDeviceInfo,
  encodeIrqInfo,
  encodeRegionInfoReply,
  encodeRegionReadReply,
  encodeRegionWriteReply,
} from '../../../src/wire/vfio-user.js';
import { BAR0_SIZE } from './server.js';
import { on, type Scenario, u32 } from './table.js';

export const RWM = 1 | 2 | 4;
const CAPS = 8;

/** Region 0's info with `over` fields changed (the honest one otherwise). */
export function bar0Info(
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
export const bar0With = (info: Uint8Array, makeFd: () => number) =>
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
];
