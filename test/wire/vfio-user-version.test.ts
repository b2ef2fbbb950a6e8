import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  VFIO_USER_DEFAULT_MAX_BITMAP_SIZE,
  VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE,
  VFIO_USER_DEFAULT_MAX_DMA_MAPS,
  VFIO_USER_DEFAULT_MAX_MSG_FDS,
  VFIO_USER_DEFAULT_PGSIZES,
} from '../../src/abi/vfio-user.js';
import {
  capabilitiesJson,
  DEFAULT_CAPABILITIES,
  decodeVersion,
  encodeVersion,
  fromHex,
  type JsonObject,
  parseJson,
  resolveCapabilities,
  toHex,
  writeJson,
} from '../../src/wire/vfio-user.js';

const payload = (json: string, major = 0, minor = 0) =>
  new Uint8Array([major & 0xff, major >> 8, minor & 0xff, minor >> 8, ...Buffer.from(json, 'utf8'), 0]);

/** QEMU's proposal (test/vectors/vfio-user/version.json). */
const QEMU_JSON =
  '{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576, ' +
  '"migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}';

/**
 * QEMU's QDict iterates its 512 hash buckets in order (qobject/qdict.c: qdict_first/qdict_next,
 * bucket = tdb_hash(key) % QDICT_BUCKET_MAX). Written here from that description to show where the
 * member order of QEMU's VERSION JSON comes from.
 */
function qdictBucket(key: string): number {
  let v = Math.imul(0x238f13af, key.length) >>> 0;
  for (let i = 0; i < key.length; i++) v = (v + ((key.charCodeAt(i) << ((i * 5) % 24)) >>> 0)) >>> 0;
  return ((Math.imul(1103515243, v) + 12345) >>> 0) % 512;
}

