/**
 * Streams a resuming device must refuse (src/core/migration/load.ts), each with EINVAL, and the
 * target left as it was: still RESUMING, its own state and memory untouched, and after a
 * VFIO_DEVICE_RESET a working device. Damaged (a byte flipped in each part), truncated (cut
 * at every section boundary and inside each), foreign (another device, the same device
 * configured otherwise), out of order (sections moved, the digest made right again), too large,
 * pointing outside the device, data after the end. And what must pass: any segmentation.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import { MigSection } from '../../../src/abi/migration.js';
import { VfioMigState as S } from '../../../src/abi/vfio.js';
import type { DeviceDefinition, DeviceInstance } from '../../../src/core/define.js';
import { heapEnvironment } from '../../../src/core/env.js';
import { MAX_SECTION_BYTES } from '../../../src/core/migration/stream.js';
import { eduDevice } from '../../../src/devices/edu.js';
import { ivshmemDevice } from '../../../src/devices/ivshmem.js';
import { VfioError } from '../../../src/errors.js';
import { drain, errnoOfAsync, getState, join, setState } from './rig.js';

const SHM = 64 << 10;
const build = (def: DeviceDefinition) => def.instantiate({ env: heapEnvironment() }) as DeviceInstance;

/** A source ivshmem in a state of its own, and its whole stream (PRE_COPY then STOP_COPY). */
async function sourceStream(def = ivshmemDevice(SHM)): Promise<Uint8Array> {
  const src = build(def);
  src.device.writeRegion(0, 0n, new Uint8Array([0x34, 0x12, 0, 0])); // IntrMask
  src.device.writeRegion(
    2,
    0n,
    Uint8Array.from({ length: SHM }, (_, i) => i & 0xff),
  );
  const fd = await setState(src.device, S.PRE_COPY);
  const parts = drain(src.device, fd);
  await setState(src.device, S.STOP_COPY);
  parts.push(...drain(src.device, fd));
  src.device.close();
  return join(parts);
}

interface Section {
  readonly at: number;
  readonly type: number;
  readonly bytes: Uint8Array;
}

/** The stream's header and sections (the test's own reading of the format, src/abi/migration.ts). */
function split(stream: Uint8Array): { header: Uint8Array; sections: Section[] } {
  const v = new DataView(stream.buffer, stream.byteOffset);
  const headerLen = v.getUint32(12, true);
  const sections: Section[] = [];
  for (let at = headerLen; at < stream.length; ) {
    const len = Number(v.getBigUint64(at + 8, true));
    sections.push({ at, type: v.getUint16(at, true), bytes: stream.subarray(at, at + 16 + len) });
    at += 16 + len;
  }
  return { header: stream.subarray(0, headerLen), sections };
}

/** A stream from header and sections, END's digest computed anew (so only the order is wrong). */
function rebuild(header: Uint8Array, sections: readonly Section[]): Uint8Array {
  const body = join([header, ...sections.filter((s) => s.type !== MigSection.END).map((s) => s.bytes)]);
  const end = new Uint8Array(16);
  new DataView(end.buffer).setUint16(0, MigSection.END, true);
  new DataView(end.buffer).setBigUint64(8, 32n, true);
  const digest = createHash('sha256').update(body).update(end).digest();
  return join([body, end, digest]);
}

/** A target ivshmem with its own memory and registers, RESUMING. */
async function target(def = ivshmemDevice(SHM)) {
  const dst = build(def);
  dst.device.writeRegion(0, 0n, new Uint8Array([0x77, 0, 0, 0]));
  dst.device.writeRegion(2, 0n, new Uint8Array(SHM).fill(0x5a));
  const fd = await setState(dst.device, S.RESUMING);
  return { dst, file: dst.device.migrationData(fd) };
}

/** Writes `stream` (in `chunk`-byte writes); the errno of the first write refused, or 0. */
function feed(file: { write(b: Uint8Array): void }, stream: Uint8Array, chunk = 4096): number {
  for (let at = 0; at < stream.length; at += chunk) {
    try {
      file.write(stream.subarray(at, at + chunk));
    } catch (e) {
      if (e instanceof VfioError) return e.errno;
      throw e;
    }
  }
  return 0;
}

