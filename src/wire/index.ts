/** Pure encode/decode of VFIO structs, capability chains and the vfio-user protocol. */
export { type FieldValue, type ScalarField, Struct, type StructValue, struct } from './struct.js';
export * from './vfio.js';
export * as vfioUser from './vfio-user.js';