describe('VFIO_USER_VERSION', () => {
  it("QEMU's member order is QDict bucket order", () => {
    const byBucket = (keys: string[]) => [...keys].sort((a, b) => qdictBucket(a) - qdictBucket(b));
    const caps = [
      'migration',
      'max_msg_fds',
      'max_data_xfer_size',
      'pgsizes',
      'max_dma_maps',
      'write_multiple',
    ];
    const doc = parseJson(QEMU_JSON) as JsonObject;
    const capsObj = doc.capabilities as JsonObject;
    assert.deepEqual(Object.keys(capsObj), byBucket(caps));
    assert.deepEqual(Object.keys(capsObj.migration as JsonObject), byBucket(['pgsize', 'max_bitmap_size']));
    assert.equal(writeJson(doc), QEMU_JSON, "writeJson reproduces QEMU's layout");
  });

  it('applies the spec defaults when there is no document, no capabilities, or missing members', () => {
    const defaults = {
      maxMsgFds: VFIO_USER_DEFAULT_MAX_MSG_FDS,
      maxDataXferSize: VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE,
      maxDmaMaps: VFIO_USER_DEFAULT_MAX_DMA_MAPS,
      pgsizes: VFIO_USER_DEFAULT_PGSIZES,
      writeMultiple: false,
      twinSocket: { supported: false },
    };
    assert.deepEqual(DEFAULT_CAPABILITIES, defaults);
    assert.deepEqual(defaults, {
      maxMsgFds: 1,
      maxDataXferSize: 1048576,
      maxDmaMaps: 65535,
      pgsizes: 4096n,
      writeMultiple: false,
      twinSocket: { supported: false },
    });
    assert.deepEqual(decodeVersion(fromHex('00000000')).capabilities, defaults);
    assert.deepEqual(decodeVersion(payload('{}')).capabilities, defaults);
    assert.deepEqual(decodeVersion(payload('{"other": 1}')).capabilities, defaults);
    assert.deepEqual(decodeVersion(payload('{"capabilities": {}}')).capabilities, defaults);
    assert.deepEqual(decodeVersion(payload('{"capabilities": {"migration": {}}}')).capabilities, {
      ...defaults,
      migration: { pgsize: 4096, maxBitmapSize: VFIO_USER_DEFAULT_MAX_BITMAP_SIZE },
    });
  });

  it('reads twin_socket', () => {
    const c = decodeVersion(
      payload('{"capabilities": {"twin_socket": {"supported": true, "fd_index": 0}}}'),
    ).capabilities;
    assert.deepEqual(c.twinSocket, { supported: true, fdIndex: 0 });
    const d = decodeVersion(payload('{"capabilities": {"twin_socket": {}}}')).capabilities;
    assert.deepEqual(d.twinSocket, { supported: false });
  });

  it('keeps a u64 pgsizes exact (beyond 2^53) and writes it back unchanged', () => {
    const text = '{"capabilities": {"pgsizes": 18446744073709547520}}';
    const v = decodeVersion(payload(text));
    assert.equal(v.capabilities.pgsizes, 0xfffffffffffff000n);
    assert.equal(toHex(encodeVersion(v)), toHex(payload(text)));
    assert.deepEqual(capabilitiesJson({ pgsizes: 0xfffffffffffff000n }), {
      capabilities: { pgsizes: 0xfffffffffffff000n },
    });
  });

  it('keeps unknown members, in order, including one named __proto__', () => {
    const text =
      '{"capabilities": {"max_msg_fds": 4, "future": {"x": [1, 2.5, -3, "s\\u00e9\\n", null, false]}, "__proto__": 7}, "extra": true}';
    const v = decodeVersion(payload(text));
    const caps = v.json?.capabilities as JsonObject;
    assert.deepEqual(Object.keys(caps), ['max_msg_fds', 'future', '__proto__']);
    assert.equal(Object.getPrototypeOf(caps), Object.prototype, 'the prototype is untouched');
    assert.equal(Object.getOwnPropertyDescriptor(caps, '__proto__')?.value, 7);
    assert.equal(v.capabilities.maxMsgFds, 4);
    // Re-encoded text is the same document (escapes normalized by JSON.stringify).
    const again = decodeVersion(encodeVersion(v));
    assert.deepEqual(again.json, v.json);
    assert.equal(writeJson(v.json as JsonObject), text.replace('\\u00e9', 'é'));
  });

  it('takes the spaced layout libvfio-user (json-c) writes, and any JSON whitespace', () => {
    const v = decodeVersion(
      payload('\t{ "capabilities" :\n{ "max_msg_fds" : 8 ,"max_data_xfer_size":1048576 } }\r\n'),
    );
    assert.equal(v.capabilities.maxMsgFds, 8);
    assert.equal(v.capabilities.maxDataXferSize, 1048576);
  });

  it('reads surrogate pairs and escapes', () => {
    assert.deepEqual(parseJson('["\\ud83d\\ude00", "\\"\\\\\\/\\b\\f\\n\\r\\t", "ü"]'), [
      '😀',
      '"\\/\b\f\n\r\t',
      'ü',
    ]);
    assert.equal(parseJson('1e3'), 1000);
    assert.equal(parseJson('-0.5E-1'), -0.05);
    assert.equal(parseJson('-9007199254740993'), -9007199254740993n);
    assert.equal(parseJson('9007199254740991'), 9007199254740991);
  });

  it('writes the document vfio-ts replies with, in QEMU layout, with its NUL', () => {
    const json = capabilitiesJson({ maxMsgFds: 8, maxDataXferSize: 1048576, pgsizes: 4096n });
    const bytes = encodeVersion({ major: 0, minor: 0, json });
    assert.equal(
      Buffer.from(bytes.subarray(4, -1)).toString(),
      '{"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576, "pgsizes": 4096}}',
    );
    assert.equal(bytes[bytes.byteLength - 1], 0);
    assert.equal(toHex(encodeVersion({ major: 0, minor: 2 })), '00000200', 'no document: 4 bytes');
  });

  it('writes every capability in a fixed order', () => {
    const json = capabilitiesJson({
      migration: { pgsize: 4096, maxBitmapSize: 1 << 28 },
      twinSocket: { supported: true, fdIndex: 0 },
      writeMultiple: true,
      pgsizes: 4096n,
      maxDmaMaps: 100,
      maxDataXferSize: 65536,
      maxMsgFds: 16,
    });
    assert.equal(
      writeJson(json),
      '{"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 65536, "max_dma_maps": 100, "pgsizes": 4096, ' +
        '"write_multiple": true, "twin_socket": {"supported": true, "fd_index": 0}, ' +
        '"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}}}',
    );
    assert.deepEqual(resolveCapabilities(json), {
      maxMsgFds: 16,
      maxDataXferSize: 65536,
      maxDmaMaps: 100,
      pgsizes: 4096n,
      writeMultiple: true,
      twinSocket: { supported: true, fdIndex: 0 },
      migration: { pgsize: 4096, maxBitmapSize: 268435456 },
    });
    assert.equal(writeJson(capabilitiesJson({})), '{"capabilities": {}}');
    assert.equal(writeJson([]), '[]');
  });
});
