import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  activeWatchCount,
  closeFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  EVENTFD_MAX,
  eventfdCreate,
  eventfdRead,
  eventfdSignal,
  type FdEvents,
  memfdCreate,
  openFdCount,
  pageSize,
  waitReadable,
  watchFd,
} from '../../src/native/index.js';
import { collectGarbage, settle, throwsErrno } from './helpers.js';

pageSize();
const fdsAtStart = openFdCount();

test('eventfd counts signals; read resets; empty read is null', () => {
  const fd = eventfdCreate();
  try {
    assert.equal(eventfdRead(fd), null);
    eventfdSignal(fd);
    eventfdSignal(fd, 41n);
    assert.equal(eventfdRead(fd), 42n);
    assert.equal(eventfdRead(fd), null);
    eventfdSignal(fd, EVENTFD_MAX);
    throwsErrno(() => eventfdSignal(fd, 1n), Errno.EAGAIN, 'write'); // would overflow
    assert.equal(eventfdRead(fd), EVENTFD_MAX);
    throwsErrno(() => eventfdSignal(fd, 0n), Errno.EINVAL);
    throwsErrno(() => eventfdSignal(fd, EVENTFD_MAX + 1n), Errno.EINVAL);
  } finally {
    closeFd(fd);
  }
});

test('EFD_SEMAPHORE hands out one at a time', () => {
  const fd = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
  try {
    eventfdSignal(fd, 2n);
    assert.equal(eventfdRead(fd), 1n);
    assert.equal(eventfdRead(fd), 1n);
    assert.equal(eventfdRead(fd), null);
  } finally {
    closeFd(fd);
  }
});

test('eventfd errors', () => {
  throwsErrno(() => eventfdCreate(0x7fff_0000), Errno.EINVAL, 'eventfd');
  throwsErrno(() => eventfdRead(-1), Errno.EBADF, 'read');
  throwsErrno(() => eventfdSignal(-1), Errno.EBADF, 'write');
});

test('an eventfd signalled from a setTimeout wakes the watcher', async () => {
  const fd = eventfdCreate();
  const seen: FdEvents[] = [];
  let got = 0n;
  try {
    await new Promise<void>((resolve, reject) => {
      const w = watchFd(fd, { readable: true }, (ev) => {
        seen.push(ev);
        const n = eventfdRead(fd);
        if (n === null) return reject(new Error('woken with nothing to read'));
        got += n;
        // The second signal is sent only once the first wakeup has been read, so the test sees
        // two wakeups however late the loop runs (two signals before one poll merge into one).
        if (got === 1n) setTimeout(() => eventfdSignal(fd, 2n), 5);
        if (got === 3n) {
          w.stop();
          w.stop(); // idempotent
          resolve();
        }
      });
      setTimeout(() => eventfdSignal(fd, 1n), 5);
    });
    assert.equal(got, 3n);
    assert.equal(seen.length, 2);
    assert.deepEqual(seen[0], { readable: true, writable: false, disconnect: false, errno: 0 });
  } finally {
    closeFd(fd);
  }
});

test('a stopped watcher no longer fires', async () => {
  const fd = eventfdCreate();
  let calls = 0;
  try {
    const w = watchFd(fd, {}, () => {
      calls++;
    });
    w.stop();
    eventfdSignal(fd);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls, 0);
  } finally {
    closeFd(fd);
  }
});

test('watching for writable fires at once on an eventfd', async () => {
  const fd = eventfdCreate();
  try {
    const ev = await new Promise<FdEvents>((resolve) => {
      const w = watchFd(fd, { writable: true }, (e) => {
        w.stop();
        resolve(e);
      });
    });
    assert.equal(ev.writable, true);
    assert.equal(ev.readable, false);
  } finally {
    closeFd(fd);
  }
});

test('waitReadable resolves true when signalled, false on timeout', async () => {
  const fd = eventfdCreate();
  try {
    assert.equal(await waitReadable(fd, 10), false);
    setTimeout(() => eventfdSignal(fd), 5);
    assert.equal(await waitReadable(fd, 5000), true);
    assert.equal(eventfdRead(fd), 1n);
    eventfdSignal(fd);
    assert.equal(await waitReadable(fd, -1), true, 'already readable, no timeout');
  } finally {
    closeFd(fd);
  }
});

test('watchFd refuses a bad fd, a second watcher, and regular files', () => {
  throwsErrno(() => watchFd(-1, {}, () => {}), Errno.EBADF, 'epoll_ctl');
  throwsErrno(() => watchFd(987654, {}, () => {}), Errno.EBADF, 'epoll_ctl');
  const fd = eventfdCreate();
  const memfd = memfdCreate('poll-regular', 0);
  try {
    const w = watchFd(fd, {}, () => {});
    try {
      throwsErrno(() => watchFd(fd, {}, () => {}), Errno.EBUSY, 'watchFd');
    } finally {
      w.stop();
    }
    watchFd(fd, {}, () => {}).stop(); // free again after stop
    // koffi would abort the process here; watchFd must refuse first.
    throwsErrno(() => watchFd(memfd, {}, () => {}), Errno.EPERM, 'epoll_ctl');
  } finally {
    closeFd(fd);
    closeFd(memfd);
  }
});

test('a watcher whose handle the caller drops keeps firing after garbage collection', async () => {
  const fd = eventfdCreate();
  let fired = 0;
  try {
    // Only a weak reference survives this line (koffi alone would let GC close the handle).
    const ref = new WeakRef(
      watchFd(fd, {}, () => {
        fired++;
        eventfdRead(fd);
      }),
    );
    for (let i = 0; i < 3; i++) {
      collectGarbage();
      await settle();
    }
    eventfdSignal(fd);
    for (let i = 0; i < 100 && fired === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(fired, 1);
    const w = ref.deref();
    assert.ok(w, 'the watcher is still referenced while active');
    w.stop();
  } finally {
    closeFd(fd);
  }
});

test('no fd leaked by this file', () => {
  assert.equal(activeWatchCount(), 0);
  assert.equal(openFdCount(), fdsAtStart);
});
