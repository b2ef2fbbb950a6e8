/**
 * Migration over the wire, with raw messages (src/server/commands/migration.ts): the VERSION
 * migration capability; MIG_DEVICE_STATE SET from every state to every state with the errno and
 * the state after, against vfio.h's rules written out here (not read from src/core/migration/
 * fsm.ts); MIG_DATA_READ / MIG_DATA_WRITE framing; DMA_LOGGING_START / REPORT layouts.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_GET as GET,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE as MIG_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION as MIGRATION,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT as REPORT,
  VfioMigState as S,
  VFIO_DEVICE_FEATURE_SET as SET,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START as START,
} from '../../src/abi/vfio.js';
import { VfioUserCommand as C } from '../../src/abi/vfio-user.js';
import { MAX_REPORT_BITMAP } from '../../src/core/migration/feature.js';
import { migStateName } from '../../src/core/migration/fsm.js';
import { decodeVersion, encodeVersion } from '../../src/wire/vfio-user.js';
import { concat, errnoOf, le, type RawPeer, rig, u32s } from './raw.js';

const r = rig('edu');
after(() => r.close());

const name = migStateName;

async function fresh(): Promise<RawPeer> {
  await r.server.idle();
  return r.negotiated();
}

async function setState(p: RawPeer, state: number): Promise<number> {
  return errnoOf(await p.call(C.DEVICE_FEATURE, u32s(16, SET | MIG_STATE, state, 0)));
}

async function getState(p: RawPeer): Promise<number> {
  const f = await p.call(C.DEVICE_FEATURE, u32s(16, GET | MIG_STATE, 0, 0));
  assert.equal(errnoOf(f), 0);
  assert.equal(f.payload.length, 16, 'GET: struct and data');
  assert.equal(le(f.payload).getUint32(0, true), 16, 'argsz');
  return le(f.payload).getUint32(8, true);
}

/** MIG_DATA_READ of up to `size`: the data (argsz checked to be 8 + its length). */
async function readData(p: RawPeer, size: number): Promise<Uint8Array> {
  const f = await p.call(C.MIG_DATA_READ, u32s(8 + size, size));
  assert.equal(errnoOf(f), 0);
  const argsz = le(f.payload).getUint32(0, true);
  const data = f.payload.subarray(8);
  assert.equal(argsz, 8 + data.length, 'reply argsz');
  assert.equal(le(f.payload).getUint32(4, true), data.length, 'reply size');
  return data.slice();
}

/** A whole stream of this edu, read in STOP_COPY over the wire. */
async function wholeStream(): Promise<Uint8Array> {
  const p = await fresh();
  try {
    assert.equal(await setState(p, S.STOP_COPY), 0);
    const parts: Uint8Array[] = [];
    for (;;) {
      const d = await readData(p, 4096);
      if (d.length === 0) return concat(...parts);
      parts.push(d);
    }
  } finally {
    p.close();
  }
}

describe('VERSION migration capability', () => {
  test('the client pgsize when a power of two >= 4 KiB, max_bitmap_size no larger than ours; else EINVAL', async () => {
    const propose = (m: Record<string, number>) =>
      encodeVersion({ major: 0, minor: 0, json: { capabilities: { migration: m } } });
    const table: [Record<string, number>, Record<string, number> | number][] = [
      [
        { pgsize: 4096, max_bitmap_size: 1024 },
        { pgsize: 4096, max_bitmap_size: 1024 },
      ],
      [
        { pgsize: 65536, max_bitmap_size: 1 << 30 },
        { pgsize: 65536, max_bitmap_size: MAX_REPORT_BITMAP },
      ],
      [{ pgsize: 5000, max_bitmap_size: 1024 }, Errno.EINVAL],
      [{ pgsize: 2048, max_bitmap_size: 1024 }, Errno.EINVAL],
    ];
    for (const [m, want] of table) {
      await r.server.idle();
      const p = r.connect();
      try {
        const f = await p.call(C.VERSION, propose(m));
        if (typeof want === 'number') assert.equal(errnoOf(f), want, JSON.stringify(m));
        else assert.deepEqual(decodeVersion(f.payload).json?.capabilities, { migration: want });
      } finally {
        p.close();
      }
    }
  });
});

