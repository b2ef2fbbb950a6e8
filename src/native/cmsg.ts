/**
 * Layouts of the structs sendmsg(2)/recvmsg(2) take on x86_64 Linux, as small pure functions
 * over a DataView (no koffi, no syscalls): struct msghdr, struct iovec, struct cmsghdr and the
 * CMSG_* arithmetic of cmsg(3) / include/linux/socket.h.
 *
 *   struct msghdr  { void *msg_name; u32 msg_namelen; (pad 4) struct iovec *msg_iov;
 *                    size_t msg_iovlen; void *msg_control; size_t msg_controllen;
 *                    int msg_flags; (pad 4) }                                      56 bytes
 *   struct iovec   { void *iov_base; size_t iov_len; }                             16 bytes
 *   struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; data... }     16 bytes
 */

export const MSGHDR_SIZE = 56;
export const MSGHDR_NAME = 0;
export const MSGHDR_NAMELEN = 8;
export const MSGHDR_IOV = 16;
export const MSGHDR_IOVLEN = 24;
export const MSGHDR_CONTROL = 32;
export const MSGHDR_CONTROLLEN = 40;
export const MSGHDR_FLAGS = 48;

export const IOVEC_SIZE = 16;
export const CMSGHDR_SIZE = 16;

// include/linux/socket.h
export const SOL_SOCKET = 1;
/** sendmsg/recvmsg flags (include/linux/socket.h). */
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const SCM_RIGHTS = 1;
export const SCM_CREDENTIALS = 2;

/** cmsg data and headers are aligned to sizeof(size_t) = 8. */
export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** CMSG_LEN(n): cmsg_len of a control message carrying n data bytes. */
export function cmsgLen(n: number): number {
  return cmsgAlign(CMSGHDR_SIZE) + n;
}

/** CMSG_SPACE(n): the room one control message with n data bytes takes in the buffer. */
export function cmsgSpace(n: number): number {
  return cmsgAlign(CMSGHDR_SIZE) + cmsgAlign(n);
}

/** Room for an SCM_RIGHTS message carrying `count` fds (0 when count is 0). */
export function rightsSpace(count: number): number {
  return count === 0 ? 0 : cmsgSpace(4 * count);
}

export interface Msghdr {
  name: bigint;
  namelen: number;
  iov: bigint;
  iovlen: number;
  control: bigint;
  controllen: number;
  flags: number;
}

/** Stores a size_t (a safe integer) without going through BigInt. */
export function setSize(v: DataView, off: number, n: number): void {
  v.setUint32(off, n >>> 0, true);
  v.setUint32(off + 4, Math.floor(n / 0x1_0000_0000), true);
}

/** Writes a struct msghdr at `off` (padding bytes zeroed). */
export function writeMsghdr(v: DataView, off: number, m: Msghdr): void {
  v.setBigUint64(off + MSGHDR_NAME, m.name, true);
  v.setUint32(off + MSGHDR_NAMELEN, m.namelen, true);
  v.setUint32(off + MSGHDR_NAMELEN + 4, 0, true);
  v.setBigUint64(off + MSGHDR_IOV, m.iov, true);
  setSize(v, off + MSGHDR_IOVLEN, m.iovlen);
  v.setBigUint64(off + MSGHDR_CONTROL, m.control, true);
  setSize(v, off + MSGHDR_CONTROLLEN, m.controllen);
  v.setInt32(off + MSGHDR_FLAGS, m.flags, true);
  v.setUint32(off + MSGHDR_FLAGS + 4, 0, true);
}

/** Reads the struct msghdr at `off`. */
export function readMsghdr(v: DataView, off: number): Msghdr {
  return {
    name: v.getBigUint64(off + MSGHDR_NAME, true),
    namelen: v.getUint32(off + MSGHDR_NAMELEN, true),
    iov: v.getBigUint64(off + MSGHDR_IOV, true),
    iovlen: Number(v.getBigUint64(off + MSGHDR_IOVLEN, true)),
    control: v.getBigUint64(off + MSGHDR_CONTROL, true),
    controllen: Number(v.getBigUint64(off + MSGHDR_CONTROLLEN, true)),
    flags: v.getInt32(off + MSGHDR_FLAGS, true),
  };
}

/** Writes entry `index` of an iovec array that starts at `off`. */
export function writeIovec(v: DataView, off: number, index: number, base: bigint, len: number): void {
  const at = off + index * IOVEC_SIZE;
  v.setBigUint64(at, base, true);
  setSize(v, at + 8, len);
}

/**
 * Writes one SCM_RIGHTS control message carrying `fds` at `off`; returns the bytes of control
 * buffer it uses (CMSG_SPACE, what msg_controllen should be), 0 for no fds.
 */
export function writeRights(v: DataView, off: number, fds: readonly number[]): number {
  if (fds.length === 0) return 0;
  const space = rightsSpace(fds.length);
  setSize(v, off, cmsgLen(4 * fds.length));
  v.setInt32(off + 8, SOL_SOCKET, true);
  v.setInt32(off + 12, SCM_RIGHTS, true);
  for (let i = 0; i < fds.length; i++) v.setInt32(off + CMSGHDR_SIZE + 4 * i, fds[i]!, true);
  // Zero the tail padding so no stale bytes reach the kernel.
  for (let p = off + CMSGHDR_SIZE + 4 * fds.length; p < off + space; p++) v.setUint8(p, 0);
  return space;
}

export interface ParsedControl {
  /** Every fd of every SCM_RIGHTS message, in order. */
  fds: number[];
  /** Control messages of other kinds (skipped). */
  others: number;
  /** A header whose cmsg_len is impossible (too short, or past the end) stopped the walk. */
  malformed: boolean;
}

/**
 * Walks the control messages in `len` bytes at `off` the way CMSG_FIRSTHDR/CMSG_NXTHDR do
 * (glibc sysdeps/unix/sysv/linux/cmsg_nxthdr.c) and collects the SCM_RIGHTS fds. A message cut
 * short by MSG_CTRUNC still yields the whole fds it holds (the kernel installs only those:
 * net/core/scm.c scm_detach_fds).
 */
export function parseControl(v: DataView, off: number, len: number): ParsedControl {
  const out: ParsedControl = { fds: [], others: 0, malformed: false };
  const end = off + len;
  let at = off;
  while (at + CMSGHDR_SIZE <= end) {
    const declared = Number(v.getBigUint64(at, true));
    if (declared < CMSGHDR_SIZE) {
      out.malformed = true;
      break;
    }
    // A length running past the buffer is cut to it (and ends the walk), so that any fd that
    // can be seen is still returned and closed rather than leaked.
    const clen = Math.min(declared, end - at);
    const level = v.getInt32(at + 8, true);
    const type = v.getInt32(at + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const n = Math.floor((clen - CMSGHDR_SIZE) / 4);
      for (let i = 0; i < n; i++) out.fds.push(v.getInt32(at + CMSGHDR_SIZE + 4 * i, true));
    } else {
      out.others++;
    }
    if (clen < declared) {
      out.malformed = true;
      break;
    }
    at += cmsgAlign(clen);
  }
  return out;
}
