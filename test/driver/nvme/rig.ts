/**
 * The fake NVMe controller (fake-nvme.ts) in-process (LocalDeviceFile over the core), for what
 * our NVMe device cannot show (fake.test.ts, errors.test.ts). Our device's rig: device-rig.ts.
 */
import type { VfioDevice } from '../../../src/driver/device.js';
import { type FakeNvme, type FakeNvmeOptions, fakeNvmeDevice } from './fake-nvme.js';

export interface Rig {
  readonly fake: FakeNvme;
  readonly dev: VfioDevice;
  /** DMA ranges the device holds (0 once the driver has released its memory). */
  dmaCount(): number;
  close(): Promise<void>;
}

export async function openRig(options: FakeNvmeOptions = {}): Promise<Rig> {
  const { fake, core, dev } = fakeNvmeDevice(options);
  return {
    fake,
    dev,
    dmaCount: () => core.dma.count,
    async close() {
      await dev.close();
    },
  };
}
