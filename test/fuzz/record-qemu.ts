/**
 * Records the messages QEMU 11's vfio-user-pci client sends to our server, for the fuzz corpus
 * (test/vectors/fuzz/qemu11-<device>.json, read by test/fuzz/wire.ts and server.ts):
 *
 *   node dist/test/fuzz/record-qemu.js [edu|ivshmem]...
 *
 * Needs the provisioned cache and root (QEMU 11 runs in the trixie chroot with -accel qtest);
 * drives the same kind of session a guest driver would: config space, BAR sizing and
 * programming, register reads and writes, INTx, and edu DMA through guest RAM. Every message the
 * server receives is kept as hex with the number of fds that came with it.
 */
import { writeFileSync } from 'node:fs';
import { createDevice, type DeviceName, isDeviceName } from '../../src/devices/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { Session, VfioUserServer } from '../../src/server/index.js';
import type { Frame } from '../../src/wire/vfio-user.js';
import { chrootWorkDir, provisioned, type QtestSession, vfioUserQtest, withQtest } from '../harness/index.js';
import { toHex } from './prng.js';

const BAR0 = 0xe000_0000;
const BAR2 = 0x8_0000_0000n;

interface Recorded {
  hex: string;
  fds: number;
}

async function findDevice(q: QtestSession, vendorDevice: number): Promise<number> {
  for (let dev = 0; dev < 32; dev++) if ((await q.pciConfigRead32(0, dev, 0, 0)) === vendorDevice) return dev;
  throw new Error(`device ${vendorDevice.toString(16)} not found`);
}

async function drive(q: QtestSession, name: DeviceName): Promise<void> {
  const dev = await findDevice(q, name === 'edu' ? 0x11e81234 : 0x11101af4);
  for (let off = 0; off < 0x100; off += 4) await q.pciConfigRead32(0, dev, 0, off);
  await q.pciConfigWrite32(0, dev, 0, 0x10, 0xffffffff);
  await q.pciConfigRead32(0, dev, 0, 0x10);
  await q.pciConfigWrite32(0, dev, 0, 0x10, BAR0);
  if (name === 'ivshmem') {
    await q.pciConfigWrite32(0, dev, 0, 0x18, 0xffffffff);
    await q.pciConfigWrite32(0, dev, 0, 0x1c, 0xffffffff);
    await q.pciConfigRead32(0, dev, 0, 0x18);
    await q.pciConfigWrite32(0, dev, 0, 0x18, Number(BAR2 & 0xffffffffn));
    await q.pciConfigWrite32(0, dev, 0, 0x1c, Number(BAR2 >> 32n));
  }
  const cmd = await q.pciConfigRead32(0, dev, 0, 4);
  await q.pciConfigWrite32(0, dev, 0, 4, (cmd & 0xffff) | 0x6);
  if (name === 'edu') {
    await q.readl(BAR0);
    await q.writel(BAR0 + 4, 0x5a5aa5a5);
    await q.readl(BAR0 + 4);
    await q.writel(BAR0 + 8, 6);
    await q.readl(BAR0 + 8);
    await q.writel(BAR0 + 0x60, 1);
    await q.readl(BAR0 + 0x24);
    await q.writel(BAR0 + 0x64, 1);
    await q.writel(0x10_0000, 0xabcd1234);
    await q.writel(BAR0 + 0x80, 0x10_0000);
    await q.writel(BAR0 + 0x88, 0x40000);
    await q.writel(BAR0 + 0x90, 4);
    await q.writel(BAR0 + 0x98, 1);
    await new Promise((r) => setTimeout(r, 50));
    await q.readl(BAR0 + 0x40000);
  } else {
    await q.writel(BAR0, 0xffffffff);
    await q.readl(BAR0 + 8);
    await q.writel(BAR2 + 0x1000n, 0x12345678);
    await q.readl(BAR2 + 0x1000n);
  }
}

async function record(name: DeviceName): Promise<Recorded[]> {
  const p = provisioned({ chroot: true });
  if ('missing' in p) throw new Error(`needs ${p.missing} (scripts/provision.sh)`);
  const work = chrootWorkDir(p);
  const sock = work.path(`${name}.sock`);
  const device = createDevice(name, { env: nativeEnvironment() });
  const server = new VfioUserServer(device);
  const out: Recorded[] = [];
  const onFrame = Session.prototype.onFrame;
  Session.prototype.onFrame = function (this: Session, f: Frame) {
    out.push({ hex: toHex(f.bytes), fds: f.fds.length });
    onFrame.call(this, f);
  };
  server.listen(sock.host);
  try {
    await withQtest(p, vfioUserQtest([sock.chroot]), (q) => drive(q, name));
    await server.idle();
  } finally {
    Session.prototype.onFrame = onFrame;
    server.stop();
    device.close();
    work.cleanup();
  }
  return out;
}

const names = process.argv.slice(2);
for (const name of names.length ? names : ['edu', 'ivshmem']) {
  if (!isDeviceName(name)) throw new Error(`unknown device ${name}`);
  const messages = await record(name);
  const file = `test/vectors/fuzz/qemu11-${name}.json`;
  const doc = {
    description: `Every message QEMU 11's vfio-user-pci sent to vfio-ts serving ${name} in a qtest session (config space, BAR sizing, register access, interrupts${name === 'edu' ? ', DMA' : ''}); fuzz seeds`,
    recordedWith: 'node dist/test/fuzz/record-qemu.js',
    messages,
  };
  writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(`${file}: ${messages.length} messages`);
}
