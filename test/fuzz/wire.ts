/**
 * Fuzz harness (b): the pure decoders. Seeds are the recorded vectors in test/vectors/vfio-user
 * (and test/vectors/fuzz when present) plus vfio.h structs with capability chains.
 *
 *  - decodeMessage (both DMA layouts) and every per-command payload decoder, fed mutated messages
 *    and mutated payloads under every command number: only MalformedError may escape, and what
 *    decodes must re-encode or be refused by the encoder with VfioError(EINVAL);
 *  - VERSION's JSON, mutated as text (tokens, deep nesting, huge numbers, `__proto__`);
 *  - decodeVfioRegionInfo / decodeCapChain of vfio.h region info with mutated caps (offsets, loops,
 *    counts): only MalformedError;
 *  - MessageFramer fed a stream of mutated messages in random chunks with fake fds attached:
 *    every frame is exactly the bytes that were sent, a bad msg_size stops the stream with a
 *    MalformedError that repeats on every later call, and no fd is lost or duplicated
 *    (fds in frames + takeFds() = fds pushed).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { VfioUserCommand } from '../../src/abi/vfio-user.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import { decodeCapChain, decodeVfioRegionInfo, encodeVfioRegionInfo } from '../../src/wire/vfio.js';
import {
  type CodecOptions,
  decodeCommandPayload,
  decodeMessage,
  decodeReplyPayload,
  encodeDecodedMessage,
  fromHex,
  MessageFramer,
  parseJson,
} from '../../src/wire/vfio-user.js';
import { chunkings, count, crash, type FuzzStats, mutate, newStats, Rng, toHex } from './prng.js';

const VECTOR_DIRS = ['test/vectors/vfio-user', 'test/vectors/fuzz'];

/** Every recorded message (hex) under the vector directories, relative to the working directory. */
export function corpus(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const dir of VECTOR_DIRS) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((f) => f.endsWith('.json'));
    } catch {
      continue;
    }
    for (const name of names) {
      const doc = JSON.parse(readFileSync(`${dir}/${name}`, 'utf8')) as {
        vectors?: { hex?: string }[];
        messages?: { hex?: string }[];
      };
      for (const v of [...(doc.vectors ?? []), ...(doc.messages ?? [])])
        if (typeof v.hex === 'string') out.push(fromHex(v.hex));
    }
  }
  return out;
}

const COMMANDS = Object.values(VfioUserCommand) as number[];
const LAYOUTS: CodecOptions[] = [{}, { dmaLayout: 'spec' }, { dmaLayout: 'qemu' }];

const JSON_TOKENS = [
  '{',
  '}',
  '[',
  ']',
  '"',
  ',',
  ':',
  '\\',
  '\\u0000',
  '\\ud800',
  '1e999',
  '-0',
  '0.5',
  '18446744073709551616',
  '18446744073709551615',
  '-1',
  'null',
  'true',
  '"__proto__"',
  '"constructor"',
  '"capabilities"',
  '"max_msg_fds"',
  '"max_data_xfer_size"',
  '"pgsizes"',
  '"migration"',
  '"max_dma_maps"',
  '"twin_socket"',
  '"write_multiple"',
  '\u00ff',
  '\ud83d\ude00',
];

function mutateJson(rng: Rng, text: string): string {
  if (rng.chance(0.02)) return '['.repeat(1 + rng.int(5000)) + ']'.repeat(rng.int(5000));
  if (rng.chance(0.02)) return `{"capabilities": {"max_msg_fds": ${'9'.repeat(1 + rng.int(400))}}}`;
  let t = text;
  for (let k = 1 + rng.int(3); k > 0; k--) {
    const at = rng.int(t.length + 1);
    const cut = rng.chance(0.5) ? rng.int(8) : 0;
    t = t.slice(0, at) + (rng.chance(0.8) ? rng.pick(JSON_TOKENS) : '') + t.slice(at + cut);
  }
  return t;
}

function isDocumented(e: unknown): boolean {
  return e instanceof MalformedError && Number.isInteger(e.errno) && e.errno > 0;
}

