/**
 * Data pointers (NVMe 1.4 §4.3 Physical Region Page Entry and List): PRP1 and PRP2 of a command
 * resolved into host memory segments, and the copies between those segments and a buffer.
 *
 * - PRP1 points at the first byte; its offset within the memory page (CC.MPS) must be dword
 *   aligned. The first segment runs to the end of that page.
 * - If the rest fits in one page, PRP2 points at it (offset 0). Otherwise PRP2 points at a PRP
 *   List (offset qword aligned): entries of offset 0, one per page, the last entry of each list
 *   page pointing at the next list page when more entries are needed than fit.
 * The walk reads exactly as many entries as the transfer length needs, so a list that loops back
 * on itself is read a bounded number of times, and the length was bounded by MDTS before.
 * A pointer with a bad offset is PRP Offset Invalid; a list or data page the host has not mapped
 * for DMA is Data Transfer Error; any of them in the Controller Memory Buffer is Invalid Use of
 * Controller Memory Buffer (CMBSZ advertises neither LISTS nor RDS/WDS).
 */

import { SC } from './spec.js';
import { CommandFailed, failCommand } from './status.js';

/** How the walk reaches host memory (the controller's epoch-checked DMA). */
export interface DataPort {
  /** CC.MPS: 4096 << MPS. */
  readonly pageSize: number;
  read(addr: bigint, dst: Uint8Array): Promise<void>;
  write(addr: bigint, src: Uint8Array): Promise<void>;
  /** Whether [addr, addr + length) overlaps the Controller Memory Buffer. */
  inCmb(addr: bigint, length: number): boolean;
}

export interface Segment {
  readonly addr: bigint;
  readonly length: number;
}

/**
 * The segments of a `length`-byte transfer described by PRP1/PRP2, physically contiguous pages
 * merged (one DMA each instead of one per page).
 * @throws CommandFailed with PRP Offset Invalid, Data Transfer Error or Invalid Use of CMB
 */
export async function prpSegments(
  port: DataPort,
  prp1: bigint,
  prp2: bigint,
  length: number,
): Promise<Segment[]> {
  const ps = port.pageSize;
  const mask = BigInt(ps - 1);
  const out: Segment[] = [];
  const push = (addr: bigint, len: number) => {
    const last = out[out.length - 1];
    if (last && last.addr + BigInt(last.length) === addr)
      out[out.length - 1] = { addr: last.addr, length: last.length + len };
    else out.push({ addr, length: len });
  };
  const offset1 = Number(prp1 & mask);
  if (offset1 & 3) failCommand(SC.PRP_OFFSET_INVALID, `PRP1 0x${prp1.toString(16)} not dword aligned`);
  const first = Math.min(length, ps - offset1);
  push(prp1, first);
  let rest = length - first;
  if (rest === 0) return out;
  if (rest <= ps) {
    if (prp2 & mask) failCommand(SC.PRP_OFFSET_INVALID, `PRP2 0x${prp2.toString(16)} has an offset`);
    push(prp2, rest);
    return out;
  }
  let list = prp2;
  if (list & 7n) failCommand(SC.PRP_OFFSET_INVALID, `PRP list 0x${list.toString(16)} not qword aligned`);
  let needed = Math.ceil(rest / ps);
  while (needed > 0) {
    const room = (ps - Number(list & mask)) / 8;
    // All the entries left fit in this list page, or it is full and its last entry chains on.
    const count = Math.min(needed, room);
    if (port.inCmb(list, count * 8)) failCommand(SC.INVALID_CMB_USE, 'PRP list in the CMB');
    const entries = new Uint8Array(count * 8);
    try {
      await port.read(list, entries);
    } catch (e) {
      throw e instanceof CommandFailed ? e : new CommandFailed(SC.DATA_TRANSFER_ERROR, `PRP list: ${e}`);
    }
    const v = new DataView(entries.buffer);
    const data = needed <= room ? count : count - 1;
    for (let i = 0; i < data; i++) {
      const addr = v.getBigUint64(i * 8, true);
      if (addr & mask) failCommand(SC.PRP_OFFSET_INVALID, `PRP entry 0x${addr.toString(16)} has an offset`);
      const len = Math.min(ps, rest);
      push(addr, len);
      rest -= len;
    }
    needed -= data;
    if (needed > 0) {
      list = v.getBigUint64(data * 8, true);
      if (list & mask)
        failCommand(SC.PRP_OFFSET_INVALID, `chained PRP list 0x${list.toString(16)} has an offset`);
    }
  }
  return out;
}

/** Host memory → `dst`, segment after segment of `segs` (Write commands, list buffers). */
export function copyFromHost(port: DataPort, segs: readonly Segment[], dst: Uint8Array): Promise<void> {
  return transfer(port, segs, dst, false);
}

/** `src` → host memory (Read commands, Identify, log pages). */
export function copyToHost(port: DataPort, segs: readonly Segment[], src: Uint8Array): Promise<void> {
  return transfer(port, segs, src, true);
}

/**
 * All segments at once (a remote DMA is a round trip each: they overlap). A merged segment that
 * fails is retried page by page: physically contiguous pages may still lie in two DMA mappings.
 */
async function transfer(
  port: DataPort,
  segs: readonly Segment[],
  buf: Uint8Array,
  toHost: boolean,
): Promise<void> {
  for (const s of segs)
    if (port.inCmb(s.addr, s.length)) failCommand(SC.INVALID_CMB_USE, 'data pointer in the CMB');
  const one = (addr: bigint, part: Uint8Array) => (toHost ? port.write(addr, part) : port.read(addr, part));
  const jobs: Promise<void>[] = [];
  let at = 0;
  for (const s of segs) {
    const part = buf.subarray(at, at + s.length);
    at += s.length;
    jobs.push(
      one(s.addr, part).catch(async (e) => {
        if (s.length <= port.pageSize) throw e;
        for (let o = 0; o < s.length; ) {
          const addr = s.addr + BigInt(o);
          const n = Math.min(s.length - o, port.pageSize - Number(addr % BigInt(port.pageSize)));
          await one(addr, part.subarray(o, o + n));
          o += n;
        }
      }),
    );
  }
  const results = await Promise.allSettled(jobs);
  for (const r of results)
    if (r.status === 'rejected')
      throw r.reason instanceof CommandFailed
        ? r.reason
        : new CommandFailed(SC.DATA_TRANSFER_ERROR, `DMA: ${r.reason}`);
}
