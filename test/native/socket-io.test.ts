/**
 * SocketIo (the server's allocation-free recvmsg/sendmsg), poll(2) of one fd, SO_RCVTIMEO:
 * bytes and fds arrive where asked, EAGAIN and end of stream are told apart, a waiting recv on a
 * blocking socket gives up at the receive timeout, fds beyond the limit are reported and still
 * handed over (never leaked), a full socket is -1 on send.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  addressNumber,
  closeFd,
  eventfdCreate,
  MAX_SOCKET_IO_OUT,
  openFdCount,
  POLLIN,
  POLLOUT,
  pollOne,
  recvMsgInto,
  SocketIo,
  sendMsg,
  setNonBlocking,
  setReceiveTimeout,
  socketPair,
} from '../../src/native/index.js';
import { throwsErrno } from './helpers.js';

const fdsAtStart = openFdCount();

test('recv lands bytes at the address given, with the fds that came; -1 when nothing waits, 0 at EOF', () => {
  const [a, b] = socketPair();
  const io = new SocketIo(b, 64, 4);
  const buf = new Uint8Array(32);
  const at = addressNumber(buf);
  try {
    assert.equal(io.recv(at, buf.length, false), -1);
    const efd = eventfdCreate();
    sendMsg(a, [new Uint8Array([1, 2, 3])], [efd, efd]);
    closeFd(efd);
    // Into the middle of the buffer: the offset is the caller's arithmetic on the address.
    assert.equal(io.recv(at + 8, 24, false), 3);
    assert.deepEqual([...buf.subarray(8, 11)], [1, 2, 3]);
    assert.equal(io.fds.length, 2);
    assert.equal(io.ctrunc, false);
    for (const fd of io.fds) closeFd(fd);
    sendMsg(a, [new Uint8Array([9])]);
    assert.equal(io.recv(at, 1, false), 1);
    assert.equal(io.fds.length, 0, 'fds of the previous call are gone');
    closeFd(a);
    assert.equal(io.recv(at, buf.length, false), 0);
  } finally {
    closeFd(b);
  }
  assert.equal(openFdCount(), fdsAtStart);
});

test('more fds than maxFds: ctrunc, and every fd that arrived is handed over', () => {
  const [a, b] = socketPair();
  const io = new SocketIo(b, 64, 1);
  const buf = new Uint8Array(16);
  try {
    const efd = eventfdCreate();
    sendMsg(a, [new Uint8Array([7])], [efd, efd, efd]);
    closeFd(efd);
    assert.equal(io.recv(addressNumber(buf), buf.length, false), 1);
    assert.equal(io.ctrunc, true);
    // CMSG_SPACE(4) rounds up to room for two: those two come back, the kernel dropped one.
    assert.ok(io.fds.length >= 1);
    for (const fd of io.fds) closeFd(fd);
  } finally {
    closeFd(a);
    closeFd(b);
  }
  assert.equal(openFdCount(), fdsAtStart);
});

test('a waiting recv on a blocking socket returns the data, or -1 when SO_RCVTIMEO runs out', () => {
  const [a, b] = socketPair();
  const io = new SocketIo(b, 64);
  const buf = new Uint8Array(16);
  try {
    setNonBlocking(b, false);
    setReceiveTimeout(b, 20);
    assert.equal(io.recv(addressNumber(buf), buf.length, true), -1);
    sendMsg(a, [new Uint8Array([5, 6])]);
    assert.equal(io.recv(addressNumber(buf), buf.length, true), 2);
    assert.deepEqual([...buf.subarray(0, 2)], [5, 6]);
    throwsErrno(() => setReceiveTimeout(b, -1), Errno.EINVAL, 'setsockopt');
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

test('sendOut sends a prefix of the output buffer; a full socket is -1', () => {
  const [a, b] = socketPair();
  const io = new SocketIo(a, 4096);
  const into = new Uint8Array(8192);
  try {
    io.out.set([1, 2, 3, 4]);
    assert.equal(io.sendOut(4), 4);
    const r = recvMsgInto(b, into, 0);
    assert.equal(r?.bytes, 4);
    assert.deepEqual([...into.subarray(0, 4)], [1, 2, 3, 4]);
    let sent = 0;
    for (let i = 0; i < 100_000; i++) {
      const n = io.sendOut(4096);
      if (n < 0) break;
      sent += n;
    }
    assert.ok(sent > 0);
    assert.equal(io.sendOut(4096), -1, 'the socket stays full');
    throwsErrno(() => io.sendOut(4097), Errno.EINVAL, 'sendmsg');
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

test('SocketIo refuses a bad fd limit or output size; a closed fd is EBADF', () => {
  throwsErrno(() => new SocketIo(0, 16, 254), Errno.EINVAL, 'SocketIo');
  throwsErrno(() => new SocketIo(0, 0), Errno.EINVAL, 'SocketIo');
  throwsErrno(() => new SocketIo(0, MAX_SOCKET_IO_OUT + 1), Errno.EINVAL, 'SocketIo');
  const [a, b] = socketPair();
  closeFd(a);
  closeFd(b);
  const io = new SocketIo(a, 16);
  throwsErrno(() => io.recv(addressNumber(new Uint8Array(4)), 4, false), Errno.EBADF, 'recvmsg');
  throwsErrno(() => io.sendOut(1), Errno.EBADF, 'sendmsg');
});

test('pollOne: writable at once, readable once data waits, 0 when the time runs out', () => {
  const [a, b] = socketPair();
  try {
    assert.equal(pollOne(b, POLLIN, 0), 0);
    assert.equal(pollOne(b, POLLOUT, 0) & POLLOUT, POLLOUT);
    sendMsg(a, [new Uint8Array([1])]);
    assert.equal(pollOne(b, POLLIN, -1) & POLLIN, POLLIN);
  } finally {
    closeFd(a);
    closeFd(b);
  }
});
