/**
 * The migration driver's arcs on a live device (src/core/migration/engine.ts): every pair of
 * states through the device fd with each flag combination (the state reached, the data_fd
 * opened, EINVAL where vfio_mig_get_next_state says so); the arc into STOP waiting for DMA in
 * flight, DMA and interrupts held while stopped and let go on RUNNING; a reset in the middle;
 * a device that does not quiesce (ETIMEDOUT); the ERROR state when a restore cannot be undone;
 * MIG_DEVICE_STATE SET through the synchronous ioctl (EAGAIN).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import {
  VFIO_MIGRATION_P2P as P2P,
  VFIO_MIGRATION_PRE_COPY as PRE,
  VfioMigState as S,
  VFIO_MIGRATION_STOP_COPY as SC,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_SET,
} from '../../../src/abi/vfio.js';
import type { ModelMigration } from '../../../src/core/behaviour.js';
import { defineDevice } from '../../../src/core/define.js';
import type { VfioPciDevice } from '../../../src/core/device.js';
import { heapEnvironment } from '../../../src/core/env.js';
import { isSaving, type MigState, migStateName, path, supports } from '../../../src/core/migration/fsm.js';
import { ivshmemDevice } from '../../../src/devices/ivshmem.js';
import { VfioError } from '../../../src/errors.js';
import { errnoOf } from '../../helpers/errno.js';
import { drain, errnoOfAsync, featureArg, getState, join, setState } from './rig.js';

const STATES = Object.values(S) as MigState[];

/** A device whose register 0 starts a DMA of 8 bytes to host address 0x1000, then raises MSI 0. */
const dmaDevice = (load?: (v: unknown) => void) =>
  defineDevice({
    name: 'dma-probe',
    identity: { vendorId: 0x1b36, deviceId: 0x00fe, classCode: 0xff0000 },
    bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
    msi: { vectors: 1 },
    state: () => ({ started: 0, done: 0 }),
    create: (dev) => ({
      bars: {
        0: {
          read: () => BigInt(dev.state.done),
          write: () => {
            dev.state.started++;
            void dev.work(
              (async () => {
                await dev.dma.write(0x1000n, new Uint8Array(8).fill(dev.state.started));
                dev.state.done++;
                dev.irq.raise(0);
              })(),
            );
          },
        },
      },
      ...(load ? { migration: { save: () => ({ x: 1 }), load } } : {}),
    }),
  });

/** A device with nothing but the model's migration hooks (and its reset). */
const modelDevice = (migration: ModelMigration, reset?: () => void) =>
  defineDevice({
    name: 'model-hooks',
    identity: { vendorId: 0x1b36, deviceId: 0x00fe, classCode: 0xff0000 },
    bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
    state: () => ({}),
    create: () => ({
      bars: { 0: { read: () => 0n, write: () => {} } },
      migration,
      ...(reset ? { reset } : {}),
    }),
  });

function ivshmem(flags: number) {
  return ivshmemDevice(64 << 10).instantiate({ env: heapEnvironment(), migration: { flags } }).device;
}

/** A whole stream of a device with `flags`. */
async function streamOf(flags: number): Promise<Uint8Array> {
  const src = ivshmem(flags);
  const fd = await setState(src, S.STOP_COPY);
  const out = join(drain(src, fd));
  src.close();
  return out;
}

/** Brings a fresh device to `state`; RESUMING with a whole stream written, so it may go on. */
async function reach(dev: VfioPciDevice, state: MigState, stream: Uint8Array): Promise<void> {
  const fd = await setState(dev, state);
  if (state === S.RESUMING) dev.migrationData(fd).write(stream);
}

