/**
 * Fuzz harness (a): the device core through its raw uAPI. Random and mutated
 * `ioctl(request, bytes)` calls (valid requests mutated in argsz, index, flags, counts, cap
 * offsets, data, length), and random pread/pwrite/mmap offsets, against edu and ivshmem.
 *
 * Checks after every call: only VfioError or MalformedError escape, and a VfioError's errno is a
 * positive number from src/abi/errno.ts. Every `SANITY_EVERY` calls and at the end: the device
 * still answers GET_INFO and (edu) reads its ID register 0x010000ed / (ivshmem) a BAR2 write reads
 * back. At the end the device is closed and no fd (native) or handed-out fd (heap) remains.
 */
import { Errno, errnoName } from '../../src/abi/errno.js';
import * as A from '../../src/abi/vfio.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import type { CoreEnvironment } from '../../src/core/env.js';
import { heapEnvironment } from '../../src/core/env.js';
import { EDU_ID } from '../../src/devices/edu.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import { closeFd, eventfdCreate, openFdCount } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import {
  encodeDmaBuf,
  encodeFds,
  encodeVfioDeviceFeature,
  encodeVfioIrqSet,
  putU32,
  putU64,
  u32,
} from '../../src/wire/vfio.js';
import { count, crash, type FuzzStats, mutate, newStats, Rng, toHex } from './prng.js';

export interface CoreFuzzOptions {
  readonly seed: number;
  readonly iterations: number;
  readonly device: DeviceName;
  readonly env: 'heap' | 'native';
  readonly profile?: '6.1' | '7.3';
}

/** How often the device is asked a good question in the middle of a run. */
export const SANITY_EVERY = 64;
/** Longest pread/pwrite/mmap the harness asks for (the caller's buffer; not a device limit). */
const MAX_ACCESS = 256 << 10;

const KNOWN_ERRNOS = new Set<number>(Object.values(Errno));

const DEVICE_IOCTLS = [
  A.VFIO_DEVICE_GET_INFO,
  A.VFIO_DEVICE_GET_REGION_INFO,
  A.VFIO_DEVICE_GET_IRQ_INFO,
  A.VFIO_DEVICE_SET_IRQS,
  A.VFIO_DEVICE_RESET,
  A.VFIO_DEVICE_FEATURE,
  A.VFIO_DEVICE_SET_REGION_FLAGS,
  A.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  A.VFIO_DEVICE_PCI_HOT_RESET,
  A.VFIO_DEVICE_IOEVENTFD,
  A.VFIO_GET_API_VERSION,
];

interface Seed {
  readonly request: number;
  readonly bytes: Uint8Array;
}

function struct(size: number, ...fields: [number, number][]): Uint8Array {
  const b = new Uint8Array(size);
  for (const [off, v] of fields) putU32(b, off, v);
  return b;
}

