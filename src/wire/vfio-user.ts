/**
 * The vfio-user wire format: pure encode/decode, no sockets, no fds, no device behaviour.
 * Layouts and constants live in src/abi/vfio-user.ts; docs/vfio-user-wire.md describes the format
 * as implemented and where real peers differ from the spec.
 */

export { fromHex, toHex } from './vfio-user/bytes.js';
export * from './vfio-user/device.js';
export * from './vfio-user/dma.js';
export * from './vfio-user/feature.js';
export * from './vfio-user/framer.js';
export * from './vfio-user/header.js';
export * from './vfio-user/irq.js';
export * from './vfio-user/json.js';
export * from './vfio-user/message.js';
export * from './vfio-user/region.js';
export * from './vfio-user/version.js';