describe('every arc through the device fd', () => {
  for (const flags of [SC, SC | P2P, SC | PRE, SC | P2P | PRE])
    test(`flags 0x${flags.toString(16)}: each state to each other`, async () => {
      const stream = await streamOf(flags);
      for (const from of STATES.filter((s) => supports(flags, s)))
        for (const to of [...STATES, 8]) {
          const dev = ivshmem(flags);
          await reach(dev, from, stream);
          const what = `${migStateName(from)} -> ${migStateName(to)}`;
          let want: number[] | undefined;
          try {
            want = path(flags, from, to);
          } catch {
            want = undefined;
          }
          let fd = -1;
          const errno = await errnoOfAsync(
            setState(dev, to).then((f) => {
              fd = f;
            }),
          );
          if (want === undefined) {
            assert.equal(errno, Errno.EINVAL, `${what}: EINVAL`);
            assert.equal(getState(dev), from, `${what}: the state stays`);
          } else {
            assert.equal(errno, 0, `${what}: succeeds`);
            assert.equal(getState(dev), to, what);
            // A data_fd comes back exactly when the last arc starts a session.
            const last = want[want.length - 1];
            const prev = want.length > 1 ? want[want.length - 2] : from;
            const opens = last !== undefined && (last === S.RESUMING || (isSaving(last) && !isSaving(prev!)));
            assert.equal(fd >= 0, opens, `${what}: data_fd ${fd}`);
            assert.equal(
              dev.gate.open,
              [S.RUNNING, S.RUNNING_P2P, S.PRE_COPY, S.PRE_COPY_P2P].includes(to as never),
              `${what}: the gate`,
            );
          }
          dev.close();
        }
    });

  test('MIGRATION reports the flags; MIG_DEVICE_STATE SET through the synchronous ioctl is EAGAIN', () => {
    const dev = ivshmem(SC | PRE);
    const arg = featureArg(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, new Uint8Array(8));
    dev.ioctl(VFIO_DEVICE_FEATURE, arg);
    assert.equal(new DataView(arg.buffer).getBigUint64(8, true), BigInt(SC | PRE));
    const set = featureArg(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, new Uint8Array(8));
    assert.equal(
      errnoOf(() => dev.ioctl(VFIO_DEVICE_FEATURE, set)),
      Errno.EAGAIN,
    );
    assert.equal(getState(dev), S.RUNNING);
  });

  test('MIG_DATA_SIZE: the stream STOP_COPY will give; in STOP_COPY, what is left of it', async () => {
    const dev = ivshmem(SC | PRE);
    const size = () => {
      const arg = featureArg(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, new Uint8Array(8));
      dev.ioctl(VFIO_DEVICE_FEATURE, arg);
      return new DataView(arg.buffer).getBigUint64(8, true);
    };
    const estimate = size();
    const fd = await setState(dev, S.STOP_COPY);
    assert.equal(size(), estimate, 'a stopped device: the estimate is the stream');
    const first = dev.migrationData(fd).read(1000);
    assert.equal(size(), estimate - BigInt(first.length), 'what is left of it');
    assert.equal(BigInt(first.length + join(drain(dev, fd)).length), estimate);
    assert.equal(size(), 0n);
  });
});