/** Valid requests of every kind the core answers; `fds` are live eventfd numbers. */
function seeds(fds: readonly number[]): Seed[] {
  const out: Seed[] = [];
  const fd = (i: number) => fds[i % fds.length]!;
  out.push({ request: A.VFIO_DEVICE_GET_INFO, bytes: struct(20, [0, 20]) });
  out.push({ request: A.VFIO_DEVICE_GET_INFO, bytes: struct(16, [0, 16]) });
  for (let i = 0; i < 16; i++) {
    out.push({ request: A.VFIO_DEVICE_GET_REGION_INFO, bytes: struct(32, [0, 32], [8, i]) });
    out.push({ request: A.VFIO_DEVICE_GET_REGION_INFO, bytes: struct(32 + 256, [0, 32 + 256], [8, i]) });
  }
  for (let i = 0; i < 6; i++)
    out.push({ request: A.VFIO_DEVICE_GET_IRQ_INFO, bytes: struct(16, [0, 16], [8, i]) });
  const T = A.VFIO_IRQ_SET_ACTION_TRIGGER;
  for (const index of [A.VFIO_PCI_INTX_IRQ_INDEX, A.VFIO_PCI_MSI_IRQ_INDEX, A.VFIO_PCI_ERR_IRQ_INDEX]) {
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_EVENTFD | T,
        index,
        start: 0,
        count: 1,
        data: encodeFds([fd(index)]),
      }),
    });
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_EVENTFD | T,
        index,
        start: 0,
        count: 1,
        data: encodeFds([-1]),
      }),
    });
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_NONE | T,
        index,
        start: 0,
        count: 0,
        data: new Uint8Array(0),
      }),
    });
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_NONE | T,
        index,
        start: 0,
        count: 1,
        data: new Uint8Array(0),
      }),
    });
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_BOOL | T,
        index,
        start: 0,
        count: 1,
        data: new Uint8Array([1]),
      }),
    });
  }
  for (const action of [A.VFIO_IRQ_SET_ACTION_MASK, A.VFIO_IRQ_SET_ACTION_UNMASK])
    out.push({
      request: A.VFIO_DEVICE_SET_IRQS,
      bytes: encodeVfioIrqSet({
        flags: A.VFIO_IRQ_SET_DATA_NONE | action,
        index: 0,
        start: 0,
        count: 1,
        data: new Uint8Array(0),
      }),
    });
  out.push({
    request: A.VFIO_DEVICE_SET_IRQS,
    bytes: encodeVfioIrqSet({
      flags: A.VFIO_IRQ_SET_DATA_EVENTFD | A.VFIO_IRQ_SET_ACTION_UNMASK,
      index: 0,
      start: 0,
      count: 1,
      data: encodeFds([fd(1)]),
    }),
  });
  out.push({ request: A.VFIO_DEVICE_RESET, bytes: new Uint8Array(0) });
  const F = A.VFIO_DEVICE_FEATURE_GET;
  const S = A.VFIO_DEVICE_FEATURE_SET;
  const P = A.VFIO_DEVICE_FEATURE_PROBE;
  for (const bar of [0, 2])
    for (const attr of [A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_UC, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC])
      out.push({
        request: A.VFIO_DEVICE_FEATURE,
        bytes: encodeVfioDeviceFeature(
          F | A.VFIO_DEVICE_FEATURE_DMA_BUF,
          encodeDmaBuf({
            regionIndex: bar,
            openFlags: 0,
            flags: attr,
            ranges: [
              { offset: 0n, length: 0x1000n },
              { offset: 0x2000n, length: 0x1000n },
            ],
          }),
        ),
      });
  out.push({
    request: A.VFIO_DEVICE_FEATURE,
    bytes: encodeVfioDeviceFeature(P | F | A.VFIO_DEVICE_FEATURE_DMA_BUF),
  });
  for (const bar of [0, 2]) {
    const cookie = new Uint8Array(24);
    putU32(cookie, 0, bar);
    putU32(cookie, 4, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    out.push({
      request: A.VFIO_DEVICE_FEATURE,
      bytes: encodeVfioDeviceFeature(F | A.VFIO_TS_FEATURE_MMAP_COOKIE, cookie),
    });
    const release = new Uint8Array(24);
    putU32(release, 4, A.VFIO_TS_MMAP_COOKIE_FLAG_RELEASE);
    putU64(release, 8, 15n << 40n);
    out.push({
      request: A.VFIO_DEVICE_FEATURE,
      bytes: encodeVfioDeviceFeature(S | A.VFIO_TS_FEATURE_MMAP_COOKIE, release),
    });
    const alias = new Uint8Array(16);
    putU32(alias, 0, bar);
    putU32(alias, 4, A.VFIO_DEVICE_FEATURE_DMA_BUF_ATTR_WC);
    out.push({
      request: A.VFIO_DEVICE_FEATURE,
      bytes: encodeVfioDeviceFeature(F | A.VFIO_TS_FEATURE_ALIAS_REGION, alias),
    });
    out.push({
      request: A.VFIO_DEVICE_SET_REGION_FLAGS,
      bytes: struct(8, [0, bar], [4, A.VFIO_REGION_FLAG_WRITE_COMBINE]),
    });
  }
  out.push({
    request: A.VFIO_DEVICE_FEATURE,
    bytes: encodeVfioDeviceFeature(S | A.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY),
  });
  out.push({
    request: A.VFIO_DEVICE_FEATURE,
    bytes: encodeVfioDeviceFeature(S | A.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT),
  });
  const wake = new Uint8Array(8);
  new DataView(wake.buffer).setInt32(0, fd(2), true);
  out.push({
    request: A.VFIO_DEVICE_FEATURE,
    bytes: encodeVfioDeviceFeature(S | A.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, wake),
  });
  return out;
}

