/**
 * The nvme device as ThreadedServer makes it in its worker for the guest tests (a DeviceModule:
 * guest.ts's serveNvmeInWorker): a controller on a file namespace, as `vfio-ts serve --device
 * nvme --disk` serves it, whose close() first logs the controller's counters (NVME_COUNTERS
 * line), since the test cannot reach the controller across the thread.
 */
import type { VfioPciDevice } from '../../../src/core/device.js';
import type { NvmeStats } from '../../../src/devices/nvme/controller.js';
import type { IoStats } from '../../../src/devices/nvme/io.js';
import { nvmeDiskDevice } from '../../../src/devices/nvme.js';
import { nativeEnvironment } from '../../../src/runtime.js';
import type { DeviceModuleContext } from '../../../src/server/index.js';

export const NVME_COUNTERS = 'nvme-counters ';

/** What the guest tests check of the controller once the guest is done. */
export interface NvmeCounters {
  readonly stats: NvmeStats;
  readonly ioStats: IoStats;
  /** I/O SQ 1 still exists (the guest's driver deletes its queues at shutdown). */
  readonly sq1: boolean;
  readonly serial: string;
}

export interface NvmeDiskArg {
  readonly disk: string;
  readonly size: number;
  readonly cmbSize: number;
}

export async function nvmeWithCounters(
  arg: NvmeDiskArg,
  context: DeviceModuleContext,
): Promise<VfioPciDevice> {
  const log = context.log ?? (() => {});
  const definition = await nvmeDiskDevice({ disk: arg.disk, size: arg.size, cmbSize: arg.cmbSize });
  const { device, model } = definition.instantiate({ env: nativeEnvironment(), log });
  const close = device.close.bind(device);
  return Object.assign(device, {
    close(): void {
      const ctl = model.controller;
      const counters: NvmeCounters = {
        stats: { ...ctl.stats },
        ioStats: { ...ctl.ioStats },
        sq1: ctl.sqs[1] !== undefined,
        serial: ctl.options.serial ?? '',
      };
      log(`${NVME_COUNTERS}${JSON.stringify(counters)}`);
      close();
    },
  });
}
