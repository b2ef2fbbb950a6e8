/** Pure encode/decode of VFIO structs, capability chains and the vfio-user protocol. */
export * from './vfio.js';
export * as vfioUser from './vfio-user.js';
