/** The QEMU test harness in one import: `import * as harness from '../harness/index.js'`. */
export * from './cpio.js';
export * from './initramfs.js';
export * from './provisioned.js';
export * from './qemu.js';
export * from './qtest.js';
