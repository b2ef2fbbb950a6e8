/**
 * The vfio-user codecs on the server's hot path, per message: the header, a REGION_READ request
 * decoded and its reply encoded, a REGION_WRITE request decoded, and a whole message encoded.
 * Run: `node dist/bench/wire.js`.
 */
import { VfioUserCommand as C } from '../src/abi/vfio-user.js';
import {
  decodeHeader,
  decodeRegionReadRequest,
  decodeRegionWriteRequest,
  encodeMessage,
  encodeRegionReadReply,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
} from '../src/wire/vfio-user.js';
import { type BenchRow, isMain, measure, printTable } from './lib.js';

export function runWireBench(): BenchRow[] {
  const data = new Uint8Array(4);
  const read = encodeRegionReadRequest({ offset: 0x10n, region: 2, count: 4 });
  const write = encodeRegionWriteRequest({ offset: 0x10n, region: 2, data });
  const message = encodeMessage({ msgId: 7, command: C.REGION_READ }, read);
  return [
    measure('decodeHeader', () => decodeHeader(message)),
    measure('decodeRegionReadRequest', () => decodeRegionReadRequest(read)),
    measure('encodeRegionReadReply 4 B', () => encodeRegionReadReply({ offset: 0x10n, region: 2, data })),
    measure('decodeRegionWriteRequest 4 B', () => decodeRegionWriteRequest(write)),
    measure('encodeMessage (16 B payload)', () => encodeMessage({ msgId: 7, command: C.REGION_READ }, read)),
  ];
}

if (isMain(import.meta.url)) printTable('vfio-user codecs', runWireBench());
