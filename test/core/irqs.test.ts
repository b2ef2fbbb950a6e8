/**
 * Interrupts through the raw uAPI (SET_IRQS), as drivers/vfio/pci/vfio_pci_intrs.c answers: the
 * INTx unmask eventfd (a virqfd, what QEMU/KVM use as the resample fd) and MSI/MSI-X blocks that
 * fail part way, on both kernel profiles.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import * as A from '../../src/abi/vfio.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { heapEnvironment } from '../../src/core/env.js';
import { e1000eModel } from '../../src/devices/e1000e.js';
import { eduDevice } from '../../src/devices/edu.js';
import {
  activeWatchCount,
  closeFd,
  eventfdCreate,
  eventfdRead,
  eventfdSignal,
  openFdCount,
} from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { encodeFds, encodeVfioIrqSet } from '../../src/wire/vfio.js';
import { errnoOf } from '../helpers/errno.js';

const EVENTFD = A.VFIO_IRQ_SET_DATA_EVENTFD;
const NONE = A.VFIO_IRQ_SET_DATA_NONE;
const TRIGGER = A.VFIO_IRQ_SET_ACTION_TRIGGER;
const UNMASK = A.VFIO_IRQ_SET_ACTION_UNMASK;
const EDU_RAISE = 0x60n;

function setIrqs(dev: VfioPciDevice, flags: number, index: number, start: number, fds: number[]): number {
  const data = flags & EVENTFD ? encodeFds(fds) : new Uint8Array();
  const count = flags & EVENTFD ? fds.length : start === -1 ? 0 : 1;
  return dev.ioctl(
    A.VFIO_DEVICE_SET_IRQS,
    encodeVfioIrqSet({ flags, index, start: Math.max(start, 0), count, data }),
  );
}

describe('INTx unmask eventfd (vfio_pci_set_intx_unmask → vfio_virqfd_enable)', () => {
  function eduIntx() {
    const env = heapEnvironment();
    const dev = eduDevice().instantiate({ env, profile: '7.3' }).device;
    const trigger = env.createEventfd();
    const unmask = env.createEventfd();
    setIrqs(dev, EVENTFD | TRIGGER, 0, 0, [trigger.fd]);
    return { env, dev, trigger, unmask };
  }
  const raise = (dev: VfioPciDevice) => dev.pwrite(EDU_RAISE, new Uint8Array([1, 0, 0, 0]));
  /** edu's interrupt acknowledge (0x64): clears the status bit, which lowers the INTx line. */
  const ack = (dev: VfioPciDevice) => dev.pwrite(EDU_RAISE + 4n, new Uint8Array([1, 0, 0, 0]));

  test('each signal unmasks; a level interrupt still asserted fires again', () => {
    const { env, dev, trigger, unmask } = eduIntx();
    setIrqs(dev, EVENTFD | UNMASK, 0, 0, [unmask.fd]);
    assert.equal(dev.irqs.intxUnmaskArmed, true);
    raise(dev);
    assert.deepEqual([trigger.count, dev.irqs.intxMasked], [1n, true], 'delivered, automasked');
    raise(dev); // still asserted while masked
    assert.equal(trigger.count, 1n);
    unmask.signal();
    assert.equal(unmask.count, 0n, 'the virqfd consumes the counter (eventfd_ctx_do_read)');
    assert.deepEqual([trigger.count, dev.irqs.intxMasked], [2n, true], 'pending INTx re-sent, masked again');
    unmask.signal();
    assert.deepEqual(
      [trigger.count, dev.irqs.intxMasked],
      [3n, true],
      'a level still asserted: re-sent again',
    );
    ack(dev);
    unmask.signal();
    assert.deepEqual([trigger.count, dev.irqs.intxMasked], [3n, false], 'line lowered: unmasked, quiet');
    raise(dev);
    assert.equal(trigger.count, 4n);
    // fd -1 disarms: a signal no longer unmasks.
    setIrqs(dev, EVENTFD | UNMASK, 0, 0, [-1]);
    assert.equal(env.watchCount(), 0);
    unmask.signal();
    assert.deepEqual([unmask.count, dev.irqs.intxMasked], [1n, true]);
  });

  test('a count pending when armed unmasks at once (vfio_virqfd_enable vfs_poll check)', () => {
    const { dev, trigger, unmask } = eduIntx();
    raise(dev);
    ack(dev); // lowered while masked: the unmask finds nothing to re-send
    unmask.count = 1n;
    setIrqs(dev, EVENTFD | UNMASK, 0, 0, [unmask.fd]);
    assert.deepEqual([trigger.count, dev.irqs.intxMasked, unmask.count], [1n, false, 0n]);
  });

  test('torn down by INTx DISABLE and by close', () => {
    const { env, dev, unmask } = eduIntx();
    setIrqs(dev, EVENTFD | UNMASK, 0, 0, [unmask.fd]);
    setIrqs(dev, NONE | TRIGGER, 0, -1, []); // count 0: vfio_intx_disable
    assert.deepEqual([env.watchCount(), dev.irqs.type], [0, 'none']);
    const t2 = env.createEventfd();
    setIrqs(dev, EVENTFD | TRIGGER, 0, 0, [t2.fd]);
    setIrqs(dev, EVENTFD | UNMASK, 0, 0, [unmask.fd]);
    dev.close();
    assert.equal(env.watchCount(), 0);
  });

  const U = EVENTFD | UNMASK;
  const cases: [
    string,
    (env: ReturnType<typeof heapEnvironment>, unmaskFd: number) => number[],
    number | undefined,
  ][] = [
    ['fd 7 is not open: EBADF (fdget)', () => [7], Errno.EBADF],
    ['fd -1 with nothing armed: 0', () => [-1], undefined],
    ['fd -2: vfio_virqfd_disable, 0', () => [-2], undefined],
    ['armed twice: EBUSY (vfio_virqfd_enable: *pvirqfd set)', (_e, fd) => [fd, fd], Errno.EBUSY],
    ['armed, then a bad fd: EBADF before EBUSY', (_e, fd) => [fd, 7], Errno.EBADF],
    ['armed, disarmed, armed again: 0', (_e, fd) => [fd, -1, fd], undefined],
  ];
  for (const [name, seq, errno] of cases)
    test(`UNMASK eventfd ${name}`, () => {
      const { env, dev, unmask } = eduIntx();
      const fds = seq(env, unmask.fd);
      let got: number | undefined;
      for (const fd of fds) got = errnoOf(() => setIrqs(dev, U, 0, 0, [fd]));
      assert.equal(got, errno);
      dev.close();
      assert.equal(env.watchCount(), 0);
    });

  test('UNMASK eventfd while INTx is not enabled: EINVAL', () => {
    const env = heapEnvironment();
    const dev = eduDevice().instantiate({ env, profile: '6.1' }).device;
    const e = env.createEventfd();
    assert.equal(
      errnoOf(() => setIrqs(dev, U, 0, 0, [e.fd])),
      Errno.EINVAL,
    );
  });

  test('native eventfds: the resample fd unmasks from the event loop; no fd or watch leaks', async () => {
    const fdsBefore = openFdCount();
    const watchesBefore = activeWatchCount();
    const dev = eduDevice().instantiate({
      env: nativeEnvironment(),
      profile: '7.3',
    }).device;
    const trigger = eventfdCreate();
    const unmask = eventfdCreate();
    const tick = () => new Promise((r) => setImmediate(r));
    async function until(cond: () => boolean): Promise<void> {
      for (let i = 0; i < 200 && !cond(); i++) await tick();
    }
    try {
      setIrqs(dev, EVENTFD | TRIGGER, 0, 0, [trigger]);
      setIrqs(dev, EVENTFD | UNMASK, 0, 0, [unmask]);
      assert.equal(activeWatchCount(), watchesBefore + 1);
      raise(dev);
      raise(dev);
      assert.equal(eventfdRead(trigger), 1n);
      eventfdSignal(unmask);
      await until(() => dev.irqs.delivered[0] === 2);
      assert.equal(eventfdRead(trigger), 1n, 'the pending INTx fired again');
      assert.equal(eventfdRead(unmask), null, 'the virqfd read the counter');
      ack(dev); // edu's line goes low, so the next unmask leaves INTx unmasked
      eventfdSignal(unmask);
      await until(() => !dev.irqs.intxMasked);
      assert.equal(dev.irqs.intxMasked, false);
    } finally {
      dev.close();
      closeFd(trigger);
      closeFd(unmask);
    }
    assert.equal(activeWatchCount(), watchesBefore);
    assert.equal(openFdCount(), fdsBefore);
  });
});

