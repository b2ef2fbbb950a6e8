/**
 * x86 PAT memory types as the kernel tracks them: `/sys/kernel/debug/x86/pat_memtype_list`
 * (arch/x86/mm/pat/memtype.c: memtype_seq_show), one `PAT: [mem 0x...-0x...] <type>` line per
 * reservation (ioremap, io_remap_pfn_range of a sysfs resource file or a vfio BAR, ...).
 *
 * Overlapping reservations always share one type: memtype_check_conflict gives a new request the
 * type already there (and reserve_pfn_range / __ioremap_caller accept it unless that would be
 * write-back), so a request for write-combining over a range already reserved uncached-minus is
 * silently made uncached-minus. That is how the list says what a mapping really got.
 */
import { readFileSync } from 'node:fs';

export const PAT_MEMTYPE_LIST = '/sys/kernel/debug/x86/pat_memtype_list';

export interface PatEntry {
  start: bigint;
  /** Exclusive, as the list prints it. */
  end: bigint;
  type: string;
  line: string;
}

const LINE_RE = /^PAT: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] (.+)$/;

export function parsePatList(text: string): PatEntry[] {
  const out: PatEntry[] = [];
  for (const line of text.split('\n')) {
    const m = LINE_RE.exec(line.trim());
    if (m) out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), type: m[3]!, line: line.trim() });
  }
  return out;
}

/** The PAT list, or undefined when it cannot be read (not x86, debugfs not mounted, not root). */
export function readPatList(path = PAT_MEMTYPE_LIST): PatEntry[] | undefined {
  try {
    return parsePatList(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The type of the reservations overlapping [start, end), or undefined when none does. */
export function patTypeOf(entries: readonly PatEntry[], start: bigint, end: bigint): string | undefined {
  return patOverlapping(entries, { start, end })[0]?.type;
}

/** The reservations overlapping [range.start, range.end). */
export function patOverlapping(
  entries: readonly PatEntry[],
  range: { start: bigint; end: bigint },
): PatEntry[] {
  return entries.filter((e) => e.start < range.end && e.end > range.start);
}

/** Lines of `after` not in `before`, counted (a line may be listed more than once). */
export function patAdded(before: readonly PatEntry[], after: readonly PatEntry[]): PatEntry[] {
  const left = new Map<string, number>();
  for (const e of before) left.set(e.line, (left.get(e.line) ?? 0) + 1);
  const added: PatEntry[] = [];
  for (const e of after) {
    const n = left.get(e.line) ?? 0;
    if (n > 0) left.set(e.line, n - 1);
    else added.push(e);
  }
  return added;
}
