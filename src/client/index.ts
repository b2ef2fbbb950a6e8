/** The vfio-user client: a VfioDeviceFile over a vfio-user server (src/client/client.ts). */
export {
  CLIENT_MAX_DATA_XFER_SIZE,
  CLIENT_MAX_MSG_FDS,
  type ClientNegotiated,
  type ClientOptions,
  MAX_REGION_INFO_REPLY,
  VfioUserClient,
} from './client.js';
export {
  type CommandHandler,
  Connection,
  type ConnectionOptions,
  DEFAULT_REQUEST_TIMEOUT_MS,
  MAX_PENDING_REQUESTS,
  type Reply,
} from './connection.js';
export { createDmaMemory, createMessageOnlyDmaMemory, Eventfd, type OwnedDmaMemory } from './memory.js';
