/**
 * QEMU's NVMe controller's PCI function (`-device nvme`, hw/nvme/ctrl.c) as vfio-pci shows it in
 * a q35 guest (Linux 6.1 and 7.3, QEMU 7.2; test/kernel/differential.test.ts): identity
 * 1b36:0010, class 0x010802 (NVMe I/O controller), one 16 KiB 64-bit BAR0 holding the registers,
 * the MSI-X table (65 vectors at 0x2000) and the PBA (0x3000) — the "MSI-X table inside BAR0"
 * case — PCI Express endpoint with FLR (DEVICE_GET_INFO reports RESET), power management, INTx
 * pin A. With a Controller Memory Buffer it adds BAR2, 64-bit prefetchable memory, as QEMU's
 * nvme does with `cmb_size_mb`.
 *
 * Behind it runs a real controller (src/devices/nvme/): BAR0 is trapped, every register read
 * and doorbell write reaches it, except the MSI-X table, which the core owns. This file defines
 * the function with defineDevice and is the one adapter between the controller's own interface
 * (NvmeHost) and the device's context.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { type DeviceDefinition, type DeviceModel, defineDevice, type MemoryBarSpec } from '../core/define.js';
import { NvmeController } from './nvme/controller.js';
import type { NamespaceBackend, NvmeHost } from './nvme/host.js';
import { FileNamespace, MemoryNamespace } from './nvme/namespace.js';

export const NVME_MSIX_VECTORS = 65;
/** BAR0 offsets of the MSI-X table and PBA (after the doorbells, as in QEMU's nvme). */
export const NVME_MSIX_TABLE = 0x2000;
export const NVME_MSIX_PBA = 0x3000;
/** The BAR of the Controller Memory Buffer (CMBLOC.BIR), as in QEMU's nvme. */
export const NVME_CMB_BAR = 2;
/** Namespace of a controller built without one: memory, 16 MiB (the differential's image size). */
export const NVME_DEFAULT_MEMORY_NAMESPACE = 16 << 20;
/** QEMU's nvme function: Red Hat's 1b36:0010, class NVMe I/O controller. */
export const NVME_IDENTITY = {
  vendorId: 0x1b36,
  deviceId: 0x0010,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  classCode: 0x010802,
  revision: 0x02,
} as const;

export interface NvmeOptions {
  /**
   * Bytes of Controller Memory Buffer in BAR2 (a power of two; Linux maps it for P2PDMA only
   * when it is a multiple of 2 MiB, nvme_map_cmb / memremap_compat_align). 0: none.
   */
  readonly cmbSize?: number | undefined;
  /**
   * The namespace's storage. Default: NVME_DEFAULT_MEMORY_NAMESPACE bytes of memory, a new one
   * per device built; a namespace given here belongs to the one device built with it.
   */
  readonly namespace?: NamespaceBackend;
  readonly serial?: string;
  readonly blockSize?: 512 | 4096;
  /** Identify Controller MDTS, 1..MAX_MDTS (default MDTS = 7: 512 KiB per command). */
  readonly mdts?: number | undefined;
}

/** What an nvme instance exposes: its controller (stats, options). */
export interface NvmeModel extends DeviceModel {
  readonly controller: NvmeController;
}

/** Controller log lines per LOG_WINDOW_MS: a guest that rings bad doorbells in a loop cannot flood the log. */
export const LOG_BURST = 20;
export const LOG_WINDOW_MS = 10_000;

function rateLimited(log: (line: string) => void): (line: string) => void {
  let start = Number.NEGATIVE_INFINITY;
  let lines = 0;
  let dropped = 0;
  return (line) => {
    const now = performance.now();
    if (now - start >= LOG_WINDOW_MS) {
      if (dropped) log(`${dropped} more log lines suppressed`);
      start = now;
      lines = dropped = 0;
    }
    if (lines++ < LOG_BURST) log(line);
    else dropped++;
  };
}

