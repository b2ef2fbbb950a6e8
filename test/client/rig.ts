/**
 * Test rigs for the vfio-user client: our own server (src/server) serving an example device on
 * one end of a socketpair, the client on the other; or a scripted fake peer that answers raw
 * frames as a test tells it to.
 */

import { type ClientOptions, VfioUserClient } from '../../src/client/index.js';
import type { DeviceOptions, VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';

export interface ServedClient {
  readonly client: VfioUserClient;
  readonly server: VfioUserServer;
  readonly device: VfioPciDevice;
  close(): Promise<void>;
}

/** Our server, in this process, serving `name`; our client connected to it over a socketpair. */
export async function servedClient(
  name: DeviceName | (() => VfioPciDevice),
  opts: ClientOptions = {},
  device: Partial<Omit<DeviceOptions, 'env'>> = {},
): Promise<ServedClient> {
  const dev =
    typeof name === 'function' ? name() : createDevice(name, { env: nativeEnvironment(), ...device });
  const server = new VfioUserServer(dev);
  const [a, b] = socketPair();
  server.adopt(a);
  const client = await VfioUserClient.fromFd(b, opts);
  return {
    client,
    server,
    device: dev,
    async close() {
      await client.close();
      await server.idle();
      server.stop();
      dev.close();
    },
  };
}
