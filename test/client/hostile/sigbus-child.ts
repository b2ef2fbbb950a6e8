/**
 * Child process of sigbus.test.ts: a server maps out an unsealed memfd as BAR0, the client maps
 * it under the policy named in argv[2] ('refuse' | 'map'), then the server shrinks the file and
 * the client touches its mapping. Prints what happened; under 'map' the touch is SIGBUS, which
 * no code can catch: that is why 'refuse' is the default.
 */
import { VfioUserCommand as C } from '../../../src/abi/vfio-user.js';
import { VfioUserClient } from '../../../src/client/index.js';
import { VfioError } from '../../../src/errors.js';
import { closeFd, ftruncate, MFD_CLOEXEC, memfdCreate } from '../../../src/native/index.js';
import { decodeRegionInfoRequest, encodeRegionInfoReply } from '../../../src/wire/vfio-user.js';
import { BAR0_SIZE, HostileServer } from './server.js';

const policy = process.argv[2] === 'map' ? 'map' : 'refuse';
const srv = new HostileServer();
const file = memfdCreate('unsealed-bar0', BAR0_SIZE, MFD_CLOEXEC);
srv.answer = async (s, h) => {
  if (s.command !== C.DEVICE_GET_REGION_INFO || decodeRegionInfoRequest(s.payload).index !== 0) return false;
  const info = { argsz: 32, flags: 7, index: 0, capOffset: 0, size: BigInt(BAR0_SIZE), offset: 0n, caps: [] };
  await h.reply(s, encodeRegionInfoReply(info), [file]);
  return true;
};
const client = await VfioUserClient.fromFd(srv.clientFd, { unsealedFds: policy });
try {
  const m = await client.mmap(0n, BAR0_SIZE);
  m.bytes[BAR0_SIZE - 1] = 1;
  console.log('mapped');
  ftruncate(file, 0); // the server shrinks the file under the client's mapping
  m.bytes[BAR0_SIZE - 1] = 2; // SIGBUS
  console.log('touched after the shrink');
} catch (e) {
  console.log(e instanceof VfioError ? `refused ${e.code}: ${e.message}` : `threw ${String(e)}`);
}
await client.close();
srv.close();
closeFd(file);
