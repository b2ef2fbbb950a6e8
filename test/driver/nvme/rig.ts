/**
 * The fake NVMe controller (fake-nvme.ts) reached the two ways a userspace driver meets a
 * vfio-ts device: in-process (LocalDeviceFile over the core) and over vfio-user (our server and
 * client on a socketpair, one event loop). The driver code is the same for both.
 */
import { VfioUserClient } from '../../../src/client/index.js';
import { VfioDevice } from '../../../src/driver/device.js';
import { socketPair } from '../../../src/native/index.js';
import { VfioUserServer } from '../../../src/server/index.js';
import { type FakeNvme, type FakeNvmeOptions, fakeNvmeDevice } from './fake-nvme.js';

export type RigTransport = 'in-process' | 'vfio-user';
export const RIG_TRANSPORTS: readonly RigTransport[] = ['in-process', 'vfio-user'];

export interface Rig {
  readonly fake: FakeNvme;
  readonly dev: VfioDevice;
  /** DMA ranges the device holds (0 once the driver has released its memory). */
  dmaCount(): number;
  /** vfio-user only: the server drops the connection (the peer process died). */
  disconnect?(): void;
  close(): Promise<void>;
}

export async function openRig(transport: RigTransport, options: FakeNvmeOptions = {}): Promise<Rig> {
  const { fake, core, dev } = fakeNvmeDevice(options);
  if (transport === 'in-process')
    return {
      fake,
      dev,
      dmaCount: () => core.dma.count,
      async close() {
        await dev.close();
      },
    };
  const server = new VfioUserServer(core);
  const [a, b] = socketPair();
  server.adopt(a);
  const remote = new VfioDevice(await VfioUserClient.fromFd(b));
  return {
    fake,
    dev: remote,
    dmaCount: () => core.dma.count,
    disconnect: () => server.stop(),
    async close() {
      await remote.close().catch(() => {});
      await server.idle();
      server.stop();
      core.close();
    },
  };
}
