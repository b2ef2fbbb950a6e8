/** VERSION from the client's side (spec, "VFIO_USER_VERSION"): what we propose, what we accept. */
import { Errno } from '../abi/errno.js';
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import { PAGE_SIZE } from '../core/offsets.js';
import { fail } from '../errors.js';
import { capabilitiesJson, type DmaLayout, decodeVersion, encodeVersion } from '../wire/vfio-user.js';
import { type Connection, closeFds, decodeOrProto } from './connection.js';

/** What this client proposes: QEMU's values (hw/vfio-user/protocol.h VFIO_USER_MAX_MAX_FDS). */
export const CLIENT_MAX_MSG_FDS = 16;
/** Spec default and QEMU's proposal: 1 MiB per REGION_READ/WRITE and DMA_READ/WRITE. */
export const CLIENT_MAX_DATA_XFER_SIZE = 1024 * 1024;

/** What the client proposes (ClientOptions carries these). */
export interface VersionOptions {
  /**
   * Minor version proposed (major is 0). Default 1: the spec's DMA_READ/DMA_WRITE layout. 0 is
   * what QEMU proposes; our server then speaks QEMU's layout (docs/vfio-user-wire.md).
   */
  readonly minor?: 0 | 1;
  /** DMA_READ/DMA_WRITE layout; default 'spec' (what QEMU 11.1 speaks as a client too). */
  readonly dmaLayout?: DmaLayout;
  readonly maxMsgFds?: number;
  readonly maxDataXferSize?: number;
}

/** What VERSION settled. */
export interface ClientNegotiated {
  readonly major: number;
  readonly minor: number;
  /** min(ours, server's) */
  readonly maxDataXferSize: number;
  /** Most fds the server takes in one message. */
  readonly maxMsgFds: number;
  readonly maxDmaMaps: number;
  readonly pgsizes: bigint;
  readonly writeMultiple: boolean;
  readonly dmaLayout: DmaLayout;
}

/** Proposes our version and capabilities and checks the server's answer. */
export async function negotiate(
  conn: Pick<Connection, 'request'>,
  opts: VersionOptions,
): Promise<ClientNegotiated> {
  const op = 'VFIO_USER_VERSION';
  const minor = opts.minor ?? 1;
  const ours = {
    maxMsgFds: opts.maxMsgFds ?? CLIENT_MAX_MSG_FDS,
    maxDataXferSize: opts.maxDataXferSize ?? CLIENT_MAX_DATA_XFER_SIZE,
    pgsizes: PAGE_SIZE,
    writeMultiple: false,
  };
  const r = await conn.request(C.VERSION, [encodeVersion({ major: 0, minor, json: capabilitiesJson(ours) })]);
  closeFds(r.fds);
  const v = decodeOrProto(op, () => decodeVersion(r.payload));
  // The server keeps our major and answers a minor no higher than ours (spec, "Version").
  if (v.major !== 0 || v.minor > minor)
    fail(Errno.EPROTONOSUPPORT, op, `server answered ${v.major}.${v.minor} to our 0.${minor}`);
  const caps = v.capabilities;
  if (caps.maxDataXferSize < 1) fail(Errno.EPROTO, op, 'max_data_xfer_size 0');
  return {
    major: v.major,
    minor: v.minor,
    maxDataXferSize: Math.min(ours.maxDataXferSize, caps.maxDataXferSize),
    maxMsgFds: Math.max(1, caps.maxMsgFds),
    maxDmaMaps: caps.maxDmaMaps,
    pgsizes: caps.pgsizes,
    writeMultiple: caps.writeMultiple,
    dmaLayout: opts.dmaLayout ?? 'spec',
  };
}
