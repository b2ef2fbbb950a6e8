/**
 * The hot path (src/server/fast-path.ts) answers exactly what the full path answers. The same
 * table of REGION_READ / REGION_WRITE messages — good ones, posted ones, and every kind the fast
 * path must decline (bad flags, a reply, before VERSION, zero or oversized counts, a bad region,
 * past the end, an offset past 2^53, payload caps, a count that disagrees with the data) plus a
 * device error once the access has started (memory decode off: EIO) — goes to a server whose
 * fast path is on and to one with --verbose (tracing turns it off), each message in its own
 * sendmsg and all in one; the replies must be identical byte for byte and in order. The fast
 * server must have framed none of the good messages.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import type { Frame } from '../../src/wire/vfio-user.js';
import { access, concat, packRaw, qemuVersionPayload, rawPeer, rig, u32s } from './raw.js';

const R = C.REGION_READ;
const W = C.REGION_WRITE;
const NR = VfioUserFlags.NO_REPLY;

interface Msg {
  readonly what: string;
  readonly bytes: Uint8Array;
  /** A message the fast path takes (it must never reach onFrame there). */
  readonly fast: boolean;
  /** No reply comes (posted). */
  readonly posted?: boolean;
}

let id = 0x100;
const msg = (
  what: string,
  command: number,
  payload: Uint8Array,
  o: Partial<Msg> & { flags?: number } = {},
): Msg => ({
  what,
  bytes: packRaw({ msgId: id++, command, payload, flags: o.flags ?? 0 }),
  fast: o.fast ?? false,
  ...(o.posted ? { posted: true } : {}),
});

/** edu: BAR0 is 1 MiB of trapped registers, config space is region 7 (256 bytes). */
function table(): Msg[] {
  id = 0x100;
  const big = new Uint8Array(16);
  new DataView(big.buffer).setBigUint64(0, 1n << 53n, true);
  new DataView(big.buffer).setUint32(8, 0, true);
  new DataView(big.buffer).setUint32(12, 4, true);
  return [
    msg('config read 4', R, access(7, 0n, 4), { fast: true }),
    msg('config read 64', R, access(7, 0n, 64), { fast: true }),
    msg('BAR0 read 4 (trapped)', R, access(0, 0n, 4), { fast: true }),
    msg('BAR0 read 64', R, access(0, 0x80n, 64), { fast: true }),
    msg('BAR0 write 4 (liveness)', W, access(0, 4n, 4, u32s(0x1234)), { fast: true }),
    msg('BAR0 read back', R, access(0, 4n, 4), { fast: true }),
    msg('posted write', W, access(0, 4n, 4, u32s(0x5678)), { fast: true, posted: true, flags: NR }),
    msg('posted read (no reply)', R, access(0, 4n, 4), { fast: true, posted: true, flags: NR }),
    msg('read back after the posted write', R, access(0, 4n, 4), { fast: true }),
    msg('read, extra payload bytes ignored', R, concat(access(7, 0n, 4), new Uint8Array(8)), { fast: true }),
    msg('read 8 KiB: over the reply buffer, the full path', R, access(0, 0n, 8192)),
    msg('count 0', R, access(7, 0n, 0)),
    msg('count over max_data_xfer_size', R, access(0, 0n, (1 << 20) + 1)),
    msg('bad region', R, access(9, 0n, 4)),
    msg('VGA region on a device without VGA', R, access(8, 0n, 4)),
    msg('past the end', R, access(7, 254n, 4)),
    msg('offset past 2^53', R, big),
    msg('read payload over 256', R, concat(access(7, 0n, 4), new Uint8Array(300))),
    msg('write count disagrees with the data', W, access(0, 4n, 8, u32s(1))),
    msg('write past the end', W, access(7, 254n, 4, u32s(1))),
    msg('reserved flag bit', R, access(7, 0n, 4), { flags: 0x40 }),
    msg('error flag on a command', R, access(7, 0n, 4), { flags: VfioUserFlags.ERROR }),
    msg('a reply nobody asked for', R, access(7, 0n, 4), { flags: VfioUserFlags.TYPE_REPLY }),
    msg('posted read past the end: no error reply', R, access(7, 254n, 4), { flags: NR, posted: true }),
    // Memory decode off (command register bit 1): BAR accesses are EIO once they start.
    msg('memory decode off', W, access(7, 4n, 2, new Uint8Array([0, 0])), { fast: true }),
    msg('BAR0 read with decode off: EIO', R, access(0, 0n, 4), { fast: true }),
    msg('posted BAR0 write with decode off: no reply', W, access(0, 4n, 4, u32s(1)), {
      fast: true,
      posted: true,
      flags: NR,
    }),
    msg('memory decode on again', W, access(7, 4n, 2, new Uint8Array([6, 0])), { fast: true }),
    msg('BAR0 read again', R, access(0, 0n, 4), { fast: true }),
  ];
}

/** The replies to `msgs`, sent one per sendmsg or all in one, as [msgId, flags, error, payload]. */
async function replies(verbose: boolean, batched: boolean): Promise<{ got: unknown[]; framed: number }> {
  const r = rig('edu', verbose ? { verbose: true } : {});
  const [a, b] = (await import('../../src/native/index.js')).socketPair();
  const info = r.server.adopt(b);
  let framed = 0;
  const onFrame = info.session.onFrame.bind(info.session);
  info.session.onFrame = (f: Frame) => {
    framed++;
    onFrame(f);
  };
  const p = rawPeer(a);
  try {
    const early = await p.call(R, access(7, 0n, 4)); // before VERSION: the full path's EINVAL
    const got: unknown[] = [[early.header.error, early.header.flags]];
    await p.call(C.VERSION, qemuVersionPayload());
    framed = 0;
    const msgs = table();
    if (batched) p.send(concat(...msgs.map((m) => m.bytes)));
    for (const m of msgs) {
      if (!batched) p.send(m.bytes);
      if (m.posted) continue;
      const f = await p.recv();
      got.push([m.what, f.header.msgId, f.header.command, f.header.flags, f.header.error, [...f.payload]]);
    }
    // Nothing else may come: a GET_INFO is the next reply.
    const info2 = await p.call(C.DEVICE_GET_INFO, u32s(16, 0, 0, 0));
    got.push(info2.header.command);
    const expectFramed = msgs.filter((m) => !m.fast).length + 1;
    return { got, framed: framed - expectFramed };
  } finally {
    p.close();
    await r.server.idle();
    r.close();
  }
}

describe('fast path', () => {
  for (const batched of [false, true]) {
    test(`the same replies as the full path, ${batched ? 'all messages in one sendmsg' : 'one sendmsg each'}`, async () => {
      const full = await replies(true, batched);
      const fast = await replies(false, batched);
      assert.deepEqual(fast.got, full.got);
      // The full path frames everything; the fast one none of the messages it takes.
      assert.equal(full.framed, table().filter((m) => m.fast).length);
      assert.equal(fast.framed, 0);
    });
  }
});
