export * from './errno.js';
export * from './vfio.js';
