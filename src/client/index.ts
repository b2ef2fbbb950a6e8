/** The vfio-user client: a VfioDeviceFile over a vfio-user server (src/client/client.ts). */
export { type ClientOptions, MAX_CHUNKS_IN_FLIGHT, VfioUserClient } from './client.js';
export {
  type CommandHandler,
  Connection,
  type ConnectionOptions,
  DEFAULT_REQUEST_TIMEOUT_MS,
  MAX_PENDING_REQUESTS,
  type Reply,
  type RequestOptions,
} from './connection.js';
export {
  CLIENT_MAX_DATA_XFER_SIZE,
  CLIENT_MAX_IRQ_COUNT,
  CLIENT_MAX_IRQS,
  CLIENT_MAX_MSG_FDS,
  CLIENT_MAX_REGIONS,
  CLIENT_REQUEST_TIMEOUT_MS,
  clientMessageSize,
  DEFAULT_UNSEALED_FD_POLICY,
  MAX_CLIENT_DATA_XFER_SIZE,
  MAX_FEATURE_REPLY,
  MAX_FIXED_REPLY,
  MAX_REGION_INFO_REPLY,
  MAX_VERSION_REPLY,
  type UnsealedFdPolicy,
} from './limits.js';
export { createDmaMemory, createMessageOnlyDmaMemory, Eventfd, type OwnedDmaMemory } from './memory.js';
export type { ClientNegotiated, VersionOptions } from './negotiate.js';
