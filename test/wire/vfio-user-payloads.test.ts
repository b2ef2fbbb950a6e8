/** Behaviour of the payload codecs beyond the vectors: layouts, views, padding, helpers. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  VfioUserCommand as C,
  VfioUserFeature,
  VfioUserMigrationFlags,
  VfioUserMigState,
} from '../../src/abi/vfio-user.js';
import {
  decodeCommandPayload,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeDmaReadReply,
  decodeDmaReadRequest,
  decodeDmaWriteReply,
  decodeDmaWriteRequest,
  decodeFeatureMigration,
  decodeFeatureMigState,
  decodeIoFdsReply,
  decodeRegionInfoReply,
  decodeRegionWriteRequest,
  encodeCommandPayload,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  encodeDmaWriteRequest,
  encodeFeatureMigration,
  encodeFeatureMigState,
  encodeRegionInfoReply,
  encodeReplyPayload,
  fromHex,
  type RegionCap,
  regionCapsSize,
  toHex,
} from '../../src/wire/vfio-user.js';

describe('vfio-user payloads', () => {
  describe('DMA_READ / DMA_WRITE layouts', () => {
    const data = fromHex('0102030405');
    it('put the data at 16 (spec) or 12 (qemu), the payload being 16 + count in both', () => {
      const spec = encodeDmaWriteRequest({ address: 0x1000n, data });
      const qemu = encodeDmaWriteRequest({ address: 0x1000n, data }, 'qemu');
      assert.equal(toHex(spec), `0010000000000000 0500000000000000 0102030405`.replace(/ /g, ''));
      assert.equal(toHex(qemu), `0010000000000000 05000000 0102030405 00000000`.replace(/ /g, ''));
      assert.equal(toHex(decodeDmaWriteRequest(qemu, 'qemu').data), '0102030405');
      assert.equal(
        toHex(encodeDmaReadReply({ address: 0n, data }, 'qemu')),
        toHex(fromHex('0000000000000000 05000000 0102030405 00000000')),
      );
    });

    it('read the other layout wrongly, which is why the layout is an explicit choice', () => {
      const spec = encodeDmaReadReply({ address: 0x1000n, data: new Uint8Array(8).fill(0xaa) });
      assert.equal(spec.byteLength, 24);
      // QEMU-layout reading of a spec reply: count 8 found, data at 12 is the high half of the u64 count.
      assert.equal(toHex(decodeDmaReadReply(spec, 'qemu').data), '00000000aaaaaaaa');
    });

    it('a DMA_READ request is the same 16 bytes either way', () => {
      const req = encodeCommandPayload(C.DMA_READ, { address: 0x2000n, count: 64 }, { dmaLayout: 'qemu' });
      assert.equal(toHex(req), '00200000000000004000000000000000');
      assert.deepEqual(decodeDmaReadRequest(req, 'qemu'), decodeDmaReadRequest(req, 'spec'));
    });

    it('a DMA_WRITE reply is told apart by length', () => {
      assert.deepEqual(decodeDmaWriteReply(new Uint8Array(0)), {});
      assert.deepEqual(decodeDmaWriteReply(fromHex('0010000000000000 04000000')), {
        address: 0x1000n,
        count: 4,
      });
      assert.deepEqual(decodeDmaWriteReply(fromHex('0010000000000000 0400000000000000')), {
        address: 0x1000n,
        count: 4,
      });
      assert.equal(encodeDmaWriteReply({ address: 1n, count: 2 }, 'qemu').byteLength, 0);
      assert.equal(encodeDmaWriteReply({ address: 1n, count: 2 }).byteLength, 16);
    });
  });

  it('returns data as views of the payload (no copy)', () => {
    const p = fromHex('0000000000000000 07000000 04000000 aabbccdd');
    const w = decodeRegionWriteRequest(p);
    assert.equal(w.data.buffer, p.buffer);
    assert.equal(w.data.byteOffset, p.byteOffset + 16);
  });

  describe('region info capabilities', () => {
    it('pads a raw capability to 8 bytes before the next, not after the last', () => {
      const caps: RegionCap[] = [
        { kind: 'raw', id: 0x77, version: 2, data: fromHex('010203') },
        { kind: 'raw', id: 0x78, version: 1, data: fromHex('0405') },
      ];
      assert.equal(regionCapsSize(caps), 16 + 10);
      const bytes = encodeRegionInfoReply({
        argsz: 58,
        flags: 8,
        index: 1,
        capOffset: 0,
        size: 0n,
        offset: 0n,
        caps,
      });
      assert.equal(
        toHex(bytes.subarray(32)),
        `${'7700 0200 30000000 0102030000000000'}${'7800 0100 00000000 0405'}`.replace(/ /g, ''),
      );
      assert.equal(new DataView(bytes.buffer).getUint32(12, true), 32, 'cap_offset written as 32');
      const back = decodeRegionInfoReply(bytes);
      assert.equal(back.caps.length, 2);
      // The padding belongs to the first capability's bytes once decoded, and re-encodes the same.
      assert.equal(toHex(encodeRegionInfoReply(back)), toHex(bytes));
    });

    it('ignores capabilities when FLAG_CAPS is clear or cap_offset is 0 (the kernel form of a short reply)', () => {
      const base = { argsz: 64, index: 0, size: 0x1000n, offset: 0n };
      const withCaps = encodeRegionInfoReply({
        ...base,
        flags: 0xf,
        capOffset: 32,
        caps: [{ kind: 'type', version: 1, type: 1, subtype: 1 }],
      });
      const noFlag = withCaps.slice();
      noFlag[4] = 0x07;
      assert.deepEqual(decodeRegionInfoReply(noFlag).caps, []);
      const zeroOffset = withCaps.slice();
      zeroOffset.fill(0, 12, 16);
      assert.deepEqual(decodeRegionInfoReply(zeroOffset).caps, []);
    });
  });

  it('infers an IO_FDS entry stride other than 40 or 48 from argsz / count', () => {
    // offset, size, fd_index, type, flags, word 28, word 32, word 40, then 8 bytes of a future field
    const entry = (off: number) =>
      [
        `0${off}00000000000000`,
        '00'.repeat(8),
        '00'.repeat(4),
        '00'.repeat(4),
        '00'.repeat(4),
        '00'.repeat(4),
        '11'.repeat(8),
        '22'.repeat(8),
        '33'.repeat(8),
      ].join('');
    const p = fromHex(['80000000', '00000000', '01000000', '02000000', entry(1), entry(2)].join(''));
    const r = decodeIoFdsReply(p);
    assert.equal(r.entrySize, 56);
    assert.equal(r.subRegions[1]?.offset, 2n);
    assert.equal(r.subRegions[1]?.shadowOffset, 0x1111111111111111n);
    assert.equal(r.subRegions[1]?.data, 0x2222222222222222n);
  });

  describe('feature data', () => {
    it('MIGRATION and MIG_DEVICE_STATE', () => {
      const flags = BigInt(VfioUserMigrationFlags.STOP_COPY | VfioUserMigrationFlags.PRE_COPY);
      assert.equal(toHex(encodeFeatureMigration({ flags })), '0500000000000000');
      assert.deepEqual(decodeFeatureMigration(fromHex('0500000000000000')), { flags });
      const st = { deviceState: VfioUserMigState.STOP_COPY, dataFd: 0xffffffff };
      assert.equal(toHex(encodeFeatureMigState(st)), '03000000ffffffff');
      assert.deepEqual(decodeFeatureMigState(encodeFeatureMigState(st)), st);
      assert.equal(VfioUserFeature.MIG_DEVICE_STATE, 2);
    });

    it('DMA logging control and report', () => {
      const ctl = { pageSize: 4096n, ranges: [{ iova: 0x1000n, length: 0x2000n }] };
      const bytes = encodeDmaLoggingControl(ctl);
      assert.equal(
        toHex(bytes),
        '0010000000000000 01000000 00000000 0010000000000000 0020000000000000'.replace(/ /g, ''),
      );
      assert.deepEqual(decodeDmaLoggingControl(bytes), ctl);
      const rep = { iova: 0n, length: 0x8000n, pageSize: 4096n, bitmap: fromHex('ff00000000000000') };
      const rb = encodeDmaLoggingReport(rep);
      assert.equal(rb.byteLength, 32);
      assert.deepEqual(decodeDmaLoggingReport(rb), rep);
    });
  });

  it('dispatches by command number', () => {
    const p = encodeCommandPayload(C.DEVICE_GET_IRQ_INFO, { argsz: 16, flags: 0, index: 2, count: 0 });
    assert.deepEqual(decodeCommandPayload(C.DEVICE_GET_IRQ_INFO, p), {
      argsz: 16,
      flags: 0,
      index: 2,
      count: 0,
    });
    assert.equal(encodeReplyPayload(C.DMA_MAP, {}).byteLength, 0);
  });
});
