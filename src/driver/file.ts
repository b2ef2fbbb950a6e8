/**
 * The one device interface of vfio-ts: a VFIO device file as every backend presents it. It is the
 * kernel's own device fd, verb for verb — ioctl with an in/out buffer, pread/pwrite at region
 * offsets, mmap at region offsets — so one driver (src/driver/device.ts) runs unchanged on the
 * in-process core (local.ts), a vfio-user server (src/client/) and Linux VFIO (src/kernel/).
 * Everything is async because a vfio-user round trip is.
 */
import type { MappingPath, MemoryAttribute } from '../core/device.js';

export type Transport = 'in-process' | 'vfio-user' | 'kernel';

/** A mapping of device memory into this process. */
export interface Mapping {
  readonly bytes: Uint8Array;
  readonly length: number;
  readonly attribute: MemoryAttribute;
  /** The route that produced it: a device-fd path, or `sysfs-resource-wc` (kernel backend). */
  readonly via: MappingPath | 'sysfs-resource-wc';
  unmap(): void;
}

/** Memory this process owns and lets the device DMA into (memfd + mapping). */
export interface DmaMemory {
  /** memfd, passed to a vfio-user server; undefined for memory only reachable by DMA messages. */
  readonly fd: number | undefined;
  readonly size: number;
  readonly bytes: Uint8Array;
  /**
   * Where `bytes` sits in this process (native mmap's `.address`), for backends whose IOMMU maps
   * process virtual addresses (the kernel backend's VFIO_IOMMU_MAP_DMA). Optional: without it
   * the kernel backend maps `fd` once more itself.
   */
  readonly address?: bigint;
}

/**
 * The stream of a migration data transfer session: the kernel's data_fd (vfio.h
 * VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE), vfio-user's MIG_DATA_READ / MIG_DATA_WRITE.
 */
export interface MigrationData {
  /**
   * Up to `max` bytes of a saving session's stream; fewer when no more is there now (PRE_COPY's
   * temporary end of stream, the kernel's ENOMSG) or ever (STOP_COPY's end: none).
   */
  read(max: number): Promise<Uint8Array>;
  /** Bytes of the stream for a RESUMING device. */
  write(data: Uint8Array): Promise<void>;
  /** VFIO_MIG_GET_PRECOPY_INFO, where the backend has it (vfio-user has no such command). */
  precopyInfo?(): Promise<{ initialBytes: bigint; dirtyBytes: bigint }>;
}

export interface VfioDeviceFile {
  readonly transport: Transport;
  /** ioctl on the device fd: `arg` is read and written in place; returns the result (0 or an fd). */
  ioctl(request: number, arg: Uint8Array): Promise<number>;
  pread(offset: bigint, length: number): Promise<Uint8Array>;
  pwrite(offset: bigint, data: Uint8Array): Promise<number>;
  /** mmap(MAP_SHARED) of the device fd at `offset` (a region offset or an mmap cookie). */
  mmap(offset: bigint, length: number): Promise<Mapping>;
  /** mmap of a dma-buf fd returned by VFIO_DEVICE_FEATURE_DMA_BUF. */
  mmapDmaBuf(fd: number, offset: bigint, length: number): Promise<Mapping>;
  /** Closes an fd an ioctl returned (a dma-buf). */
  closeFd(fd: number): Promise<void>;
  /** Lets the device DMA to/from `memory` at `iova` (type1 MAP_DMA / vfio-user DMA_MAP). */
  dmaMap(iova: bigint, memory: DmaMemory, access?: { read: boolean; write: boolean }): Promise<void>;
  dmaUnmap(iova: bigint, size: bigint): Promise<void>;
  /**
   * A write-combining mapping by a route outside the device fd, where the backend has one
   * (the kernel backend: sysfs resourceN_wc). Absent otherwise.
   */
  mapWriteCombining?(region: number, offset: bigint, length: number): Promise<Mapping>;
  /**
   * Whether mapWriteCombining has a route for `region` (the kernel backend: the BAR's sysfs
   * resourceN_wc file exists), and where it can work or why there is none. Without it, a
   * backend with mapWriteCombining is taken to have a route for prefetchable BARs.
   */
  writeCombiningRoute?(region: number): { available: boolean; note: string };
  /**
   * The data transfer session a MIG_DEVICE_STATE SET opened, by the data_fd it reported (a
   * vfio-user client has one session, whatever the number). Absent: the backend cannot migrate.
   */
  migrationData?(dataFd: number): MigrationData;
  close(): Promise<void>;
}
