/** VERSION (spec, "VFIO_USER_VERSION"): what the client proposes, what the server settles on. */
import { Errno } from '../../abi/errno.js';
import { VfioUserCapKey as K, VFIO_USER_MAJOR, VFIO_USER_MINOR } from '../../abi/vfio-user.js';
import { PAGE_SIZE } from '../../core/offsets.js';
import { fail } from '../../errors.js';
import {
  type CapabilitiesInput,
  capabilitiesJson,
  decodeVersion,
  encodeVersion,
  type Frame,
  proposedCapabilities,
} from '../../wire/vfio-user.js';
import { type ClientContext, type Reply, reply } from '../context.js';
import { migrationCapability } from './migration.js';

export function version(s: ClientContext, f: Frame): Reply {
  const op = 'VFIO_USER_VERSION';
  if (s.negotiated) fail(Errno.EINVAL, op, 'already negotiated');
  const v = decodeVersion(f.payload);
  // libvfio-user negotiate(): a different major is refused with EINVAL.
  if (v.major !== VFIO_USER_MAJOR) fail(Errno.EINVAL, op, `major ${v.major}, we speak ${VFIO_USER_MAJOR}`);
  const c = v.capabilities;
  // Spec: the reply's minor is no higher than the client's; QEMU refuses a higher one.
  const minor = Math.min(v.minor, VFIO_USER_MINOR);
  const maxDataXferSize = Math.min(c.maxDataXferSize, s.limits.maxDataXferSize);
  const maxMsgFds = Math.max(1, Math.min(c.maxMsgFds, s.limits.maxMsgFds));
  // Spec, "VFIO_USER_VERSION": "The capability list must be a subset of those proposed." The
  // reply names only capabilities the client named, each no larger than the client's value; a
  // capability the client left out stays at the spec's default for both sides. libvfio-user
  // (format_server_capabilities) always states max_msg_fds and max_data_xfer_size; we follow the
  // spec text, so a bare 4-byte proposal gets a bare 4-byte reply.
  const named = proposedCapabilities(v);
  const maxDmaMaps = Math.min(c.maxDmaMaps, s.device.dma.maxMaps, s.limits.maxDmaMaps);
  const pgsizes = c.pgsizes & PAGE_SIZE;
  // "If the server requires a capability the client did not include, it closes the connection":
  // a limit below the default the client assumes for a capability it left out is refused, since
  // the reply could not tell the client about it.
  const unstated: [string, number, number][] = [
    [K.MAX_DATA_XFER_SIZE, maxDataXferSize, c.maxDataXferSize],
    [K.MAX_DMA_MAPS, maxDmaMaps, c.maxDmaMaps],
  ];
  for (const [key, ours, assumed] of unstated) {
    if (!named.has(key) && ours < assumed)
      fail(Errno.EINVAL, op, `the client did not propose ${key}; this server needs at most ${ours}`);
  }
  if (pgsizes === 0n) fail(Errno.EINVAL, op, `pgsizes 0x${c.pgsizes.toString(16)} lacks 4 KiB pages`);
  const caps: CapabilitiesInput = {
    ...(named.has(K.MAX_MSG_FDS) ? { maxMsgFds } : {}),
    ...(named.has(K.MAX_DATA_XFER_SIZE) ? { maxDataXferSize } : {}),
    ...(named.has(K.MAX_DMA_MAPS) ? { maxDmaMaps } : {}),
    ...(named.has(K.PGSIZES) ? { pgsizes } : {}),
    ...(c.writeMultiple ? { writeMultiple: true } : {}),
    ...migrationCapability(s, c.migration),
  };
  const json = Object.keys(caps).length > 0 ? capabilitiesJson(caps) : undefined;
  const out = encodeVersion({ major: v.major, minor, ...(json !== undefined ? { json } : {}) });
  // Settled only now, after every check and the reply's encoding: a refused VERSION leaves the
  // client un-negotiated (spec: "the version must be negotiated before any other message"), so
  // it cannot go on to send other commands on the strength of a proposal that was turned down.
  const layoutOpt = s.options.dmaLayout ?? 'auto';
  s.negotiated = {
    major: v.major,
    minor,
    client: c,
    maxDataXferSize,
    maxMsgFds,
    writeMultiple: c.writeMultiple,
    // 'auto' is the spec's layout: QEMU 11.1 proposes 0.0 and still puts the data at byte 32
    // (test/server/qemu.test.ts, guest RAM without an fd; docs/vfio-user-wire.md).
    dmaLayout: layoutOpt === 'auto' ? 'spec' : layoutOpt,
  };
  return reply(out);
}
