/**
 * The device authoring API (src/core/define.ts): every refused definition with the field its
 * error names, register handlers at every access width, the PBA, handler faults, reset of the
 * declared state and memory, tracked work and interrupts raised through the context.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import * as A from '../../src/abi/vfio.js';
import {
  type BarSpec,
  type DeviceContext,
  type DeviceModel,
  defineDevice,
  isDeviceDefinition,
  type MemoryBarSpec,
  type RegisterHandlers,
} from '../../src/core/define.js';
import { heapEnvironment } from '../../src/core/env.js';
import { VfioError } from '../../src/errors.js';
import { encodeFds, encodeVfioIrqSet } from '../../src/wire/vfio.js';

const bar = (index: number, offset = 0n) => (BigInt(index) << 40n) | offset;
const ID = { vendorId: 0x1b36, deviceId: 0x0042, classCode: 0xff0000 };
const REGS = { index: 0, kind: 'mem32', size: 4096, backing: 'registers' } as const satisfies BarSpec;
const nop: RegisterHandlers = { read: () => 0n, write() {} };
/** A memory BAR entry (index and fields unchecked: the table below feeds bad ones on purpose). */
const mem = (index: number, more: Record<string, unknown> = {}) =>
  ({ index, kind: 'mem32', size: 4096, backing: 'memory', ...more }) as MemoryBarSpec;

/** The error `fn` throws: a VfioError with EINVAL. */
function einval(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VfioError, String(e));
    assert.equal(e.errno, Errno.EINVAL, e.message);
    return e.message;
  }
  return assert.fail('no error');
}

