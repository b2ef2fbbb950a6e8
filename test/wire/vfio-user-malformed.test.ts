/**
 * Every way a payload can be refused, with the exact error. Payloads are spelled field by field
 * (u32(...), u64(...)) in the spec's order so each row reads like the layout it breaks.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import {
  decodeDeviceFeature,
  decodeDeviceInfo,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeDmaMap,
  decodeDmaReadReply,
  decodeDmaReadRequest,
  decodeDmaUnmap,
  decodeDmaWriteReply,
  decodeDmaWriteRequest,
  decodeFeatureMigration,
  decodeFeatureMigState,
  decodeIoFdsReply,
  decodeIoFdsRequest,
  decodeIrqInfo,
  decodeIrqSet,
  decodeMessage,
  decodeMigDataReadReply,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  decodeRegionInfoReply,
  decodeRegionInfoRequest,
  decodeRegionReadReply,
  decodeRegionReadRequest,
  decodeRegionWriteMulti,
  decodeRegionWriteMultiReply,
  decodeRegionWriteReply,
  decodeRegionWriteRequest,
  decodeVersion,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  encodeIoFdsReply,
  encodeIrqSet,
  encodeRegionInfoReply,
  encodeRegionWriteMulti,
  encodeRegionWriteRequest,
  encodeVersion,
  fromHex,
  writeJson,
} from '../../src/wire/vfio-user.js';

const le = (n: bigint, bytes: number): string => {
  let s = '';
  for (let i = 0; i < bytes; i++) s += ((n >> BigInt(8 * i)) & 0xffn).toString(16).padStart(2, '0');
  return s;
};
const u16 = (n: number) => le(BigInt(n), 2);
const u32 = (n: number) => le(BigInt(n), 4);
const u64 = (n: bigint | number) => le(BigInt(n), 8);
const b = (...parts: string[]) => fromHex(parts.join(''));
const ascii = (s: string) => Buffer.from(s, 'utf8').toString('hex');
const version = (json: string) => b(u16(0), u16(0), ascii(json), '00');
const TOP = 0xffff_ffff_ffff_0000n;

interface Row {
  name: string;
  run: () => unknown;
  message: string;
  errno?: number;
}

function check(rows: Row[]): void {
  for (const r of rows) {
    it(r.name, () => {
      assert.throws(r.run, (e: unknown) => {
        assert.ok(e instanceof MalformedError, `expected MalformedError, got ${String(e)}`);
        assert.equal(e.message, r.message);
        assert.equal(e.errno, r.errno ?? Errno.EINVAL);
        return true;
      });
    });
  }
}

describe('malformed vfio-user payloads', () => {
  describe('VERSION', () => {
    const V = 'malformed VFIO_USER_VERSION: ';
    const J = 'malformed VERSION JSON: ';
    check([
      {
        name: '3-byte payload',
        run: () => decodeVersion(b('000000')),
        message: `${V}payload is 3 bytes, need at least 4`,
      },
      {
        name: 'data without NUL',
        run: () => decodeVersion(b(u16(0), u16(0), ascii('{}'))),
        message: `${V}version data is not NUL-terminated`,
      },
      {
        name: 'NUL inside the data',
        run: () => decodeVersion(b(u16(0), u16(0), '7b007d00')),
        message: `${V}NUL at byte 1 of 4 of version data`,
      },
      {
        name: 'empty JSON text',
        run: () => decodeVersion(b(u16(0), u16(0), '00')),
        message: `${J}unexpected end of text at offset 0`,
      },
      {
        name: 'invalid UTF-8',
        run: () => decodeVersion(b(u16(0), u16(0), 'ff00')),
        message: `${V}version data is not valid UTF-8`,
      },
      {
        name: 'JSON array',
        run: () => decodeVersion(version('[]')),
        message: `${V}version data is not a JSON object`,
      },
      {
        name: 'JSON string',
        run: () => decodeVersion(version('"x"')),
        message: `${V}version data is not a JSON object`,
      },
      {
        name: 'missing value',
        run: () => decodeVersion(version('{"a":}')),
        message: `${J}unexpected character "}" at offset 5`,
      },
      {
        name: 'trailing comma',
        run: () => decodeVersion(version('{"a":1,}')),
        message: `${J}expected a member name at offset 7`,
      },
      {
        name: 'missing colon',
        run: () => decodeVersion(version('{"a" 1}')),
        message: `${J}expected ':' at offset 5`,
      },
      {
        name: 'missing comma',
        run: () => decodeVersion(version('{"a":1 "b":2}')),
        message: `${J}expected ',' or '}' at offset 7`,
      },
      {
        name: 'unclosed array',
        run: () => decodeVersion(version('{"a":[1 2]}')),
        message: `${J}expected ',' or ']' at offset 8`,
      },
      {
        name: 'duplicate member',
        run: () => decodeVersion(version('{"a":1,"a":2}')),
        message: `${J}duplicate member "a" at offset 10`,
      },
      {
        name: 'trailing text',
        run: () => decodeVersion(version('{} {}')),
        message: `${J}trailing characters at offset 3`,
      },
      {
        name: 'single quotes',
        run: () => decodeVersion(version("{'a':1}")),
        message: `${J}expected a member name at offset 1`,
      },
      {
        name: 'bare word',
        run: () => decodeVersion(version('{"a":yes}')),
        message: `${J}unexpected character "y" at offset 5`,
      },
      {
        name: 'NaN',
        run: () => decodeVersion(version('{"a":NaN}')),
        message: `${J}unexpected character "N" at offset 5`,
      },
      {
        name: 'truncated literal',
        run: () => decodeVersion(version('{"a":tru}')),
        message: `${J}expected true at offset 5`,
      },
      {
        name: 'leading zero',
        run: () => decodeVersion(version('{"a":01}')),
        message: `${J}expected ',' or '}' at offset 6`,
      },
      {
        name: 'bare minus',
        run: () => decodeVersion(version('{"a":-}')),
        message: `${J}malformed number at offset 5`,
      },
      {
        name: 'huge exponent',
        run: () => decodeVersion(version('{"a":1e999}')),
        message: `${J}number 1e999 out of range at offset 10`,
      },
      {
        name: 'unterminated string',
        run: () => decodeVersion(version('{"a')),
        message: `${J}unterminated string at offset 3`,
      },
      {
        name: 'raw tab in string',
        run: () => decodeVersion(version('{"a\tb":1}')),
        message: `${J}control character in string at offset 3`,
      },
      {
        name: 'bad escape',
        run: () => decodeVersion(version('{"a\\x":1}')),
        message: `${J}bad escape at offset 3`,
      },
      {
        name: 'bad \\u escape',
        run: () => decodeVersion(version('{"\\u12g4":1}')),
        message: `${J}bad \\u escape at offset 4`,
      },
      {
        name: 'nesting 33 deep',
        run: () => decodeVersion(version(`${'['.repeat(33)}${']'.repeat(33)}`)),
        message: `${J}nesting deeper than 32 at offset 32`,
      },
      {
        name: 'capabilities not an object',
        run: () => decodeVersion(version('{"capabilities": 1}')),
        message: `${V}capabilities must be an object, got 1`,
      },
      {
        name: 'max_msg_fds as a string',
        run: () => decodeVersion(version('{"capabilities": {"max_msg_fds": "16"}}')),
        message: `${V}capabilities.max_msg_fds must be an integer in 0..4294967295, got "16"`,
      },
      {
        name: 'max_msg_fds negative',
        run: () => decodeVersion(version('{"capabilities": {"max_msg_fds": -1}}')),
        message: `${V}capabilities.max_msg_fds must be an integer in 0..4294967295, got -1`,
      },
      {
        name: 'max_msg_fds fractional',
        run: () => decodeVersion(version('{"capabilities": {"max_msg_fds": 1.5}}')),
        message: `${V}capabilities.max_msg_fds must be an integer in 0..4294967295, got 1.5`,
      },
      {
        name: 'max_dma_maps beyond u32',
        run: () => decodeVersion(version('{"capabilities": {"max_dma_maps": 4294967296}}')),
        message: `${V}capabilities.max_dma_maps must be an integer in 0..4294967295, got 4294967296`,
      },
      {
        name: 'max_data_xfer_size beyond 2^53',
        run: () => decodeVersion(version('{"capabilities": {"max_data_xfer_size": 18446744073709551616}}')),
        message: `${V}capabilities.max_data_xfer_size must be an integer in 0..9007199254740991, got 18446744073709551616`,
      },
      {
        name: 'pgsizes negative',
        run: () => decodeVersion(version('{"capabilities": {"pgsizes": -4096}}')),
        message: `${V}capabilities.pgsizes must be an integer in 0..2^64-1, got -4096`,
      },
      {
        name: 'pgsizes 2^64',
        run: () => decodeVersion(version('{"capabilities": {"pgsizes": 18446744073709551616}}')),
        message: `${V}capabilities.pgsizes must be an integer in 0..2^64-1, got 18446744073709551616`,
      },
      {
        name: 'pgsizes as a float',
        run: () => decodeVersion(version('{"capabilities": {"pgsizes": 4096.5}}')),
        message: `${V}capabilities.pgsizes must be an integer in 0..2^64-1, got 4096.5`,
      },
      {
        name: 'write_multiple as a string',
        run: () => decodeVersion(version('{"capabilities": {"write_multiple": "true"}}')),
        message: `${V}capabilities.write_multiple must be a boolean, got "true"`,
      },
      {
        name: 'twin_socket as a boolean',
        run: () => decodeVersion(version('{"capabilities": {"twin_socket": true}}')),
        message: `${V}capabilities.twin_socket must be an object, got true`,
      },
      {
        name: 'twin_socket.supported as a number',
        run: () => decodeVersion(version('{"capabilities": {"twin_socket": {"supported": 1}}}')),
        message: `${V}capabilities.twin_socket.supported must be a boolean, got 1`,
      },
      {
        name: 'twin_socket.fd_index negative',
        run: () =>
          decodeVersion(version('{"capabilities": {"twin_socket": {"supported": true, "fd_index": -1}}}')),
        message: `${V}capabilities.twin_socket.fd_index must be an integer in 0..4294967295, got -1`,
      },
      {
        name: 'migration as an array',
        run: () => decodeVersion(version('{"capabilities": {"migration": []}}')),
        message: `${V}capabilities.migration must be an object, got []`,
      },
      {
        name: 'migration.pgsize as a string',
        run: () => decodeVersion(version('{"capabilities": {"migration": {"pgsize": "4096"}}}')),
        message: `${V}capabilities.migration.pgsize must be an integer in 0..9007199254740991, got "4096"`,
      },
      {
        name: 'migration.max_bitmap_size null',
        run: () => decodeVersion(version('{"capabilities": {"migration": {"max_bitmap_size": null}}}')),
        message: `${V}capabilities.migration.max_bitmap_size must be an integer in 0..9007199254740991, got null`,
      },
    ]);
  });

  describe('DMA_MAP / DMA_UNMAP', () => {
    const M = 'malformed VFIO_USER_DMA_MAP command: ';
    const U = 'malformed VFIO_USER_DMA_UNMAP command: ';
    check([
      {
        name: 'map: 31 bytes',
        run: () => decodeDmaMap(new Uint8Array(31)),
        message: `${M}payload is 31 bytes, need at least 32`,
      },
      {
        name: 'map: argsz 16',
        run: () => decodeDmaMap(b(u32(16), u32(3), u64(0), u64(0x1000), u64(0x1000))),
        message: `${M}argsz 16 < 32`,
      },
      {
        name: 'map: address + size wraps',
        run: () => decodeDmaMap(b(u32(32), u32(3), u64(0), u64(TOP), u64(0x10001))),
        message: `${M}address + size 0xffffffffffff0000 + 0x10001 wraps past 2^64`,
      },
      {
        name: 'unmap: 23 bytes',
        run: () => decodeDmaUnmap(new Uint8Array(23)),
        message: `${U}payload is 23 bytes, need at least 24`,
      },
      {
        name: 'unmap: argsz 8',
        run: () => decodeDmaUnmap(b(u32(8), u32(0), u64(0x1000), u64(0x1000))),
        message: `${U}argsz 8 < 24`,
      },
      {
        name: 'unmap: dirty bitmap',
        run: () => decodeDmaUnmap(b(u32(40), u32(1), u64(0x1000), u64(0x1000), u64(4096), u64(1), '00')),
        message: `${U}GET_DIRTY_BITMAP unmap is not supported`,
      },
      {
        name: 'unmap: unknown flag',
        run: () => decodeDmaUnmap(b(u32(24), u32(4), u64(0x1000), u64(0x1000))),
        message: `${U}unknown flags 0x4`,
      },
      {
        name: 'unmap: ALL with an address',
        run: () => decodeDmaUnmap(b(u32(24), u32(2), u64(0x1000), u64(0))),
        message: `${U}UNMAP_ALL with a nonzero address or size`,
      },
      {
        name: 'unmap reply: wraps',
        run: () => decodeDmaUnmap(b(u32(24), u32(0), u64(TOP), u64(0x10001)), 'reply'),
        message:
          'malformed VFIO_USER_DMA_UNMAP reply: address + size 0xffffffffffff0000 + 0x10001 wraps past 2^64',
      },
    ]);
  });

  describe('DMA_READ / DMA_WRITE', () => {
    check([
      {
        name: 'read command: 15 bytes',
        run: () => decodeDmaReadRequest(new Uint8Array(15)),
        message: 'malformed VFIO_USER_DMA_READ command: payload is 15 bytes, need at least 16',
      },
      {
        name: 'read command: u64 count of 2^32',
        run: () => decodeDmaReadRequest(b(u64(0x1000), u64(2n ** 32n))),
        message: 'malformed VFIO_USER_DMA_READ command: count 0x100000000 does not fit 32 bits',
      },
      {
        name: 'read command: address + count wraps',
        run: () => decodeDmaReadRequest(b(u64(TOP), u64(0x10001)), 'qemu'),
        message:
          'malformed VFIO_USER_DMA_READ command: address + count 0xffffffffffff0000 + 0x10001 wraps past 2^64',
      },
      {
        name: 'read reply (spec): data shorter than count',
        run: () => decodeDmaReadReply(b(u64(0x1000), u64(8), '01020304')),
        message: 'malformed VFIO_USER_DMA_READ reply: payload is 20 bytes, count 8 needs 24',
      },
      {
        name: 'read reply (qemu): no 4-byte tail',
        run: () => decodeDmaReadReply(b(u64(0x1000), u32(4), '01020304'), 'qemu'),
        message: 'malformed VFIO_USER_DMA_READ reply: payload is 16 bytes, count 4 needs 20',
      },
      {
        name: 'read reply (spec) read as qemu: data past the end',
        run: () => decodeDmaReadReply(b(u64(0x1000), u64(8), '0102030405060708', '00'), 'qemu'),
        message: 'malformed VFIO_USER_DMA_READ reply: payload is 25 bytes, count 8 needs 24',
      },
      {
        name: 'write command: data longer than count',
        run: () => decodeDmaWriteRequest(b(u64(0x1000), u64(2), '010203')),
        message: 'malformed VFIO_USER_DMA_WRITE command: payload is 19 bytes, count 2 needs 18',
      },
      {
        name: 'write reply: 8 bytes',
        run: () => decodeDmaWriteReply(new Uint8Array(8)),
        message: 'malformed VFIO_USER_DMA_WRITE reply: payload is 8 bytes, need at least 12',
      },
    ]);
  });

  describe('DEVICE_GET_INFO / GET_IRQ_INFO / GET_REGION_IO_FDS requests', () => {
    check([
      {
        name: 'info: 15 bytes',
        run: () => decodeDeviceInfo(new Uint8Array(15)),
        message: 'malformed VFIO_USER_DEVICE_GET_INFO command: payload is 15 bytes, need at least 16',
      },
      {
        name: 'info: argsz 8',
        run: () => decodeDeviceInfo(b(u32(8), u32(0), u32(0), u32(0))),
        message: 'malformed VFIO_USER_DEVICE_GET_INFO command: argsz 8 < 16',
      },
      {
        name: 'info reply: 12 bytes',
        run: () => decodeDeviceInfo(new Uint8Array(12), 'reply'),
        message: 'malformed VFIO_USER_DEVICE_GET_INFO reply: payload is 12 bytes, need at least 16',
      },
      {
        name: 'irq info: argsz 0',
        run: () => decodeIrqInfo(b(u32(0), u32(0), u32(2), u32(0))),
        message: 'malformed VFIO_USER_DEVICE_GET_IRQ_INFO command: argsz 0 < 16',
      },
      {
        name: 'irq info reply: 15 bytes',
        run: () => decodeIrqInfo(new Uint8Array(15), 'reply'),
        message: 'malformed VFIO_USER_DEVICE_GET_IRQ_INFO reply: payload is 15 bytes, need at least 16',
      },
      {
        name: 'io fds: argsz 8',
        run: () => decodeIoFdsRequest(b(u32(8), u32(0), u32(0), u32(0))),
        message: 'malformed VFIO_USER_DEVICE_GET_REGION_IO_FDS command: argsz 8 < 16',
      },
      {
        name: 'io fds: 4 bytes',
        run: () => decodeIoFdsRequest(new Uint8Array(4)),
        message: 'malformed VFIO_USER_DEVICE_GET_REGION_IO_FDS command: payload is 4 bytes, need at least 16',
      },
    ]);
  });

  describe('DEVICE_GET_REGION_INFO', () => {
    const R = 'malformed VFIO_USER_DEVICE_GET_REGION_INFO reply: ';
    const head = (argsz: number, capOffset: number, flags = 0xf) => [
      u32(argsz),
      u32(flags),
      u32(0),
      u32(capOffset),
      u64(0x4000),
      u64(0),
    ];
    const cap = (id: number, next: number) => `${u16(id)}${u16(1)}${u32(next)}`;
    check([
      {
        name: 'request: 31 bytes',
        run: () => decodeRegionInfoRequest(new Uint8Array(31)),
        message: 'malformed VFIO_USER_DEVICE_GET_REGION_INFO command: payload is 31 bytes, need at least 32',
      },
      {
        name: 'request: argsz 16',
        run: () => decodeRegionInfoRequest(b(u32(16), u32(0), u32(0), u32(0), u64(0), u64(0))),
        message: 'malformed VFIO_USER_DEVICE_GET_REGION_INFO command: argsz 16 < 32',
      },
      {
        name: 'reply: 31 bytes',
        run: () => decodeRegionInfoReply(new Uint8Array(31)),
        message: `${R}payload is 31 bytes, need at least 32`,
      },
      {
        name: 'cap_offset inside the struct',
        run: () => decodeRegionInfoReply(b(...head(40, 8), cap(3, 0))),
        message: `${R}capability offset 8 does not move past 31: a loop or overlap`,
      },
      {
        name: 'cap_offset past the payload',
        run: () => decodeRegionInfoReply(b(...head(64, 64), cap(3, 0))),
        message: `${R}capability at 64 runs past the 40-byte payload`,
      },
      {
        name: 'capability pointing at itself',
        run: () => decodeRegionInfoReply(b(...head(40, 32), cap(3, 32))),
        message: `${R}capability at 32 points back to 32`,
      },
      {
        name: 'two capabilities in a loop',
        run: () => decodeRegionInfoReply(b(...head(48, 32), cap(3, 40), cap(3, 32))),
        message: `${R}capability at 40 points back to 32`,
      },
      {
        name: 'next past the payload',
        run: () => decodeRegionInfoReply(b(...head(40, 32), cap(3, 48))),
        message: `${R}capability at 32 points to 48, past the payload`,
      },
      {
        name: 'sparse mmap capability of 8 bytes',
        run: () => decodeRegionInfoReply(b(...head(40, 32), cap(1, 0))),
        message: `${R}sparse mmap capability at 32 has 8 bytes, needs 16`,
      },
      {
        name: 'sparse mmap with more areas than bytes',
        run: () => decodeRegionInfoReply(b(...head(64, 32), cap(1, 0), u32(2), u32(0), u64(0), u64(0x1000))),
        message: `${R}sparse mmap capability at 32: 2 areas do not fit in 32 bytes`,
      },
      {
        name: 'sparse area wraps',
        run: () =>
          decodeRegionInfoReply(b(...head(64, 32), cap(1, 0), u32(1), u32(0), u64(TOP), u64(0x10001))),
        message: `${R}sparse area 0 offset + size 0xffffffffffff0000 + 0x10001 wraps past 2^64`,
      },
      {
        name: 'type capability of 12 bytes',
        run: () => decodeRegionInfoReply(b(...head(44, 32), cap(2, 0), u32(1))),
        message: `${R}type capability at 32 has 12 bytes, needs 16`,
      },
      {
        name: '65 capabilities',
        run: () => {
          const caps: string[] = [];
          for (let i = 0; i < 65; i++) caps.push(cap(0x99, i === 64 ? 0 : 32 + 8 * (i + 1)));
          return decodeRegionInfoReply(b(...head(32 + 65 * 8, 32), ...caps));
        },
        message: `${R}more than 64 capabilities`,
      },
    ]);
  });

  describe('DEVICE_GET_REGION_IO_FDS reply', () => {
    const R = 'malformed VFIO_USER_DEVICE_GET_REGION_IO_FDS reply: ';
    const entry = '00'.repeat(40);
    check([
      {
        name: '12 bytes',
        run: () => decodeIoFdsReply(new Uint8Array(12)),
        message: `${R}payload is 12 bytes, need at least 16`,
      },
      {
        name: 'argsz not the payload length',
        run: () => decodeIoFdsReply(b(u32(96), u32(0), u32(0), u32(1), entry)),
        message: `${R}argsz 96 but 56 payload bytes`,
      },
      {
        name: 'entries with count 0',
        run: () => decodeIoFdsReply(b(u32(56), u32(0), u32(0), u32(0), entry)),
        message: `${R}40 bytes of sub-regions do not divide into 0 entries of >= 40 bytes`,
      },
      {
        name: '20-byte entries',
        run: () => decodeIoFdsReply(b(u32(56), u32(0), u32(0), u32(2), entry)),
        message: `${R}40 bytes of sub-regions do not divide into 2 entries of >= 40 bytes`,
      },
      {
        name: 'entries that do not divide',
        run: () => decodeIoFdsReply(b(u32(101), u32(0), u32(0), u32(2), entry, entry, '0000000000')),
        message: `${R}85 bytes of sub-regions do not divide into 2 entries of >= 40 bytes`,
      },
    ]);
  });

  describe('DEVICE_SET_IRQS', () => {
    const S = 'malformed VFIO_USER_DEVICE_SET_IRQS command: ';
    const set = (argsz: number, flags: number, start: number, count: number, data = '') =>
      b(u32(argsz), u32(flags), u32(2), u32(start), u32(count), data);
    check([
      {
        name: '19 bytes',
        run: () => decodeIrqSet(new Uint8Array(19)),
        message: `${S}payload is 19 bytes, need at least 20`,
      },
      { name: 'argsz 16', run: () => decodeIrqSet(set(16, 0x24, 0, 1)), message: `${S}argsz 16 < 20` },
      {
        name: 'unknown flag bit 6',
        run: () => decodeIrqSet(set(20, 0x64, 0, 1)),
        message: `${S}unknown flags 0x64`,
      },
      {
        name: 'two data types',
        run: () => decodeIrqSet(set(20, 0x25, 0, 1)),
        message: `${S}flags 0x25 need exactly one DATA_ and one ACTION_ bit`,
      },
      {
        name: 'no action',
        run: () => decodeIrqSet(set(20, 0x01, 0, 1)),
        message: `${S}flags 0x1 need exactly one DATA_ and one ACTION_ bit`,
      },
      {
        name: 'two actions',
        run: () => decodeIrqSet(set(20, 0x0c + 0x10, 0, 1)),
        message: `${S}flags 0x1c need exactly one DATA_ and one ACTION_ bit`,
      },
      {
        name: 'start + count wraps',
        run: () => decodeIrqSet(set(20, 0x24, 0xffffffff, 2)),
        message: `${S}start 4294967295 + count 2 wraps past 2^32`,
      },
      {
        name: 'DATA_BOOL short of count',
        run: () => decodeIrqSet(set(22, 0x0a, 0, 2, '01')),
        message: `${S}DATA_BOOL with count 2 but 1 data bytes`,
      },
      {
        name: 'DATA_BOOL longer than count',
        run: () => decodeIrqSet(set(22, 0x22, 0, 1, '0101')),
        message: `${S}DATA_BOOL with count 1 but 2 data bytes`,
      },
    ]);
  });

  describe('REGION_READ / REGION_WRITE / REGION_WRITE_MULTI', () => {
    check([
      {
        name: 'read: 15 bytes',
        run: () => decodeRegionReadRequest(new Uint8Array(15)),
        message: 'malformed VFIO_USER_REGION_READ command: payload is 15 bytes, need at least 16',
      },
      {
        name: 'read: offset + count wraps',
        run: () => decodeRegionReadRequest(b(u64(0xffff_ffff_ffff_ffffn), u32(0), u32(2))),
        message:
          'malformed VFIO_USER_REGION_READ command: offset + count 0xffffffffffffffff + 0x2 wraps past 2^64',
      },
      {
        name: 'read reply: 2 bytes for count 4',
        run: () => decodeRegionReadReply(b(u64(0), u32(7), u32(4), 'aabb')),
        message: 'malformed VFIO_USER_REGION_READ reply: count 4 but 2 data bytes',
      },
      {
        name: 'write: 5 bytes for count 4',
        run: () => decodeRegionWriteRequest(b(u64(0), u32(7), u32(4), 'aabbccddee')),
        message: 'malformed VFIO_USER_REGION_WRITE command: count 4 but 5 data bytes',
      },
      {
        name: 'write: no data for count 4',
        run: () => decodeRegionWriteRequest(b(u64(0), u32(7), u32(4))),
        message: 'malformed VFIO_USER_REGION_WRITE command: count 4 but 0 data bytes',
      },
      {
        name: 'write: offset + count wraps',
        run: () => decodeRegionWriteRequest(b(u64(0xffff_ffff_ffff_ffffn), u32(0), u32(2), 'aabb')),
        message:
          'malformed VFIO_USER_REGION_WRITE command: offset + count 0xffffffffffffffff + 0x2 wraps past 2^64',
      },
      {
        name: 'write: ending exactly at 2^64 is fine, one past is not',
        run: () => {
          decodeRegionWriteRequest(b(u64(0xffff_ffff_ffff_fffen), u32(0), u32(2), 'aabb'));
          return decodeRegionWriteRequest(b(u64(0xffff_ffff_ffff_fffen), u32(0), u32(3), 'aabbcc'));
        },
        message:
          'malformed VFIO_USER_REGION_WRITE command: offset + count 0xfffffffffffffffe + 0x3 wraps past 2^64',
      },
      {
        name: 'write reply: 8 bytes',
        run: () => decodeRegionWriteReply(new Uint8Array(8)),
        message: 'malformed VFIO_USER_REGION_WRITE reply: payload is 8 bytes, need at least 16',
      },
      {
        name: 'multi: 7 bytes',
        run: () => decodeRegionWriteMulti(new Uint8Array(7)),
        message: 'malformed VFIO_USER_REGION_WRITE_MULTI command: payload is 7 bytes, need at least 8',
      },
      {
        name: 'multi: wr_cnt 3 with 2 entries',
        run: () => decodeRegionWriteMulti(b(u64(3), '00'.repeat(48))),
        message: 'malformed VFIO_USER_REGION_WRITE_MULTI command: wr_cnt 3 but room for 2 entries',
      },
      {
        name: 'multi: wr_cnt 2^64-1',
        run: () => decodeRegionWriteMulti(b(u64(0xffff_ffff_ffff_ffffn))),
        message:
          'malformed VFIO_USER_REGION_WRITE_MULTI command: wr_cnt 18446744073709551615 but room for 0 entries',
      },
      {
        name: 'multi: a 9-byte write',
        run: () => decodeRegionWriteMulti(b(u64(1), u64(0), u32(0), u32(9), u64(0))),
        message: 'malformed VFIO_USER_REGION_WRITE_MULTI command: write 0: count 9 > 8',
      },
      {
        name: 'multi: second write wraps',
        run: () =>
          decodeRegionWriteMulti(
            b(u64(2), u64(0), u32(0), u32(4), u64(0), u64(0xffff_ffff_ffff_fffen), u32(0), u32(4), u64(0)),
          ),
        message:
          'malformed VFIO_USER_REGION_WRITE_MULTI command: write 1: offset + count 0xfffffffffffffffe + 0x4 wraps past 2^64',
      },
      {
        name: 'multi reply: 4 bytes',
        run: () => decodeRegionWriteMultiReply(new Uint8Array(4)),
        message: 'malformed VFIO_USER_REGION_WRITE_MULTI reply: payload is 4 bytes, need at least 8',
      },
      {
        name: 'multi reply: count 2^63',
        run: () => decodeRegionWriteMultiReply(b(u64(2n ** 63n))),
        message: 'malformed VFIO_USER_REGION_WRITE_MULTI reply: wr_cnt 9223372036854775808 is implausible',
      },
    ]);
  });

  describe('DEVICE_FEATURE and feature data, MIG_DATA', () => {
    check([
      {
        name: 'feature: 7 bytes',
        run: () => decodeDeviceFeature(new Uint8Array(7)),
        message: 'malformed VFIO_USER_DEVICE_FEATURE command: payload is 7 bytes, need at least 8',
      },
      {
        name: 'feature: argsz 4',
        run: () => decodeDeviceFeature(b(u32(4), u32(0x50001))),
        message: 'malformed VFIO_USER_DEVICE_FEATURE command: argsz 4 < 8',
      },
      {
        name: 'migration data: 4 bytes',
        run: () => decodeFeatureMigration(new Uint8Array(4)),
        message: 'malformed VFIO_DEVICE_FEATURE_MIGRATION data: data is 4 bytes, need at least 8',
      },
      {
        name: 'mig state data: 4 bytes',
        run: () => decodeFeatureMigState(new Uint8Array(4)),
        message: 'malformed VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE data: data is 4 bytes, need at least 8',
      },
      {
        name: 'logging control: ranges missing',
        run: () => decodeDmaLoggingControl(b(u64(4096), u32(2), u32(0), u64(0), u64(0x1000))),
        message: 'malformed VFIO_DEVICE_FEATURE_DMA_LOGGING_START data: num_ranges 2 do not fit',
      },
      {
        name: 'logging control: range wraps',
        run: () => decodeDmaLoggingControl(b(u64(4096), u32(1), u32(0), u64(TOP), u64(0x10001))),
        message:
          'malformed VFIO_DEVICE_FEATURE_DMA_LOGGING_START data: range 0 iova + length 0xffffffffffff0000 + 0x10001 wraps past 2^64',
      },
      {
        name: 'logging report: 16 bytes',
        run: () => decodeDmaLoggingReport(new Uint8Array(16)),
        message: 'malformed VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT data: data is 16 bytes, need at least 24',
      },
      {
        name: 'mig read: 4 bytes',
        run: () => decodeMigDataReadRequest(new Uint8Array(4)),
        message: 'malformed VFIO_USER_MIG_DATA_READ command: payload is 4 bytes, need at least 8',
      },
      {
        name: 'mig read reply: size 8, 4 bytes',
        run: () => decodeMigDataReadReply(b(u32(16), u32(8), 'aabbccdd')),
        message: 'malformed VFIO_USER_MIG_DATA_READ reply: size 8 but 4 data bytes',
      },
      {
        name: 'mig write: short write',
        run: () => decodeMigDataWriteRequest(b(u32(16), u32(8), 'aabbccdd')),
        message: 'malformed VFIO_USER_MIG_DATA_WRITE command: size 8 but 4 data bytes',
      },
    ]);
  });

  describe('whole messages', () => {
    check([
      {
        name: 'msg_size larger than the bytes',
        run: () => decodeMessage(b(u16(1), u16(9), u32(32), u32(0), u32(0), '00'.repeat(4))),
        message: 'malformed vfio-user header: msg_size 32 but 20 bytes given',
      },
      {
        name: 'msg_size smaller than the bytes',
        run: () => decodeMessage(b(u16(1), u16(13), u32(16), u32(0), u32(0), '00')),
        message: 'malformed vfio-user header: msg_size 16 but 17 bytes given',
      },
      {
        name: 'command 14 (the retired DIRTY_PAGES)',
        run: () => decodeMessage(b(u16(1), u16(14), u32(16), u32(0), u32(0))),
        message: 'malformed VFIO_USER_COMMAND_14 command: command 14 is not defined by vfio-user',
      },
      {
        name: 'reply to command 99',
        run: () => decodeMessage(b(u16(1), u16(99), u32(16), u32(1), u32(0))),
        message: 'malformed VFIO_USER_COMMAND_99 reply: command 99 is not defined by vfio-user',
      },
      {
        name: 'command 0',
        run: () => decodeMessage(b(u16(1), u16(0), u32(16), u32(0), u32(0))),
        message: 'malformed VFIO_USER_COMMAND_0 command: command 0 is not defined by vfio-user',
      },
      {
        name: 'reserved flag in a whole message',
        run: () => decodeMessage(b(u16(1), u16(13), u32(16), u32(0x80), u32(0))),
        message: 'malformed vfio-user header: reserved flag bits set: flags 0x80',
      },
      {
        name: 'a payload error surfaces from decodeMessage',
        run: () => decodeMessage(b(u16(1), u16(10), u32(33), u32(0), u32(0), u64(0), u32(7), u32(4), '00')),
        message: 'malformed VFIO_USER_REGION_WRITE command: count 4 but 1 data bytes',
      },
    ]);
  });
});

describe('encoders refuse what they cannot represent (VfioError EINVAL)', () => {
  const rows: { name: string; run: () => unknown; message: string }[] = [
    {
      name: 'a 9-byte coalesced write',
      run: () => encodeRegionWriteMulti({ writes: [{ offset: 0n, region: 0, data: new Uint8Array(9) }] }),
      message: 'encode VFIO_USER_REGION_WRITE_MULTI: EINVAL (write 0 carries 9 > 8 bytes)',
    },
    {
      name: 'DATA_BOOL without data',
      run: () => encodeIrqSet({ argsz: 20, flags: 0x22, index: 0, start: 0, count: 1 }),
      message:
        'encode VFIO_USER_DEVICE_SET_IRQS: EINVAL (data must be present exactly when DATA_BOOL is set)',
    },
    {
      name: 'DATA_BOOL with the wrong length',
      run: () =>
        encodeIrqSet({ argsz: 22, flags: 0x22, index: 0, start: 0, count: 1, data: new Uint8Array(2) }),
      message: 'encode VFIO_USER_DEVICE_SET_IRQS: EINVAL (count 1 but 2 data bytes)',
    },
    {
      name: 'IO_FDS entries of 44 bytes',
      run: () =>
        encodeIoFdsReply({
          argsz: 60,
          flags: 0,
          index: 0,
          count: 1,
          entrySize: 44,
          subRegions: [
            {
              offset: 0n,
              size: 0n,
              fdIndex: 0,
              type: 0,
              flags: 0,
              shadowFdIndex: 0,
              shadowOffset: 0n,
              data: 0n,
            },
          ],
        }),
      message: 'encode VFIO_USER_DEVICE_GET_REGION_IO_FDS reply: EINVAL (entry size 44 is neither 40 nor 48)',
    },
    {
      name: 'spec DMA_WRITE reply without fields',
      run: () => encodeDmaWriteReply({}),
      message: 'encode VFIO_USER_DMA_WRITE reply: EINVAL (the spec layout needs address and count)',
    },
    {
      name: 'a negative u64',
      run: () => encodeDmaReadReply({ address: -1n, data: new Uint8Array(0) }),
      message: 'encode VFIO_USER_DMA_READ reply: EINVAL (address -1 is not a u64)',
    },
    {
      name: 'a u64 of 2^64',
      run: () => encodeRegionWriteRequest({ offset: 2n ** 64n, region: 0, data: new Uint8Array(1) }),
      message: 'encode VFIO_USER_REGION_WRITE command: EINVAL (offset 18446744073709551616 is not a u64)',
    },
    {
      name: 'a u32 region of -1',
      run: () => encodeRegionWriteRequest({ offset: 0n, region: -1, data: new Uint8Array(1) }),
      message: 'encode VFIO_USER_REGION_WRITE command: EINVAL (region -1 is not a u32)',
    },
    {
      name: 'a major version of 2^16',
      run: () => encodeVersion({ major: 0x10000, minor: 0 }),
      message: 'encode VFIO_USER_VERSION: EINVAL (major 65536 is not a u16)',
    },
    {
      name: 'NaN in JSON',
      run: () => writeJson({ a: Number.NaN }),
      message: 'encode VERSION JSON: EINVAL (number NaN has no JSON form)',
    },
    {
      name: 'a capability id of 2^16',
      run: () =>
        encodeRegionInfoReply({
          argsz: 40,
          flags: 15,
          index: 0,
          capOffset: 32,
          size: 0n,
          offset: 0n,
          caps: [{ kind: 'raw', id: 0x10000, version: 1, data: new Uint8Array(0) }],
        }),
      message: 'encode VFIO_USER_DEVICE_GET_REGION_INFO reply: EINVAL (capability id 65536 is not a u16)',
    },
  ];
  for (const r of rows) {
    it(r.name, () => {
      assert.throws(r.run, (e: unknown) => {
        assert.ok(e instanceof VfioError, `expected VfioError, got ${String(e)}`);
        assert.equal(e.errno, Errno.EINVAL);
        assert.equal(e.message, r.message);
        return true;
      });
    });
  }
});

it('MIG_DATA_READ reply padded past `size` (libvfio-user sizes it for the bytes asked): the data is `size` bytes', () => {
  const d = decodeMigDataReadReply(b(u32(12), u32(4), 'aabbccdd', '00'.repeat(12)));
  assert.equal(d.argsz, 12);
  assert.deepEqual([...d.data], [0xaa, 0xbb, 0xcc, 0xdd]);
});
