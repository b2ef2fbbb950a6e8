/**
 * Command-indexed dispatch over the payload codecs, and whole-message decode/encode.
 *
 * `decodeMessage` turns a complete message into a tagged value whose `body` type follows from
 * `command` (switch on it to narrow); `encodeDecodedMessage` writes such a value back to bytes.
 */
import {
  VfioUserCommand as C,
  isVfioUserCommand,
  VFIO_USER_HEADER_SIZE,
  type VfioUserCommandNumber,
  vfioUserCommandName,
} from '../../abi/vfio-user.js';
import { malformed } from './bytes.js';
import {
  type DeviceInfo,
  decodeDeviceInfo,
  decodeEmpty,
  decodeIoFdsReply,
  decodeIoFdsRequest,
  decodeRegionInfoReply,
  decodeRegionInfoRequest,
  type Empty,
  encodeDeviceInfo,
  encodeEmpty,
  encodeIoFdsReply,
  encodeIoFdsRequest,
  encodeRegionInfoReply,
  encodeRegionInfoRequest,
  type IoFdsReply,
  type IoFdsRequest,
  type RegionInfo,
  type RegionInfoFields,
} from './device.js';
import {
  type DmaData,
  type DmaLayout,
  type DmaMap,
  type DmaReadRequest,
  type DmaUnmap,
  type DmaWriteReply,
  decodeDmaMap,
  decodeDmaReadReply,
  decodeDmaReadRequest,
  decodeDmaUnmap,
  decodeDmaWriteReply,
  decodeDmaWriteRequest,
  encodeDmaMap,
  encodeDmaReadReply,
  encodeDmaReadRequest,
  encodeDmaUnmap,
  encodeDmaWriteReply,
  encodeDmaWriteRequest,
} from './dma.js';
import {
  type DeviceFeature,
  decodeDeviceFeature,
  decodeMigDataReadReply,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  encodeDeviceFeature,
  encodeMigDataReadReply,
  encodeMigDataReadRequest,
  encodeMigDataWriteRequest,
  type MigData,
  type MigDataReadRequest,
} from './feature.js';
import { decodeHeader, type Header, isErrorReply, isReply, replyErrno, writeHeader } from './header.js';
import {
  decodeIrqInfo,
  decodeIrqSet,
  encodeIrqInfo,
  encodeIrqSet,
  type IrqInfo,
  type IrqSet,
} from './irq.js';
import {
  decodeRegionReadReply,
  decodeRegionReadRequest,
  decodeRegionWriteMulti,
  decodeRegionWriteMultiReply,
  decodeRegionWriteReply,
  decodeRegionWriteRequest,
  encodeRegionReadReply,
  encodeRegionReadRequest,
  encodeRegionWriteMulti,
  encodeRegionWriteMultiReply,
  encodeRegionWriteReply,
  encodeRegionWriteRequest,
  type RegionData,
  type RegionReadRequest,
  type RegionWriteMulti,
  type RegionWriteMultiReply,
  type RegionWriteReply,
} from './region.js';
import { type DecodedVersion, decodeVersion, encodeVersion, type VersionPayload } from './version.js';

export interface CodecOptions {
  /** DMA_READ/DMA_WRITE layout of the peer (default `spec`; QEMU needs `qemu`). */
  readonly dmaLayout?: DmaLayout;
}

/** Payload of each command message. */
export interface CommandPayloads {
  [C.VERSION]: VersionPayload;
  [C.DMA_MAP]: DmaMap;
  [C.DMA_UNMAP]: DmaUnmap;
  [C.DEVICE_GET_INFO]: DeviceInfo;
  [C.DEVICE_GET_REGION_INFO]: RegionInfoFields;
  [C.DEVICE_GET_REGION_IO_FDS]: IoFdsRequest;
  [C.DEVICE_GET_IRQ_INFO]: IrqInfo;
  [C.DEVICE_SET_IRQS]: IrqSet;
  [C.REGION_READ]: RegionReadRequest;
  [C.REGION_WRITE]: RegionData;
  [C.DMA_READ]: DmaReadRequest;
  [C.DMA_WRITE]: DmaData;
  [C.DEVICE_RESET]: Empty;
  [C.REGION_WRITE_MULTI]: RegionWriteMulti;
  [C.DEVICE_FEATURE]: DeviceFeature;
  [C.MIG_DATA_READ]: MigDataReadRequest;
  [C.MIG_DATA_WRITE]: MigData;
}

/** Payload of each successful reply. */
export interface ReplyPayloads {
  [C.VERSION]: VersionPayload;
  [C.DMA_MAP]: Empty;
  [C.DMA_UNMAP]: DmaUnmap;
  [C.DEVICE_GET_INFO]: DeviceInfo;
  [C.DEVICE_GET_REGION_INFO]: RegionInfo;
  [C.DEVICE_GET_REGION_IO_FDS]: IoFdsReply;
  [C.DEVICE_GET_IRQ_INFO]: IrqInfo;
  [C.DEVICE_SET_IRQS]: Empty;
  [C.REGION_READ]: RegionData;
  [C.REGION_WRITE]: RegionWriteReply;
  [C.DMA_READ]: DmaData;
  [C.DMA_WRITE]: DmaWriteReply;
  [C.DEVICE_RESET]: Empty;
  [C.REGION_WRITE_MULTI]: RegionWriteMultiReply;
  [C.DEVICE_FEATURE]: DeviceFeature;
  [C.MIG_DATA_READ]: MigData;
  [C.MIG_DATA_WRITE]: Empty;
}

