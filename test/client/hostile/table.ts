/**
 * The shape of a hostile-server scenario, and the helpers the tables share. A scenario names its
 * class (the list), how the server misbehaves (`answer`, or what `run` makes it send),
 * what the client is asked to do (`run`), and the exact error that must come out of it: class
 * VfioError, errno, and the command or call it names.
 */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { VfioUserFlags, vfioUserCommandName } from '../../../src/abi/vfio-user.js';
import type { ClientOptions, VfioUserClient } from '../../../src/client/index.js';
import type { VfioDevice } from '../../../src/driver/device.js';
import { VfioError } from '../../../src/errors.js';
import type { CapabilitiesInput } from '../../../src/wire/vfio-user.js';
import type { Answer, HostileServer, Seen } from './server.js';

export type ScenarioClass =
  | 'framing'
  | 'error replies'
  | 'VERSION JSON'
  | 'device info'
  | 'region info'
  | 'region access'
  | 'IRQ info'
  | 'capability chains'
  | 'fds'
  | 'mmaps'
  | 'DMA requests'
  | 'silence'
  | 'slow drip'
  | 'floods'
  | 'mid-reply close';

export interface Ctx {
  readonly srv: HostileServer;
  /** Connects and negotiates with the scenario's options (the runner does it unless told not to). */
  connect(): Promise<VfioUserClient>;
  /** The connected client (after `connect`). */
  readonly client: VfioUserClient;
  /** A VfioDevice over it. */
  readonly dev: VfioDevice;
}

export type Expected =
  | 'ok'
  | { readonly code: string; readonly op: string | RegExp; readonly detail?: RegExp };

export interface Scenario {
  readonly name: string;
  readonly kind: ScenarioClass;
  readonly options?: ClientOptions;
  /** The capabilities the server offers in VERSION. */
  readonly caps?: CapabilitiesInput;
  /** False: `run` connects itself (the scenario is about VERSION). */
  readonly connect?: boolean;
  readonly answer?: Answer;
  readonly run: (x: Ctx) => Promise<unknown>;
  readonly expect: Expected;
  /** More assertions once `run` has settled, the client still open. */
  readonly after?: (x: Ctx) => void | Promise<void>;
}

/** An answer for one command only; everything else the honest device answers. */
export function on(command: number, fn: (s: Seen, srv: HostileServer) => unknown): Answer {
  return async (s, srv) => {
    if (s.command !== command) return false;
    await fn(s, srv);
    return true;
  };
}

/** The server's reply to its own command as an error the table can expect (error replies). */
export function replyOutcome(r: Seen): Seen {
  if (r.flags & VfioUserFlags.ERROR)
    throw new VfioError(r.error, vfioUserCommandName(r.command), 'the client answered with an error');
  return r;
}

export const u32 = (...v: number[]): Uint8Array => {
  const b = new Uint8Array(4 * v.length);
  const dv = new DataView(b.buffer);
  for (const [i, x] of v.entries()) dv.setUint32(4 * i, x >>> 0, true);
  return b;
};

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds, up to `ms` (the client acts on its own event-loop turns). */
export async function until(cond: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(2);
  }
  return true;
}

setFlagsFromString('--expose-gc');
const gcNow = runInNewContext('gc') as () => void;

/** Heap and ArrayBuffer bytes after a full collection (mappings and payloads are ArrayBuffers). */
export function memoryNow(): { heap: number; buffers: number } {
  gcNow();
  gcNow();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, buffers: m.arrayBuffers };
}
