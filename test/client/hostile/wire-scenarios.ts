/**
 * Hostile-server scenarios about the wire itself: framing, error replies, the VERSION document,
 * fds on messages that take none, silence, slow drips, floods and hang-ups mid-reply.
 */
import assert from 'node:assert/strict';
import { Errno } from '../../../src/abi/errno.js';
import { VfioUserCommand as C } from '../../../src/abi/vfio-user.js';
import { CLIENT_MAX_MSG_FDS, createMessageOnlyDmaMemory } from '../../../src/client/index.js';
import { describeDevice } from '../../../src/driver/describe.js';
import { VfioError } from '../../../src/errors.js';
import { MAX_FDS_PER_MSG, openFdCount, SHUT_WR, shutdownFd } from '../../../src/native/index.js';
import { SERVER_MAX_PENDING_BYTES } from '../../../src/server/limits.js';
import {
  capabilitiesJson,
  encodeDeviceInfo,
  encodeDmaReadRequest,
  encodeReply,
  encodeVersion,
} from '../../../src/wire/vfio-user.js';
import { nextTurn, rawHeader } from './server.js';
import { on, replyOutcome, type Scenario, sleep, until } from './table.js';

const text = new TextEncoder();
/** A VERSION payload with `json` as its text, NUL-terminated unless told otherwise. */
function versionText(json: string, nul = true, major = 0, minor = 1): Uint8Array {
  const t = text.encode(json);
  const out = new Uint8Array(4 + t.length + (nul ? 1 : 0));
  const v = new DataView(out.buffer);
  v.setUint16(0, major, true);
  v.setUint16(2, minor, true);
  out.set(t, 4);
  return out;
}

