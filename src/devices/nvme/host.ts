/**
 * What the NVMe controller needs from the outside, and nothing more: host memory at an address
 * (DMA), interrupts, the bytes of its Controller Memory Buffer, a clock, a log. The adapter in
 * src/devices/nvme.ts implements it over the device core's DeviceContext; tests implement it
 * over a plain array (test/devices/nvme/fake-host.ts).
 */

export interface NvmeHost {
  /**
   * Fills `dst` from host memory at `addr`. Rejects (with any error) when the range is not
   * mapped for DMA: the controller turns that into Data Transfer Error or CSTS.CFS.
   */
  dmaRead(addr: bigint, dst: Uint8Array): Promise<void>;
  /** Writes `data` to host memory at `addr`; rejects like dmaRead. */
  dmaWrite(addr: bigint, data: Uint8Array): Promise<void>;
  /** The interrupt mechanism the host enabled (PCI config space and VFIO SET_IRQS say). */
  readonly interruptMode: 'none' | 'intx' | 'msi' | 'msix';
  /** Sends MSI-X vector `vector`, or asserts the INTx line (vector 0). */
  raise(vector: number): void;
  /** Deasserts the INTx line (a level: it stays asserted until lowered). */
  lower(): void;
  /** The Controller Memory Buffer's bytes (BAR memory the host can map), when there is one. */
  cmb(): Uint8Array | undefined;
  /** Milliseconds on a monotonic clock. */
  now(): number;
  /** Notable events (CFS, unsupported commands); optional. */
  log?(line: string): void;
}

/**
 * The storage behind a namespace: byte offsets, whole logical blocks. Errors reject the promise;
 * the controller reports them as media errors, never as crashes.
 */
export interface NamespaceBackend {
  /** Bytes; a multiple of the block size. */
  readonly size: number;
  read(offset: number, dst: Uint8Array): Promise<void>;
  write(offset: number, src: Uint8Array): Promise<void>;
  /** Makes every completed write durable (fdatasync for a file). */
  flush(): Promise<void>;
  /** The range reads back as zeroes afterwards; its storage may be released (a hole). */
  deallocate(offset: number, length: number): Promise<void>;
  close(): Promise<void>;
}
