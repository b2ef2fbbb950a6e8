import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand as C, VFIO_USER_DEFAULT_MAX_MSG_SIZE } from '../../src/abi/vfio-user.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import {
  decodeMessage,
  encodeCommand,
  encodeErrorReply,
  encodeRegionWriteRequest,
  encodeReply,
  encodeReplyPayload,
  type Frame,
  fromHex,
  MessageFramer,
  type Need,
  toHex,
} from '../../src/wire/vfio-user.js';

/** mulberry32: small, seeded, reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const isFrame = (r: Frame | Need): r is Frame => 'bytes' in r;

function drain(f: MessageFramer): Frame[] {
  const out: Frame[] = [];
  for (;;) {
    const r = f.next();
    if (!isFrame(r)) return out;
    out.push(r);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

const reset = (id: number) => encodeCommand(id, C.DEVICE_RESET);
/** A REGION_WRITE of n bytes: 32 + n bytes on the wire. */
const write = (id: number, n: number) =>
  encodeCommand(
    id,
    C.REGION_WRITE,
    encodeRegionWriteRequest({ offset: 0n, region: 0, data: new Uint8Array(n).fill(id & 0xff) }),
  );

describe('MessageFramer', () => {
  it('reports how many bytes it needs', () => {
    const f = new MessageFramer();
    assert.deepEqual(f.next(), { need: 16 });
    const m = write(1, 16); // 48 bytes
    f.push(m.subarray(0, 10));
    assert.deepEqual(f.next(), { need: 6 });
    f.push(m.subarray(10, 16));
    assert.deepEqual(f.next(), { need: 32 });
    f.push(m.subarray(16, 47));
    assert.deepEqual(f.next(), { need: 1 });
    assert.equal(f.buffered, 47);
    f.push(m.subarray(47));
    const fr = f.next();
    assert.ok(isFrame(fr));
    assert.equal(toHex(fr.bytes), toHex(m));
    assert.equal(toHex(fr.payload), toHex(m.subarray(16)));
    assert.deepEqual(fr.header, { msgId: 1, command: 10, msgSize: 48, flags: 0, error: 0 });
    assert.deepEqual(f.next(), { need: 16 });
    assert.equal(f.buffered, 0);
  });

  it('returns a header-only message at once', () => {
    const f = new MessageFramer();
    f.push(reset(9));
    const fr = f.next();
    assert.ok(isFrame(fr));
    assert.equal(fr.payload.byteLength, 0);
  });

  it('splits a stream at every byte boundary', () => {
    const msgs = [write(1, 5), reset(2), encodeErrorReply(3, C.VERSION, Errno.EINVAL), write(4, 40)];
    const stream = concat(msgs);
    for (let k = 0; k <= stream.byteLength; k++) {
      const f = new MessageFramer();
      f.push(stream.subarray(0, k));
      const got = drain(f);
      f.push(stream.subarray(k));
      got.push(...drain(f));
      assert.deepEqual(
        got.map((g) => toHex(g.bytes)),
        msgs.map(toHex),
        `split at ${k}`,
      );
    }
  });

  it('takes a stream one byte at a time', () => {
    const msgs = [
      write(1, 3),
      reset(2),
      write(3, 0),
      encodeReply(3, C.REGION_WRITE, fromHex('00'.repeat(16))),
    ];
    const stream = concat(msgs);
    const f = new MessageFramer();
    const got: Frame[] = [];
    for (let i = 0; i < stream.byteLength; i++) {
      f.push(stream.subarray(i, i + 1));
      got.push(...drain(f));
    }
    assert.deepEqual(
      got.map((g) => toHex(g.bytes)),
      msgs.map(toHex),
    );
  });

  it('returns many messages from one chunk, as views of it', () => {
    const msgs = Array.from({ length: 50 }, (_, i) => write(i, i % 7));
    const stream = concat(msgs);
    const f = new MessageFramer();
    f.push(stream);
    const got = drain(f);
    assert.equal(got.length, 50);
    assert.deepEqual(
      got.map((g) => toHex(g.bytes)),
      msgs.map(toHex),
    );
    for (const g of got)
      assert.equal(g.bytes.buffer, stream.buffer, 'a message inside one chunk is not copied');
  });

  describe('fds', () => {
    it('go with the message they arrived with', () => {
      const f = new MessageFramer();
      f.push(write(1, 4), [10]);
      f.push(reset(2));
      const [a, b] = drain(f);
      assert.deepEqual(a?.fds, [10]);
      assert.deepEqual(b?.fds, []);
    });

    it('in a chunk holding the end of one message and the start of the next: the next', () => {
      const a = write(1, 8);
      const b = write(2, 8);
      const f = new MessageFramer();
      f.push(a.subarray(0, 20));
      f.push(concat([a.subarray(20), b.subarray(0, 5)]), [7, 8]);
      f.push(b.subarray(5));
      const [fa, fb] = drain(f);
      assert.deepEqual(fa?.fds, []);
      assert.deepEqual(fb?.fds, [7, 8]);
    });

    it('in a chunk inside a message that began earlier: that message', () => {
      const a = write(1, 64);
      const f = new MessageFramer();
      f.push(a.subarray(0, 10));
      f.push(a.subarray(10, 30), [5]);
      f.push(a.subarray(30));
      assert.deepEqual(drain(f)[0]?.fds, [5]);
    });

    it('in a chunk holding whole messages and the start of another: the last one started', () => {
      const f = new MessageFramer();
      const c = write(3, 4);
      f.push(concat([reset(1), reset(2), c.subarray(0, 3)]), [42]);
      f.push(c.subarray(3));
      assert.deepEqual(
        drain(f).map((fr) => fr.fds),
        [[], [], [42]],
      );
    });

    it('with an empty chunk: the message holding the next byte', () => {
      const f = new MessageFramer();
      f.push(reset(1));
      f.push(new Uint8Array(0), [3]);
      f.push(reset(2));
      assert.deepEqual(
        drain(f).map((fr) => fr.fds),
        [[], [3]],
      );
    });

    it('from several chunks of one message: in order', () => {
      const a = write(1, 32);
      const f = new MessageFramer();
      f.push(a.subarray(0, 16), [1]);
      f.push(a.subarray(16, 20), [2, 3]);
      f.push(a.subarray(20), [4]);
      assert.deepEqual(drain(f)[0]?.fds, [1, 2, 3, 4]);
    });

    it('not yet claimed can be taken (to close them)', () => {
      const f = new MessageFramer();
      f.push(reset(1), [1]);
      f.push(write(2, 8).subarray(0, 20), [2, 3]);
      assert.deepEqual(drain(f)[0]?.fds, [1]);
      assert.deepEqual(f.takeFds(), [2, 3]);
      assert.deepEqual(f.takeFds(), []);
    });

    it('copies the fd array it is given', () => {
      const f = new MessageFramer();
      const fds = [1];
      f.push(reset(1), fds);
      fds.push(2);
      assert.deepEqual(drain(f)[0]?.fds, [1]);
    });
  });

  describe('refuses a header it cannot frame, for good', () => {
    const rows: { name: string; hex: string; opts?: { maxMessageSize: number }; message: string }[] = [
      {
        name: 'msg_size 0',
        hex: '0100 0d00 00000000 00000000 00000000',
        message: 'malformed vfio-user header: msg_size 0 is smaller than the 16-byte header',
      },
      {
        name: 'msg_size 15',
        hex: '0100 0d00 0f000000 00000000 00000000',
        message: 'malformed vfio-user header: msg_size 15 is smaller than the 16-byte header',
      },
      {
        name: 'msg_size one past the default limit (1 MiB + 32)',
        hex: `0100 0a00 ${'21001000'} 00000000 00000000`,
        message: `malformed vfio-user header: msg_size ${VFIO_USER_DEFAULT_MAX_MSG_SIZE + 1} exceeds the ${VFIO_USER_DEFAULT_MAX_MSG_SIZE}-byte limit`,
      },
      {
        name: 'msg_size 4 GiB - 1',
        hex: '0100 0a00 ffffffff 00000000 00000000',
        message: `malformed vfio-user header: msg_size 4294967295 exceeds the ${VFIO_USER_DEFAULT_MAX_MSG_SIZE}-byte limit`,
      },
      {
        name: 'msg_size above a configured limit',
        hex: '0100 0a00 41000000 00000000 00000000',
        opts: { maxMessageSize: 64 },
        message: 'malformed vfio-user header: msg_size 65 exceeds the 64-byte limit',
      },
    ];
    for (const r of rows) {
      it(r.name, () => {
        const f = new MessageFramer(r.opts);
        f.push(reset(7), [1]);
        f.push(fromHex(r.hex), [2]);
        const first = f.next();
        assert.ok(isFrame(first));
        const check = (e: unknown) =>
          e instanceof MalformedError && e.errno === Errno.EINVAL && e.message === r.message;
        assert.throws(() => f.next(), check);
        assert.throws(() => f.next(), check, 'the error sticks');
        assert.ok(f.error !== undefined);
        assert.deepEqual(f.takeFds(), [2]);
      });
    }

    it('accepts exactly the limit', () => {
      const f = new MessageFramer({ maxMessageSize: 64 });
      f.push(write(1, 32)); // 64 bytes
      assert.ok(isFrame(f.next()));
      assert.equal(new MessageFramer().maxMessageSize, 1024 * 1024 + 32);
    });

    it('refuses a limit below 16 or above 2^32-1', () => {
      for (const maxMessageSize of [15, 2 ** 32, 1.5]) {
        assert.throws(
          () => new MessageFramer({ maxMessageSize }),
          (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL,
        );
      }
    });

    it('frames a message whose flags are bad, for the caller to answer', () => {
      const f = new MessageFramer();
      f.push(fromHex('0100 0d00 10000000 40000000 00000000'));
      const fr = f.next();
      assert.ok(isFrame(fr));
      assert.equal(fr.header.flags, 0x40);
      assert.throws(() => decodeMessage(fr.bytes), MalformedError);
    });
  });

  it('frames 100 mixed messages pushed in random chunks (seeded), fds where Linux puts them', () => {
    for (const seed of [1, 2, 3, 0xc0ffee, 20260101]) {
      const rnd = prng(seed);
      const msgs: { bytes: Uint8Array; fds: number[] }[] = [];
      let nextFd = 100;
      for (let i = 0; i < 100; i++) {
        const kind = Math.floor(rnd() * 6);
        const bytes =
          kind === 0
            ? reset(i)
            : kind === 1
              ? write(i, Math.floor(rnd() * 300))
              : kind === 2
                ? encodeErrorReply(i, C.DMA_MAP, 1 + Math.floor(rnd() * 100))
                : kind === 3
                  ? encodeReply(
                      i,
                      C.DEVICE_GET_INFO,
                      encodeReplyPayload(C.DEVICE_GET_INFO, {
                        argsz: 16,
                        flags: 3,
                        numRegions: 9,
                        numIrqs: 5,
                      }),
                    )
                  : kind === 4
                    ? encodeCommand(
                        i,
                        C.DEVICE_SET_IRQS,
                        fromHex('14000000 24000000 02000000 00000000 02000000'),
                      )
                    : write(i, 4096 + Math.floor(rnd() * 5000));
        const fds = kind === 4 || (kind === 1 && rnd() < 0.3) ? [nextFd++, nextFd++] : [];
        msgs.push({ bytes, fds });
      }
      const stream = concat(msgs.map((m) => m.bytes));
      const starts: number[] = [];
      msgs.reduce((at, m) => {
        starts.push(at);
        return at + m.bytes.byteLength;
      }, 0);

      // Reader: random sizes, a third of them a single byte. A read that reaches the first byte of
      // a message sent with fds gets those fds and stops at that message's end (Linux
      // unix_stream_read_generic stops after the skb that carried fds).
      const f = new MessageFramer();
      const got: Frame[] = [];
      let pos = 0;
      let mi = 0; // next message whose first byte has not been read
      while (pos < stream.byteLength) {
        const r = rnd();
        let len = r < 0.33 ? 1 : r < 0.66 ? 1 + Math.floor(rnd() * 64) : 1 + Math.floor(rnd() * 20000);
        len = Math.min(len, stream.byteLength - pos);
        let fds: number[] = [];
        while (mi < msgs.length && starts[mi]! < pos + len) {
          const m = msgs[mi]!;
          if (m.fds.length > 0) {
            len = Math.min(len, starts[mi]! + m.bytes.byteLength - pos);
            fds = m.fds;
            mi++;
            break;
          }
          mi++;
        }
        f.push(stream.slice(pos, pos + len), fds);
        pos += len;
        got.push(...drain(f));
      }
      assert.equal(got.length, 100, `seed ${seed}`);
      got.forEach((g, i) => {
        assert.equal(toHex(g.bytes), toHex(msgs[i]!.bytes), `seed ${seed} message ${i}`);
        assert.deepEqual(g.fds, msgs[i]!.fds, `seed ${seed} message ${i} fds`);
        decodeMessage(g.bytes);
      });
      assert.equal(f.buffered, 0);
      assert.deepEqual(f.takeFds(), []);
    }
  });

  it('assembles a 1 MiB message from 4 KiB chunks and a 64 KiB one from single bytes', () => {
    const big = write(1, 1024 * 1024); // exactly the default limit
    assert.equal(big.byteLength, VFIO_USER_DEFAULT_MAX_MSG_SIZE);
    const f = new MessageFramer();
    for (let i = 0; i < big.byteLength; i += 4096) f.push(big.slice(i, i + 4096));
    const fr = f.next();
    assert.ok(isFrame(fr));
    assert.ok(Buffer.from(fr.bytes).equals(Buffer.from(big)));

    const mid = write(2, 65536);
    for (let i = 0; i < mid.byteLength; i++) f.push(mid.subarray(i, i + 1));
    const fr2 = f.next();
    assert.ok(isFrame(fr2));
    assert.ok(Buffer.from(fr2.bytes).equals(Buffer.from(mid)));
  });
});
