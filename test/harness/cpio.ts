/**
 * A writer for the "newc" cpio format (magic 070701), the one the Linux kernel unpacks as an
 * initramfs. Follows the kernel's own description: Documentation/driver-api/early-userspace/
 * buffer-format.rst (110-byte ASCII-hex header, name NUL-terminated and padded to 4 bytes,
 * data padded to 4 bytes, "TRAILER!!!" last). The kernel also accepts several archives, each
 * compressed on its own, concatenated: buildInitramfs relies on that to cache pieces.
 */
import { posix } from 'node:path';

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** newc sizes are 8 hex digits. */
export const MAX_CPIO_FILE_SIZE = 0xffff_ffff;
const TRAILER = 'TRAILER!!!';

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/**
 * Archive name of a guest path: taken as absolute (`..` cannot climb above the root), normalized,
 * without the leading slash. The root itself has no entry and is rejected.
 */
export function archivePath(p: string): string {
  const norm = posix.normalize(`/${p}`).replace(/^\/+/, '');
  if (norm === '' || norm === '.') throw new Error(`cpio: bad path ${JSON.stringify(p)}`);
  return norm;
}

/**
 * Serializes entries into one uncompressed newc archive. Parent directories of every entry are
 * added (mode 0755) unless the caller listed them: the kernel's unpacker does not create them.
 */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  const seenDirs = new Set<string>();
  let ino = 1;
  const mtime = 0; // reproducible archives: the same inputs give the same bytes

  const header = (name: string, mode: number, size: number): void => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    const fields = [
      '070701',
      hex8(ino++),
      hex8(mode),
      hex8(0), // uid
      hex8(0), // gid
      hex8(mode & S_IFDIR ? 2 : 1), // nlink
      hex8(mtime),
      hex8(size),
      hex8(0), // devmajor
      hex8(0), // devminor
      hex8(0), // rdevmajor
      hex8(0), // rdevminor
      hex8(nameBytes.length),
      hex8(0), // check
    ].join('');
    chunks.push(Buffer.from(fields, 'ascii'), nameBytes, Buffer.alloc(pad4(110 + nameBytes.length)));
  };
  const data = (bytes: Uint8Array): void => {
    chunks.push(
      Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      Buffer.alloc(pad4(bytes.byteLength)),
    );
  };
  const ensureParents = (path: string): void => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (seenDirs.has(dir)) continue;
      seenDirs.add(dir);
      header(dir, S_IFDIR | 0o755, 0);
    }
  };

  for (const e of entries) {
    const path = archivePath(e.path);
    ensureParents(path);
    switch (e.kind) {
      case 'dir':
        if (seenDirs.has(path)) break;
        seenDirs.add(path);
        header(path, S_IFDIR | ((e.mode ?? 0o755) & 0o7777), 0);
        break;
      case 'file':
        if (e.data.byteLength > MAX_CPIO_FILE_SIZE) throw new Error(`cpio: ${path} too large for newc`);
        header(path, S_IFREG | ((e.mode ?? 0o644) & 0o7777), e.data.byteLength);
        data(e.data);
        break;
      case 'symlink': {
        const target = Buffer.from(e.target, 'utf8');
        header(path, S_IFLNK | 0o777, target.byteLength);
        data(target);
        break;
      }
    }
  }
  header(TRAILER, 0, 0);
  const out = Buffer.concat(chunks);
  // Conventionally archives are padded to 512 bytes; the kernel does not need it, cpio(1) likes it.
  return Buffer.concat([out, Buffer.alloc((512 - (out.length % 512)) % 512)]);
}