/** The NVMe function and its controller; the context's log gets the controller's lines. */
export function nvmeDevice(o: NvmeOptions = {}): DeviceDefinition<NvmeModel> {
  const cmbSize = o.cmbSize ?? 0;
  const cmb: MemoryBarSpec[] = cmbSize
    ? [
        {
          index: NVME_CMB_BAR,
          kind: 'mem64',
          size: cmbSize,
          prefetchable: true,
          backing: 'memory',
          reset: 'zero',
        },
      ]
    : [];
  return defineDevice({
    name: 'nvme',
    identity: NVME_IDENTITY,
    bars: [{ index: 0, kind: 'mem64', size: 16 << 10, backing: 'registers' }, ...cmb],
    msix: {
      vectors: NVME_MSIX_VECTORS,
      table: { bar: 0, offset: NVME_MSIX_TABLE },
      pba: { bar: 0, offset: NVME_MSIX_PBA },
    },
    intx: true,
    pcie: true,
    pm: true,
    resettable: true,
    capabilityLayout: [
      { cap: 'msix', offset: 0x40 },
      { cap: 'pcie', offset: 0x80, pcieType: 9, pcieStyle: 'qemu' },
      { cap: 'pm', offset: 0x60 },
    ],
    create(dev) {
      const cmbBytes = cmbSize ? dev.memory(NVME_CMB_BAR) : undefined;
      // The controller's lines say "nvme: ..." themselves; the context's log names the device.
      const log = rateLimited((line) => dev.log(line.replace(/^nvme: /, '')));
      const host: NvmeHost = {
        dmaRead: (addr, dst) => dev.dma.readInto(addr, dst),
        dmaWrite: (addr, data) => dev.dma.write(addr, data),
        get interruptMode() {
          return dev.irq.type;
        },
        raise: (vector) => {
          dev.irq.raise(vector);
        },
        lower: () => dev.irq.lower(),
        cmb: () => cmbBytes,
        now: () => performance.now(),
        log,
      };
      const controller = new NvmeController(
        host,
        o.namespace ?? new MemoryNamespace(NVME_DEFAULT_MEMORY_NAMESPACE),
        {
          vectors: NVME_MSIX_VECTORS,
          doorbellsEnd: NVME_MSIX_TABLE,
          ...(o.serial ? { serial: o.serial } : {}),
          ...(o.blockSize ? { blockSize: o.blockSize } : {}),
          ...(o.mdts !== undefined ? { mdts: o.mdts } : {}),
          ...(cmbSize ? { cmb: { bar: NVME_CMB_BAR, size: cmbSize } } : {}),
        },
      );
      return {
        controller,
        bars: {
          0: {
            read: (offset, size) =>
              size === 8 ? controller.read64(offset) : BigInt(controller.read(offset, size)),
            write: (offset, size, value) => {
              if (size !== 8) return controller.write(offset, size, Number(value));
              // A qword write is two dword writes, low half first (§3.1: 64-bit registers, lo-hi).
              controller.write(offset, 4, Number(value & 0xffff_ffffn));
              controller.write(offset + 4, 4, Number(value >> 32n));
            },
          },
        },
        /** FLR / VFIO_DEVICE_RESET / a vfio-user client leaving. */
        reset: () => controller.reset(),
        /** Flushes and closes the namespace; the device's settled() waits for it. */
        close: () => controller.close(),
      };
    },
  });
}

export interface NvmeDiskOptions {
  /** The namespace's file (created sparse with `size` bytes when missing). */
  readonly disk: string;
  readonly size?: number | undefined;
  readonly cmbSize?: number | undefined;
  readonly mdts?: number | undefined;
}

/**
 * The device `vfio-ts serve --device nvme --disk PATH` serves: a controller on a file
 * namespace, its serial number derived from the file's real path (stable across restarts,
 * distinct between images, so a guest never takes two disks for paths to one subsystem).
 */
export async function nvmeDiskDevice(o: NvmeDiskOptions): Promise<DeviceDefinition<NvmeModel>> {
  const namespace = await FileNamespace.open(o.disk, { blockSize: 512, ...(o.size ? { size: o.size } : {}) });
  const serial = `vfiots-${createHash('sha256').update(realpathSync(o.disk)).digest('hex').slice(0, 12)}`;
  return nvmeDevice({ namespace, serial, cmbSize: o.cmbSize, mdts: o.mdts });
}
