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
 * and doorbell write reaches it, except the MSI-X table, which the core owns. This file is the
 * one adapter between the controller's own interface (NvmeHost) and the device core's
 * DeviceBehaviour / DeviceContext.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import type { DeviceDescription } from '../core/description.js';
import {
  type DeviceBehaviour,
  type DeviceContext,
  type DeviceOptions,
  VfioPciDevice,
} from '../core/device.js';
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

export interface NvmeDescriptionOptions {
  /**
   * Bytes of Controller Memory Buffer in BAR2 (a power of two; Linux maps it for P2PDMA only
   * when it is a multiple of 2 MiB, nvme_map_cmb / memremap_compat_align). 0: none.
   */
  readonly cmbSize?: number | undefined;
}

export function nvmeDescription(options: NvmeDescriptionOptions = {}): DeviceDescription {
  const cmb = options.cmbSize ?? 0;
  return {
    name: 'nvme',
    identity: {
      vendorId: 0x1b36,
      deviceId: 0x0010,
      subsystemVendorId: 0x1af4,
      subsystemId: 0x1100,
      classCode: 0x010802,
      revision: 0x02,
      interruptPin: 1,
    },
    bars: [
      { size: 16 << 10, kind: 'mem64', backing: 'trapped' },
      undefined,
      cmb ? { size: cmb, kind: 'mem64', prefetchable: true, backing: 'memory' } : undefined,
      undefined,
    ],
    msix: {
      tableSize: NVME_MSIX_VECTORS,
      tableBar: 0,
      tableOffset: NVME_MSIX_TABLE,
      pbaBar: 0,
      pbaOffset: NVME_MSIX_PBA,
    },
    pcie: true,
    pm: true,
    resettable: true,
    capabilityLayout: [
      { cap: 'msix', offset: 0x40 },
      { cap: 'pcie', offset: 0x80, pcieType: 9, pcieStyle: 'qemu' },
      { cap: 'pm', offset: 0x60 },
    ],
  };
}

export interface NvmeBehaviourOptions {
  /** The namespace's storage (default: NVME_DEFAULT_MEMORY_NAMESPACE bytes of memory). */
  readonly namespace?: NamespaceBackend;
  /** Must match the description's (nvmeDescription's cmbSize). */
  readonly cmbSize?: number;
  readonly serial?: string;
  readonly blockSize?: 512 | 4096;
  /** Notable controller events (fatal status, unsupported commands). */
  readonly log?: (line: string) => void;
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
      if (dropped) log(`nvme: ${dropped} more log lines suppressed`);
      start = now;
      lines = dropped = 0;
    }
    if (lines++ < LOG_BURST) log(line);
    else dropped++;
  };
}

/** The adapter: DeviceBehaviour calls → NvmeController; NvmeHost calls → DeviceContext. */
export class NvmeBehaviour implements DeviceBehaviour {
  private ctl: NvmeController | undefined;

  constructor(private readonly options: NvmeBehaviourOptions = {}) {}

  /** The controller (after the core attached the behaviour). */
  get controller(): NvmeController {
    return this.ctl!;
  }

  attach(ctx: DeviceContext): void {
    const o = this.options;
    const host: NvmeHost = {
      dmaRead: (addr, dst) => ctx.dma.readInto(addr, dst),
      dmaWrite: (addr, data) => ctx.dma.write(addr, data),
      get interruptMode() {
        return ctx.irqType;
      },
      raise: (vector) => {
        ctx.raise(vector);
      },
      lower: () => ctx.lower(),
      cmb: () => (o.cmbSize ? ctx.barMemory(NVME_CMB_BAR) : undefined),
      now: () => performance.now(),
      ...(o.log ? { log: rateLimited(o.log) } : {}),
    };
    this.ctl = new NvmeController(host, o.namespace ?? new MemoryNamespace(NVME_DEFAULT_MEMORY_NAMESPACE), {
      vectors: NVME_MSIX_VECTORS,
      doorbellsEnd: NVME_MSIX_TABLE,
      ...(o.serial ? { serial: o.serial } : {}),
      ...(o.blockSize ? { blockSize: o.blockSize } : {}),
      ...(o.cmbSize ? { cmb: { bar: NVME_CMB_BAR, size: o.cmbSize } } : {}),
    });
  }

  barRead(bar: number, offset: number, size: 1 | 2 | 4): number {
    return bar === 0 ? this.controller.read(offset, size) : 0xffffffff;
  }

  barRead64(bar: number, offset: number): bigint {
    return bar === 0 ? this.controller.read64(offset) : 0xffff_ffff_ffff_ffffn;
  }

  barWrite(bar: number, offset: number, size: 1 | 2 | 4, value: number): void {
    if (bar === 0) this.controller.write(offset, size, value);
  }

  /** A qword write is two dword writes, low half first (§3.1: 64-bit registers, lo-hi). */
  barWrite64(bar: number, offset: number, value: bigint): void {
    if (bar !== 0) return;
    this.controller.write(offset, 4, Number(value & 0xffff_ffffn));
    this.controller.write(offset + 4, 4, Number(value >> 32n));
  }

  /** FLR / VFIO_DEVICE_RESET / a vfio-user client leaving. */
  reset(): void {
    this.ctl?.reset();
  }

  /** Flushes (fdatasync) and closes the namespace; never rejects (a failure is logged). */
  close(): Promise<void> {
    return (this.ctl?.close() ?? Promise.resolve()).catch((e: unknown) =>
      this.options.log?.(`nvme: closing the namespace: ${e}`),
    );
  }
}

export interface NvmeDiskOptions extends NvmeDescriptionOptions {
  /** The namespace's file (created sparse with `size` bytes when missing). */
  readonly disk: string;
  readonly size?: number | undefined;
  readonly log?: (line: string) => void;
}

/**
 * The device `vfio-ts serve --device nvme --disk PATH` serves: a controller on a file
 * namespace, its serial number derived from the file's real path (stable across restarts,
 * distinct between images, so a guest never takes two disks for paths to one subsystem).
 */
export async function openNvmeDevice(
  o: NvmeDiskOptions,
  device: DeviceOptions,
): Promise<{ device: VfioPciDevice; behaviour: NvmeBehaviour }> {
  const namespace = await FileNamespace.open(o.disk, { blockSize: 512, ...(o.size ? { size: o.size } : {}) });
  const serial = `vfiots-${createHash('sha256').update(realpathSync(o.disk)).digest('hex').slice(0, 12)}`;
  const cmbSize = o.cmbSize ?? 0;
  const behaviour = new NvmeBehaviour({ namespace, serial, cmbSize, ...(o.log ? { log: o.log } : {}) });
  return { device: new VfioPciDevice(nvmeDescription({ cmbSize }), behaviour, device), behaviour };
}
