/**
 * The worker side of ThreadedServer (src/server/thread.ts): makes the device from its module,
 * runs a VfioUserServer with a thread loop (src/server/loop.ts) and relays what happens to the
 * parent. Requests come as messages and are answered in order; everything the server logs, and
 * every client that comes and goes, goes to the parent as an event.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Errno } from '../abi/errno.js';
import { VfioError } from '../errors.js';
import type { CloseReason } from './channel.js';
import { loadDevice, type ServableDevice } from './device-module.js';
import { VfioUserServer } from './server.js';
import type { ThreadRequest, ThreadWorkerData, WorkerEvent } from './thread.js';

/** An error as it crosses to the parent: errno, op and message of a VfioError, else EINVAL. */
export function wireError(e: unknown): { errno: number; op: string; message: string } {
  if (e instanceof VfioError) return { errno: e.errno, op: e.op, message: e.message };
  return { errno: Errno.EINVAL, op: 'worker', message: e instanceof Error ? e.message : String(e) };
}

function closeSummary(reason: CloseReason): { kind: CloseReason['kind']; error?: string } {
  if (reason.kind === 'framing') return { kind: reason.kind, error: reason.error.message };
  if (reason.kind === 'error')
    return {
      kind: reason.kind,
      error: reason.error instanceof Error ? reason.error.message : String(reason.error),
    };
  return { kind: reason.kind };
}

async function main(data: ThreadWorkerData): Promise<void> {
  const port = parentPort!;
  const post = (ev: WorkerEvent) => port.postMessage(ev);
  const log = (line: string) => post({ ev: 'log', line });
  let device: ServableDevice;
  let name: string;
  try {
    ({ device, name } = await loadDevice(data.device, data.deviceOptions, { log }));
  } catch (e) {
    post({ ev: 'failed', error: wireError(e) });
    return;
  }
  const stopFlag = new Int32Array(data.stop);
  const server = new VfioUserServer(device, {
    ...data.options,
    loop: data.loop,
    stopFlag,
    log,
    events: {
      connected: (id, peer) => post({ ev: 'connected', id, ...(peer ? { peer } : {}) }),
      refused: (id) => post({ ev: 'refused', id }),
      disconnected: (id, reason, messages) =>
        post({ ev: 'closed', id, reason: closeSummary(reason), messages }),
    },
  });
  // Stop: the client goes, then the device closes, and only once its work has settled (an
  // nvme namespace flushed by fdatasync and closed) is the stop answered and the port closed,
  // so the worker can end.
  const stop = async (seq: number) => {
    try {
      server.stop();
      device.close();
      await device.settled?.();
      post({ ev: 'done', seq });
    } catch (e) {
      post({ ev: 'done', seq, error: wireError(e) });
    }
    port.close();
  };
  port.on('message', (m: ThreadRequest) => {
    if (m.op === 'stop') {
      void stop(m.seq);
      return;
    }
    // Said before anything can close the fd: an fd the parent never heard was taken is still
    // its own to close should this thread die (ThreadedServer's exit handler).
    post({ ev: 'taken', seq: m.seq });
    try {
      server.adopt(m.fd);
      post({ ev: 'done', seq: m.seq });
    } catch (e) {
      post({ ev: 'done', seq: m.seq, error: wireError(e) });
    }
  });
  post({ ev: 'ready', name });
}

if (!isMainThread && (workerData as ThreadWorkerData | undefined)?.vfioTsServer === true) {
  void main(workerData as ThreadWorkerData);
}
