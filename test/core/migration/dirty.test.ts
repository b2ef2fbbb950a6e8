/**
 * DMA logging: the record (src/core/migration/dirty.ts) and the three features as the device fd
 * answers them (feature.ts, vfio_main.c's checks), with exact errnos; and that every write the
 * device issues lands in the log, whether the memory is mapped or reached by message, while
 * reads do not.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import {
  VFIO_DEVICE_FEATURE_GET as GET,
  VFIO_DEVICE_FEATURE_PROBE as PROBE,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT as REPORT,
  VFIO_DEVICE_FEATURE_SET as SET,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START as START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP as STOP,
  VFIO_DEVICE_FEATURE,
} from '../../../src/abi/vfio.js';
import { heapEnvironment } from '../../../src/core/env.js';
import { DirtyLog } from '../../../src/core/migration/dirty.js';
import { MAX_LOG_RANGES, MAX_REPORT_BITMAP } from '../../../src/core/migration/feature.js';
import { eduDevice } from '../../../src/devices/edu.js';
import { ivshmemDevice } from '../../../src/devices/ivshmem.js';
import { errnoOf } from '../../helpers/errno.js';
import { featureArg, loggingReport, loggingStart, loggingStop, setBits } from './rig.js';

const K = 4096n;

function report(log: DirtyLog, iova: bigint, length: bigint, page: bigint, bitmap?: Uint8Array): number[] {
  const pages = Number((length + page - 1n) / page);
  const b = bitmap ?? new Uint8Array(Math.ceil(pages / 64) * 8);
  log.report(iova, length, page, b);
  return setBits(b);
}

describe('DirtyLog', () => {
  test('a write marks every page it touches; a report reads and clears them', () => {
    const log = new DirtyLog(K, []);
    log.mark(0x10ffen, 4); // straddles pages 0x10 and 0x11
    log.mark(0x20000n, 1);
    assert.deepEqual(report(log, 0n, 0x40000n, K), [0x10, 0x11, 0x20]);
    assert.deepEqual(report(log, 0n, 0x40000n, K), [], 'cleared by the first report');
  });

  test('a smaller report page repeats a bit; a larger one ORs them', () => {
    const log = new DirtyLog(K * 4n, []); // 16 KiB tracking pages
    log.mark(0x4000n, 1); // tracking page 1: [0x4000, 0x8000)
    assert.deepEqual(report(log, 0n, 0x10000n, K), [4, 5, 6, 7]);
    log.mark(0x4000n, 1);
    log.mark(0xc000n, 1);
    assert.deepEqual(report(log, 0n, 0x20000n, 0x10000n), [0], 'two tracking pages in one 64 KiB page');
  });

  test('a report only sets bits, never clears one the caller had', () => {
    const log = new DirtyLog(K, []);
    log.mark(0x3000n, 8);
    const b = new Uint8Array(8);
    b[0] = 0b1;
    assert.deepEqual(report(log, 0n, 0x10000n, K, b), [0, 3]);
  });

  test('a report of part of the range leaves the rest; one the range grazes keeps its bit', () => {
    const log = new DirtyLog(K, []);
    for (const p of [1n, 2n, 9n]) log.mark(p * K, 1);
    assert.deepEqual(report(log, 0n, 3n * K, K), [1, 2]);
    assert.deepEqual(report(log, 8n * K + 0x800n, K, K), [0], 'page 9 seen from 0x8800');
    assert.deepEqual(report(log, 9n * K, K, K), [0], 'not cleared: only half of it was reported');
    assert.deepEqual(report(log, 0n, 16n * K, K), []);
  });

  test('ranges: only writes inside them are logged', () => {
    const log = new DirtyLog(K, [
      { start: 0x10000n, end: 0x20000n },
      { start: 0x40000n, end: 0x41000n },
    ]);
    log.mark(0xf000n, 0x2000); // half in the first range
    log.mark(0x30000n, 0x1000); // outside
    log.mark(0x40ff0n, 0x20); // crosses the second range's end
    assert.deepEqual(report(log, 0n, 0x50000n, K), [0x10, 0x40]);
  });

  test('the record is sparse: a START over all of the IOVA space costs nothing until a write', () => {
    const log = new DirtyLog(K, [{ start: 0n, end: 1n << 64n }]);
    assert.equal(log.pending, 0);
    log.mark((1n << 63n) + 5n * K, 1);
    log.mark(7n * K, 1);
    assert.equal(log.pending, 2);
    assert.deepEqual(report(log, 1n << 63n, 16n * K, K), [5]);
    assert.deepEqual(report(log, 0n, 16n * K, K), [7]);
    assert.equal(log.pending, 0);
  });
});

function ivshmem(options = {}) {
  return ivshmemDevice().instantiate({ env: heapEnvironment(), ...options }).device;
}

/** DMA_LOGGING_START's data: page_size, num_ranges, then the ranges. */
function control(page: bigint, ranges: [bigint, bigint][], num = ranges.length): Uint8Array {
  const d = new Uint8Array(16 + 16 * ranges.length);
  const v = new DataView(d.buffer);
  v.setBigUint64(0, page, true);
  v.setUint32(8, num, true);
  ranges.forEach(([a, l], i) => {
    v.setBigUint64(16 + 16 * i, a, true);
    v.setBigUint64(24 + 16 * i, l, true);
  });
  return d;
}

