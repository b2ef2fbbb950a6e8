/**
 * The command table of the vfio-user server: per command the smallest and largest payload, how
 * many fds it may carry, and its handler (src/server/commands/, one file per group). The session
 * checks the first three before it runs the handler; a handler turns a validated message into a
 * reply or throws VfioError / MalformedError, which the session answers as an error reply.
 *
 * Handlers never close the message's fds: the session closes every received fd after the
 * handler returns (nothing keeps one: DMA_MAP keeps the mapping, the core dups eventfds).
 *
 * Device requests go through the core's ioctl with the payload laid out as the vfio.h struct, so
 * the server answers exactly what vfio-pci answers; the handlers only translate what differs on
 * the wire (argsz of the 16-byte device info, region offsets that become fd offsets, fds).
 */
import { VfioUserCommand as C } from '../abi/vfio-user.js';
import { deviceFeature, deviceGetInfo, deviceReset, MAX_FEATURE_PAYLOAD } from './commands/device.js';
import { dmaMap, dmaUnmap } from './commands/dma.js';
import { deviceGetIrqInfo, deviceSetIrqs } from './commands/irq.js';
import { migDataRead, migDataWrite } from './commands/migration.js';
import {
  deviceGetRegionInfo,
  deviceGetRegionIoFds,
  regionRead,
  regionWrite,
  regionWriteMulti,
} from './commands/region.js';
import { version } from './commands/version.js';
import { type HandlerEntry, xferMax } from './context.js';

export { MAX_FEATURE_PAYLOAD } from './commands/device.js';
/** Payload cap of the commands whose payload is one fixed struct (extra bytes are ignored). */
export const MAX_FIXED_PAYLOAD = 256;
/** Payload cap of VERSION (QEMU's proposal is about 200 bytes). */
export const MAX_VERSION_PAYLOAD = 64 * 1024;
/** Payload cap of SET_IRQS (DATA_BOOL: one byte per vector; MSI-X has at most 2048). */
export const MAX_SET_IRQS_PAYLOAD = 20 + 4096;
/** Most writes in one REGION_WRITE_MULTI (QEMU coalesces at most 200). */
export const MAX_WRITE_MULTI = 1024;

/** A command with payloads of `minPayload` to `maxPayload(s)` bytes and at most `maxFds(s)` fds. */
const entry = (
  minPayload: number,
  maxPayload: HandlerEntry['maxPayload'],
  handle: HandlerEntry['handle'],
  maxFds: HandlerEntry['maxFds'] = () => 0,
): HandlerEntry => ({ minPayload, maxPayload, maxFds, handle });

const maxFixed = () => MAX_FIXED_PAYLOAD;

/** A command whose payload is one struct of `size` bytes (up to MAX_FIXED_PAYLOAD accepted). */
const fixed = (size: number, handle: HandlerEntry['handle'], fds = 0): HandlerEntry =>
  entry(size, maxFixed, handle, () => fds);

export const HANDLERS: Readonly<Record<number, HandlerEntry>> = {
  [C.VERSION]: entry(4, () => MAX_VERSION_PAYLOAD, version),
  [C.DMA_MAP]: fixed(32, dmaMap, 1),
  [C.DMA_UNMAP]: fixed(24, dmaUnmap),
  [C.DEVICE_GET_INFO]: fixed(16, deviceGetInfo),
  [C.DEVICE_GET_REGION_INFO]: fixed(32, deviceGetRegionInfo),
  [C.DEVICE_GET_REGION_IO_FDS]: fixed(16, deviceGetRegionIoFds),
  [C.DEVICE_GET_IRQ_INFO]: fixed(16, deviceGetIrqInfo),
  // One eventfd per interrupt, up to the negotiated max_msg_fds (none before VERSION).
  [C.DEVICE_SET_IRQS]: entry(
    20,
    () => MAX_SET_IRQS_PAYLOAD,
    deviceSetIrqs,
    (s) => s.negotiated?.maxMsgFds ?? 0,
  ),
  [C.REGION_READ]: fixed(16, regionRead),
  [C.REGION_WRITE]: entry(16, (s) => 16 + xferMax(s), regionWrite),
  [C.DEVICE_RESET]: entry(0, maxFixed, deviceReset),
  [C.REGION_WRITE_MULTI]: entry(8, () => 8 + 24 * MAX_WRITE_MULTI, regionWriteMulti),
  [C.DEVICE_FEATURE]: entry(8, () => MAX_FEATURE_PAYLOAD, deviceFeature),
  [C.MIG_DATA_READ]: entry(0, maxFixed, migDataRead),
  [C.MIG_DATA_WRITE]: entry(0, (s) => 8 + xferMax(s), migDataWrite),
};
