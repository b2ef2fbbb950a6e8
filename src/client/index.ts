/** The vfio-user client: a VfioDeviceFile over a vfio-user server (src/client/client.ts). */
export { type ClientOptions, MAX_CHUNKS_IN_FLIGHT, VfioUserClient } from './client.js';
export {
  type CommandHandler,
  Connection,
  type ConnectionOptions,
  DEFAULT_REQUEST_TIMEOUT_MS,
  MAX_PENDING_REQUESTS,
  type Reply,
} from './connection.js';
export { createDmaMemory, createMessageOnlyDmaMemory, Eventfd, type OwnedDmaMemory } from './memory.js';
export {
  CLIENT_MAX_DATA_XFER_SIZE,
  CLIENT_MAX_MSG_FDS,
  type ClientNegotiated,
  type VersionOptions,
} from './negotiate.js';
export { MAX_REGION_INFO_REPLY } from './regions.js';
