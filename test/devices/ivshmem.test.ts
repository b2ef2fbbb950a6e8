/**
 * ivshmem-plain's BAR0 registers through the device fd (pread/pwrite), as QEMU's
 * hw/misc/ivshmem-pci.c answers them, what an mmap of BAR0 shows (a page that is not them), and
 * BAR2's shared memory surviving a reset and the vfio-user client that wrote it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as A from '../../src/abi/vfio.js';
import { VfioUserClient } from '../../src/client/index.js';
import { heapEnvironment } from '../../src/core/env.js';
import { ivshmemDevice } from '../../src/devices/ivshmem.js';
import { VfioDevice } from '../../src/driver/device.js';
import { socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { decodeVfioRegionInfo, putU32 } from '../../src/wire/vfio.js';

function ivshmem() {
  const { device: dev, state } = ivshmemDevice().instantiate({ env: heapEnvironment(), profile: '7.3' });
  return { dev, state };
}
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const le32 = (v: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};

describe('ivshmem-plain BAR0 registers (ivshmem_io_read / ivshmem_io_write)', () => {
  // [name, writes before (offset, bytes), read offset, read length, expected hex]
  const cases: [string, [number, Uint8Array][], number, number, string][] = [
    ['reset state: everything reads 0', [], 0, 16, '00000000000000000000000000000000'],
    ['IntrMask is read/write', [[0x0, le32(0x12345678)]], 0x0, 4, '78563412'],
    ['IntrStatus is read/write', [[0x4, le32(0xa5)]], 0x4, 4, 'a5000000'],
    ['IVPosition is read-only (vm_id 0)', [[0x8, le32(7)]], 0x8, 4, '00000000'],
    ['Doorbell is write-only, reads 0', [[0xc, le32(0x00010001)]], 0xc, 4, '00000000'],
    [
      'other offsets ignore writes, read 0',
      [
        [0x10, le32(0xffffffff)],
        [0xfc, le32(1)],
      ],
      0x10,
      4,
      '00000000',
    ],
    ['a 1-byte read at 0 returns the low byte of IntrMask', [[0x0, le32(0x1234)]], 0x0, 1, '34'],
    ['a 2-byte read at 2 is an unaligned address: 0', [[0x0, le32(0x12345678)]], 0x2, 2, '0000'],
    [
      'a byte written at 1 writes the whole IntrMask (addr &= 0xfc)',
      [[0x1, new Uint8Array([0xab])]],
      0x0,
      4,
      'ab000000',
    ],
    [
      'a 2-byte write at 6 sets IntrStatus to the value',
      [[0x6, new Uint8Array([0x01, 0x02])]],
      0x4,
      4,
      '01020000',
    ],
  ];
  for (const [name, writes, at, len, want] of cases)
    test(name, () => {
      const { dev } = ivshmem();
      for (const [off, bytes] of writes) assert.equal(dev.pwrite(BigInt(off), bytes), bytes.length);
      assert.equal(hex(dev.pread(BigInt(at), len)), want);
    });

  test('reading IntrStatus clears it ("reading ISR clears all interrupts"); IntrMask stays', () => {
    const { dev } = ivshmem();
    dev.pwrite(0x0n, le32(3));
    dev.pwrite(0x4n, le32(1));
    assert.equal(hex(dev.pread(0x0n, 8)), '0300000001000000');
    assert.equal(hex(dev.pread(0x0n, 8)), '0300000000000000');
  });

  test('REGION_INFO for BAR0 is what the kernel reports: READ WRITE MMAP, 256 bytes', () => {
    const { dev } = ivshmem();
    const b = new Uint8Array(32);
    putU32(b, 0, 32);
    putU32(b, 8, 0);
    dev.ioctl(A.VFIO_DEVICE_GET_REGION_INFO, b);
    const r = decodeVfioRegionInfo(b);
    assert.equal(
      r.flags,
      A.VFIO_REGION_INFO_FLAG_READ | A.VFIO_REGION_INFO_FLAG_WRITE | A.VFIO_REGION_INFO_FLAG_MMAP,
    );
    assert.equal(r.size, 256n);
  });

  test('an mmap of BAR0 maps one page of plain memory that is not the registers', () => {
    const { dev, state } = ivshmem();
    const m = dev.mmap(0n, 4096);
    assert.equal(m.bytes.length, 4096);
    m.bytes[0] = 0x5a;
    assert.equal(state.intrMask, 0, 'a store in the mapping is not a register write');
    dev.pwrite(0x0n, le32(0x77));
    assert.equal(m.bytes[0], 0x5a, 'a register write does not show in the mapping');
    assert.equal(hex(dev.pread(0x0n, 4)), '77000000');
    m.unmap();
  });
});

describe('ivshmem BAR2 is a host memory backend: it outlives resets and clients', () => {
  test('a reset restores the registers and keeps the shared memory', () => {
    const { dev, state } = ivshmem();
    dev.pwrite(0x0n, le32(0x77));
    dev.pwrite(2n << 40n, new Uint8Array([1, 2, 3, 4]));
    dev.reset();
    assert.equal(state.intrMask, 0);
    assert.equal(hex(dev.pread(2n << 40n, 4)), '01020304');
  });

  test('over vfio-user: what one client wrote through its mapping, the next client reads', async () => {
    const device = ivshmemDevice().instantiate({ env: nativeEnvironment() }).device;
    const server = new VfioUserServer(device);
    const connect = async () => {
      const [a, b] = socketPair();
      server.adopt(a);
      return new VfioDevice(await VfioUserClient.fromFd(b));
    };
    try {
      const first = await connect();
      const m = await first.map(2); // QEMU maps BAR2 from the region's fd, as a guest's RAM-like BAR
      m.bytes.set([0xde, 0xad, 0xbe, 0xef], 0x1000);
      await first.write32(0, 0, 0x5a);
      m.unmap();
      await first.close();
      await server.idle(); // the server reset the device for the next client
      const second = await connect();
      assert.equal(hex(await second.read(2, 0x1000, 4)), 'deadbeef');
      assert.equal(await second.read32(0, 0), 0, 'the registers were reset');
      await second.close();
      await server.idle();
    } finally {
      server.stop();
      device.close();
    }
  });
});