describe('defineDevice refuses a bad definition, naming the field', () => {
  // [what, definition (as plain JavaScript would give it), a fragment the message must hold]
  const cases: [string, unknown, RegExp][] = [
    ['not an object', 7, /the definition must be an object/],
    ['no name', { identity: ID, bars: [] }, /name must be a string/],
    ['a misspelt field', { name: 'x', identity: ID, bars: [], msxi: {} }, /definition\.msxi is not a field/],
    [
      'identity missing a field',
      { name: 'x', identity: { vendorId: 1, deviceId: 2 }, bars: [] },
      /identity\.classCode/,
    ],
    [
      'vendor 0xffff',
      { name: 'x', identity: { ...ID, vendorId: 0xffff }, bars: [] },
      /identity\.vendorId 0xffff/,
    ],
    [
      'vendor past 16 bits',
      { name: 'x', identity: { ...ID, vendorId: 0x10000 }, bars: [] },
      /vendorId 65536/,
    ],
    ['bars not an array', { name: 'x', identity: ID, bars: {} }, /bars must be an array/],
    [
      'a BAR with `bar` for `index`',
      { name: 'x', identity: ID, bars: [{ bar: 0, kind: 'mem32', size: 4096, backing: 'memory' }] },
      /bars\[0\]\.bar is not a field/,
    ],
    [
      'a BAR without backing',
      { name: 'x', identity: ID, bars: [{ index: 0, kind: 'mem32', size: 4096 }] },
      /bars\[0\]\.backing must be 'registers' or 'memory'/,
    ],
    ['index out of range', { name: 'x', identity: ID, bars: [mem(6)] }, /bars\[0\]\.index must be 0\.\.5/],
    [
      'a size that is not a power of two',
      { name: 'x', identity: ID, bars: [mem(1, { kind: 'mem32', size: 3000 })] },
      /BAR1 size 3000 is not a power of two/,
    ],
    [
      'a memory BAR smaller than 16 bytes',
      { name: 'x', identity: ID, bars: [mem(0, { kind: 'mem32', size: 8 })] },
      /BAR0: size 8/,
    ],
    [
      'an I/O BAR of memory',
      { name: 'x', identity: ID, bars: [{ index: 0, kind: 'io', size: 32, backing: 'memory' }] },
      /bars\[0\]: an I\/O BAR has no memory/,
    ],
    [
      'reset on a register BAR',
      { name: 'x', identity: ID, bars: [{ ...REGS, reset: 'zero' }], create: () => ({ bars: { 0: nop } }) },
      /bars\[0\]\.reset is not a field/,
    ],
    [
      'an unknown reset',
      {
        name: 'x',
        identity: ID,
        bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'memory', reset: 'clear' }],
      },
      /bars\[0\]\.reset must be 'keep' or 'zero'/,
    ],
    [
      'a bad maxAccessSize',
      {
        name: 'x',
        identity: ID,
        bars: [{ ...REGS, maxAccessSize: 2 }],
        create: () => ({ bars: { 0: nop } }),
      },
      /bars\[0\]\.maxAccessSize must be 4 or 8/,
    ],
    [
      'a BAR twice',
      {
        name: 'x',
        identity: ID,
        bars: [mem(2), mem(2, { kind: 'mem32', size: 8192 })],
      },
      /bars\[1\]: BAR2 is already bars\[0\]/,
    ],
    [
      'a BAR in the upper half of a 64-bit BAR',
      {
        name: 'x',
        identity: ID,
        bars: [mem(2, { kind: 'mem64', size: 4096 }), mem(3)],
      },
      /bars\[1\]: BAR3 is the upper half of 64-bit BAR2 \(bars\[0\]\)/,
    ],
    [
      'a 64-bit BAR5',
      { name: 'x', identity: ID, bars: [mem(5, { kind: 'mem64', size: 4096 })] },
      /BAR5 cannot be 64-bit/,
    ],
    [
      'a register BAR and no create',
      { name: 'x', identity: ID, bars: [REGS] },
      /BAR0 is 'registers': create\(\) must return its handlers/,
    ],
    [
      'the MSI-X table in an undeclared BAR',
      {
        name: 'x',
        identity: ID,
        bars: [mem(0)],
        msix: { vectors: 4, table: { bar: 1, offset: 0 }, pba: { bar: 0, offset: 0x800 } },
      },
      /msix\.table\.bar 1 is not one of bars/,
    ],
    [
      'the MSI-X table overlapping the PBA (msix_init)',
      {
        name: 'x',
        identity: ID,
        bars: [mem(0)],
        msix: { vectors: 8, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0x870 } },
      },
      /MSI-X table \(0x800\.\.0x880\) and PBA \(0x870\.\.0x878\) overlap in BAR0/,
    ],
    [
      'an MSI-X table past the BAR',
      {
        name: 'x',
        identity: ID,
        bars: [mem(0)],
        msix: { vectors: 256, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0 } },
      },
      /MSI-X table \(4096 bytes at 2048\) does not fit in BAR0/,
    ],
    [
      'an unaligned PBA',
      {
        name: 'x',
        identity: ID,
        bars: [mem(0)],
        msix: { vectors: 1, table: { bar: 0, offset: 0 }, pba: { bar: 0, offset: 0x804 } },
      },
      /MSI-X PBA offset 2052 is not 8-byte aligned/,
    ],
    [
      '3 MSI vectors',
      { name: 'x', identity: ID, bars: [], msi: { vectors: 3 } },
      /MSI vectors 3 is not 1, 2, 4, 8, 16 or 32/,
    ],
    ['intx not a boolean', { name: 'x', identity: ID, bars: [], intx: 1 }, /intx must be a boolean/],
    [
      'state that is a function',
      { name: 'x', identity: ID, bars: [], state: () => ({ f: () => 0 }) },
      /state\.f: function/,
    ],
    [
      'state holding a class instance',
      { name: 'x', identity: ID, bars: [], state: () => ({ m: new Map() }) },
      /state\.m: a Map instance is not device state/,
    ],
    [
      'state holding null deep down',
      { name: 'x', identity: ID, bars: [], state: () => ({ q: [{ a: 1 }, { a: null }] }) },
      /state\.q\[1\]\.a: null is not device state/,
    ],
  ];
  for (const [what, spec, want] of cases)
    test(what, () => {
      assert.match(
        einval(() => defineDevice(spec as Parameters<typeof defineDevice>[0])),
        want,
      );
    });

  // What create() returns is checked when a device is built from the definition.
  const built: [string, () => unknown, RegExp][] = [
    ['no handler for a register BAR', () => ({}), /bars\[0\]: BAR0 is 'registers' and has no handler/],
    [
      'a handler without write',
      () => ({ bars: { 0: { read: () => 0n } } }),
      /bars\[0\]\.write must be a function/,
    ],
    [
      'a handler for a BAR not defined',
      () => ({ bars: { 0: nop, 3: nop } }),
      /bars\[3\]: the definition has no BAR3/,
    ],
    ['not an object', () => 5, /create\(\) must return an object/],
  ];
  for (const [what, create, want] of built)
    test(`create() returning ${what}`, () => {
      const def = defineDevice({
        name: 'x',
        identity: ID,
        bars: [REGS],
        create: create as () => DeviceModel,
      });
      assert.match(
        einval(() => def.instantiate({ env: heapEnvironment() })),
        want,
      );
    });
  test('create() returning a handler for a memory BAR', () => {
    const def = defineDevice({
      name: 'x',
      identity: ID,
      bars: [REGS, mem(2)],
      create: () => ({ bars: { 0: nop, 2: nop } }),
    });
    assert.match(
      einval(() => def.instantiate({ env: heapEnvironment() })),
      /BAR2 is a memory BAR; only register BARs take handlers/,
    );
  });
});

