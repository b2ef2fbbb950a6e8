/**
 * Does the start of a namespace hold a partition table or a filesystem? `vfio-ts nvme perf`
 * refuses to write over one unless told (--force), as fio users expect from tools that know
 * better than to scribble on a disk in use. The magic numbers and their places are the ones
 * util-linux's libblkid probes (libblkid/src/partitions/{dos,gpt}.c, superblocks/{ext,xfs,
 * btrfs,vfat,luks,swap,lvm,iso9660}.c).
 */

/** Bytes of the namespace the check reads: up to btrfs's superblock at 64 KiB, and a bit. */
export const SIGNATURE_PROBE_BYTES = 128 << 10;

interface Magic {
  readonly name: string;
  /** Byte offset; `'lba1'` for the second logical block (GPT, LVM2). */
  readonly at: number | 'lba1';
  readonly bytes: readonly number[];
}

const text = (s: string) => [...s].map((c) => c.charCodeAt(0));

const MAGICS: readonly Magic[] = [
  { name: 'GPT partition table ("EFI PART" in LBA 1)', at: 'lba1', bytes: text('EFI PART') },
  { name: 'LVM2 physical volume ("LABELONE" in LBA 1)', at: 'lba1', bytes: text('LABELONE') },
  { name: 'ext2/3/4 filesystem (superblock magic 0xEF53 at byte 1080)', at: 1080, bytes: [0x53, 0xef] },
  { name: 'XFS filesystem ("XFSB" at byte 0)', at: 0, bytes: text('XFSB') },
  { name: 'btrfs filesystem ("_BHRfS_M" at byte 65600)', at: 0x10040, bytes: text('_BHRfS_M') },
  { name: 'FAT12/16 filesystem ("FAT1x" at byte 54)', at: 54, bytes: text('FAT1') },
  { name: 'FAT32 filesystem ("FAT32" at byte 82)', at: 82, bytes: text('FAT32') },
  { name: 'LUKS volume ("LUKS\\xba\\xbe" at byte 0)', at: 0, bytes: [...text('LUKS'), 0xba, 0xbe] },
  { name: 'Linux swap ("SWAPSPACE2" at byte 4086)', at: 4086, bytes: text('SWAPSPACE2') },
  { name: 'ISO 9660 filesystem ("CD001" at byte 32769)', at: 32769, bytes: text('CD001') },
  // Last: a FAT boot sector carries the same 0x55AA, and is named above already.
  { name: 'MBR partition table or boot sector (0x55AA at byte 510)', at: 510, bytes: [0x55, 0xaa] },
];

/** The signatures found in `head` (the namespace's first bytes), named; [] when none. */
export function findSignatures(head: Uint8Array, blockBytes: number): string[] {
  const found: string[] = [];
  for (const m of MAGICS) {
    const at = m.at === 'lba1' ? blockBytes : m.at;
    if (at + m.bytes.length > head.length) continue;
    if (m.bytes.every((b, i) => head[at + i] === b)) found.push(m.name);
  }
  return found;
}
