/**
 * The vfio-user server: serves one device (a DevicePort, as VfioPciDevice is) over a UNIX socket
 * (docs/vfio-user-server.md).
 */

export {
  type ChannelLimits,
  type CloseReason,
  MAX_QUEUED_BYTES,
  RECV_BUFFER_BYTES,
  SocketChannel,
} from './channel.js';
export type { ClientContext, HandlerEntry, Negotiated, Reply } from './context.js';
export { ClientCookies } from './cookies.js';
export {
  type DeviceModule,
  type DeviceModuleContext,
  isDeviceModule,
  loadDevice,
  type PlainDeviceOptions,
  type ServableDevice,
} from './device-module.js';
export type { DevicePort, PortDma, PortMappingSource, PortRegion } from './device-port.js';
export {
  HANDLERS,
  MAX_FEATURE_PAYLOAD,
  MAX_FIXED_PAYLOAD,
  MAX_SET_IRQS_PAYLOAD,
  MAX_VERSION_PAYLOAD,
  MAX_WRITE_MULTI,
} from './dispatch.js';
export {
  DEFAULT_LIMITS,
  messageSizeFor,
  resolveLimits,
  SERVER_MAX_DATA_XFER_SIZE,
  SERVER_MAX_DMA_MAPS,
  SERVER_MAX_MSG_FDS,
  SERVER_MAX_PENDING_BYTES,
  type ServerLimits,
} from './limits.js';
export { DEFAULT_POLL_IDLE_MS, LOOP_TICK_MS, type LoopMode, TURN_INTERVAL_MS } from './loop.js';
export {
  CLAIM_CONNECT_TIMEOUT_MS,
  claimSocketPath,
  type ServeDeviceOptions,
  type ServedDevice,
  serveDevice,
} from './serve-device.js';
export { type ClientInfo, type ServerEvents, type ServerOptions, VfioUserServer } from './server.js';
export { DMA_REQUEST_TIMEOUT_MS, Session, type SessionOptions } from './session.js';
export {
  type CloseSummary,
  STOP_GRACE_MS,
  ThreadedServer,
  type ThreadedServerOptions,
  type ThreadLoopMode,
} from './thread.js';