function reportData(iova: bigint, length: bigint, page: bigint, bitmap: number): Uint8Array {
  const d = new Uint8Array(24 + bitmap);
  const v = new DataView(d.buffer);
  v.setBigUint64(0, iova, true);
  v.setBigUint64(8, length, true);
  v.setBigUint64(16, page, true);
  return d;
}

describe('DMA_LOGGING_START / STOP / REPORT through the device fd', () => {
  const big: [bigint, bigint][] = Array.from({ length: MAX_LOG_RANGES + 1 }, (_, i) => [
    BigInt(i) * 2n * K,
    K,
  ]);
  const start: [string, Uint8Array, number | undefined][] = [
    ['one range', control(K, [[0n, 16n * K]]), undefined],
    ['num_ranges 0: every write (vfio-user)', control(K, []), undefined],
    [`${MAX_LOG_RANGES} ranges`, control(K, big.slice(0, MAX_LOG_RANGES)), undefined],
    [`${MAX_LOG_RANGES + 1} ranges: E2BIG`, control(K, big), Errno.E2BIG],
    ['iova not page aligned: EINVAL', control(K, [[0x800n, K]]), Errno.EINVAL],
    ['length not page aligned: EINVAL', control(K, [[0n, 0x1800n]]), Errno.EINVAL],
    ['iova + length past 2^64: EOVERFLOW', control(K, [[(1n << 64n) - K, 2n * K]]), Errno.EOVERFLOW],
    [
      'iova + length exactly 2^64 (a u64 overflow): EOVERFLOW',
      control(K, [[(1n << 64n) - K, K]]),
      Errno.EOVERFLOW,
    ],
    ['a range ending at 2^64 - 4 KiB', control(K, [[(1n << 64n) - 2n * K, K]]), undefined],
    [
      'ranges overlap: EINVAL',
      control(K, [
        [0n, 4n * K],
        [2n * K, 4n * K],
      ]),
      Errno.EINVAL,
    ],
    ['an empty range: EINVAL', control(K, [[0n, 0n]]), Errno.EINVAL],
    ['num_ranges past the data: EINVAL', control(K, [[0n, K]], 2), Errno.EINVAL],
  ];
  for (const [name, data, errno] of start)
    test(`START ${name}`, () => {
      const dev = ivshmem();
      assert.equal(
        errnoOf(() => dev.ioctl(VFIO_DEVICE_FEATURE, featureArg(SET | START, data))),
        errno,
      );
      assert.equal(dev.migration!.logging !== undefined, errno === undefined);
    });

  test('START: the page size chosen goes back in page_size; a second START is EINVAL', () => {
    const dev = ivshmem();
    assert.equal(loggingStart(dev, 0x3000n, []), 0x2000n, 'a hint that is no power of two: the one below');
    assert.equal(
      errnoOf(() => loggingStart(dev, K, [])),
      Errno.EINVAL,
    );
    loggingStop(dev);
    assert.equal(loggingStart(dev, 1n << 40n, []), 1n << 30n, 'capped at 1 GiB');
    loggingStop(dev);
    assert.equal(loggingStart(dev, 0n, []), K, 'no hint: 4 KiB');
  });

  test('framing: START and STOP take SET only, REPORT GET only; PROBE answers 0', () => {
    const dev = ivshmem();
    const arg = (flags: number, data: Uint8Array = new Uint8Array(0)) => featureArg(flags, data);
    const call = (flags: number, data?: Uint8Array) =>
      errnoOf(() => dev.ioctl(VFIO_DEVICE_FEATURE, arg(flags, data)));
    assert.equal(call(GET | START, control(K, [])), Errno.EINVAL);
    assert.equal(call(GET | STOP), Errno.EINVAL);
    assert.equal(call(SET | REPORT, reportData(0n, K, K, 8)), Errno.EINVAL);
    for (const f of [PROBE | SET | START, PROBE | SET | STOP, PROBE | GET | REPORT])
      assert.equal(call(f), undefined);
    assert.equal(call(SET | START, new Uint8Array(8)), Errno.EINVAL, 'argsz under the control struct');
    assert.equal(
      errnoOf(() => loggingStop(dev)),
      undefined,
      'STOP without START: nothing to stop',
    );
  });

  const rep: [string, Uint8Array, number][] = [
    ['page_size 2 KiB: EINVAL', reportData(0n, 8n * K, 2048n, 8), Errno.EINVAL],
    ['page_size 12 KiB: EINVAL', reportData(0n, 8n * K, 3n * K, 8), Errno.EINVAL],
    ['iova + length past 2^64: EOVERFLOW', reportData(1n << 63n, (1n << 63n) + K, K, 8), Errno.EOVERFLOW],
    [
      'iova + length exactly 2^64 (a u64 overflow): EOVERFLOW',
      reportData(1n << 63n, 1n << 63n, 1n << 62n, 8),
      Errno.EOVERFLOW,
    ],
    ['a bitmap beyond the room argsz leaves: EINVAL', reportData(0n, 128n * K, K, 8), Errno.EINVAL],
    [
      `a bitmap over ${MAX_REPORT_BITMAP} bytes: E2BIG`,
      reportData(0n, BigInt(MAX_REPORT_BITMAP) * 8n * K + K, K, 8),
      Errno.E2BIG,
    ],
  ];
  for (const [name, data, errno] of rep)
    test(`REPORT ${name}`, () => {
      const dev = ivshmem();
      loggingStart(dev, K, []);
      assert.equal(
        errnoOf(() => dev.ioctl(VFIO_DEVICE_FEATURE, featureArg(GET | REPORT, data))),
        errno,
      );
    });

  test('REPORT before START: EINVAL ("If DMA logging is not enabled, an error will be returned")', () => {
    const dev = ivshmem();
    assert.equal(
      errnoOf(() => loggingReport(dev, 0n, 16n * K, K)),
      Errno.EINVAL,
    );
  });

  test('6.1 has no DMA logging: ENOTTY; a reset stops logging', () => {
    const old = ivshmem({ profile: '6.1' });
    assert.equal(
      errnoOf(() => loggingStart(old, K, [])),
      Errno.ENOTTY,
    );
    const dev = ivshmem();
    loggingStart(dev, K, []);
    dev.reset();
    assert.equal(
      errnoOf(() => loggingReport(dev, 0n, K, K)),
      Errno.EINVAL,
    );
  });
});