describe('MIG_DEVICE_STATE over vfio-user', () => {
  test('MIGRATION GET: STOP_COPY | P2P | PRE_COPY', async () => {
    const p = await fresh();
    try {
      const f = await p.call(C.DEVICE_FEATURE, concat(u32s(16, GET | MIGRATION), new Uint8Array(8)));
      assert.equal(errnoOf(f), 0);
      assert.equal(le(f.payload).getBigUint64(8, true), 7n);
    } finally {
      p.close();
    }
  });

  test('every state to every state (and 8): the state reached or EINVAL with the state kept', async () => {
    const stream = await wholeStream();
    // vfio.h, "enum vfio_device_mig_state": with every feature, any state reaches any other
    // (vfio_mig_get_next_state resolves the path) except: STOP_COPY -> PRE_COPY(_P2P) ("return
    // error"), anything -> ERROR (not a state one requests), a value outside the enum.
    const refused = (from: number, to: number) =>
      to === S.ERROR ||
      to > S.PRE_COPY_P2P ||
      (from === S.STOP_COPY && (to === S.PRE_COPY || to === S.PRE_COPY_P2P));
    let arcs = 0;
    for (let from: number = S.STOP; from <= S.PRE_COPY_P2P; from++)
      for (let to = 0; to <= 8; to++) {
        const p = await fresh();
        const what = `${name(from)} -> ${name(to)}`;
        try {
          assert.equal(await setState(p, from), 0, `reach ${name(from)}`);
          if (from === S.RESUMING)
            assert.equal(
              errnoOf(await p.call(C.MIG_DATA_WRITE, concat(u32s(8 + stream.length, stream.length), stream))),
              0,
            );
          const errno = await setState(p, to);
          assert.equal(errno, refused(from, to) ? Errno.EINVAL : 0, what);
          assert.equal(await getState(p), refused(from, to) ? from : to, `${what}: the state after`);
          arcs++;
        } finally {
          p.close();
        }
      }
    assert.equal(arcs, 7 * 9);
    // The client left in each of those states; the device is RUNNING for the next (reset).
    const p = await fresh();
    assert.equal(await getState(p), S.RUNNING);
    p.close();
  });
});

describe('MIG_DATA_READ / MIG_DATA_WRITE', () => {
  test('framing: size past max_data_xfer_size or an argsz short of it EINVAL; outside the states EINVAL', async () => {
    const p = await fresh();
    try {
      assert.equal(errnoOf(await p.call(C.MIG_DATA_READ, u32s(8 + 16, 16))), Errno.EINVAL, 'RUNNING');
      assert.equal(await setState(p, S.STOP_COPY), 0);
      assert.equal(errnoOf(await p.call(C.MIG_DATA_READ, u32s(8 + (2 << 20), 2 << 20))), Errno.EINVAL);
      assert.equal(errnoOf(await p.call(C.MIG_DATA_READ, u32s(8, 16))), Errno.EINVAL, 'argsz 8 for 16');
      assert.equal(
        errnoOf(await p.call(C.MIG_DATA_WRITE, concat(u32s(12, 4), new Uint8Array(4)))),
        Errno.EINVAL,
        'write in STOP_COPY',
      );
      // The stream: the magic first, then to its end, then nothing.
      const head = await readData(p, 8);
      assert.equal(new TextDecoder().decode(head), 'vfiotsmg');
      while ((await readData(p, 1 << 16)).length > 0);
      assert.equal((await readData(p, 16)).length, 0, 'after the end');
    } finally {
      p.close();
    }
  });

  test('a damaged stream: its write is EINVAL, so is RESUMING -> RUNNING, the device stays RESUMING; a good one then loads', async () => {
    const stream = await wholeStream();
    const p = await fresh();
    try {
      assert.equal(await setState(p, S.RESUMING), 0);
      const bad = stream.slice();
      bad[bad.length - 1]! ^= 1; // the digest's last byte
      // The write that completes the stream checks it: EINVAL, the device as it was.
      assert.equal(
        errnoOf(await p.call(C.MIG_DATA_WRITE, concat(u32s(8 + bad.length, bad.length), bad))),
        Errno.EINVAL,
      );
      assert.equal(await getState(p), S.RESUMING);
      assert.equal(await setState(p, S.RUNNING), Errno.EINVAL);
      assert.equal(await getState(p), S.RESUMING);
    } finally {
      p.close();
    }
    const q = await fresh();
    try {
      assert.equal(await setState(q, S.RESUMING), 0);
      assert.equal(
        errnoOf(await q.call(C.MIG_DATA_WRITE, concat(u32s(8 + stream.length, stream.length), stream))),
        0,
      );
      assert.equal(await setState(q, S.RUNNING), 0);
    } finally {
      q.close();
    }
  });
});

describe('DMA_LOGGING over vfio-user', () => {
  test('START echoes with the page size; REPORT carries its struct and the bitmap; STOP', async () => {
    const p = await fresh();
    try {
      // page_size 4096, one range [0x100000, +64 KiB).
      const start = concat(
        u32s(8 + 16 + 16, SET | START),
        u32s(4096, 0, 1, 0),
        u32s(0x100000, 0, 0x10000, 0),
      );
      const s = await p.call(C.DEVICE_FEATURE, start);
      assert.equal(errnoOf(s), 0);
      assert.deepEqual([...s.payload], [...start]);
      // 16 pages: one u64 of bitmap.
      const report = concat(
        u32s(8 + 24 + 8, GET | REPORT),
        u32s(0x100000, 0, 0x10000, 0, 4096, 0),
        new Uint8Array(8),
      );
      const f = await p.call(C.DEVICE_FEATURE, report);
      assert.equal(errnoOf(f), 0);
      assert.equal(f.payload.length, 8 + 24 + 8);
      assert.equal(le(f.payload).getUint32(0, true), 8 + 24 + 8, 'argsz');
      assert.equal(le(f.payload).getBigUint64(8 + 24, true), 0n, 'nothing written');
      assert.equal(errnoOf(await p.call(C.DEVICE_FEATURE, u32s(8, SET | 7))), 0, 'STOP');
      assert.equal(errnoOf(await p.call(C.DEVICE_FEATURE, report)), Errno.EINVAL, 'REPORT after STOP');
    } finally {
      p.close();
    }
  });
});