/** Why an escaped value is not acceptable, or undefined when it is. */
export function badEscape(e: unknown): string | undefined {
  if (e instanceof MalformedError)
    return KNOWN_ERRNOS.has(e.errno) ? undefined : `MalformedError errno ${e.errno}`;
  if (!(e instanceof VfioError)) return `${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
  if (!Number.isInteger(e.errno) || e.errno <= 0 || !KNOWN_ERRNOS.has(e.errno))
    return `VfioError with errno ${e.errno} (${e.message})`;
  return undefined;
}

/** The good questions: undefined when the device answers them right. */
function sanity(dev: VfioPciDevice, device: DeviceName): string | undefined {
  try {
    // A driver turns memory decode on before it touches a BAR (the fuzz may have cleared it:
    // BAR accesses are EIO then, as in vfio-pci).
    const cmdAt = dev.regionOffset(A.VFIO_PCI_CONFIG_REGION_INDEX) + 4n;
    const cmd = dev.pread(cmdAt, 2);
    dev.pwrite(cmdAt, new Uint8Array([cmd[0]! | 0x02, cmd[1]!]));
    const info = struct(20, [0, 20]);
    if (dev.ioctl(A.VFIO_DEVICE_GET_INFO, info) !== 0) return 'GET_INFO did not return 0';
    if (u32(info, 8) < A.VFIO_PCI_NUM_REGIONS || u32(info, 12) !== A.VFIO_PCI_NUM_IRQS)
      return `GET_INFO says ${u32(info, 8)} regions, ${u32(info, 12)} irqs`;
    if (device === 'edu') {
      const id = u32(dev.pread(dev.regionOffset(0), 4), 0);
      if (id !== EDU_ID) return `edu ID register reads 0x${id.toString(16)}`;
    } else {
      const at = dev.regionOffset(2) + 0x1000n;
      dev.pwrite(at, new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
      if (u32(dev.pread(at, 4), 0) !== 0xefbeadde) return 'ivshmem BAR2 does not read back';
    }
    const cfg = dev.pread(dev.regionOffset(A.VFIO_PCI_CONFIG_REGION_INDEX), 4);
    const want = device === 'edu' ? 0x11e81234 : 0x11101af4;
    if (u32(cfg, 0) !== want) return `config space ID reads 0x${u32(cfg, 0).toString(16)}`;
  } catch (e) {
    return `good request failed: ${e instanceof Error ? e.message : String(e)}`;
  }
  return undefined;
}

function randomOffset(rng: Rng, dev: VfioPciDevice): bigint {
  const region = rng.chance(0.8) ? rng.int(Math.max(dev.numRegions, 1) + 2) : rng.int(64);
  let base: bigint;
  try {
    base = dev.regionOffset(region);
  } catch {
    base = BigInt(region) << 40n;
  }
  const within = rng.chance(0.5)
    ? BigInt(
        rng.pick([
          0, 1, 2, 3, 4, 0x10, 0x80, 0x98, 0xff, 0x100, 0xfff, 0x1000, 0x40000, 0x40ffc, 0xffffc, 0x100000,
          0x3ffffc, 0x400000,
        ]),
      )
    : rng.interesting64() & ((1n << 44n) - 1n);
  return rng.chance(0.05) ? rng.interesting64() : base + within;
}

function randomLength(rng: Rng): number {
  return rng.chance(0.97) ? rng.pick([0, 1, 2, 3, 4, 5, 7, 8, 16, 64, 4096, 8192]) : rng.int(MAX_ACCESS + 1);
}

/**
 * Runs `iterations` calls against a fresh device and returns what happened. Never throws for
 * what the device does; a failing input is in `stats.crashes` as request + hex.
 */
export function fuzzCore(o: CoreFuzzOptions): FuzzStats {
  const stats = newStats(`core/${o.device}/${o.env}`, o.seed);
  const rng = new Rng(o.seed);
  const fdsBefore = o.env === 'native' ? openFdCount() : 0;
  const heap = o.env === 'heap' ? heapEnvironment() : undefined;
  const env: CoreEnvironment = heap ?? nativeEnvironment();
  const eventfds: number[] = [];
  for (let i = 0; i < 3; i++) eventfds.push(heap ? heap.createEventfd().fd : eventfdCreate(0));
  const dev = createDevice(o.device, { env, profile: o.profile ?? '7.3' });
  // Client memory the device may DMA to (edu's DMA registers are in the fuzzed pwrites).
  dev.dma.map(0x100000n, 0x10000n, { bytes: new Uint8Array(0x10000), readable: true, writable: true });
  const pool = seeds(eventfds);
  const note = (what: string, e: unknown) => {
    const why = badEscape(e);
    if (why) crash(stats, `seed ${o.seed} iteration ${stats.tried}: ${what}: ${why}`);
    else
      count(
        stats,
        e instanceof VfioError ? errnoName(e.errno) : `malformed:${errnoName((e as MalformedError).errno)}`,
      );
  };
  try {
    for (let i = 0; i < o.iterations; i++) {
      stats.tried++;
      const kind = rng.int(10);
      if (kind < 7) {
        const s = rng.pick(pool);
        const request = rng.chance(0.05) ? rng.pick(DEVICE_IOCTLS) : rng.chance(0.02) ? rng.u32() : s.request;
        const bytes = rng.chance(0.1) ? s.bytes.slice() : mutate(rng, s.bytes, 4);
        const input = toHex(bytes);
        try {
          const ret = dev.ioctl(request, bytes);
          count(stats, 'ok');
          // A DMA_BUF fd belongs to the caller: close it like a process would.
          if (ret > 0) dev.closeDmaBuf(ret);
        } catch (e) {
          note(`ioctl 0x${request.toString(16)} ${input}`, e);
        }
      } else if (kind < 8) {
        const at = randomOffset(rng, dev);
        const len = randomLength(rng);
        try {
          dev.pread(at, len);
          count(stats, 'ok');
        } catch (e) {
          note(`pread 0x${at.toString(16)} ${len}`, e);
        }
      } else if (kind < 9) {
        const at = randomOffset(rng, dev);
        const data = rng.bytes(Math.min(randomLength(rng), 4096));
        try {
          dev.pwrite(at, data);
          count(stats, 'ok');
        } catch (e) {
          note(`pwrite 0x${at.toString(16)} ${toHex(data.subarray(0, 16))}`, e);
        }
      } else {
        const at = rng.chance(0.7) ? randomOffset(rng, dev) & ~0xfffn : randomOffset(rng, dev);
        const len = rng.chance(0.8) ? rng.pick([4096, 8192, 0x100000, 0x400000, 1, 0]) : rng.int(8 << 20);
        try {
          const m = dev.mmap(at, len, rng.chance(0.95));
          count(stats, 'ok');
          if (m.bytes.length < Math.min(len, 1))
            crash(stats, `mmap 0x${at.toString(16)} ${len}: ${m.bytes.length} bytes`);
          m.unmap();
        } catch (e) {
          note(`mmap 0x${at.toString(16)} ${len}`, e);
        }
      }
      if ((i + 1) % SANITY_EVERY === 0 || i + 1 === o.iterations) {
        const bad = sanity(dev, o.device);
        if (bad) crash(stats, `seed ${o.seed} after iteration ${i}: ${bad}`);
      }
    }
  } finally {
    dev.close();
    for (const fd of eventfds) if (!heap) closeFd(fd);
  }
  if (heap && heap.openFds() !== 0)
    stats.leaks.push(`${heap.openFds()} heap fds still handed out after close`);
  if (o.env === 'native') {
    const after = openFdCount();
    if (after !== fdsBefore) stats.leaks.push(`fd count ${fdsBefore} before, ${after} after close`);
  }
  return stats;
}
