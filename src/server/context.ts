/**
 * What a command handler sees of its client, and what it gives back. Handlers
 * (src/server/commands/) depend on this file and on the device port only; the session
 * (src/server/session.ts) implements ClientContext and runs the table (src/server/dispatch.ts),
 * so nothing imports the session back.
 */
import type { Capabilities, DmaLayout, Frame } from '../wire/vfio-user.js';
import type { ClientCookies } from './cookies.js';
import type { DevicePort } from './device-port.js';
import type { ServerLimits } from './limits.js';

/** What negotiation settled. */
export interface Negotiated {
  readonly major: number;
  readonly minor: number;
  /** The client's own capabilities (what it can receive). */
  readonly client: Capabilities;
  /** min(client, ours) */
  readonly maxDataXferSize: number;
  readonly maxMsgFds: number;
  readonly writeMultiple: boolean;
  readonly dmaLayout: DmaLayout;
}

/** One client as its handlers see it. */
export interface ClientContext {
  readonly device: DevicePort;
  readonly limits: ServerLimits;
  readonly options: {
    /** DMA_READ/DMA_WRITE layout: 'auto' = the spec's, which QEMU 11.1 speaks too. */
    readonly dmaLayout?: DmaLayout | 'auto';
  };
  /** Undefined until VERSION; VERSION sets it. */
  negotiated: Negotiated | undefined;
  /** mmap cookies this client holds (released when it goes). */
  readonly cookies: ClientCookies;
  /** DMA_READ of client memory (for memory mapped without an fd). */
  dmaRead(iova: bigint, length: number): Promise<Uint8Array>;
  /** DMA_WRITE to client memory. */
  dmaWrite(iova: bigint, data: Uint8Array): Promise<void>;
}

/** A success reply: payload chunks (gathered by sendmsg), fds to attach, and a hook once sent. */
export interface Reply {
  readonly chunks: readonly Uint8Array[];
  readonly fds: readonly number[];
  readonly after?: () => void;
}

export interface HandlerEntry {
  /** Smallest payload (bytes after the header) the command can have. */
  readonly minPayload: number;
  /** Largest payload accepted; more is EINVAL (libvfio-user is_valid_header: too large). */
  maxPayload(s: ClientContext): number;
  /** Most fds the message may carry; more is EINVAL (all are closed). */
  maxFds(s: ClientContext): number;
  /**
   * The reply, or a promise of it for a command that waits (MIG_DEVICE_STATE SET waits for the
   * device to quiesce); such a handler takes no fds (they are closed when it returns).
   */
  handle(s: ClientContext, f: Frame): Reply | Promise<Reply>;
}

/** The reply without payload or fds. */
export const EMPTY: Reply = { chunks: [], fds: [] };

/** The one payload chunk `bytes`, no fds. */
export const reply = (bytes: Uint8Array): Reply => ({ chunks: [bytes], fds: [] });

/** The transfer limit in force: the negotiated max_data_xfer_size, or the server's before VERSION. */
export const xferMax = (s: ClientContext): number =>
  s.negotiated?.maxDataXferSize ?? s.limits.maxDataXferSize;
