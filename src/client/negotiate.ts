/** VERSION from the client's side (spec, "VFIO_USER_VERSION"): what we propose, what we accept. */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import { PAGE_SIZE } from '../core/offsets.js';
import { fail } from '../errors.js';
import { MAX_FDS_PER_MSG } from '../native/index.js';
import { capabilitiesJson, type DmaLayout, decodeVersion, encodeVersion } from '../wire/vfio-user.js';
import { type Connection, decodeOrProto } from './connection.js';
import {
  CLIENT_MAX_DATA_XFER_SIZE,
  CLIENT_MAX_MSG_FDS,
  MAX_CLIENT_DATA_XFER_SIZE,
  MAX_DIRTY_BITMAP,
  MAX_VERSION_REPLY,
} from './limits.js';

/** What the client proposes (ClientOptions carries these). */
export interface VersionOptions {
  /**
   * Minor version proposed (major is 0). Default 1: the spec's DMA_READ/DMA_WRITE layout. 0 is
   * what QEMU proposes; our server then speaks QEMU's layout (docs/vfio-user-wire.md).
   */
  readonly minor?: 0 | 1;
  /** DMA_READ/DMA_WRITE layout; default 'spec' (what QEMU 11.1 speaks as a client too). */
  readonly dmaLayout?: DmaLayout;
  /** fds we take in one message (1..253, default CLIENT_MAX_MSG_FDS). */
  readonly maxMsgFds?: number;
  /** Data per transfer we take (1..MAX_CLIENT_DATA_XFER_SIZE, default 1 MiB). */
  readonly maxDataXferSize?: number;
}

/** What VERSION settled. */
export interface ClientNegotiated {
  readonly major: number;
  readonly minor: number;
  /** min(ours, server's) */
  readonly maxDataXferSize: number;
  /** Most fds the server takes in one message (at most what one sendmsg carries). */
  readonly maxMsgFds: number;
  readonly maxDmaMaps: number;
  readonly pgsizes: bigint;
  readonly writeMultiple: boolean;
  readonly dmaLayout: DmaLayout;
  /** The server's migration capability, when it stated one (a server that migrates does). */
  readonly migration?: { readonly pgsize: number; readonly maxBitmapSize: number };
}

/** Our proposal with defaults filled in; EINVAL for options outside their ranges. */
export function proposal(opts: VersionOptions): Required<Omit<VersionOptions, 'dmaLayout'>> {
  const op = 'VFIO_USER_VERSION';
  const p = {
    minor: opts.minor ?? 1,
    maxMsgFds: opts.maxMsgFds ?? CLIENT_MAX_MSG_FDS,
    maxDataXferSize: opts.maxDataXferSize ?? CLIENT_MAX_DATA_XFER_SIZE,
  } as const;
  if (p.minor !== 0 && p.minor !== 1) fail(Errno.EINVAL, op, `minor ${p.minor} is not 0 or 1`);
  if (!Number.isInteger(p.maxMsgFds) || p.maxMsgFds < 1 || p.maxMsgFds > MAX_FDS_PER_MSG)
    fail(Errno.EINVAL, op, `maxMsgFds ${p.maxMsgFds} outside 1..${MAX_FDS_PER_MSG}`);
  if (
    !Number.isInteger(p.maxDataXferSize) ||
    p.maxDataXferSize < 1 ||
    p.maxDataXferSize > MAX_CLIENT_DATA_XFER_SIZE
  )
    fail(Errno.EINVAL, op, `maxDataXferSize ${p.maxDataXferSize} outside 1..${MAX_CLIENT_DATA_XFER_SIZE}`);
  return p;
}

/**
 * Proposes our version and capabilities and checks the server's answer as QEMU does
 * (hw/vfio-user/proxy.c vfio_user_validate_version, caps_check): our major, a minor no higher
 * than ours (spec, "Version"), capabilities of the right types (the decoder), max_data_xfer_size
 * at least 1, page sizes no smaller than 4 KiB (check_pgsizes). A server's max_msg_fds above what
 * one sendmsg carries is clamped, not refused: it only bounds what we send.
 */
export async function negotiate(
  conn: Pick<Connection, 'request'>,
  opts: VersionOptions,
): Promise<ClientNegotiated> {
  const op = 'VFIO_USER_VERSION';
  const { minor, ...ours } = proposal(opts);
  // migration: as QEMU proposes it (hw/vfio-user/proxy.c), with the bitmap a reply may carry.
  const json = capabilitiesJson({
    ...ours,
    pgsizes: PAGE_SIZE,
    writeMultiple: false,
    migration: { pgsize: Number(PAGE_SIZE), maxBitmapSize: MAX_DIRTY_BITMAP },
  });
  const r = await conn.request(C.VERSION, [encodeVersion({ major: 0, minor, json })], [], {
    maxReply: MAX_VERSION_REPLY,
  });
  const v = decodeOrProto(op, () => decodeVersion(r.payload));
  if (v.major !== 0 || v.minor > minor)
    fail(Errno.EPROTONOSUPPORT, op, `server answered ${v.major}.${v.minor} to our 0.${minor}`);
  const caps = v.capabilities;
  if (caps.maxDataXferSize < 1) fail(Errno.EPROTO, op, 'max_data_xfer_size 0');
  if (caps.pgsizes & (PAGE_SIZE - 1n))
    fail(Errno.EPROTO, op, `pgsizes 0x${caps.pgsizes.toString(16)} has a page size under 4 KiB`);
  return {
    major: v.major,
    minor: v.minor,
    maxDataXferSize: Math.min(ours.maxDataXferSize, caps.maxDataXferSize),
    maxMsgFds: Math.min(Math.max(1, caps.maxMsgFds), MAX_FDS_PER_MSG),
    maxDmaMaps: caps.maxDmaMaps,
    pgsizes: caps.pgsizes,
    writeMultiple: caps.writeMultiple,
    dmaLayout: opts.dmaLayout ?? 'spec',
    ...(caps.migration ? { migration: checkMigration(caps.migration) } : {}),
  };
}

/**
 * The server's migration capability, as QEMU checks it (hw/vfio-user/proxy.c check_migr_pgsize:
 * pgsize a multiple of 4 KiB). max_bitmap_size is taken no larger than we proposed (a server that
 * leaves it out, as libvfio-user does, gets the protocol's 256 MiB default: ours bounds it); one
 * under 8 bytes could not carry a report. EPROTO otherwise.
 */
function checkMigration(m: { pgsize: number; maxBitmapSize: number }) {
  const op = 'VFIO_USER_VERSION';
  if (m.pgsize === 0 || m.pgsize % Number(PAGE_SIZE)) fail(Errno.EPROTO, op, `migration.pgsize ${m.pgsize}`);
  if (m.maxBitmapSize < 8) fail(Errno.EPROTO, op, `migration.max_bitmap_size ${m.maxBitmapSize}`);
  return { pgsize: m.pgsize, maxBitmapSize: Math.min(m.maxBitmapSize, MAX_DIRTY_BITMAP) };
}
