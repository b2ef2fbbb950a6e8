/**
 * Seeded mutation fuzzing of the decoders: starting from the test vectors, flip, insert, drop
 * and overwrite bytes. Only MalformedError may escape a decoder; whatever decodes must re-encode
 * (or be refused by an encoder with VfioError), and the framer must keep working on garbage.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { MalformedError, VfioError } from '../../src/errors.js';
import {
  type CodecOptions,
  decodeMessage,
  encodeDecodedMessage,
  type Frame,
  fromHex,
  MessageFramer,
  type Need,
} from '../../src/wire/vfio-user.js';

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

const dir = new URL('../../../test/vectors/vfio-user/', import.meta.url);
const seeds: Uint8Array[] = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .flatMap(
    (f) => (JSON.parse(readFileSync(new URL(f, dir), 'utf8')) as { vectors: { hex: string }[] }).vectors,
  )
  .map((v) => fromHex(v.hex));

function mutate(src: Uint8Array, rnd: () => number): Uint8Array {
  const b = Array.from(src);
  const n = 1 + Math.floor(rnd() * 4);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(rnd() * (b.length + 1));
    const op = rnd();
    const byte = rnd() < 0.5 ? Math.floor(rnd() * 256) : [0, 0xff, 0x7f, 0x80, 1][Math.floor(rnd() * 5)]!;
    if (op < 0.5 && at < b.length) b[at] = byte;
    else if (op < 0.7) b.splice(at, 0, byte);
    else if (op < 0.9) b.splice(at, 1);
    else b.splice(at, 0, ...b.slice(0, Math.floor(rnd() * 32)));
  }
  const out = new Uint8Array(b);
  // Keep msg_size consistent half of the time so payload decoders are reached.
  if (out.byteLength >= 16 && rnd() < 0.5) new DataView(out.buffer).setUint32(4, out.byteLength, true);
  return out;
}

describe('vfio-user decoders under mutation (seeded)', () => {
  it('throw only MalformedError, and what decodes re-encodes', () => {
    const rnd = prng(0x5eed);
    let decoded = 0;
    for (let i = 0; i < 20000; i++) {
      const input = mutate(seeds[i % seeds.length]!, rnd);
      const opts: CodecOptions = { dmaLayout: rnd() < 0.5 ? 'spec' : 'qemu' };
      let msg: ReturnType<typeof decodeMessage>;
      try {
        msg = decodeMessage(input, opts);
      } catch (e) {
        assert.ok(e instanceof MalformedError, `input ${Buffer.from(input).toString('hex')}: ${String(e)}`);
        continue;
      }
      decoded++;
      try {
        encodeDecodedMessage(msg, opts);
      } catch (e) {
        assert.ok(e instanceof VfioError, `re-encode of ${Buffer.from(input).toString('hex')}: ${String(e)}`);
      }
    }
    assert.ok(
      decoded > 1000,
      `only ${decoded} mutants decoded: the fuzzer is not reaching the payload decoders`,
    );
  });

  it('the framer survives random bytes in random chunks', () => {
    const rnd = prng(7);
    for (let round = 0; round < 200; round++) {
      const f = new MessageFramer({ maxMessageSize: 4096 });
      const stream = new Uint8Array(2000).map(() =>
        rnd() < 0.7 ? Math.floor(rnd() * 24) : Math.floor(rnd() * 256),
      );
      let pos = 0;
      try {
        while (pos < stream.byteLength) {
          const len = 1 + Math.floor(rnd() * 100);
          f.push(stream.subarray(pos, pos + len), rnd() < 0.1 ? [round] : []);
          pos += len;
          for (let r: Frame | Need = f.next(); 'bytes' in r; r = f.next()) {
            assert.equal(r.bytes.byteLength, r.header.msgSize);
          }
        }
      } catch (e) {
        assert.ok(e instanceof MalformedError, String(e));
      }
    }
  });
});
