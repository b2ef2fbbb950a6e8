/**
 * Namespace storage: a file (the served disk image) or memory (tests, the differential model).
 *
 * Durability of the file backend: a completed write is in the host kernel's page cache, so it
 * survives the server being killed (the kernel still holds it) but not a host crash; flush()
 * is fdatasync(2), after which it survives both. The controller reports a volatile write cache
 * (Identify Controller VWC) and turns Flush, FUA writes and writes with the cache disabled into
 * flush() calls (controller docs: docs/nvme-device.md "Durability").
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { Errno } from '../../abi/errno.js';
import { fail, VfioError } from '../../errors.js';
import { punchHole } from '../../native/index.js';
import type { NamespaceBackend } from './host.js';

/** Zeroes written per write(2) where a hole cannot be punched. */
const ZERO_CHUNK = 1 << 20;
let zeroes: Uint8Array | undefined;

/** Writes zeroes over [offset, offset + length), a bounded chunk at a time (allocated, not a hole). */
export async function writeZeroes(ns: NamespaceBackend, offset: number, length: number): Promise<void> {
  zeroes ??= new Uint8Array(ZERO_CHUNK);
  for (let done = 0; done < length; ) {
    const n = Math.min(ZERO_CHUNK, length - done);
    await ns.write(offset + done, zeroes.subarray(0, n));
    done += n;
  }
}

/** Namespace in memory: contents are lost with the process (tests, fuzzing, the model). */
export class MemoryNamespace implements NamespaceBackend {
  readonly bytes: Uint8Array;
  constructor(readonly size: number) {
    this.bytes = new Uint8Array(size);
  }
  async read(offset: number, dst: Uint8Array): Promise<void> {
    dst.set(this.bytes.subarray(offset, offset + dst.length));
  }
  async write(offset: number, src: Uint8Array): Promise<void> {
    this.bytes.set(src, offset);
  }
  async flush(): Promise<void> {}
  async deallocate(offset: number, length: number): Promise<void> {
    this.bytes.fill(0, offset, offset + length);
  }
  async close(): Promise<void> {}
}

export interface FileNamespaceOptions {
  /** Size in bytes when the file is created (it must not exist, or must have this size). */
  readonly size?: number;
  /** Logical block size the size must be a multiple of. */
  readonly blockSize: number;
}

/** Namespace in a file, read and written with pread/pwrite on libuv's thread pool. */
export class FileNamespace implements NamespaceBackend {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly path: string,
  ) {}

  /**
   * Opens `path` read-write; creates it sparse (ftruncate, no blocks written) with `size` bytes
   * when it does not exist. An existing file keeps its size: a different `size` is EINVAL, as
   * is a size that is 0 or not a whole number of blocks.
   */
  static async open(path: string, options: FileNamespaceOptions): Promise<FileNamespace> {
    const op = 'namespace file';
    const want = options.size;
    if (want !== undefined && (!Number.isSafeInteger(want) || want <= 0 || want % options.blockSize))
      fail(Errno.EINVAL, op, `size ${want} is not a positive multiple of ${options.blockSize}`);
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDWR);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw toVfio(e, op, path);
      if (want === undefined) fail(Errno.ENOENT, op, `${path} does not exist and no size was given`);
      try {
        fh = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
        await fh.truncate(want);
      } catch (e2) {
        throw toVfio(e2, op, path);
      }
    }
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) fail(Errno.EINVAL, op, `${path} is not a file`);
      const size = st.size;
      if (want !== undefined && size !== want)
        fail(Errno.EINVAL, op, `${path} has ${size} bytes, not ${want}`);
      if (size <= 0 || size % options.blockSize)
        fail(Errno.EINVAL, op, `${path} has ${size} bytes, not a positive multiple of ${options.blockSize}`);
      return new FileNamespace(fh, size, path);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    for (let done = 0; done < dst.length; ) {
      const { bytesRead } = await this.fh.read(dst, done, dst.length - done, offset + done);
      if (bytesRead === 0) {
        // The file was shortened behind our back: what is not there reads as zeroes.
        dst.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async write(offset: number, src: Uint8Array): Promise<void> {
    for (let done = 0; done < src.length; ) {
      const { bytesWritten } = await this.fh.write(src, done, src.length - done, offset + done);
      done += bytesWritten;
    }
  }

  flush(): Promise<void> {
    return this.fh.datasync();
  }

  /** A hole (fallocate PUNCH_HOLE); zeroes written where the filesystem cannot punch. */
  async deallocate(offset: number, length: number): Promise<void> {
    try {
      punchHole(this.fh.fd, BigInt(offset), BigInt(length));
      return;
    } catch (e) {
      if (!(e instanceof VfioError && (e.errno === Errno.EOPNOTSUPP || e.errno === Errno.ENOSYS))) throw e;
    }
    await writeZeroes(this, offset, length);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

function toVfio(e: unknown, op: string, path: string): VfioError {
  if (e instanceof VfioError) return e;
  const errno = (e as NodeJS.ErrnoException).errno;
  return new VfioError(typeof errno === 'number' ? Math.abs(errno) : Errno.EIO, op, path);
}