function describeEscape(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** vfio.h region infos with capability chains, as the core and the kernel lay them out. */
function regionInfoSeeds(): Uint8Array[] {
  return [
    encodeVfioRegionInfo({
      argsz: 0,
      flags: 0xf,
      index: 0,
      size: 0x100000n,
      offset: 0n,
      caps: [
        {
          kind: 'sparse-mmap',
          areas: [
            { offset: 0n, size: 0x1000n },
            { offset: 0x3000n, size: 0xfd000n },
          ],
        },
        { kind: 'type', type: 0x10, subtype: 1 },
        { kind: 'msix-mappable' },
      ],
    }),
    encodeVfioRegionInfo({
      argsz: 0,
      flags: 7,
      index: 9,
      size: 0x400000n,
      offset: 9n << 40n,
      caps: [{ kind: 'type', type: 0x12, subtype: 2 }],
    }),
    encodeVfioRegionInfo({ argsz: 0, flags: 3, index: 7, size: 256n, offset: 7n << 40n, caps: [] }),
  ];
}

export interface WireFuzzOptions {
  readonly seed: number;
  readonly iterations: number;
}

export function fuzzWire(o: WireFuzzOptions): FuzzStats {
  const stats = newStats('wire', o.seed);
  const rng = new Rng(o.seed);
  const seeds = corpus();
  if (seeds.length === 0) {
    crash(stats, 'no seed vectors found under test/vectors (run from the repository root)');
    return stats;
  }
  const regionSeeds = regionInfoSeeds();
  const guard = (what: string, input: Uint8Array | string, fn: () => void) => {
    stats.tried++;
    try {
      fn();
      count(stats, 'ok');
    } catch (e) {
      if (isDocumented(e)) count(stats, 'malformed');
      else
        crash(
          stats,
          `seed ${o.seed} ${what} ${typeof input === 'string' ? JSON.stringify(input.slice(0, 200)) : toHex(input)}: ${describeEscape(e)}`,
        );
    }
  };
  for (let i = 0; i < o.iterations; i++) {
    const kind = rng.int(10);
    if (kind < 4) {
      // Whole messages, mutated (header kept valid half the time so payload decoders are reached).
      const src = rng.pick(seeds);
      const m = mutate(rng, src, 4, rng.chance(0.5) ? 16 : 0);
      if (m.length >= 8 && rng.chance(0.7)) new DataView(m.buffer).setUint32(4, m.length, true);
      const opts = rng.pick(LAYOUTS);
      guard('decodeMessage', m, () => {
        const msg = decodeMessage(m, opts);
        try {
          encodeDecodedMessage(msg, opts);
        } catch (e) {
          // An encoder may refuse a value it cannot represent, with VfioError(EINVAL) only.
          if (!(e instanceof VfioError)) throw e;
        }
      });
    } else if (kind < 7) {
      // A payload (from any seed) under any command, as command and as reply.
      const src = rng.pick(seeds);
      const payload = mutate(rng, src.subarray(Math.min(16, src.length)), 4);
      const command = rng.chance(0.95) ? rng.pick(COMMANDS) : rng.int(0x10000);
      const opts = rng.pick(LAYOUTS);
      if (rng.chance(0.5))
        guard(`decodeCommandPayload(${command})`, payload, () => {
          decodeCommandPayload(command as never, payload, opts);
        });
      else
        guard(`decodeReplyPayload(${command})`, payload, () => {
          decodeReplyPayload(command as never, payload, opts);
        });
    } else if (kind < 8) {
      // VERSION JSON as text.
      const versions = seeds.filter(
        (s) => s.length > 21 && new DataView(s.buffer, s.byteOffset).getUint16(2, true) === 1,
      );
      const src = versions.length ? rng.pick(versions) : rng.pick(seeds);
      const text = Buffer.from(src.subarray(20, src.length - 1)).toString('utf8');
      const mutated = mutateJson(rng, text);
      guard('parseJson', mutated, () => {
        parseJson(mutated);
      });
      const body = new TextEncoder().encode(mutated);
      const payload = new Uint8Array(4 + body.length + 1);
      payload.set(src.subarray(16, 20));
      payload.set(body, 4);
      guard('decodeCommandPayload(VERSION)', payload, () => {
        decodeCommandPayload(VfioUserCommand.VERSION, payload);
      });
    } else if (kind < 9) {
      // vfio.h region info and capability chains.
      const src = rng.pick(regionSeeds);
      const m = mutate(rng, src, 6);
      guard('decodeVfioRegionInfo', m, () => {
        decodeVfioRegionInfo(m);
      });
      const first = rng.chance(0.5) ? 32 : rng.interesting32();
      guard(`decodeCapChain(first ${first})`, m, () => {
        decodeCapChain(m, first, rng.pick([0, 8, 16, 32]));
      });
    } else {
      fuzzFramerOnce(rng, seeds, stats, o.seed);
    }
  }
  return stats;
}

/** One stream through a fresh framer; checks frames, the sticky error, and fd conservation. */
function fuzzFramerOnce(rng: Rng, seeds: Uint8Array[], stats: FuzzStats, seed: number): void {
  const max = rng.chance(0.5) ? undefined : rng.pick([16, 64, 4096, 1 << 20]);
  const framer = new MessageFramer(max === undefined ? {} : { maxMessageSize: max });
  const limit = framer.maxMessageSize;
  const sent: Uint8Array[] = [];
  const n = 1 + rng.int(6);
  for (let k = 0; k < n; k++) {
    let m = rng.chance(0.7) ? rng.pick(seeds).slice() : mutate(rng, rng.pick(seeds), 3);
    if (m.length < 16) {
      const padded = new Uint8Array(16);
      padded.set(m);
      m = padded;
    }
    // msg_size: usually right, sometimes a lie (small, large, past the limit).
    const dv = new DataView(m.buffer);
    if (rng.chance(0.85)) dv.setUint32(4, m.length, true);
    else dv.setUint32(4, rng.interesting32(), true);
    sent.push(m);
  }
  const stream = new Uint8Array(sent.reduce((a, m) => a + m.length, 0));
  let at = 0;
  for (const m of sent) {
    stream.set(m, at);
    at += m.length;
  }
  // The frames we expect: messages cut by their msg_size, until one is invalid.
  const expected: Uint8Array[] = [];
  let expectError = false;
  for (let off = 0; off + 16 <= stream.length; ) {
    const size = new DataView(stream.buffer, off).getUint32(4, true);
    if (size < 16 || size > limit) {
      expectError = true;
      break;
    }
    if (off + size > stream.length) break;
    expected.push(stream.subarray(off, off + size));
    off += size;
  }
  let nextFd = 100000;
  let pushedFds = 0;
  const gotFds: number[] = [];
  const frames: Uint8Array[] = [];
  let error: unknown;
  stats.tried++;
  const input = toHex(stream.subarray(0, 256));
  try {
    for (const chunk of chunkings(rng, stream)) {
      const fds: number[] = [];
      if (rng.chance(0.1)) for (let j = 1 + rng.int(3); j > 0; j--) fds.push(nextFd++);
      pushedFds += fds.length;
      framer.push(chunk.slice(), fds);
      for (;;) {
        const f = framer.next();
        if ('need' in f) {
          if (!(f.need >= 1)) crash(stats, `seed ${seed} framer: need ${f.need} ${input}`);
          break;
        }
        frames.push(f.bytes.slice());
        gotFds.push(...f.fds);
      }
    }
  } catch (e) {
    error = e;
  }
  if (error !== undefined) {
    if (!isDocumented(error)) crash(stats, `seed ${seed} framer threw ${describeEscape(error)} on ${input}`);
    else {
      count(stats, 'framer-error');
      try {
        framer.next();
        crash(stats, `seed ${seed} framer: error did not stick on ${input}`);
      } catch (again) {
        if (again !== error && !isDocumented(again))
          crash(stats, `seed ${seed} framer: second error differs: ${describeEscape(again)}`);
      }
    }
  } else count(stats, 'framer-ok');
  if (expectError !== (error !== undefined))
    crash(stats, `seed ${seed} framer: error ${error !== undefined}, expected ${expectError} on ${input}`);
  if (frames.length !== expected.length || frames.some((f, j) => toHex(f) !== toHex(expected[j]!)))
    crash(stats, `seed ${seed} framer: ${frames.length} frames, expected ${expected.length} on ${input}`);
  gotFds.push(...framer.takeFds());
  const unique = new Set(gotFds);
  if (gotFds.length !== pushedFds || unique.size !== pushedFds)
    crash(
      stats,
      `seed ${seed} framer: ${pushedFds} fds pushed, ${gotFds.length} handed out (${unique.size} distinct)`,
    );
}