/** A register file: 8 bytes at 0 (any width), a log of every access. */
function registerDevice(maxAccessSize: 4 | 8 = 8) {
  const accesses: string[] = [];
  const def = defineDevice({
    name: 'regs',
    identity: ID,
    bars: [
      { ...REGS, maxAccessSize },
      { index: 2, kind: 'mem64', size: 8192, backing: 'memory', prefetchable: true },
    ],
    msix: { vectors: 2, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0xc00 } },
    state: () => ({ reg: 0n, buf: new Uint8Array(4), nested: { n: 1 } }),
    create: (dev) => ({
      bars: {
        0: {
          read(offset, size) {
            accesses.push(`r${size}@${offset.toString(16)}`);
            if (offset === 0x10) throw new RangeError('boom');
            if (offset === 0x18) return 7 as unknown as bigint;
            return dev.state.reg >> BigInt(offset * 8);
          },
          write(offset, size, value) {
            accesses.push(`w${size}@${offset.toString(16)}=${value.toString(16)}`);
            if (offset === 0) dev.state.reg = value;
            if (offset === 0x20) dev.irq.raise(Number(value));
          },
        },
      },
    }),
  });
  return { def, accesses };
}

const le = (v: bigint, n: number) => {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return b;
};
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('register BARs', () => {
  test('one bigint handler at every width: 8 bytes whole on 7.3, 4 + 4 on 6.1', () => {
    for (const [profile, want] of [
      ['7.3', ['w8@0=1122334455667788', 'r8@0']],
      ['6.1', ['w4@0=55667788', 'w4@4=11223344', 'r4@0', 'r4@4']],
    ] as const) {
      const { def, accesses } = registerDevice();
      const { device } = def.instantiate({ env: heapEnvironment(), profile });
      device.pwrite(bar(0), le(0x1122334455667788n, 8));
      const got = hex(device.pread(bar(0), 8));
      assert.deepEqual(accesses, want, profile);
      if (profile === '7.3') assert.equal(got, '8877665544332211');
    }
  });
  test('maxAccessSize 4: an 8-byte access is two 4-byte ones, low half first', () => {
    const { def, accesses } = registerDevice(4);
    const { device } = def.instantiate({ env: heapEnvironment(), profile: '7.3' });
    device.pwrite(bar(0, 0x40n), le(0xaabbccdd00112233n, 8));
    assert.deepEqual(accesses, ['w4@40=112233', 'w4@44=aabbccdd']);
  });
  test('1- and 2-byte accesses carry their bytes; the core keeps the low bytes of a read', () => {
    const { def, accesses } = registerDevice();
    const { device, state } = def.instantiate({ env: heapEnvironment() });
    state.reg = 0xa1b2c3d4n;
    assert.equal(hex(device.pread(bar(0, 1n), 1)), 'c3');
    assert.equal(hex(device.pread(bar(0, 2n), 2)), 'b2a1');
    device.pwrite(bar(0, 0x41n), new Uint8Array([0xfe]));
    assert.deepEqual(accesses, ['r1@1', 'r2@2', 'w1@41=fe']);
  });
  test('the MSI-X table reads 0xff and the PBA 0, neither reaches the handler', () => {
    const { def, accesses } = registerDevice();
    const { device } = def.instantiate({ env: heapEnvironment() });
    assert.equal(hex(device.pread(bar(0, 0x800n), 8)), 'ff'.repeat(8));
    assert.equal(hex(device.pread(bar(0, 0xc00n), 8)), '00'.repeat(8));
    device.pwrite(bar(0, 0xc00n), le(1n, 8));
    assert.deepEqual(accesses, []);
  });
  test('a handler that throws or returns a number fails the access with EIO, naming BAR and offset', () => {
    const { def } = registerDevice();
    const { device } = def.instantiate({ env: heapEnvironment() });
    for (const [at, want] of [
      [0x10n, /EIO \(regs: BAR0 at 0x10: handler threw boom\)/],
      [0x18n, /EIO \(regs: BAR0 at 0x18: read returned a number, not a bigint\)/],
    ] as const) {
      try {
        device.pread(bar(0, at), 8);
        assert.fail('no error');
      } catch (e) {
        assert.ok(e instanceof VfioError && e.errno === Errno.EIO, String(e));
        assert.match(e.message, want);
      }
    }
    assert.equal(device.pread(bar(0), 4).length, 4, 'the device still answers');
  });
  test('interrupts through the context: MSI-X vector 1 signals its eventfd', () => {
    const env = heapEnvironment();
    const { def } = registerDevice();
    const { device } = def.instantiate({ env });
    const efds = [env.createEventfd(), env.createEventfd()];
    const arg = encodeVfioIrqSet({
      flags: A.VFIO_IRQ_SET_DATA_EVENTFD | A.VFIO_IRQ_SET_ACTION_TRIGGER,
      index: A.VFIO_PCI_MSIX_IRQ_INDEX,
      start: 0,
      count: 2,
      data: encodeFds(efds.map((e) => e.fd)),
    });
    device.ioctl(A.VFIO_DEVICE_SET_IRQS, arg);
    device.pwrite(bar(0, 0x20n), le(1n, 4));
    assert.deepEqual(
      efds.map((e) => e.count),
      [0n, 1n],
    );
  });
});

