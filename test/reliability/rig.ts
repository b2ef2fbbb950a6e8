/**
 * A served device for the reliability tests: a VfioUserServer over one example device, clients
 * over socketpairs speaking raw bytes (RawClient), the server's log kept.
 */
import type { DeviceOptions } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { type ServerOptions, VfioUserServer } from '../../src/server/index.js';
import { RawClient } from '../fuzz/client.js';

export function rig(name: DeviceName, opts: ServerOptions = {}, device: Omit<DeviceOptions, 'env'> = {}) {
  const dev = createDevice(name, { env: nativeEnvironment(), ...device });
  const log: string[] = [];
  const server = new VfioUserServer(dev, { log: (l) => log.push(l), ...opts });
  return {
    device: dev,
    server,
    log,
    connect() {
      const [a, b] = socketPair();
      server.adopt(b);
      return new RawClient(a);
    },
    close() {
      server.stop();
      dev.close();
    },
  };
}
