/** The vfio-user server: serve one VfioPciDevice over a UNIX socket (docs/vfio-user-server.md). */

export {
  type ChannelLimits,
  type CloseReason,
  MAX_QUEUED_BYTES,
  RECV_BUFFER_BYTES,
  SocketChannel,
} from './channel.js';
export {
  HANDLERS,
  type HandlerEntry,
  type Reply,
  SERVER_MAX_DATA_XFER_SIZE,
  SERVER_MAX_MSG_FDS,
} from './handlers.js';
export {
  DEFAULT_LIMITS,
  messageSizeFor,
  resolveLimits,
  SERVER_MAX_DMA_MAPS,
  SERVER_MAX_PENDING_BYTES,
  type ServerLimits,
} from './limits.js';
export { type ClientInfo, type ServerOptions, VfioUserServer } from './server.js';
export { DMA_REQUEST_TIMEOUT_MS, type Negotiated, Session, type SessionOptions } from './session.js';