describe('reset: the device declares what it clears', () => {
  test('state back to its initial values in place; memory BARs keep their bytes unless reset: zero', () => {
    const resets: string[] = [];
    const def = defineDevice({
      name: 'r',
      identity: ID,
      bars: [REGS, mem(2), mem(3, { reset: 'zero' })],
      resettable: true,
      state: () => ({ n: 5, buf: new Uint8Array([1, 2]), inner: { x: 1n } }),
      create: (dev: DeviceContext<{ n: number; buf: Uint8Array; inner: { x: bigint } }>) => {
        const { buf } = dev.state; // a reference kept by the device stays the live buffer
        return {
          bars: { 0: { read: () => BigInt(buf[0]!), write() {} } },
          reset: () => resets.push('model'),
        };
      },
    });
    const { device, state } = def.instantiate({ env: heapEnvironment() });
    const buf = state.buf;
    state.n = 9;
    buf[0] = 0xee;
    state.inner.x = 7n;
    device.pwrite(bar(2), new Uint8Array([0xaa]));
    device.pwrite(bar(3), new Uint8Array([0xbb]));
    assert.equal(hex(device.pread(bar(0), 1)), 'ee');
    device.ioctl(A.VFIO_DEVICE_RESET, new Uint8Array(0));
    assert.deepEqual(state, { n: 5, buf: new Uint8Array([1, 2]), inner: { x: 1n } });
    assert.equal(state.buf, buf, 'the same buffer, restored');
    assert.equal(hex(device.pread(bar(0), 1)), '01', 'the handler sees the restored buffer');
    assert.equal(hex(device.pread(bar(2), 1)), 'aa', "reset: 'keep' (the default)");
    assert.equal(hex(device.pread(bar(3), 1)), '00', "reset: 'zero'");
    assert.deepEqual(resets, ['model']);
  });
});

describe('the context', () => {
  test('work(): a rejection is logged, settled() waits for everything started', async () => {
    const log: string[] = [];
    let release: () => void = () => {};
    const def = defineDevice({
      name: 'w',
      identity: ID,
      bars: [REGS],
      create: (dev) => ({
        bars: {
          0: {
            read: () => 0n,
            write(offset) {
              if (offset === 0) void dev.work(Promise.reject(new Error('DMA failed')));
              else void dev.work(new Promise<void>((r) => (release = r)));
            },
          },
        },
      }),
    });
    const { device } = def.instantiate({ env: heapEnvironment(), log: (l) => log.push(l) });
    device.pwrite(bar(0), le(0n, 4));
    device.pwrite(bar(0, 4n), le(0n, 4));
    let settled = false;
    const done = device.settled().then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(log, ['w: DMA failed']);
    assert.equal(settled, false, 'one task still running');
    release();
    await done;
  });
  test("memory(bar) is a memory BAR's bytes; asking for a register BAR is EINVAL", () => {
    let memory: Uint8Array | undefined;
    const def = defineDevice({
      name: 'm',
      identity: ID,
      bars: [REGS, mem(4)],
      create: (dev) => {
        memory = dev.memory(4);
        assert.match(
          einval(() => dev.memory(0)),
          /BAR0 is not a memory BAR/,
        );
        return { bars: { 0: nop } };
      },
    });
    const { device } = def.instantiate({ env: heapEnvironment() });
    memory![3] = 0x42;
    assert.equal(hex(device.pread(bar(4, 3n), 1)), '42');
  });
  test('isDeviceDefinition knows a definition by its registered symbol, not by identity', () => {
    const def = defineDevice({ name: 'i', identity: ID, bars: [] });
    assert.equal(isDeviceDefinition(def), true);
    assert.equal(isDeviceDefinition({ ...def }), true, 'another copy of vfio-ts makes the same brand');
    assert.equal(isDeviceDefinition({ name: 'i', instantiate() {} }), false);
    assert.equal(Object.isFrozen(def), true);
  });
});
