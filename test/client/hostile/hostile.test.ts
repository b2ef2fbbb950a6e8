/**
 * The vfio-user client against a hostile server (test/client/hostile/server.ts), one scenario of
 * the tables at a time: each must end with exactly the error it names (class VfioError, errno,
 * the command or call), never a crash, a hang or another exception, and leave the process with
 * the fds it had (/proc/self/fd) and its memory back where it was. Then the whole table runs a
 * second time and the heap and ArrayBuffer bytes must not have grown over it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClientOptions, VfioUserClient } from '../../../src/client/index.js';
import { VfioDevice } from '../../../src/driver/device.js';
import { MalformedError, VfioError } from '../../../src/errors.js';
import { closeFd, openFdCount } from '../../../src/native/index.js';
import { DEVICE_SCENARIOS } from './device-scenarios.js';
import { MEMORY_SCENARIOS } from './memory-scenarios.js';
import { HONEST_CAPS, HostileServer } from './server.js';
import { type Ctx, memoryNow, type Scenario, sleep } from './table.js';
import { WIRE_SCENARIOS } from './wire-scenarios.js';

const ALL = [...WIRE_SCENARIOS, ...DEVICE_SCENARIOS, ...MEMORY_SCENARIOS];
/** Generous: the machine is shared; only the silence scenarios rely on a short timeout. */
const TIMEOUT_MS = 5000;
/** What one scenario may leave behind in ArrayBuffers and heap once collected. */
const MEMORY_SLACK = 2 * 1024 * 1024;

/** Runs `sc` to the end; returns what it threw (or undefined). Asserts fds and our own errors. */
async function play(sc: Scenario): Promise<unknown> {
  const fds = openFdCount();
  const srv = new HostileServer();
  srv.caps = { ...HONEST_CAPS, ...sc.caps };
  if (sc.answer) srv.answer = sc.answer;
  let client: VfioUserClient | undefined;
  let dev: VfioDevice | undefined;
  const options: ClientOptions = { timeoutMs: TIMEOUT_MS, ...sc.options };
  let handedOver = false;
  const x: Ctx = {
    srv,
    async connect() {
      handedOver = true;
      client = await VfioUserClient.fromFd(srv.clientFd, options);
      dev = new VfioDevice(client);
      return client;
    },
    get client() {
      return client ?? assert.fail('not connected');
    },
    get dev() {
      return dev ?? assert.fail('not connected');
    },
  };
  let thrown: unknown;
  try {
    if (sc.connect !== false) await x.connect();
    await sc.run(x);
  } catch (e) {
    thrown = e;
  }
  try {
    check(sc, thrown);
    await sc.after?.(x);
  } finally {
    await client?.close();
    srv.close();
    // fromFd owns the fd from the first call on; a scenario that never connected leaves it to us.
    if (!handedOver) closeFd(srv.clientFd);
    await sleep(5);
  }
  assert.deepEqual(srv.errors, [], 'the hostile server itself failed');
  assert.equal(openFdCount(), fds, 'fds back to the baseline');
  return thrown;
}

function check(sc: Scenario, thrown: unknown): void {
  if (sc.expect === 'ok') {
    if (thrown !== undefined) throw thrown;
    return;
  }
  if (!(thrown instanceof VfioError)) {
    const what = thrown instanceof MalformedError ? 'a MalformedError' : String(thrown);
    assert.fail(
      `expected VfioError ${sc.expect.code}, got ${what}${thrown instanceof Error ? `\n${thrown.stack}` : ''}`,
    );
  }
  assert.equal(thrown.code, sc.expect.code, thrown.message);
  if (typeof sc.expect.op === 'string') assert.equal(thrown.op, sc.expect.op, thrown.message);
  else assert.match(thrown.op, sc.expect.op);
  if (sc.expect.detail) assert.match(thrown.message, sc.expect.detail);
}

describe('vfio-user client against a hostile server', () => {
  for (const sc of ALL) {
    const outcome = sc.expect === 'ok' ? 'ok' : `${sc.expect.code} from ${sc.expect.op}`;
    it(`${sc.kind}: ${sc.name} -> ${outcome}; fds and memory back to baseline`, async () => {
      const before = memoryNow();
      await play(sc);
      const after = memoryNow();
      assert.ok(
        after.buffers - before.buffers < MEMORY_SLACK,
        `ArrayBuffers +${after.buffers - before.buffers}`,
      );
    });
  }

  it('every scenario class of the issue is in the table', () => {
    const classes = new Set(ALL.map((s) => s.kind));
    for (const k of [
      'framing',
      'error replies',
      'VERSION JSON',
      'device info',
      'region info',
      'region access',
      'IRQ info',
      'capability chains',
      'fds',
      'mmaps',
      'DMA requests',
      'silence',
      'slow drip',
      'floods',
      'mid-reply close',
    ] as const)
      assert.ok(classes.has(k), k);
  });

  it('the whole table again: heap and ArrayBuffers do not grow over a second pass', async () => {
    const before = memoryNow();
    for (const sc of ALL) await play(sc).catch(() => {});
    const after = memoryNow();
    const grew = after.heap + after.buffers - (before.heap + before.buffers);
    assert.ok(grew < 4 * MEMORY_SLACK, `grew ${grew} bytes over ${ALL.length} scenarios`);
  });
});
