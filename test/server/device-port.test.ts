/**
 * The server holds to its seam (src/server/device-port.ts): served through an object that has
 * DevicePort's members and nothing else, each delegating to a real device, the driver's verbs
 * work over vfio-user as they do over the device itself. A member the server reached past the
 * port (the device-fd `pread` it used to call, `description`, ...) would be missing here.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INTX_IRQ_INDEX } from '../../src/abi/vfio.js';
import { createDmaMemory, Eventfd, VfioUserClient } from '../../src/client/index.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { openFdCount, socketPair } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { type DevicePort, VfioUserServer } from '../../src/server/index.js';

/** Only the port's members, counting which the server calls. */
function portOf(d: VfioPciDevice, calls: Map<string, number>): DevicePort {
  const counted =
    <A extends unknown[], R>(name: string, f: (...args: A) => R) =>
    (...args: A): R => {
      calls.set(name, (calls.get(name) ?? 0) + 1);
      return f(...args);
    };
  return {
    ioctl: counted('ioctl', d.ioctl.bind(d)),
    ioctlAsync: counted('ioctlAsync', d.ioctlAsync.bind(d)),
    get migration() {
      return d.migration;
    },
    get numRegions() {
      return d.numRegions;
    },
    region: counted('region', d.region.bind(d)),
    readRegionInto: counted('readRegionInto', d.readRegionInto.bind(d)),
    writeRegion: counted('writeRegion', d.writeRegion.bind(d)),
    mappingSource: counted('mappingSource', (offset: bigint, length: number) =>
      d.mappingSource(offset, length),
    ),
    closeDmaBuf: counted('closeDmaBuf', d.closeDmaBuf.bind(d)),
    irqCount: counted('irqCount', d.irqCount.bind(d)),
    irqs: { close: counted('irqs.close', () => d.irqs.close()) },
    dma: d.dma,
    reset: counted('reset', d.reset.bind(d)),
  };
}

async function served(name: DeviceName) {
  const device = createDevice(name, { env: nativeEnvironment() });
  const calls = new Map<string, number>();
  const server = new VfioUserServer(portOf(device, calls), { log: () => {} });
  const [a, b] = socketPair();
  server.adopt(a);
  const dev = new VfioDevice(await VfioUserClient.fromFd(b));
  return {
    device,
    calls,
    dev,
    async close() {
      await dev.close();
      await server.idle();
      server.stop();
      device.close();
    },
  };
}

describe('vfio-user server over a DevicePort that is only the port', () => {
  test('ivshmem: region access by index, the BAR fd for mmap and WC, dma-buf, cleanup through the port', async () => {
    const fds = openFdCount();
    const s = await served('ivshmem');
    try {
      const info = await s.dev.info();
      assert.equal(info.numRegions, s.device.numRegions);
      assert.equal(await s.dev.write(2, 0x10, Uint8Array.of(1, 2, 3, 4)), 4);
      assert.deepEqual([...s.device.readRegion(2, 0x10n, 4)], [1, 2, 3, 4], 'the write reached BAR2');
      assert.deepEqual([...(await s.dev.read(2, 0x10, 4))], [1, 2, 3, 4]);
      const cfg = await s.dev.readConfig(0, 4);
      assert.deepEqual([...cfg], [...s.device.readRegion(VFIO_PCI_CONFIG_REGION_INDEX, 0n, 4)]);
      // A UC mapping (REGION_INFO's fd) and a WC one (the first WC path, a cookie): both the BAR.
      const uc = await s.dev.map(2);
      uc.bytes[0x20] = 0x5a;
      const wc = await s.dev.map(2, { attribute: 'wc' });
      assert.equal(wc.attribute, 'wc');
      wc.bytes[0x21] = 0xa5;
      assert.deepEqual([...s.device.readRegion(2, 0x20n, 2)], [0x5a, 0xa5]);
      uc.unmap();
      wc.unmap();
      const viaDmaBuf = await s.dev.map(2, { attribute: 'wc', path: 'dma-buf' });
      assert.equal(viaDmaBuf.bytes[0x20], 0x5a);
      viaDmaBuf.unmap();
    } finally {
      await s.close();
    }
    for (const m of ['ioctl', 'region', 'readRegionInto', 'writeRegion', 'mappingSource', 'closeDmaBuf'])
      assert.ok((s.calls.get(m) ?? 0) > 0, `the server used ${m}`);
    // The client left: its interrupts and cookies dropped, the device reset, through the port.
    assert.ok(s.calls.get('irqs.close'), 'interrupts dropped');
    assert.ok(s.calls.get('reset'), 'device reset');
    assert.equal(s.device.cookieCount, 0, 'no cookie outlives the client');
    assert.equal(openFdCount(), fds, 'no fd left behind');
  });

  test('edu: DMA_MAP of a memfd, and an interrupt through SET_IRQS, go through the port', async () => {
    const s = await served('edu');
    const mem = createDmaMemory(4096);
    const efd = new Eventfd();
    try {
      await s.dev.dmaMap(0x10000n, mem);
      assert.equal(s.device.dma.count, 1);
      await s.dev.dmaUnmap(0x10000n, 4096n);
      assert.equal(s.device.dma.count, 0);
      await s.dev.setIrqEventfds(VFIO_PCI_INTX_IRQ_INDEX, 0, [efd.fd]);
      assert.ok(s.calls.get('irqCount'), 'SET_IRQS bounded its count through the port');
      await s.dev.write(0, 0x60, Uint8Array.of(1, 0, 0, 0)); // edu: raise interrupt
      assert.equal(await efd.wait(5000), 1n, 'INTx delivered');
    } finally {
      await s.close();
      efd.close();
      mem.close();
    }
  });
});
