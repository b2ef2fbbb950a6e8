export * from './errno.js';
export * from './vfio.js';
export * as vfioUser from './vfio-user.js';
