/**
 * The in-process backend: a VfioDeviceFile over a VfioPciDevice in this process. The model's
 * answers are synchronous; this wraps them in the async interface every backend shares.
 */
import type { VfioPciDevice } from '../core/device.js';
import type { DmaMemory, Mapping, MigrationData, VfioDeviceFile } from './file.js';

export class LocalDeviceFile implements VfioDeviceFile {
  readonly transport = 'in-process' as const;
  constructor(readonly device: VfioPciDevice) {}

  /** The device fd's ioctl; a MIG_DEVICE_STATE SET waits for the device, as the kernel's does. */
  async ioctl(request: number, arg: Uint8Array): Promise<number> {
    return this.device.ioctlAsync(request, arg);
  }
  migrationData(dataFd: number): MigrationData {
    const f = this.device.migrationData(dataFd);
    return {
      read: async (max) => f.read(max),
      write: async (data) => f.write(data),
      precopyInfo: async () => f.precopyInfo(),
    };
  }
  async pread(offset: bigint, length: number): Promise<Uint8Array> {
    return this.device.pread(offset, length);
  }
  async pwrite(offset: bigint, data: Uint8Array): Promise<number> {
    return this.device.pwrite(offset, data);
  }
  async mmap(offset: bigint, length: number): Promise<Mapping> {
    return this.device.mmap(offset, length);
  }
  async mmapDmaBuf(fd: number, offset: bigint, length: number): Promise<Mapping> {
    return this.device.mmapDmaBuf(fd, offset, length);
  }
  async closeFd(fd: number): Promise<void> {
    this.device.closeDmaBuf(fd);
  }
  async dmaMap(iova: bigint, memory: DmaMemory, access = { read: true, write: true }): Promise<void> {
    this.device.dma.map(iova, BigInt(memory.size), {
      bytes: memory.bytes,
      readable: access.read,
      writable: access.write,
    });
  }
  async dmaUnmap(iova: bigint, size: bigint): Promise<void> {
    this.device.dma.unmap(iova, size);
  }
  async close(): Promise<void> {
    await this.device.close();
  }
}
