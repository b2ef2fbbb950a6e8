/**
 * Seeded mutations of valid messages thrown at the server (msg_size kept, so the stream stays
 * framed): every message is answered or deliberately not (NO_REPLY), nothing crashes, no handler
 * fails with anything but an errno (no "internal error" in the log), and no fd is left behind.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VFIO_DEVICE_FEATURE_GET, VFIO_TS_FEATURE_MMAP_COOKIE } from '../../src/abi/vfio.js';
import { VfioUserCommand as C, VfioUserFlags } from '../../src/abi/vfio-user.js';
import { closeFd, openFdCount } from '../../src/native/index.js';
import { encodeCommand, encodeMessage } from '../../src/wire/vfio-user.js';
import { access, concat, errnoOf, isReplyFrame, le, rig, u32s } from './raw.js';

/** xorshift32: deterministic, so a failure names its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const SEEDS = [1, 0xdecafbad, 20260425];
const PER_SEED = 700;

function templates(): Uint8Array[] {
  const map = concat(u32s(32, 3), new Uint8Array(24));
  le(map).setBigUint64(16, 0x100000n, true);
  le(map).setBigUint64(24, 0x1000n, true);
  return [
    encodeCommand(0, C.DEVICE_GET_INFO, u32s(16, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_GET_REGION_INFO, u32s(32, 0, 2, 0, 0, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_GET_REGION_INFO, u32s(64, 0, 7, 0, 0, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_GET_REGION_IO_FDS, u32s(16, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_GET_IRQ_INFO, u32s(16, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_SET_IRQS, u32s(20, 0x21, 0, 0, 0)),
    encodeCommand(0, C.DEVICE_SET_IRQS, concat(u32s(20, 0x22, 4, 0, 1), new Uint8Array([1]))),
    encodeCommand(0, C.REGION_READ, access(2, 0x40n, 8)),
    encodeCommand(0, C.REGION_READ, access(7, 0x10n, 4)),
    encodeCommand(0, C.REGION_WRITE, access(0, 0x4n, 4, u32s(0x1234))),
    encodeCommand(0, C.REGION_WRITE, access(7, 0x4n, 2, new Uint8Array([6, 0]))),
    encodeCommand(0, C.DMA_MAP, map),
    encodeCommand(0, C.DMA_UNMAP, concat(u32s(24, 0), new Uint8Array(16))),
    encodeCommand(
      0,
      C.DEVICE_FEATURE,
      concat(u32s(32, VFIO_DEVICE_FEATURE_GET | VFIO_TS_FEATURE_MMAP_COOKIE, 2, 0), new Uint8Array(16)),
    ),
    encodeCommand(
      0,
      C.DEVICE_FEATURE,
      concat(u32s(48, VFIO_DEVICE_FEATURE_GET | 11, 2, 0, 1 << 28, 1), u32s(0, 0, 0x1000, 0)),
    ),
    encodeCommand(0, C.REGION_WRITE_MULTI, concat(u32s(1, 0), access(0, 8n, 4), u32s(3, 0))),
    encodeCommand(0, C.DEVICE_RESET),
    encodeCommand(0, C.MIG_DATA_READ, u32s(8, 4)),
  ];
}

test('mutated messages: an errno or a success for each, no internal errors, no fd leaks', async () => {
  const r = rig('ivshmem');
  try {
    const before = openFdCount();
    for (const seed of SEEDS) {
      const next = rng(seed);
      const p = await r.negotiated({ writeMultiple: true });
      const base = templates();
      for (let i = 0; i < PER_SEED; i++) {
        const msg = base[next() % base.length]!.slice();
        const flips = 1 + (next() % 4);
        for (let k = 0; k < flips; k++) {
          // Any byte but msg_size (4..7): the stream stays framed.
          let at = next() % msg.length;
          if (at >= 4 && at < 8) at = 8 + (next() % 4);
          msg[at] = next() & 0xff;
        }
        le(msg).setUint16(0, 0x8000 | (i & 0x7fff), true);
        p.send(msg);
        // A sentinel after each message: everything before it has been handled.
        const id = i & 0x7fff;
        p.send(encodeCommand(id, C.DEVICE_GET_INFO, u32s(16, 0, 0, 0)));
        for (;;) {
          const f = await p.recv();
          if (!isReplyFrame(f)) {
            // A request of ours (DMA_READ/WRITE from a mutated DMA setup): refuse it.
            p.send(
              encodeMessage({
                msgId: f.header.msgId,
                command: f.header.command,
                flags: VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR,
                error: Errno.EFAULT,
              }),
            );
            continue;
          }
          if (f.header.msgId === id && f.header.command === C.DEVICE_GET_INFO) {
            assert.equal(errnoOf(f), 0, `seed ${seed} message ${i}: the sentinel`);
            break;
          }
          const e = errnoOf(f);
          assert.ok(e === 0 || (e >= 1 && e <= 4096), `seed ${seed} message ${i}: errno ${e}`);
          for (const fd of f.fds) closeFd(fd);
        }
      }
      p.close();
      await r.server.idle();
    }
    const internal = r.log.filter((l) => /internal error/.test(l));
    assert.deepEqual(internal, [], internal.join('\n'));
    assert.equal(openFdCount(), before, 'no fd left behind');
  } finally {
    r.close();
  }
});
