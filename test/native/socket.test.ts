import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  closeFd,
  getpid,
  getuid,
  MAX_FDS_PER_MSG,
  MAX_IOV,
  memfdCreate,
  openFdCount,
  pageSize,
  peerCred,
  pread,
  pwrite,
  RECV_SCRATCH_BYTES,
  type Received,
  recvMsg,
  recvMsgInto,
  SHUT_WR,
  sendMsg,
  shutdownFd,
  socketPair,
  unixAccept,
  unixConnect,
  unixListen,
  waitReadable,
} from '../../src/native/index.js';
import { throwsErrno } from './helpers.js';

// Not in src/abi/errno.ts (yet): asm-generic/errno-base.h, asm-generic/errno.h.
const EPIPE = 32;
const ENOTSOCK = 88;
const EADDRINUSE = 98;
const ECONNREFUSED = 111;

pageSize();
const fdsAtStart = openFdCount();
const enc = new TextEncoder();
const dir = mkdtempSync(join(tmpdir(), 'vfio-sock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A memfd holding `text` at offset 0. */
function memfdWith(text: string): number {
  const fd = memfdCreate(`sock-${text}`, 4096);
  pwrite(fd, enc.encode(text), 0n);
  return fd;
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}

function mustRecv(fd: number, maxBytes: number, maxFds: number): Received {
  const r = recvMsg(fd, maxBytes, maxFds);
  assert.ok(r, 'expected a message');
  return r;
}

test('SCM_RIGHTS: 1 fd; the receiver reads the memfd through the fd it got', () => {
  const [a, b] = socketPair();
  const memfd = memfdWith('one');
  try {
    assert.equal(sendMsg(a, [enc.encode('hdr')], [memfd]), 3);
    const r = mustRecv(b, 64, 4);
    try {
      assert.deepEqual(r.data, enc.encode('hdr'));
      assert.equal(r.ctrunc, false);
      assert.equal(r.fds.length, 1);
      assert.notEqual(r.fds[0], memfd);
      assert.deepEqual(pread(r.fds[0]!, 3, 0n), enc.encode('one'));
      // Same open file: a write through one shows through the other.
      pwrite(memfd, enc.encode('ONE'), 0n);
      assert.deepEqual(pread(r.fds[0]!, 3, 0n), enc.encode('ONE'));
    } finally {
      closeAll(r.fds);
    }
  } finally {
    closeAll([a, b, memfd]);
  }
});

test('SCM_RIGHTS: 3 fds arrive in order, with gathered chunks', () => {
  const [a, b] = socketPair();
  const sent = [memfdWith('alpha'), memfdWith('beta'), memfdWith('gamma')];
  try {
    const backing = enc.encode('xxpayloadxx');
    const chunks = [enc.encode('head'), new Uint8Array(0), backing.subarray(2, 9), enc.encode('!')];
    assert.equal(sendMsg(a, chunks, sent), 12);
    const r = mustRecv(b, 64, 3);
    try {
      assert.equal(new TextDecoder().decode(r.data), 'headpayload!');
      assert.equal(r.ctrunc, false);
      assert.deepEqual(
        r.fds.map((fd, i) => new TextDecoder().decode(pread(fd, ['alpha', 'beta', 'gamma'][i]!.length, 0n))),
        ['alpha', 'beta', 'gamma'],
      );
    } finally {
      closeAll(r.fds);
    }
  } finally {
    closeAll([a, b, ...sent]);
  }
});

test('more fds than maxFds: whatever arrived is returned, ctrunc set, nothing leaks', () => {
  const [a, b] = socketPair();
  const sent = [1, 2, 3, 4, 5].map((i) => memfdWith(`m${i}`));
  const baseline = openFdCount();
  // [maxFds, fds that fit: the control buffer is CMSG_SPACE(4 * maxFds), which for an odd
  // count has room for one more fd]
  const table: [number, number][] = [
    [0, 0],
    [1, 2],
    [2, 2],
    [3, 4],
  ];
  try {
    for (const [maxFds, expected] of table) {
      assert.equal(sendMsg(a, [enc.encode('x')], sent), 1);
      const r = mustRecv(b, 16, maxFds);
      assert.equal(r.ctrunc, true, `maxFds ${maxFds}`);
      assert.equal(r.fds.length, expected, `maxFds ${maxFds}: fds returned`);
      assert.deepEqual(r.data, enc.encode('x'));
      assert.equal(openFdCount(), baseline + expected, 'only the returned fds were installed');
      r.fds.forEach((fd, i) => {
        assert.deepEqual(pread(fd, 2, 0n), enc.encode(`m${i + 1}`));
      });
      closeAll(r.fds);
      assert.equal(openFdCount(), baseline, `maxFds ${maxFds}: back to baseline`);
    }
  } finally {
    closeAll([a, b, ...sent]);
  }
});

test('recvMsg: null when nothing waits, empty data when the peer is gone', () => {
  const [a, b] = socketPair();
  try {
    assert.equal(recvMsg(b, 16, 0), null);
    sendMsg(a, [enc.encode('bye')]);
    shutdownFd(a, SHUT_WR);
    assert.deepEqual(mustRecv(b, 16, 0).data, enc.encode('bye'));
    assert.equal(mustRecv(b, 16, 0).data.length, 0);
  } finally {
    closeAll([a, b]);
  }
  const [c, d] = socketPair();
  closeFd(c);
  try {
    assert.equal(mustRecv(d, 16, 4).data.length, 0);
    // A closed peer gives EPIPE (MSG_NOSIGNAL: no SIGPIPE kills the test process).
    throwsErrno(() => sendMsg(d, [enc.encode('x')]), EPIPE, 'sendmsg');
  } finally {
    closeFd(d);
  }
});

test('a stream returns data in pieces of at most maxBytes; large reads bypass the scratch buffer', () => {
  const [a, b] = socketPair();
  try {
    const big = new Uint8Array(RECV_SCRATCH_BYTES + 1000).map((_, i) => i * 7);
    let sent = 0;
    let received = 0;
    const out = new Uint8Array(big.length);
    while (received < big.length) {
      if (sent < big.length) sent += sendMsg(a, [big.subarray(sent)]) ?? 0;
      const r = recvMsg(b, big.length, 0);
      if (r) {
        out.set(r.data, received);
        received += r.data.length;
      }
    }
    assert.deepEqual(out, big);
    sendMsg(a, [enc.encode('abcdef')]);
    assert.deepEqual(mustRecv(b, 4, 0).data, enc.encode('abcd'));
    const into = new Uint8Array(10);
    const r = recvMsgInto(b, into.subarray(3), 0);
    assert.deepEqual(r, { bytes: 2, fds: [], ctrunc: false });
    assert.deepEqual([...into.subarray(3, 5)], [...enc.encode('ef')]);
  } finally {
    closeAll([a, b]);
  }
});

test('received data arrays are independent of later receives', () => {
  const [a, b] = socketPair();
  try {
    sendMsg(a, [enc.encode('first')]);
    const first = mustRecv(b, 64, 0).data;
    sendMsg(a, [enc.encode('second')]);
    mustRecv(b, 64, 0);
    assert.deepEqual(first, enc.encode('first'));
  } finally {
    closeAll([a, b]);
  }
});

test('sendMsg returns null once the socket buffer is full', () => {
  const [a, b] = socketPair();
  try {
    const chunk = new Uint8Array(65536);
    let n: number | null = 0;
    let total = 0;
    for (let i = 0; i < 10000 && n !== null; i++) {
      n = sendMsg(a, [chunk]);
      total += n ?? 0;
    }
    assert.equal(n, null);
    assert.ok(total > 0);
  } finally {
    closeAll([a, b]);
  }
});

test('sendMsg and recvMsg refuse impossible requests', () => {
  const [a, b] = socketPair();
  const memfd = memfdCreate('sock-limits', 0);
  try {
    throwsErrno(() => sendMsg(a, [], [memfd]), Errno.EINVAL, 'sendmsg');
    throwsErrno(() => sendMsg(a, [new Uint8Array(0)], [memfd]), Errno.EINVAL, 'sendmsg');
    throwsErrno(
      () => sendMsg(a, [enc.encode('x')], new Array(MAX_FDS_PER_MSG + 1).fill(memfd)),
      Errno.EINVAL,
    );
    throwsErrno(() => sendMsg(a, new Array(MAX_IOV + 1).fill(enc.encode('x'))), Errno.EINVAL);
    throwsErrno(() => sendMsg(a, [enc.encode('x')], [-1]), Errno.EBADF, 'sendmsg');
    throwsErrno(() => sendMsg(-1, [enc.encode('x')]), Errno.EBADF, 'sendmsg');
    throwsErrno(() => sendMsg(memfd, [enc.encode('x')]), ENOTSOCK, 'sendmsg');
    throwsErrno(() => recvMsg(b, 0, 0), Errno.EINVAL, 'recvmsg');
    throwsErrno(() => recvMsg(b, 16, MAX_FDS_PER_MSG + 1), Errno.EINVAL, 'recvmsg');
    throwsErrno(() => recvMsg(-1, 16, 0), Errno.EBADF, 'recvmsg');
    // Nothing half-sent by the failures above.
    assert.equal(recvMsg(b, 16, 0), null);
    // The maximum number of fds in one message goes through.
    const many = new Array(MAX_FDS_PER_MSG).fill(memfd);
    assert.equal(sendMsg(a, [enc.encode('m')], many), 1);
    const r = mustRecv(b, 16, MAX_FDS_PER_MSG);
    assert.equal(r.fds.length, MAX_FDS_PER_MSG);
    assert.equal(r.ctrunc, false);
    closeAll(r.fds);
  } finally {
    closeAll([a, b, memfd]);
  }
});

test('unixListen / unixConnect / unixAccept on a path with mode 0600, and peerCred', async () => {
  const path = join(dir, 'srv.sock');
  const lfd = unixListen(path);
  try {
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.ok(statSync(path).isSocket());
    assert.equal(unixAccept(lfd), null, 'nobody waiting yet');
    const cfd = unixConnect(path);
    assert.equal(await waitReadable(lfd, 5000), true);
    const sfd = unixAccept(lfd);
    assert.ok(sfd !== null);
    try {
      assert.deepEqual(peerCred(sfd), { pid: getpid(), uid: getuid(), gid: process.getgid?.() });
      assert.deepEqual(peerCred(cfd), { pid: getpid(), uid: getuid(), gid: process.getgid?.() });
      // Both ends are non-blocking.
      assert.equal(recvMsg(sfd, 16, 0), null);
      assert.equal(recvMsg(cfd, 16, 0), null);
      const memfd = memfdWith('via-path');
      assert.equal(sendMsg(cfd, [enc.encode('hi')], [memfd]), 2);
      closeFd(memfd);
      const r = mustRecv(sfd, 16, 1);
      assert.deepEqual(r.data, enc.encode('hi'));
      assert.deepEqual(pread(r.fds[0]!, 8, 0n), enc.encode('via-path'));
      closeAll(r.fds);
    } finally {
      closeAll([cfd, sfd]);
    }
  } finally {
    closeFd(lfd);
  }
  // A path already bound.
  throwsErrno(() => unixListen(path), EADDRINUSE, 'bind');
});

test('unixListen mode option; errors of listen and connect', () => {
  const path = join(dir, 'g.sock');
  const lfd = unixListen(path, { mode: 0o660, backlog: 1 });
  assert.equal(statSync(path).mode & 0o777, 0o660);
  closeFd(lfd);
  throwsErrno(() => unixConnect(join(dir, 'absent.sock')), Errno.ENOENT, 'connect');
  throwsErrno(() => unixConnect(join(dir, 'x'.repeat(120))), Errno.EINVAL, 'connect');
  throwsErrno(() => unixListen(join(dir, 'x'.repeat(120))), Errno.EINVAL, 'bind');
  throwsErrno(() => unixListen(join(dir, 'missing-dir', 's.sock')), Errno.ENOENT, 'bind');
  // Stale socket file with no listener: connection refused.
  throwsErrno(() => unixConnect(path), ECONNREFUSED, 'connect');
  writeFileSync(join(dir, 'plain'), '');
  throwsErrno(() => unixConnect(join(dir, 'plain')), ECONNREFUSED, 'connect');
  throwsErrno(() => unixAccept(-1), Errno.EBADF, 'accept4');
  throwsErrno(() => peerCred(-1), Errno.EBADF, 'getsockopt');
  throwsErrno(() => shutdownFd(-1), Errno.EBADF, 'shutdown');
});

test('unixConnect gives up with EAGAIN after its timeout when the backlog is full', () => {
  const path = join(dir, 'full.sock');
  const lfd = unixListen(path, { backlog: 0 });
  const first = unixConnect(path); // fills the queue of a zero backlog (af_unix: len > max)
  try {
    const t0 = Date.now();
    throwsErrno(() => unixConnect(path, 50), Errno.EAGAIN, 'connect');
    assert.ok(Date.now() - t0 >= 40, 'waited for the timeout');
    const accepted = unixAccept(lfd);
    assert.ok(accepted !== null);
    closeFd(accepted);
  } finally {
    closeAll([first, lfd]);
  }
});

test('no fd leaked by this file', () => {
  assert.equal(openFdCount(), fdsAtStart);
});