/**
 * The target refused and is unchanged; a reset brings it back to RUNNING, working ("To abort a
 * RESUMING session the device must be reset": ivshmem has no FLR, so the reset is the one a
 * closing user gets, VfioPciDevice.reset, as the vfio-user server's when its client leaves).
 */
async function assertUnchanged(dst: DeviceInstance): Promise<void> {
  assert.equal(getState(dst.device), S.RESUMING, 'still RESUMING');
  assert.equal(
    await errnoOfAsync(setState(dst.device, S.RUNNING)),
    Errno.EINVAL,
    'RESUMING -> STOP refuses it too',
  );
  assert.equal(getState(dst.device), S.RESUMING);
  assert.deepEqual(
    dst.device.readRegion(0, 0n, 4),
    new Uint8Array([0x77, 0, 0, 0]),
    'registers as they were',
  );
  assert.ok(
    dst.device.readRegion(2, 0n, SHM).every((b) => b === 0x5a),
    'memory as it was',
  );
  dst.device.reset();
  assert.equal(getState(dst.device), S.RUNNING);
  dst.device.writeRegion(0, 0n, new Uint8Array([0x99, 0, 0, 0]));
  assert.deepEqual(dst.device.readRegion(0, 0n, 4), new Uint8Array([0x99, 0, 0, 0]), 'and works');
  dst.device.close();
}

