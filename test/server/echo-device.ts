/**
 * A device module for serveDevice's tests: its default export a definition, as a `vfio-ts serve
 * --module` file has it. A register that reads back what was written, 0x1234 at offset 4, and
 * at offset 8 whether it was built in the main thread (1) or a worker (0).
 */
import { isMainThread } from 'node:worker_threads';
import { defineDevice } from '../../src/core/define.js';

export default defineDevice({
  name: 'echo',
  identity: { vendorId: 0x1b36, deviceId: 0x7e57, classCode: 0xff0000 },
  bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
  state: () => ({ value: 0n }),
  create: ({ state }) => ({
    bars: {
      0: {
        read: (offset) =>
          offset === 0 ? state.value : offset === 4 ? 0x1234n : offset === 8 ? BigInt(isMainThread) : 0n,
        write: (offset, _size, v) => {
          if (offset === 0) state.value = v;
        },
      },
    },
  }),
});