const INFO = encodeDeviceInfo({ argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
const SILENT = { timeoutMs: 200 } as const;
const IOVA = 0x10000n;

/** Answers VERSION with `payload` (the scenario then connects and expects the failure). */
const version = (payload: Uint8Array, fds: readonly number[] = []) =>
  on(C.VERSION, (s, srv) => srv.reply(s, payload, fds));

export const WIRE_SCENARIOS: readonly Scenario[] = [
  // ------------------------------------------------------------------------------ framing
  {
    name: 'a reply whose msg_size is below the header',
    kind: 'framing',
    connect: false,
    answer: on(C.VERSION, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 8, 1))),
    run: (x) => x.connect(),
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_VERSION', detail: /stream broken: .*msg_size 8/ },
  },
  {
    name: 'a reply whose msg_size is 4 GiB',
    kind: 'framing',
    connect: false,
    answer: on(C.VERSION, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 0xffffffff, 1))),
    run: (x) => x.connect(),
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_VERSION', detail: /stream broken: .*exceeds/ },
  },
  {
    name: 'a reply with reserved flag bits',
    kind: 'framing',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 16, 0x41))),
    run: (x) => x.dev.info(),
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /reserved flag bits/ },
  },
  {
    name: 'a message of type 2 (neither command nor reply)',
    kind: 'framing',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 16, 2))),
    run: (x) => x.dev.info(),
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /message type 2/ },
  },
  {
    name: 'the reply to our msg_id names another command',
    kind: 'framing',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.send(encodeReply(s.msgId, C.REGION_READ, INFO))),
    run: (x) => x.dev.info(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /names VFIO_USER_REGION_READ/ },
  },
  {
    name: 'a reply to a msg_id never sent, then the right one',
    kind: 'framing',
    answer: on(C.DEVICE_GET_INFO, async (s, srv) => {
      await srv.send(encodeReply(s.msgId ^ 0x5555, s.command, INFO));
      await srv.honest(s);
    }),
    run: (x) => x.dev.info(),
    expect: 'ok',
    after: (x) => assert.equal(x.client.connection.strayReplies, 1),
  },
  // ------------------------------------------------------------------------ error replies
  {
    name: 'an error reply: its errno, naming the command',
    kind: 'error replies',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.error(s, Errno.EIO)),
    run: (x) => x.dev.info(),
    expect: { code: 'EIO', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  {
    name: 'an error reply with errno 0 reads as EINVAL',
    kind: 'error replies',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 16, 0x21, 0))),
    run: (x) => x.dev.info(),
    expect: { code: 'EINVAL', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  {
    name: 'an error reply with errno 5000 reads as EINVAL',
    kind: 'error replies',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.send(rawHeader(s.msgId, s.command, 16, 0x21, 5000))),
    run: (x) => x.dev.info(),
    expect: { code: 'EINVAL', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  {
    name: 'an error reply with a payload and three fds: the errno, the fds closed',
    kind: 'error replies',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => {
      const m = new Uint8Array(48);
      m.set(rawHeader(s.msgId, s.command, 48, 0x21, Errno.EIO));
      return srv.send(m, [srv.bar0, srv.bar0, srv.bar0]);
    }),
    run: (x) => x.dev.info(),
    expect: { code: 'EIO', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  // ------------------------------------------------------------------------- VERSION JSON
  {
    name: 'VERSION data not NUL-terminated',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText('{"capabilities":{}}', false)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /NUL-terminated/ },
  },
  {
    name: 'VERSION JSON nested 200 deep',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText(`{"capabilities":{"x":${'['.repeat(200)}${']'.repeat(200)}}}`)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /nesting deeper than/ },
  },
  {
    name: 'VERSION max_data_xfer_size 0',
    kind: 'VERSION JSON',
    connect: false,
    caps: { maxDataXferSize: 0 },
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /max_data_xfer_size 0/ },
  },
  {
    name: 'VERSION max_data_xfer_size a string',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText('{"capabilities":{"max_data_xfer_size":"big"}}')),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /max_data_xfer_size must be an integer/ },
  },
  {
    name: 'VERSION major 1',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText('{}', true, 1, 0)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTONOSUPPORT', op: 'VFIO_USER_VERSION' },
  },
  {
    name: 'VERSION minor above ours',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText('{}', true, 0, 9)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTONOSUPPORT', op: 'VFIO_USER_VERSION' },
  },
  {
    name: 'VERSION reply of 70 KiB',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(versionText(`{"capabilities":{},"pad":"${'x'.repeat(70_000)}"}`)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /at most 65536 expected/ },
  },
  {
    name: 'VERSION data not UTF-8',
    kind: 'VERSION JSON',
    connect: false,
    answer: version(Uint8Array.of(0, 0, 1, 0, 0x7b, 0xff, 0xfe, 0x7d, 0)),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /UTF-8/ },
  },
  {
    name: 'VERSION pgsizes below 4 KiB',
    kind: 'VERSION JSON',
    connect: false,
    caps: { pgsizes: 512n },
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /pgsizes 0x200/ },
  },
  {
    name: 'VERSION max_msg_fds 100000 is clamped to what one sendmsg carries',
    kind: 'VERSION JSON',
    caps: { maxMsgFds: 100_000 },
    run: async () => {},
    expect: 'ok',
    after: (x) => assert.equal(x.client.negotiated.maxMsgFds, MAX_FDS_PER_MSG),
  },
  {
    name: 'VERSION without a JSON document: the spec defaults',
    kind: 'VERSION JSON',
    answer: version(versionText('', false)),
    run: async () => {},
    expect: 'ok',
    after: (x) => assert.equal(x.client.negotiated.maxDataXferSize, 1 << 20),
  },
  // ---------------------------------------------------------------------------------- fds
  {
    name: 'an fd on a DEVICE_GET_INFO reply',
    kind: 'fds',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.reply(s, INFO, [srv.bar0])),
    run: (x) => x.dev.info(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /1 fds on the reply; it takes none/ },
  },
  {
    name: 'twenty fds on one VERSION reply (we take 16 a message)',
    kind: 'fds',
    connect: false,
    answer: on(C.VERSION, (s, srv) =>
      srv.reply(
        s,
        encodeVersion({ major: 0, minor: 1, json: capabilitiesJson({}) }),
        Array(20).fill(srv.bar0),
      ),
    ),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /20 fds on the reply/ },
  },
  {
    name: 'a VERSION reply one byte per sendmsg with 253 fds on each: never more than 16 held',
    kind: 'fds',
    connect: false,
    answer: on(C.VERSION, async (s, srv) => {
      const json = { ...capabilitiesJson({}), pad: 'x'.repeat(80) };
      const bytes = encodeReply(s.msgId, s.command, encodeVersion({ major: 0, minor: 1, json }));
      const base = openFdCount();
      let peak = 0;
      await srv.trickle(bytes, {
        fds: Array(MAX_FDS_PER_MSG).fill(srv.bar0),
        each: () => {
          peak = Math.max(peak, openFdCount() - base);
        },
      });
      assert.ok(bytes.length * MAX_FDS_PER_MSG > 20_000, 'the issue sent 20,000 fds');
      assert.ok(peak <= CLIENT_MAX_MSG_FDS, `the client held ${peak} fds at once`);
    }),
    run: (x) => x.connect(),
    expect: { code: 'EPROTO', op: 'VFIO_USER_VERSION', detail: /\d{5} fds on the reply; it takes none/ },
  },
  {
    name: '253 fds on a DMA_READ command from the server: EINVAL, all closed',
    kind: 'fds',
    run: async (x) => {
      await x.client.dmaMap(IOVA, createMessageOnlyDmaMemory(4096));
      const fds = Array(MAX_FDS_PER_MSG).fill(x.srv.bar0);
      replyOutcome(await x.srv.call(C.DMA_READ, encodeDmaReadRequest({ address: IOVA, count: 4 }), fds));
    },
    expect: { code: 'EINVAL', op: 'VFIO_USER_DMA_READ' },
  },
  {
    name: 'a stray reply with two fds: dropped, fds closed',
    kind: 'fds',
    run: async (x) => {
      await x.srv.send(encodeReply(0x7777, C.DEVICE_GET_INFO, INFO), [x.srv.bar0, x.srv.bar0]);
      return x.dev.info();
    },
    expect: 'ok',
    after: (x) => assert.equal(x.client.connection.strayReplies, 1),
  },
  // ------------------------------------------------------------------------------ silence
  {
    name: 'no reply to IRQ_INFO: ETIMEDOUT, the connection dropped, a late reply matches nothing',
    kind: 'silence',
    options: SILENT,
    answer: on(C.DEVICE_GET_IRQ_INFO, () => {}),
    run: (x) => x.dev.irqInfo(0),
    expect: { code: 'ETIMEDOUT', op: 'VFIO_USER_DEVICE_GET_IRQ_INFO', detail: /no reply in 200 ms/ },
    after: async (x) => {
      const late = x.srv.seen.at(-1)!;
      await x.srv.send(encodeReply(late.msgId, late.command, new Uint8Array(16))).catch(() => {});
      await assert.rejects(x.dev.irqInfo(1), (e: VfioError) => {
        assert.equal(e.code, 'ECONNRESET');
        assert.match(
          e.message,
          /VFIO_USER_DEVICE_GET_IRQ_INFO: ECONNRESET \(connection dropped: .*ETIMEDOUT/,
        );
        return true;
      });
    },
  },
  {
    name: 'no reply to VERSION',
    kind: 'silence',
    connect: false,
    options: SILENT,
    answer: on(C.VERSION, () => {}),
    run: (x) => x.connect(),
    expect: { code: 'ETIMEDOUT', op: 'VFIO_USER_VERSION' },
  },
  {
    name: 'no reply to the config read of describeDevice',
    kind: 'silence',
    options: SILENT,
    answer: on(C.REGION_READ, () => {}),
    run: (x) => describeDevice(x.dev),
    expect: { code: 'ETIMEDOUT', op: 'VFIO_USER_REGION_READ' },
  },
  // ---------------------------------------------------------------------------- slow drip
  {
    name: 'a reply dripped slower than the timeout',
    kind: 'slow drip',
    options: SILENT,
    answer: on(C.DEVICE_GET_INFO, (s, srv) =>
      srv.trickle(encodeReply(s.msgId, s.command, INFO), { delayMs: 15 }).catch(() => {}),
    ),
    run: (x) => x.dev.info(),
    expect: { code: 'ETIMEDOUT', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  {
    name: 'a reply dripped one byte per sendmsg within the timeout',
    kind: 'slow drip',
    answer: on(C.DEVICE_GET_INFO, (s, srv) => srv.trickle(encodeReply(s.msgId, s.command, INFO))),
    run: async (x) => assert.equal((await x.dev.info()).numRegions, 9),
    expect: 'ok',
  },
  {
    name: 'a server command stalled half-way: dropped after the timeout',
    kind: 'slow drip',
    options: SILENT,
    run: async (x) => {
      await x.srv.send(rawHeader(1, C.DMA_READ, 32, 0));
      await until(() => x.client.connection.closed, 2000);
      return x.dev.info();
    },
    expect: {
      code: 'ECONNRESET',
      op: 'VFIO_USER_DEVICE_GET_INFO',
      detail: /message incomplete after 200 ms/,
    },
  },
  // ------------------------------------------------------------------------------- floods
  {
    name: '10,000 stray replies before the answer',
    kind: 'floods',
    answer: on(C.DEVICE_GET_INFO, async (s, srv) => {
      const one = encodeReply(0, s.command, INFO);
      const all = new Uint8Array(one.length * 10_000);
      for (let i = 0; i < 10_000; i++) {
        const id = (s.msgId + 1 + i) & 0xffff;
        one[0] = id & 0xff;
        one[1] = id >> 8;
        all.set(one, i * one.length);
      }
      await srv.send(all);
      await srv.honest(s);
    }),
    run: (x) => x.dev.info(),
    expect: 'ok',
    after: (x) => assert.equal(x.client.connection.strayReplies, 10_000),
  },
  {
    name: 'DMA_READs flooded at a client whose replies are not read: back-pressure bounds its queue',
    kind: 'floods',
    run: async (x) => {
      await x.client.dmaMap(IOVA, createMessageOnlyDmaMemory(65536));
      x.srv.pause();
      const ch = x.client.connection.channel;
      const req = encodeDmaReadRequest({ address: IOVA, count: 65536 });
      let sent = 0;
      let peak = 0;
      for (let idle = 0; idle < 100 && sent < 4000; ) {
        const msg = new Uint8Array(16 + req.length);
        msg.set(rawHeader(0x8000 + (sent & 0x7fff), C.DMA_READ, msg.length, 0));
        msg.set(req, 16);
        if (x.srv.trySend(msg) === null) {
          idle++;
          await sleep(2);
        } else {
          sent++;
          idle = 0;
          await nextTurn();
        }
        peak = Math.max(peak, ch.queuedBytes);
      }
      assert.ok(ch.paused, `the client stopped reading (${sent} sent, ${ch.queuedBytes} queued)`);
      assert.ok(peak <= SERVER_MAX_PENDING_BYTES + 65536 + 32, `queue peaked at ${peak} bytes`);
      x.srv.close();
      await until(() => x.client.connection.closed, 5000);
      return x.dev.info();
    },
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_DEVICE_GET_INFO' },
  },
  // ---------------------------------------------------------------------- mid-reply close
  {
    name: 'half a REGION_INFO reply with its fd, then a hang-up',
    kind: 'mid-reply close',
    answer: on(C.DEVICE_GET_REGION_INFO, async (s, srv) => {
      const full = encodeReply(s.msgId, s.command, new Uint8Array(32));
      await srv.send(full.subarray(0, 30), [srv.bar0]);
      srv.close();
    }),
    run: (x) => x.dev.regionInfo(0),
    expect: {
      code: 'ECONNRESET',
      op: 'VFIO_USER_DEVICE_GET_REGION_INFO',
      detail: /server closed the connection/,
    },
  },
  {
    name: 'a hang-up with two requests pending: both ECONNRESET',
    kind: 'mid-reply close',
    answer: on(C.DEVICE_GET_IRQ_INFO, () => {}),
    run: async (x) => {
      const both = [x.dev.irqInfo(0), x.dev.irqInfo(1)];
      await until(() => x.srv.count(C.DEVICE_GET_IRQ_INFO) === 2);
      x.srv.close();
      const r = await Promise.allSettled(both);
      for (const o of r)
        assert.ok(o.status === 'rejected' && o.reason instanceof VfioError && o.reason.code === 'ECONNRESET');
      throw (r[0] as PromiseRejectedResult).reason;
    },
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_DEVICE_GET_IRQ_INFO' },
  },
  {
    name: 'the server shuts its side (SHUT_WR) with a request pending',
    kind: 'mid-reply close',
    answer: on(C.DEVICE_GET_INFO, (_s, srv) => shutdownFd(srv.fd, SHUT_WR)),
    run: (x) => x.dev.info(),
    expect: { code: 'ECONNRESET', op: 'VFIO_USER_DEVICE_GET_INFO', detail: /server closed the connection/ },
  },
];