interface Codec<T> {
  decode(p: Uint8Array, o: CodecOptions): T;
  encode(v: T, o: CodecOptions): Uint8Array;
}
type Codecs<M> = { [K in VfioUserCommandNumber]: Codec<M[K & keyof M]> };

const layout = (o: CodecOptions): DmaLayout => o.dmaLayout ?? 'spec';
const empty: Codec<Empty> = { decode: decodeEmpty, encode: encodeEmpty };

const commandCodecs: Codecs<CommandPayloads> = {
  [C.VERSION]: { decode: (p): DecodedVersion => decodeVersion(p), encode: encodeVersion },
  [C.DMA_MAP]: { decode: decodeDmaMap, encode: encodeDmaMap },
  [C.DMA_UNMAP]: { decode: (p) => decodeDmaUnmap(p, 'command'), encode: encodeDmaUnmap },
  [C.DEVICE_GET_INFO]: { decode: (p) => decodeDeviceInfo(p, 'command'), encode: encodeDeviceInfo },
  [C.DEVICE_GET_REGION_INFO]: { decode: decodeRegionInfoRequest, encode: encodeRegionInfoRequest },
  [C.DEVICE_GET_REGION_IO_FDS]: { decode: decodeIoFdsRequest, encode: encodeIoFdsRequest },
  [C.DEVICE_GET_IRQ_INFO]: { decode: (p) => decodeIrqInfo(p, 'command'), encode: encodeIrqInfo },
  [C.DEVICE_SET_IRQS]: { decode: decodeIrqSet, encode: encodeIrqSet },
  [C.REGION_READ]: { decode: decodeRegionReadRequest, encode: encodeRegionReadRequest },
  [C.REGION_WRITE]: { decode: decodeRegionWriteRequest, encode: encodeRegionWriteRequest },
  [C.DMA_READ]: {
    decode: (p, o) => decodeDmaReadRequest(p, layout(o)),
    encode: (v) => encodeDmaReadRequest(v),
  },
  [C.DMA_WRITE]: {
    decode: (p, o) => decodeDmaWriteRequest(p, layout(o)),
    encode: (v, o) => encodeDmaWriteRequest(v, layout(o)),
  },
  [C.DEVICE_RESET]: empty,
  [C.REGION_WRITE_MULTI]: { decode: decodeRegionWriteMulti, encode: encodeRegionWriteMulti },
  [C.DEVICE_FEATURE]: { decode: (p) => decodeDeviceFeature(p, 'command'), encode: encodeDeviceFeature },
  [C.MIG_DATA_READ]: { decode: decodeMigDataReadRequest, encode: encodeMigDataReadRequest },
  [C.MIG_DATA_WRITE]: { decode: decodeMigDataWriteRequest, encode: encodeMigDataWriteRequest },
};

const replyCodecs: Codecs<ReplyPayloads> = {
  [C.VERSION]: { decode: (p): DecodedVersion => decodeVersion(p), encode: encodeVersion },
  [C.DMA_MAP]: empty,
  [C.DMA_UNMAP]: { decode: (p) => decodeDmaUnmap(p, 'reply'), encode: encodeDmaUnmap },
  [C.DEVICE_GET_INFO]: { decode: (p) => decodeDeviceInfo(p, 'reply'), encode: encodeDeviceInfo },
  [C.DEVICE_GET_REGION_INFO]: { decode: decodeRegionInfoReply, encode: encodeRegionInfoReply },
  [C.DEVICE_GET_REGION_IO_FDS]: { decode: decodeIoFdsReply, encode: encodeIoFdsReply },
  [C.DEVICE_GET_IRQ_INFO]: { decode: (p) => decodeIrqInfo(p, 'reply'), encode: encodeIrqInfo },
  [C.DEVICE_SET_IRQS]: empty,
  [C.REGION_READ]: { decode: decodeRegionReadReply, encode: encodeRegionReadReply },
  [C.REGION_WRITE]: { decode: decodeRegionWriteReply, encode: encodeRegionWriteReply },
  [C.DMA_READ]: {
    decode: (p, o) => decodeDmaReadReply(p, layout(o)),
    encode: (v, o) => encodeDmaReadReply(v, layout(o)),
  },
  [C.DMA_WRITE]: { decode: decodeDmaWriteReply, encode: (v, o) => encodeDmaWriteReply(v, layout(o)) },
  [C.DEVICE_RESET]: empty,
  [C.REGION_WRITE_MULTI]: { decode: decodeRegionWriteMultiReply, encode: encodeRegionWriteMultiReply },
  [C.DEVICE_FEATURE]: { decode: (p) => decodeDeviceFeature(p, 'reply'), encode: encodeDeviceFeature },
  [C.MIG_DATA_READ]: { decode: decodeMigDataReadReply, encode: encodeMigDataReadReply },
  [C.MIG_DATA_WRITE]: empty,
};