describe('MSI-X blocks that fail part way (vfio_msi_set_block)', () => {
  function e1000e(profile: '6.1' | '7.3') {
    const env = heapEnvironment();
    const dev = e1000eModel().instantiate({ env, profile }).device;
    const efds = Array.from({ length: 5 }, () => env.createEventfd());
    return { env, dev, efds };
  }
  // [name, profile, the enabling SET (start, fds), the second SET (start, fds), errno, live vectors after]
  // `E` marks a good eventfd (the vector's own), 7 a closed fd.
  const E = -100;
  const cases: [
    string,
    '6.1' | '7.3',
    [number, number[]],
    [number, number[]],
    number | undefined,
    number[],
  ][] = [
    ['enable 0..3, bad fd at 2: MSI-X disabled again', '7.3', [0, [E, E, 7, E]], [0, []], Errno.EBADF, []],
    [
      'enabled 0..3; set 0..3 with a bad fd at 2: 0..2 cleared, 3 kept',
      '7.3',
      [0, [E, E, E, E]],
      [0, [E, E, 7, E]],
      Errno.EBADF,
      [3],
    ],
    ['6.1: same', '6.1', [0, [E, E, E, E]], [0, [E, E, 7, E]], Errno.EBADF, [3]],
    [
      'set 1..2 with a bad fd at 2: 1..2 cleared, 0 and 3 kept',
      '7.3',
      [0, [E, E, E, E]],
      [1, [E, 7]],
      Errno.EBADF,
      [0, 3],
    ],
    [
      '6.1: fd -1 beyond the 2 enabled: EINVAL, nothing changed',
      '6.1',
      [0, [E, E]],
      [1, [-1, -1]],
      Errno.EINVAL,
      [0, 1],
    ],
    [
      '7.3: fd -1 beyond the 2 enabled: 0, vector 1 cleared, no allocation',
      '7.3',
      [0, [E, E]],
      [1, [-1, -1]],
      undefined,
      [0],
    ],
    [
      '6.1: an fd beyond the 2 enabled: EINVAL before any vector',
      '6.1',
      [0, [E, E]],
      [1, [E, E]],
      Errno.EINVAL,
      [0, 1],
    ],
    [
      '7.3: an fd beyond the 2 enabled: allocated (dynamic MSI-X)',
      '7.3',
      [0, [E, E]],
      [1, [E, E, E]],
      undefined,
      [0, 1, 2, 3],
    ],
    ['7.3: beyond, bad fd at 3: 1..3 cleared, 0 kept', '7.3', [0, [E, E]], [1, [E, E, 7]], Errno.EBADF, [0]],
  ];
  for (const [name, profile, first, second, errno, after] of cases)
    test(`${name}: ${errno ?? 0}, live ${JSON.stringify(after)}`, () => {
      const { dev, efds } = e1000e(profile);
      const fdsFor = (start: number, fds: number[]) =>
        fds.map((fd, i) => (fd === E ? efds[start + i]!.fd : fd));
      const set = ([start, fds]: [number, number[]]) =>
        setIrqs(dev, EVENTFD | TRIGGER, 2, start, fdsFor(start, fds));
      const r1 = errnoOf(() => set(first));
      let got = r1;
      if (r1 === undefined && second[1].length) got = errnoOf(() => set(second));
      assert.equal(got, errno);
      // The device raises every vector (a vector without a trigger delivers nothing).
      for (let v = 0; v < 5; v++) dev.irqs.raise(v);
      assert.deepEqual(
        efds.flatMap((e, i) => (e.count > 0n ? [i] : [])),
        after,
      );
      assert.equal(dev.irqs.vectorCount, after.length);
    });
});