describe('every page the device writes is logged, and nothing else', () => {
  test('edu DMA into mapped memory and by message: the pages written, not the ones read', async () => {
    const dev = eduDevice().instantiate({ env: heapEnvironment() }).device;
    const ram = new Uint8Array(16 * 4096).fill(7);
    const sent: bigint[] = [];
    dev.dma.map(0x100000n, BigInt(ram.length), { bytes: ram, readable: true, writable: true });
    dev.dma.map(0x200000n, 0x4000n, {
      readable: true,
      writable: true,
      remote: {
        read: async (_iova, n) => new Uint8Array(n),
        write: async (iova) => {
          sent.push(iova);
        },
      },
    });
    loggingStart(dev, K, []);
    const bar = dev.regionOffset(0);
    const w = (off: number, v: bigint, size = 8) => {
      const b = new Uint8Array(size);
      new DataView(b.buffer).setBigUint64(0, v, true);
      dev.pwrite(bar + BigInt(off), b.subarray(0, size));
    };
    const dma = async (src: bigint, dst: bigint, count: number, cmd: bigint) => {
      w(0x80, src);
      w(0x88, dst);
      w(0x90, BigInt(count));
      w(0x98, cmd);
      await dev.settled();
    };
    await dma(0x100000n + 0x3000n, 0x40000n, 4096, 1n); // RAM -> device: a read, not logged
    await dma(0x40000n, 0x100000n + 0x5800n, 0x1000, 3n); // device -> RAM: pages 5 and 6
    await dma(0x40000n, 0x200000n + 0x1000n, 16, 3n); // device -> RAM by message
    assert.deepEqual(sent, [0x201000n]);
    assert.deepEqual(loggingReport(dev, 0x100000n, 0x200000n, K), [5, 6, 0x101]);
    assert.deepEqual(loggingReport(dev, 0x100000n, 0x200000n, K), []);
  });
});
