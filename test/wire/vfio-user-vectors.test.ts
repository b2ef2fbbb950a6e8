/**
 * Test vectors (test/vectors/vfio-user/*.json): hex bytes derived by hand from the spec's layouts
 * and from what QEMU and libvfio-user send, with their decoded form. Every vector must decode to
 * its JSON, re-encode to the same bytes (unless marked `roundTrip: false`), and come out of the
 * framer as one frame.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  type CodecOptions,
  decodeMessage,
  encodeDecodedMessage,
  fromHex,
  MessageFramer,
  toHex,
} from '../../src/wire/vfio-user.js';

interface Vector {
  name: string;
  hex: string;
  decoded: unknown;
  options?: CodecOptions;
  roundTrip?: boolean;
}
interface VectorFile {
  description: string;
  sources: string[];
  vectors: Vector[];
}

/** The vectors' JSON form: bigint as "0x…", bytes as "hex:…". */
function jsonify(v: unknown): unknown {
  if (typeof v === 'bigint') return `0x${v.toString(16)}`;
  if (v instanceof Uint8Array) return `hex:${toHex(v)}`;
  if (Array.isArray(v)) return v.map(jsonify);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonify(x)]));
  }
  return v;
}

const dir = new URL('../../../test/vectors/vfio-user/', import.meta.url);
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('vfio-user test vectors', () => {
  it('has the vector files', () => {
    assert.deepEqual(files.sort(), [
      'device.json',
      'dma.json',
      'error.json',
      'feature.json',
      'region.json',
      'version.json',
    ]);
  });

  const commandsSeen = new Set<string>();
  for (const file of files) {
    const vf = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as VectorFile;
    describe(file, () => {
      for (const v of vf.vectors) {
        it(v.name, () => {
          const bytes = fromHex(v.hex);
          const msg = decodeMessage(bytes, v.options);
          commandsSeen.add(`${msg.kind}:${msg.command}`);
          assert.deepStrictEqual(jsonify(msg), v.decoded);
          if (v.roundTrip !== false) {
            assert.equal(toHex(encodeDecodedMessage(msg, v.options)), toHex(bytes));
          }
          const framer = new MessageFramer();
          framer.push(bytes);
          const frame = framer.next();
          assert.ok('bytes' in frame);
          assert.equal(toHex(frame.bytes), toHex(bytes));
          assert.deepEqual(framer.next(), { need: 16 });
        });
      }
    });
  }

  it('covers every command in both directions, and error replies', () => {
    const want: string[] = [];
    for (const c of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18])
      want.push(`command:${c}`, `reply:${c}`);
    want.push('error:1');
    for (const w of want) assert.ok(commandsSeen.has(w), `no vector for ${w}`);
  });
});