describe('a resuming device refuses a bad stream and stays as it was', () => {
  test('the good stream, in any segmentation (1, 7, 4096 bytes, whole)', async () => {
    const stream = await sourceStream();
    for (const chunk of [1, 7, 4096, stream.length]) {
      const { dst, file } = await target();
      assert.equal(feed(file, stream, chunk), 0, `chunks of ${chunk}`);
      await setState(dst.device, S.RUNNING);
      assert.deepEqual(dst.device.readRegion(0, 0n, 4), new Uint8Array([0x34, 0x12, 0, 0]));
      assert.equal(dst.device.readRegion(2, 0n, SHM)[300], 300 & 0xff);
      dst.device.close();
    }
  });

  test('damaged: a byte flipped in the magic, version, identity, a section header, memory, state, the digest', async () => {
    const stream = await sourceStream();
    const { header, sections } = split(stream);
    const mem = sections.find((s) => s.type === MigSection.MEMORY)!;
    const state = sections.find((s) => s.type === MigSection.STATE)!;
    const end = sections.find((s) => s.type === MigSection.END)!;
    const spots: [string, number][] = [
      ['magic', 0],
      ['version', 8],
      ['vendor id', 16],
      ['fingerprint', 40],
      ['name', header.length - 1],
      ['a section type', mem.at],
      ['a section reserved field', mem.at + 2],
      ['a memory offset', mem.at + 16 + 7],
      ['memory data', mem.at + 16 + 8 + 1000],
      ['the state section', state.at + 20],
      ['the digest', end.at + 16 + 5],
    ];
    for (const [what, at] of spots) {
      const bad = stream.slice();
      bad[at]! ^= 0x40;
      const { dst, file } = await target();
      const errno = feed(file, bad);
      // Refused as soon as the part is whole; a flip in data only shows at END (the digest).
      assert.equal(errno, Errno.EINVAL, what);
      await assertUnchanged(dst);
    }
  });

  test('truncated: cut at each section boundary and inside each section', async () => {
    const stream = await sourceStream();
    const { header, sections } = split(stream);
    const cuts = [10, header.length, ...sections.flatMap((s) => [s.at, s.at + 9, s.at + 16 + 3])];
    for (const cut of cuts) {
      const { dst, file } = await target();
      assert.equal(feed(file, stream.subarray(0, cut)), 0, `${cut} bytes are taken`);
      await assertUnchanged(dst); // and refused at RESUMING -> STOP
    }
  });

  test('foreign: an edu stream into ivshmem; ivshmem of 64 KiB into ivshmem of 128 KiB', async () => {
    const src = build(eduDevice());
    const fd = await setState(src.device, S.STOP_COPY);
    const edu = join(drain(src.device, fd));
    for (const [what, stream, def] of [
      ['edu', edu, ivshmemDevice(SHM)],
      ['ivshmem 64 KiB', await sourceStream(), ivshmemDevice(2 * SHM)],
    ] as const) {
      const { dst, file } = await target(def);
      assert.equal(feed(file, stream), Errno.EINVAL, what);
      dst.device.reset();
      assert.equal(getState(dst.device), S.RUNNING);
    }
  });

  test('out of order: STATE before PCI, MEMORY after PCI, PCI twice, END before STATE (digests right)', async () => {
    const { header, sections } = split(await sourceStream());
    const of = (t: number) => sections.filter((s) => s.type === t);
    const [pci, state] = [of(MigSection.PCI)[0]!, of(MigSection.STATE)[0]!];
    const mem = of(MigSection.MEMORY);
    const orders: [string, Section[]][] = [
      ['STATE before PCI', [...mem, state, pci]],
      ['MEMORY after PCI', [pci, ...mem, state]],
      ['PCI twice', [...mem, pci, pci, state]],
      ['no STATE', [...mem, pci]],
    ];
    for (const [what, order] of orders) {
      const { dst, file } = await target();
      assert.equal(feed(file, rebuild(header, order)), Errno.EINVAL, what);
      await assertUnchanged(dst);
    }
    const { dst, file } = await target();
    assert.equal(feed(file, rebuild(header, [...mem, pci, state])), 0, 'the right order, rebuilt, is taken');
    await setState(dst.device, S.RUNNING);
  });

  test('sections past the limits: a state section over MAX_SECTION_BYTES, memory past its area, an unknown area', async () => {
    const { header, sections } = split(await sourceStream());
    const mem = sections.find((s) => s.type === MigSection.MEMORY)!;
    const forge = (type: number, id: number, length: bigint, offset?: bigint) => {
      const b = new Uint8Array(24);
      const v = new DataView(b.buffer);
      v.setUint16(0, type, true);
      v.setUint32(4, id, true);
      v.setBigUint64(8, length, true);
      if (offset !== undefined) v.setBigUint64(16, offset, true);
      return { at: 0, type, bytes: b };
    };
    const bad: [string, Section][] = [
      ['PCI of MAX_SECTION_BYTES + 1', forge(MigSection.PCI, 0, BigInt(MAX_SECTION_BYTES) + 1n)],
      ['MEMORY past the end of BAR2', forge(MigSection.MEMORY, 2, 8n + 4096n, BigInt(SHM - 100))],
      ['MEMORY larger than BAR2', forge(MigSection.MEMORY, 2, 8n + BigInt(SHM) + 1n, 0n)],
      ['MEMORY for BAR0 (registers)', forge(MigSection.MEMORY, 0, 8n + 4n, 0n)],
      ['an unknown section type', forge(0x55, 0, 4n)],
    ];
    for (const [what, s] of bad) {
      const { dst, file } = await target();
      assert.equal(feed(file, join([header, mem.bytes, s.bytes])), Errno.EINVAL, what);
      await assertUnchanged(dst);
    }
  });

  test('bytes after END; a write once refused stays refused', async () => {
    const stream = await sourceStream();
    const { dst, file } = await target();
    assert.equal(feed(file, join([stream, new Uint8Array([0])]), stream.length + 1), Errno.EINVAL);
    assert.equal(feed(file, new Uint8Array(16)), Errno.EINVAL, 'refused already');
    await assertUnchanged(dst);
  });

  test('data outside RESUMING, reads outside the saving states: EINVAL; an ended session: ENODEV; no session: EBADF', async () => {
    const d = build(ivshmemDevice(SHM));
    assert.throws(
      () => d.device.migrationData(1234),
      (e: VfioError) => e.errno === Errno.EBADF,
    );
    const fd = await setState(d.device, S.STOP_COPY);
    assert.throws(
      () => d.device.migrationData(fd).write(new Uint8Array(1)),
      (e: VfioError) => e.errno === Errno.EINVAL,
    );
    assert.throws(
      () => d.device.migrationData(fd).precopyInfo(),
      (e: VfioError) => e.errno === Errno.EINVAL,
    );
    await setState(d.device, S.STOP);
    assert.throws(
      () => d.device.migrationData(fd).read(10),
      (e: VfioError) => e.errno === Errno.ENODEV,
    );
    const rfd = await setState(d.device, S.RESUMING);
    assert.throws(
      () => d.device.migrationData(rfd).read(10),
      (e: VfioError) => e.errno === Errno.EINVAL,
    );
  });
});