function unknown(command: number, type: string): never {
  // libvfio-user handle_request answers an unknown command with EINVAL.
  throw malformed(
    `${vfioUserCommandName(command)} ${type}`,
    `command ${command} is not defined by vfio-user`,
  );
}

/**
 * Decodes the payload of a command message.
 * @throws MalformedError(EINVAL) for an undefined command or a payload its decoder refuses.
 */
export function decodeCommandPayload<K extends VfioUserCommandNumber>(
  command: K,
  payload: Uint8Array,
  opts: CodecOptions = {},
): CommandPayloads[K] {
  if (!isVfioUserCommand(command)) unknown(command, 'command');
  return (commandCodecs[command] as Codec<CommandPayloads[K]>).decode(payload, opts);
}

/** Decodes the payload of a successful (non-error) reply. @throws MalformedError(EINVAL) */
export function decodeReplyPayload<K extends VfioUserCommandNumber>(
  command: K,
  payload: Uint8Array,
  opts: CodecOptions = {},
): ReplyPayloads[K] {
  if (!isVfioUserCommand(command)) unknown(command, 'reply');
  return (replyCodecs[command] as Codec<ReplyPayloads[K]>).decode(payload, opts);
}

/** Payload bytes of a command message. @throws VfioError(EINVAL) for a field out of range. */
export function encodeCommandPayload<K extends VfioUserCommandNumber>(
  command: K,
  body: CommandPayloads[K],
  opts: CodecOptions = {},
): Uint8Array {
  if (!isVfioUserCommand(command)) unknown(command, 'command');
  return (commandCodecs[command] as Codec<CommandPayloads[K]>).encode(body, opts);
}

/** Payload bytes of a successful reply. @throws VfioError(EINVAL) for a field out of range. */
export function encodeReplyPayload<K extends VfioUserCommandNumber>(
  command: K,
  body: ReplyPayloads[K],
  opts: CodecOptions = {},
): Uint8Array {
  if (!isVfioUserCommand(command)) unknown(command, 'reply');
  return (replyCodecs[command] as Codec<ReplyPayloads[K]>).encode(body, opts);
}

export type CommandMessage = {
  [K in VfioUserCommandNumber]: {
    readonly kind: 'command';
    readonly command: K;
    readonly header: Header;
    readonly body: CommandPayloads[K];
  };
}[VfioUserCommandNumber];

export type ReplyMessage = {
  [K in VfioUserCommandNumber]: {
    readonly kind: 'reply';
    readonly command: K;
    readonly header: Header;
    readonly body: ReplyPayloads[K];
  };
}[VfioUserCommandNumber];

export interface ErrorReplyMessage {
  readonly kind: 'error';
  readonly command: number;
  readonly header: Header;
  /** `replyErrno(header)`: 0 and values above 4096 read as EINVAL. */
  readonly errno: number;
}

export type Message = CommandMessage | ReplyMessage | ErrorReplyMessage;

/**
 * Decodes one complete message (exactly msg_size bytes). An error reply's payload, which the spec
 * forbids, is ignored.
 * @throws MalformedError(EINVAL): a header `decodeHeader` refuses; msg_size not equal to the
 * bytes given; an undefined command; a payload its decoder refuses.
 */
export function decodeMessage(bytes: Uint8Array, opts: CodecOptions = {}): Message {
  const header = decodeHeader(bytes);
  if (header.msgSize !== bytes.byteLength) {
    throw malformed('vfio-user header', `msg_size ${header.msgSize} but ${bytes.byteLength} bytes given`);
  }
  const payload = bytes.subarray(VFIO_USER_HEADER_SIZE);
  const command = header.command;
  if (isErrorReply(header)) return { kind: 'error', command, header, errno: replyErrno(header) };
  if (!isVfioUserCommand(command)) unknown(command, isReply(header) ? 'reply' : 'command');
  if (isReply(header)) {
    return {
      kind: 'reply',
      command,
      header,
      body: decodeReplyPayload(command, payload, opts),
    } as ReplyMessage;
  }
  return {
    kind: 'command',
    command,
    header,
    body: decodeCommandPayload(command, payload, opts),
  } as CommandMessage;
}

/**
 * Bytes of a decoded message: its header's msg_id, command, flags and error, msg_size
 * recomputed, and the body re-encoded (nothing for an error reply).
 */
export function encodeDecodedMessage(m: Message, opts: CodecOptions = {}): Uint8Array {
  const payload =
    m.kind === 'error'
      ? new Uint8Array(0)
      : m.kind === 'reply'
        ? encodeReplyPayload(m.command, m.body as ReplyPayloads[typeof m.command], opts)
        : encodeCommandPayload(m.command, m.body as CommandPayloads[typeof m.command], opts);
  const out = new Uint8Array(VFIO_USER_HEADER_SIZE + payload.byteLength);
  writeHeader(out, 0, { ...m.header, msgSize: out.byteLength });
  out.set(payload, VFIO_USER_HEADER_SIZE);
  return out;
}