describe('the arc into STOP', () => {
  test('waits for a DMA in flight; a DMA and an interrupt of a stopped device wait for RUNNING', async () => {
    const def = dmaDevice();
    const dev = def.instantiate({ env: heapEnvironment() }).device;
    const landed: number[] = [];
    let release = () => {};
    dev.dma.map(0x1000n, 0x1000n, {
      readable: true,
      writable: true,
      remote: {
        read: async (_a, n) => new Uint8Array(n),
        write: (_a, data) =>
          new Promise<void>((r) => {
            release = () => {
              landed.push(data[0]!);
              r();
            };
          }),
      },
    });
    dev.writeRegion(0, 0n, new Uint8Array(4)); // DMA #1, pending on the client
    let stopped = false;
    const stopping = setState(dev, S.STOP).then(() => {
      stopped = true;
    });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(stopped, false, 'STOP waits for the DMA in flight');
    release();
    await stopping;
    assert.deepEqual(landed, [1], 'the DMA landed before STOP completed');
    dev.writeRegion(0, 0n, new Uint8Array(4)); // a user touching a stopped device: DMA #2
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(dev.gate.held, { dma: 1, irqs: 0 }, 'held at the gate');
    await setState(dev, S.RUNNING);
    await new Promise((r) => setTimeout(r, 0));
    release();
    await dev.settled();
    assert.deepEqual(landed, [1, 2], 'it goes on once running');
  });

  test('a reset while waiting: EIO, the device RUNNING and its work not held', async () => {
    const dev = dmaDevice().instantiate({ env: heapEnvironment() }).device;
    let release = () => {};
    dev.dma.map(0x1000n, 0x1000n, {
      readable: true,
      writable: true,
      remote: {
        read: async (_a, n) => new Uint8Array(n),
        write: () => new Promise<void>((r) => (release = r)),
      },
    });
    dev.writeRegion(0, 0n, new Uint8Array(4));
    const stopping = setState(dev, S.STOP);
    await new Promise((r) => setTimeout(r, 10));
    dev.reset();
    release();
    assert.equal(await errnoOfAsync(stopping), Errno.EIO);
    assert.equal(getState(dev), S.RUNNING);
    assert.ok(dev.gate.open);
  });

  test("a reset while the model's stop runs: the stop that finishes after it is undone (start), the model runs", async () => {
    // nvme's controller.stop sets its halt once the commands in flight are done, which may be
    // after a reset (the client leaving) cleared it: the device must not stay halted.
    let running = true;
    let finishStop = () => {};
    const dev = modelDevice(
      {
        stop: () =>
          new Promise<void>((r) => {
            finishStop = () => {
              running = false;
              r();
            };
          }),
        start: () => {
          running = true;
        },
      },
      () => {
        running = true;
      },
    ).instantiate({ env: heapEnvironment() }).device;
    const stopping = setState(dev, S.STOP);
    await new Promise((r) => setTimeout(r, 10));
    dev.reset();
    finishStop();
    assert.equal(await errnoOfAsync(stopping), Errno.EIO);
    assert.equal(getState(dev), S.RUNNING);
    assert.ok(dev.gate.open);
    assert.ok(running, 'the model runs, as the state says');
  });

  test("a model's stop that finishes after the timeout is undone: ETIMEDOUT, and the model runs", async () => {
    let running = true;
    const dev = modelDevice({
      stop: () =>
        new Promise<void>((r) =>
          setTimeout(() => {
            running = false;
            r();
          }, 100),
        ),
      start: () => {
        running = true;
      },
    }).instantiate({ env: heapEnvironment(), migration: { quiesceTimeoutMs: 20 } }).device;
    assert.equal(await errnoOfAsync(setState(dev, S.STOP)), Errno.ETIMEDOUT);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(getState(dev), S.RUNNING_P2P);
    assert.ok(running, 'the late stop was undone');
  });

  test('a device that does not quiesce: ETIMEDOUT, still running', async () => {
    const dev = dmaDevice().instantiate({
      env: heapEnvironment(),
      migration: { quiesceTimeoutMs: 50 },
    }).device;
    dev.dma.map(0x1000n, 0x1000n, {
      readable: true,
      writable: true,
      remote: { read: async (_a, n) => new Uint8Array(n), write: () => new Promise<void>(() => {}) },
    });
    dev.writeRegion(0, 0n, new Uint8Array(4));
    assert.equal(await errnoOfAsync(setState(dev, S.STOP)), Errno.ETIMEDOUT);
    // The arc that failed was RUNNING_P2P -> STOP: the state is the last one reached (vfio.h: "the
    // user may see any step along the path in the device_state if SET_STATE fails").
    assert.equal(getState(dev), S.RUNNING_P2P);
    assert.ok(dev.gate.open);
  });
});

describe('ERROR', () => {
  test('a restore the model refuses is undone (EINVAL, RESUMING); one it cannot undo leaves ERROR', async () => {
    let refuse = 0;
    const src = dmaDevice(() => {}).instantiate({ env: heapEnvironment() }).device;
    const fd = await setState(src, S.STOP_COPY);
    const stream = join(drain(src, fd));
    const dst = dmaDevice(() => {
      if (refuse-- > 0) throw new VfioError(Errno.EINVAL, 'load', 'no');
    }).instantiate({ env: heapEnvironment() }).device;
    refuse = 1; // refuses the stream, takes its own state back
    let rfd = await setState(dst, S.RESUMING);
    dst.migrationData(rfd).write(stream);
    assert.equal(await errnoOfAsync(setState(dst, S.STOP)), Errno.EINVAL);
    assert.equal(getState(dst), S.RESUMING);
    dst.reset();
    refuse = 2; // refuses the stream and its own state
    rfd = await setState(dst, S.RESUMING);
    dst.migrationData(rfd).write(stream);
    assert.equal(await errnoOfAsync(setState(dst, S.STOP)), Errno.EIO);
    assert.equal(getState(dst), S.ERROR);
    assert.equal(dst.gate.open, false, 'a device in ERROR does nothing');
    for (const s of [S.STOP, S.RUNNING, S.RESUMING])
      assert.equal(await errnoOfAsync(setState(dst, s)), Errno.EINVAL, `ERROR -> ${migStateName(s)}`);
    assert.equal(await errnoOfAsync(setState(dst, S.ERROR)), 0, 'ERROR -> ERROR takes no arc');
    dst.reset(); // "To recover from ERROR VFIO_DEVICE_RESET must be used"
    assert.equal(getState(dst), S.RUNNING);
    assert.ok(dst.gate.open);
  });
});
