/**
 * A userspace NVMe driver on VfioDevice (docs/nvme-driver.md). Reading order: controller.ts
 * (bring-up, queues, shutdown), io.ts (Read/Write/Flush), queue.ts (rings, completions,
 * timeouts), regs.ts and barrier.ts (registers, doorbells, the WC fence), cmb.ts (the CMB).
 */
export { type Fence, storeFence } from './barrier.js';
export { type CmbInfo, MAX_CMB_MAP_BYTES, type MappedCmb } from './cmb.js';
export {
  ADMIN_QUEUE_DEPTH,
  DEFAULT_IO_QUEUE_DEPTH,
  MAX_IO_QUEUE_DEPTH,
  NvmeController,
  type NvmeOptions,
} from './controller.js';
export { type DmaBuffer, PAGE } from './dma.js';
export { type ControllerIdentity, type NamespaceIdentity, versionText } from './identify.js';
export { IoQueuePair, MAX_BLOCKS_PER_COMMAND } from './io.js';
export { NvmeStatusError } from './queue.js';
export type { RegisterRoute } from './regs.js';
