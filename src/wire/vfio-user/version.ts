/**
 * VFIO_USER_VERSION (spec, "VFIO_USER_VERSION"): u16 major, u16 minor, then an optional
 * NUL-terminated UTF-8 JSON document `{"capabilities": {...}}`. The same layout is used for the
 * client's proposal and the server's reply.
 *
 * The decoded form keeps the parsed document as it came (`json`, member order and unknown members
 * included) next to the typed, defaulted view (`capabilities`); encoding writes `json` back, so a
 * proposal decodes and re-encodes to the same bytes when it was written in QEMU's layout.
 */
import {
  VfioUserCapKey as K,
  VFIO_USER_DEFAULT_MAX_BITMAP_SIZE,
  VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE,
  VFIO_USER_DEFAULT_MAX_DMA_MAPS,
  VFIO_USER_DEFAULT_MAX_MSG_FDS,
  VFIO_USER_DEFAULT_MIGRATION_PGSIZE,
  VFIO_USER_DEFAULT_PGSIZES,
  vfio_user_version,
} from '../../abi/vfio-user.js';
import { struct } from '../struct.js';
import { encodeFail, malformed, needBytes, U32_MAX, U64_MAX } from './bytes.js';
import { isJsonObject, type JsonObject, type JsonValue, parseJson, setMember, writeJson } from './json.js';

const VERSION = struct(vfio_user_version);

export interface VersionPayload {
  readonly major: number;
  readonly minor: number;
  /** The JSON document; absent when the message carries none (4-byte payload). */
  readonly json?: JsonObject;
}

export interface TwinSocket {
  readonly supported: boolean;
  /** Index of the socket in the reply's fd array; only meaningful in a reply. */
  readonly fdIndex?: number;
}

export interface MigrationCapability {
  readonly pgsize: number;
  readonly maxBitmapSize: number;
}

/** Every capability, defaults applied (spec's capability table; migration per QEMU protocol.h). */
export interface Capabilities {
  readonly maxMsgFds: number;
  readonly maxDataXferSize: number;
  readonly maxDmaMaps: number;
  /** Bitmap of supported DMA page sizes (u64). */
  readonly pgsizes: bigint;
  readonly writeMultiple: boolean;
  readonly twinSocket: TwinSocket;
  /** Absent when the peer sent no `migration` object (the spec defines no default for it). */
  readonly migration?: MigrationCapability;
}

export interface DecodedVersion extends VersionPayload {
  readonly capabilities: Capabilities;
}

/** What `capabilitiesJson` writes; members left out are omitted from the document. */
export interface CapabilitiesInput {
  readonly maxMsgFds?: number;
  readonly maxDataXferSize?: number;
  readonly maxDmaMaps?: number;
  readonly pgsizes?: bigint;
  readonly writeMultiple?: boolean;
  readonly twinSocket?: TwinSocket;
  readonly migration?: Partial<MigrationCapability>;
}

const WHAT = 'VFIO_USER_VERSION';

export const DEFAULT_CAPABILITIES: Capabilities = {
  maxMsgFds: VFIO_USER_DEFAULT_MAX_MSG_FDS,
  maxDataXferSize: VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE,
  maxDmaMaps: VFIO_USER_DEFAULT_MAX_DMA_MAPS,
  pgsizes: VFIO_USER_DEFAULT_PGSIZES,
  writeMultiple: false,
  twinSocket: { supported: false },
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

function typeError(path: string, want: string, got: JsonValue): never {
  const shown = typeof got === 'bigint' ? got.toString() : JSON.stringify(got);
  throw malformed(WHAT, `${path} must be ${want}, got ${shown}`);
}

function uint(path: string, v: JsonValue, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    return typeError(path, `an integer in 0..${max}`, v);
  }
  return v;
}

function bool(path: string, v: JsonValue): boolean {
  if (typeof v !== 'boolean') return typeError(path, 'a boolean', v);
  return v;
}

function obj(path: string, v: JsonValue): JsonObject {
  if (!isJsonObject(v)) return typeError(path, 'an object', v);
  return v;
}

