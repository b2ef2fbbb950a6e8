import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserCommand, VfioUserFlags, vfioUserCommandName } from '../../src/abi/vfio-user.js';
import { MalformedError, VfioError } from '../../src/errors.js';
import {
  checkHeader,
  decodeHeader,
  encodeCommand,
  encodeErrorReply,
  encodeHeader,
  encodeMessage,
  encodeReply,
  fromHex,
  type Header,
  isErrorReply,
  isNoReply,
  isReply,
  messageType,
  replyErrno,
  toHex,
} from '../../src/wire/vfio-user.js';

const h = (over: Partial<Header> = {}): Header => ({
  msgId: 1,
  command: 9,
  msgSize: 16,
  flags: 0,
  error: 0,
  ...over,
});

function throwsMalformed(fn: () => unknown, errno: number, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof MalformedError, `not a MalformedError: ${String(e)}`);
    assert.equal(e.errno, errno);
    assert.equal(e.message, message);
    return true;
  });
}

describe('vfio-user header', () => {
  it('encodes little endian at the spec offsets', () => {
    const bytes = encodeHeader({
      msgId: 0x1234,
      command: 0x0a,
      msgSize: 0x11223344,
      flags: 0x31,
      error: 0x16,
    });
    assert.equal(toHex(bytes), '34120a0044332211' + '31000000' + '16000000');
    assert.deepEqual(decodeHeader(bytes), {
      msgId: 0x1234,
      command: 10,
      msgSize: 0x11223344,
      flags: 0x31,
      error: 22,
    });
  });

  it('decodes at an offset', () => {
    const buf = new Uint8Array(20);
    buf.set(encodeHeader(h({ msgId: 7 })), 4);
    assert.equal(decodeHeader(buf, 4).msgId, 7);
  });

  it('classifies type and flags', () => {
    const cmd = h({ flags: VfioUserFlags.NO_REPLY });
    assert.equal(messageType(cmd), 'command');
    assert.equal(isReply(cmd), false);
    assert.equal(isNoReply(cmd), true);
    const err = h({ flags: VfioUserFlags.TYPE_REPLY | VfioUserFlags.ERROR, error: Errno.ENOENT });
    assert.equal(messageType(err), 'reply');
    assert.equal(isErrorReply(err), true);
    assert.equal(replyErrno(err), Errno.ENOENT);
    // ERROR on a command is meaningless, not an error reply
    assert.equal(isErrorReply(h({ flags: VfioUserFlags.ERROR })), false);
  });

  it('reads error 0 and errno above 4096 as EINVAL (libvfio-user tran_sock_recv_fds)', () => {
    const table: [number, number][] = [
      [0, Errno.EINVAL],
      [1, 1],
      [4096, 4096],
      [4097, Errno.EINVAL],
      [0xffffffff, Errno.EINVAL],
    ];
    for (const [error, want] of table)
      assert.equal(replyErrno(h({ flags: 0x21, error })), want, `error ${error}`);
  });

  describe('refuses', () => {
    const table: { name: string; hex: string; message: string }[] = [
      { name: 'an empty buffer', hex: '', message: 'malformed vfio-user header: 0 bytes, need 16' },
      {
        name: 'a 15-byte header',
        hex: '010009001000000000000000000000',
        message: 'malformed vfio-user header: 15 bytes, need 16',
      },
      {
        name: 'type 2',
        hex: '0100 0900 10000000 02000000 00000000',
        message: 'malformed vfio-user header: message type 2 is neither command (0) nor reply (1)',
      },
      {
        name: 'type 15',
        hex: '0100 0900 10000000 0f000000 00000000',
        message: 'malformed vfio-user header: message type 15 is neither command (0) nor reply (1)',
      },
      {
        name: 'flag bit 6',
        hex: '0100 0900 10000000 40000000 00000000',
        message: 'malformed vfio-user header: reserved flag bits set: flags 0x40',
      },
      {
        name: 'flag bit 31',
        hex: '0100 0900 10000000 01000080 00000000',
        message: 'malformed vfio-user header: reserved flag bits set: flags 0x80000001',
      },
      {
        name: 'msg_size 15',
        hex: '0100 0900 0f000000 00000000 00000000',
        message: 'malformed vfio-user header: msg_size 15 is smaller than the 16-byte header',
      },
      {
        name: 'msg_size 0',
        hex: '0100 0900 00000000 01000000 00000000',
        message: 'malformed vfio-user header: msg_size 0 is smaller than the 16-byte header',
      },
    ];
    for (const t of table) {
      it(t.name, () => throwsMalformed(() => decodeHeader(fromHex(t.hex)), Errno.EINVAL, t.message));
    }
  });

  it('accepts NO_REPLY on a reply and ERROR on a command (ignored by both real peers)', () => {
    checkHeader(h({ flags: VfioUserFlags.TYPE_REPLY | VfioUserFlags.NO_REPLY }));
    checkHeader(h({ flags: VfioUserFlags.ERROR }));
  });

  it('refuses to encode out-of-range fields with VfioError(EINVAL)', () => {
    const bad: [Partial<Header>, string][] = [
      [{ msgId: 0x10000 }, 'encode vfio-user header: EINVAL (msg_id 65536 is not a u16)'],
      [{ msgId: -1 }, 'encode vfio-user header: EINVAL (msg_id -1 is not a u16)'],
      [{ command: 1.5 }, 'encode vfio-user header: EINVAL (command 1.5 is not a u16)'],
      [{ msgSize: 15 }, 'encode vfio-user header: EINVAL (msg_size 15 < 16)'],
      [{ msgSize: 2 ** 32 }, 'encode vfio-user header: EINVAL (msg_size 4294967296 is not a u32)'],
      [{ flags: 2 }, 'encode vfio-user header: EINVAL (flags 0x2 are not a valid type and flag set)'],
      [{ flags: 0x40 }, 'encode vfio-user header: EINVAL (flags 0x40 are not a valid type and flag set)'],
    ];
    for (const [over, message] of bad) {
      assert.throws(
        () => encodeHeader(h(over)),
        (e: unknown) => e instanceof VfioError && e.errno === Errno.EINVAL && e.message === message,
        message,
      );
    }
  });

  it('builds whole messages', () => {
    assert.equal(
      toHex(encodeCommand(3, VfioUserCommand.REGION_WRITE, fromHex('aabb'), { noReply: true })),
      '03000a00120000001000000000000000aabb',
    );
    assert.equal(toHex(encodeReply(3, VfioUserCommand.DMA_MAP)), '03000200100000000100000000000000');
    assert.equal(
      toHex(encodeMessage({ msgId: 0xffff, command: 16, flags: 1 }, fromHex('01'))),
      'ffff1000110000000100000000000000' + '01',
    );
  });

  it('encodes an error reply as the header alone with reply|error and the errno', () => {
    assert.equal(toHex(encodeErrorReply(0x0bad, 1, Errno.EINVAL)), 'ad0b0100100000002100000016000000');
    for (const errno of [0, -1, 4097, 1.5]) {
      assert.throws(
        () => encodeErrorReply(1, 5, errno),
        (e: unknown) =>
          e instanceof VfioError &&
          e.message ===
            `encode VFIO_USER_DEVICE_GET_REGION_INFO error reply: EINVAL (errno ${errno} is not in 1..4096)`,
      );
    }
  });

  it('names commands', () => {
    assert.equal(vfioUserCommandName(2), 'VFIO_USER_DMA_MAP');
    assert.equal(vfioUserCommandName(18), 'VFIO_USER_MIG_DATA_WRITE');
    assert.equal(vfioUserCommandName(14), 'VFIO_USER_COMMAND_14');
  });
});