function member(o: JsonObject, key: string): JsonValue | undefined {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

/**
 * Typed view of a VERSION document with the spec's defaults filled in. Unknown members are
 * allowed (and stay in the document); known members of the wrong type are refused.
 * @throws MalformedError(EINVAL)
 */
export function resolveCapabilities(json: JsonObject | undefined): Capabilities {
  if (json === undefined) return DEFAULT_CAPABILITIES;
  const capsV = member(json, K.CAPABILITIES);
  if (capsV === undefined) return DEFAULT_CAPABILITIES;
  const caps = obj(K.CAPABILITIES, capsV);
  const at = (k: string) => `capabilities.${k}`;
  const get = (k: string) => member(caps, k);

  const maxMsgFdsV = get(K.MAX_MSG_FDS);
  const maxXferV = get(K.MAX_DATA_XFER_SIZE);
  const maxDmaV = get(K.MAX_DMA_MAPS);
  const pgsizesV = get(K.PGSIZES);
  const multiV = get(K.WRITE_MULTIPLE);
  const twinV = get(K.TWIN_SOCKET);
  const migV = get(K.MIGRATION);

  let pgsizes = DEFAULT_CAPABILITIES.pgsizes;
  if (pgsizesV !== undefined) {
    const ok =
      (typeof pgsizesV === 'number' && Number.isInteger(pgsizesV) && pgsizesV >= 0) ||
      (typeof pgsizesV === 'bigint' && pgsizesV >= 0n && pgsizesV <= U64_MAX);
    if (!ok) typeError(at(K.PGSIZES), 'an integer in 0..2^64-1', pgsizesV);
    pgsizes = BigInt(pgsizesV as number | bigint);
  }

  let twinSocket = DEFAULT_CAPABILITIES.twinSocket;
  if (twinV !== undefined) {
    const t = obj(at(K.TWIN_SOCKET), twinV);
    const sup = member(t, K.SUPPORTED);
    const idx = member(t, K.FD_INDEX);
    const supported = sup === undefined ? false : bool(`${at(K.TWIN_SOCKET)}.supported`, sup);
    twinSocket =
      idx === undefined
        ? { supported }
        : { supported, fdIndex: uint(`${at(K.TWIN_SOCKET)}.fd_index`, idx, U32_MAX) };
  }

  let migration: MigrationCapability | undefined;
  if (migV !== undefined) {
    const m = obj(at(K.MIGRATION), migV);
    const pg = member(m, K.PGSIZE);
    const bm = member(m, K.MAX_BITMAP_SIZE);
    migration = {
      pgsize:
        pg === undefined
          ? VFIO_USER_DEFAULT_MIGRATION_PGSIZE
          : uint(`${at(K.MIGRATION)}.pgsize`, pg, Number.MAX_SAFE_INTEGER),
      maxBitmapSize:
        bm === undefined
          ? VFIO_USER_DEFAULT_MAX_BITMAP_SIZE
          : uint(`${at(K.MIGRATION)}.max_bitmap_size`, bm, Number.MAX_SAFE_INTEGER),
    };
  }

  const base: Omit<Capabilities, 'migration'> = {
    maxMsgFds:
      maxMsgFdsV === undefined
        ? DEFAULT_CAPABILITIES.maxMsgFds
        : uint(at(K.MAX_MSG_FDS), maxMsgFdsV, U32_MAX),
    maxDataXferSize:
      maxXferV === undefined
        ? DEFAULT_CAPABILITIES.maxDataXferSize
        : uint(at(K.MAX_DATA_XFER_SIZE), maxXferV, Number.MAX_SAFE_INTEGER),
    maxDmaMaps:
      maxDmaV === undefined ? DEFAULT_CAPABILITIES.maxDmaMaps : uint(at(K.MAX_DMA_MAPS), maxDmaV, U32_MAX),
    pgsizes,
    writeMultiple: multiV === undefined ? false : bool(at(K.WRITE_MULTIPLE), multiV),
    twinSocket,
  };
  return migration === undefined ? base : { ...base, migration };
}

/**
 * Decodes a VERSION payload (command or reply).
 * @throws MalformedError(EINVAL): payload under 4 bytes; data not NUL-terminated or with a NUL
 * inside; invalid UTF-8; JSON that is malformed, not an object, or has a known capability of the
 * wrong type.
 */
export function decodeVersion(payload: Uint8Array): DecodedVersion {
  needBytes(WHAT, payload, VERSION.size);
  const { major, minor } = VERSION.read(payload);
  if (payload.byteLength === VERSION.size) {
    return { major, minor, capabilities: DEFAULT_CAPABILITIES };
  }
  const data = payload.subarray(VERSION.offsetOf('data'));
  const nul = data.indexOf(0);
  if (nul !== data.byteLength - 1) {
    throw malformed(
      WHAT,
      nul < 0
        ? 'version data is not NUL-terminated'
        : `NUL at byte ${nul} of ${data.byteLength} of version data`,
    );
  }
  let text: string;
  try {
    text = utf8.decode(data.subarray(0, nul));
  } catch {
    throw malformed(WHAT, 'version data is not valid UTF-8');
  }
  const json = parseJson(text);
  if (!isJsonObject(json)) throw malformed(WHAT, 'version data is not a JSON object');
  return { major, minor, json, capabilities: resolveCapabilities(json) };
}

/**
 * The capability names a VERSION document carries (the members of its `capabilities` object),
 * so a server can reply with a subset of them (spec: "The capability list must be a subset of
 * those proposed"). Empty for a bare 4-byte proposal.
 */
export function proposedCapabilities(v: VersionPayload): ReadonlySet<string> {
  const caps = v.json === undefined ? undefined : member(v.json, K.CAPABILITIES);
  return new Set(isJsonObject(caps) ? Object.keys(caps) : []);
}

/** u16 major, u16 minor, then `json` in QEMU's layout with its NUL (omitted when `json` is absent). */
export function encodeVersion(v: VersionPayload): Uint8Array {
  VERSION.check({ major: v.major, minor: v.minor }, WHAT);
  const text = v.json === undefined ? undefined : utf8Encoder.encode(writeJson(v.json));
  if (text?.includes(0)) encodeFail(WHAT, 'JSON text contains a NUL byte');
  const out = new Uint8Array(VERSION.size + (text === undefined ? 0 : text.byteLength + 1));
  VERSION.write(out, { major: v.major, minor: v.minor });
  if (text !== undefined) out.set(text, VERSION.offsetOf('data')); // the trailing NUL is already 0
  return out;
}

/**
 * `{"capabilities": {...}}` with the given members, in the order max_msg_fds,
 * max_data_xfer_size, max_dma_maps, pgsizes, write_multiple, twin_socket, migration.
 */
export function capabilitiesJson(c: CapabilitiesInput): JsonObject {
  const caps: JsonObject = {};
  if (c.maxMsgFds !== undefined) setMember(caps, K.MAX_MSG_FDS, c.maxMsgFds);
  if (c.maxDataXferSize !== undefined) setMember(caps, K.MAX_DATA_XFER_SIZE, c.maxDataXferSize);
  if (c.maxDmaMaps !== undefined) setMember(caps, K.MAX_DMA_MAPS, c.maxDmaMaps);
  if (c.pgsizes !== undefined) {
    const n = Number(c.pgsizes);
    setMember(caps, K.PGSIZES, Number.isSafeInteger(n) ? n : c.pgsizes);
  }
  if (c.writeMultiple !== undefined) setMember(caps, K.WRITE_MULTIPLE, c.writeMultiple);
  if (c.twinSocket !== undefined) {
    const t: JsonObject = { [K.SUPPORTED]: c.twinSocket.supported };
    if (c.twinSocket.fdIndex !== undefined) setMember(t, K.FD_INDEX, c.twinSocket.fdIndex);
    setMember(caps, K.TWIN_SOCKET, t);
  }
  if (c.migration !== undefined) {
    const m: JsonObject = {};
    if (c.migration.pgsize !== undefined) setMember(m, K.PGSIZE, c.migration.pgsize);
    if (c.migration.maxBitmapSize !== undefined) setMember(m, K.MAX_BITMAP_SIZE, c.migration.maxBitmapSize);
    setMember(caps, K.MIGRATION, m);
  }
  const top: JsonObject = {};
  setMember(top, K.CAPABILITIES, caps);
  return top;
}
