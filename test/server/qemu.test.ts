/**
 * Real peers: QEMU 11's vfio-user-pci (in the trixie chroot) connected to our server.
 *  (a) `-accel qtest`: config space through 0xcf8/0xcfc, BAR0 sized and programmed, edu's
 *      registers read and written at the BAR address — every access a REGION_READ/WRITE;
 *  (b) a Linux guest that sees the device, reads BAR0 through resource0 and takes an INTx
 *      interrupt through uio_pci_generic.
 * These need the provisioned cache and root (chroot); they never skip under CI=true.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { test } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioUserClient } from '../../src/client/index.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { nativeEnvironment } from '../../src/runtime.js';
import {
  type ServerOptions,
  ThreadedServer,
  type ThreadLoopMode,
  VfioUserServer,
} from '../../src/server/index.js';
import {
  bootGuest,
  buildInitramfs,
  type ChrootWorkDir,
  chrootWorkDir,
  describeBoot,
  HOST_LSPCI,
  type KernelLabel,
  type Provisioned,
  provisionedOrSkip,
  type QtestSession,
  repoRoot,
  sharedMemory,
  vfioUserPci,
  vfioUserQtest,
  withQtest,
} from '../harness/index.js';

const EDU_VENDOR_DEVICE = 0x11e81234;
const EDU_ID = 0x010000ed;
const BAR0_ADDR = 0xe000_0000;

function serve(name: DeviceName, path: string, log: string[], opts: ServerOptions = {}) {
  const device = createDevice(name, { env: nativeEnvironment() });
  const server = new VfioUserServer(device, { ...opts, log: (l) => log.push(l) });
  server.listen(path);
  return {
    device,
    server,
    close() {
      server.stop();
      device.close();
    },
  };
}

/** Where the edu tests' server runs: this thread's libuv loop, or a worker with a thread loop. */
type Where = 'in-process' | ThreadLoopMode;

/** edu served `where`; `mapped()` is how many DMA regions QEMU mapped, when this thread can see. */
async function serveEdu(where: Where, path: string, log: string[], opts: { verbose?: boolean } = {}) {
  if (where === 'in-process') {
    const s = serve('edu', path, log, opts);
    return { mapped: () => s.device.dma.count, close: async () => s.close() };
  }
  const server = await ThreadedServer.start(
    { module: new URL('./thread-device.js', import.meta.url), export: 'device', arg: { name: 'edu' } },
    { loop: where, pollIdleMs: 50, log: (l) => log.push(l), ...opts },
  );
  server.listen(path);
  return { mapped: () => undefined, close: () => server.stop() };
}

const WHERE: readonly Where[] = ['in-process', 'blocking', 'poll'];
const named = (where: Where) => (where === 'in-process' ? '' : ` (server in a worker, ${where} loop)`);

async function findDevice(q: QtestSession, vendorDevice: number): Promise<number> {
  for (let dev = 0; dev < 32; dev++) {
    if ((await q.pciConfigRead32(0, dev, 0, 0)) === vendorDevice) return dev;
  }
  return -1;
}

for (const where of WHERE) {
  test(`QEMU 11 qtest: config space, BAR sizing and programming, edu registers, INTx and DMA into guest RAM over vfio-user${named(where)}`, async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const work = chrootWorkDir(p);
    const log: string[] = [];
    const sock = work.path('edu.sock');
    const s = await serveEdu(where, sock.host, log);
    try {
      await withQtest(p, vfioUserQtest([sock.chroot]), async (q) => {
        const dev = await findDevice(q, EDU_VENDOR_DEVICE);
        assert.ok(dev >= 0, `edu not found on bus 0\n${q.stderr}\n${log.join('\n')}`);
        // Class code: 0x00ff00, revision 0x10.
        assert.equal(await q.pciConfigRead32(0, dev, 0, 8), 0x00ff0010);
        // BAR0 sizing: all ones, read back the mask: 1 MiB, 32-bit memory.
        await q.pciConfigWrite32(0, dev, 0, 0x10, 0xffffffff);
        const mask = await q.pciConfigRead32(0, dev, 0, 0x10);
        assert.equal((~(mask & ~0xf) + 1) >>> 0, 1 << 20, `BAR0 mask 0x${mask.toString(16)}`);
        await q.pciConfigWrite32(0, dev, 0, 0x10, BAR0_ADDR);
        assert.equal(((await q.pciConfigRead32(0, dev, 0, 0x10)) & ~0xf) >>> 0, BAR0_ADDR);
        // Command: memory space on.
        const cmd = await q.pciConfigRead32(0, dev, 0, 4);
        await q.pciConfigWrite32(0, dev, 0, 4, (cmd & 0xffff) | 0x2);
        assert.equal(await q.readl(BAR0_ADDR), EDU_ID);
        await q.writel(BAR0_ADDR + 4, 0x5a5aa5a5);
        assert.equal(await q.readl(BAR0_ADDR + 4), ~0x5a5aa5a5 >>> 0);
        await q.writel(BAR0_ADDR + 8, 6);
        assert.equal(await q.readl(BAR0_ADDR + 8), 720);
        // INTx: edu raises (BAR0 + 0x60), our eventfd signal becomes QEMU's INTx: an IOAPIC
        // line goes up; QEMU lowers it at the next BAR access (its EOI) and unmasks us.
        await q.command('irq_intercept_in ioapic');
        await q.writel(BAR0_ADDR + 0x60, 1);
        for (let i = 0; i < 100 && !q.irqEvents.some((e) => e.startsWith('IRQ raise')); i++)
          await new Promise((r) => setTimeout(r, 20));
        const raised = q.irqEvents.find((e) => e.startsWith('IRQ raise'));
        assert.ok(raised, `no INTx seen\n${log.join('\n')}`);
        assert.equal(await q.readl(BAR0_ADDR + 0x24), 1, 'edu interrupt status');
        assert.ok(q.irqEvents.includes(raised.replace('raise', 'lower')), q.irqEvents.join(', '));
        // DMA through QEMU's guest RAM, which QEMU handed us as memfd DMA_MAPs: RAM -> edu.
        await q.writel(0x10_0000, 0xabcd1234);
        await q.writel(BAR0_ADDR + 0x80, 0x10_0000);
        await q.writel(BAR0_ADDR + 0x88, 0x40000);
        await q.writel(BAR0_ADDR + 0x90, 4);
        await q.writel(BAR0_ADDR + 0x98, 1);
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(await q.readl(BAR0_ADDR + 0x40000), 0xabcd1234, 'edu read guest RAM');
        // ...and edu -> RAM.
        await q.writel(BAR0_ADDR + 0x40004, 0x0badcafe);
        await q.writel(BAR0_ADDR + 0x80, 0x40004);
        await q.writel(BAR0_ADDR + 0x88, 0x20_0000);
        await q.writel(BAR0_ADDR + 0x98, 3);
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(await q.readl(0x20_0000), 0x0badcafe, 'edu wrote guest RAM');
        assert.notEqual(s.mapped(), 0, 'QEMU mapped its RAM');
      });
    } finally {
      await s.close();
      work.cleanup();
    }
    assert.ok(
      log.some((l) => /client 1 connected \(pid \d+, uid 0\)/.test(l)),
      log.join('\n'),
    );
    assert.ok(
      log.some((l) => /client 1 disconnected/.test(l)),
      log.join('\n'),
    );
  });
}

/** Polls edu's DMA command register (BAR0 + 0x98) until the start bit clears. */
async function eduDmaDone(q: QtestSession): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (((await q.readl(BAR0_ADDR + 0x98)) & 1) === 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail('edu DMA never finished');
}

for (const where of ['in-process', 'blocking'] as const) {
  test(`QEMU 11 qtest, guest RAM not fd-backed: edu DMA goes through DMA_READ / DMA_WRITE to QEMU${named(where)}`, async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const work = chrootWorkDir(p);
    const log: string[] = [];
    const sock = work.path('edu.sock');
    const s = await serveEdu(where, sock.host, log, { verbose: true });
    try {
      // Plain -m RAM: QEMU has no fd for it, so its DMA_MAPs carry none.
      await withQtest(p, vfioUserQtest([sock.chroot], 512, 'anonymous'), async (q) => {
        const dev = await findDevice(q, EDU_VENDOR_DEVICE);
        assert.ok(dev >= 0, `edu not found on bus 0\n${q.stderr}\n${log.join('\n')}`);
        await q.pciConfigWrite32(0, dev, 0, 0x10, BAR0_ADDR);
        const cmd = await q.pciConfigRead32(0, dev, 0, 4);
        await q.pciConfigWrite32(0, dev, 0, 4, (cmd & 0xffff) | 0x6); // memory space, bus master
        assert.equal(await q.readl(BAR0_ADDR), EDU_ID);
        assert.notEqual(s.mapped(), 0, 'QEMU mapped its RAM');
        // RAM -> edu: 4 KiB (edu's whole DMA buffer) of a pattern, one DMA_READ to QEMU.
        const pattern = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
        const words = new DataView(pattern.buffer);
        await q.write(0x10_0000, pattern);
        await q.writel(BAR0_ADDR + 0x80, 0x10_0000);
        await q.writel(BAR0_ADDR + 0x88, 0x40000);
        await q.writel(BAR0_ADDR + 0x90, pattern.length);
        await q.writel(BAR0_ADDR + 0x98, 1);
        await eduDmaDone(q);
        const why = () => log.filter((l) => /DMA/.test(l)).join('\n');
        assert.equal(
          await q.readl(BAR0_ADDR + 0x40000),
          words.getUint32(0, true),
          `edu buffer 0..3\n${why()}`,
        );
        assert.equal(
          await q.readl(BAR0_ADDR + 0x40ffc),
          words.getUint32(4092, true),
          'edu buffer 4092..4095',
        );
        // edu -> RAM: the buffer back to another address, one DMA_WRITE. Where the data sits in the
        // message (docs/vfio-user-wire.md) decides whether these bytes land shifted or at all.
        await q.writel(BAR0_ADDR + 0x80, 0x40000);
        await q.writel(BAR0_ADDR + 0x88, 0x30_0000);
        await q.writel(BAR0_ADDR + 0x90, pattern.length);
        await q.writel(BAR0_ADDR + 0x98, 3);
        await eduDmaDone(q);
        assert.deepEqual(await q.read(0x30_0000, pattern.length), pattern, `edu wrote guest RAM\n${why()}`);
        assert.equal(await q.readb(0x30_0000 + pattern.length), 0, 'nothing past the transfer');
        // One byte to RAM at an odd address: the count is honoured too.
        await q.writeb(0x40_0000, 0xee);
        await q.writel(BAR0_ADDR + 0x80, 0x40001);
        await q.writel(BAR0_ADDR + 0x88, 0x40_0001);
        await q.writel(BAR0_ADDR + 0x90, 1);
        await q.writel(BAR0_ADDR + 0x98, 3);
        await eduDmaDone(q);
        assert.deepEqual([...(await q.read(0x40_0000, 3))], [0xee, pattern[1], 0]);
      });
    } finally {
      await s.close();
      work.cleanup();
    }
    const trace = log.join('\n');
    assert.match(trace, /reply VFIO_USER_DMA_READ \d+B: reply/, trace);
    assert.match(trace, /reply VFIO_USER_DMA_WRITE \d+B: reply/, trace);
    assert.doesNotMatch(trace, /DMA_(READ|WRITE).*E[A-Z]+ \(/, trace);
  });
}

test('QEMU 11 qtest against `vfio-ts serve` (the command line), ivshmem BAR2 through the mmap fd, kept for the next client', async (t) => {
  const p = provisionedOrSkip(t, { chroot: true });
  if (!p) return;
  const work = chrootWorkDir(p);
  const sock = work.path('ivshmem.sock');
  const child = spawn(
    process.execPath,
    [
      `${repoRoot()}/dist/src/cli/main.js`,
      'serve',
      '--device',
      'ivshmem',
      '--socket',
      sock.host,
      '--verbose',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    for (let i = 0; i < 100 && !/serving ivshmem/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, /serving ivshmem/);
    assert.equal(statSync(sock.host).mode & 0o777, 0o600, 'socket is 0600');
    await withQtest(p, vfioUserQtest([sock.chroot]), async (q) => {
      const dev = await findDevice(q, 0x11101af4);
      assert.ok(dev >= 0, `ivshmem not found\n${q.stderr}\n${out}`);
      // BAR2/3: 64-bit prefetchable, 4 MiB; program it at 0x1_0000_0000 + 0x40000000.
      await q.pciConfigWrite32(0, dev, 0, 0x18, 0xffffffff);
      const lo = await q.pciConfigRead32(0, dev, 0, 0x18);
      assert.equal(lo & 0xf, 0xc, '64-bit prefetchable memory BAR');
      assert.equal((~(lo & ~0xf) + 1) >>> 0, 4 << 20);
      const addr = 0x1_4000_0000n;
      await q.pciConfigWrite32(0, dev, 0, 0x18, Number(addr & 0xffffffffn));
      await q.pciConfigWrite32(0, dev, 0, 0x1c, Number(addr >> 32n));
      const cmd = await q.pciConfigRead32(0, dev, 0, 4);
      await q.pciConfigWrite32(0, dev, 0, 4, (cmd & 0xffff) | 0x2);
      await q.writel(addr + 0x100n, 0xcafef00d);
      assert.equal(await q.readl(addr + 0x100n), 0xcafef00d);
    });
    // QEMU got BAR2's fd with its region info (and maps it rather than trapping accesses).
    assert.match(out, /DEVICE_GET_REGION_INFO .*ok \+1 fd/);
    // QEMU has exited and the server reset the device for the next client: the shared memory
    // QEMU wrote is still there (a host memory backend outlives its guest), as the next client sees.
    for (let i = 0; i < 100 && !/client 1 disconnected/.test(out); i++)
      await new Promise((r) => setTimeout(r, 50));
    const next = new VfioDevice(await VfioUserClient.connect(sock.host));
    assert.equal(await next.read32(2, 0x100), 0xcafef00d, 'BAR2 kept what QEMU wrote');
    await next.close();
  } finally {
    child.kill('SIGTERM');
    const code = await exited;
    work.cleanup();
    assert.equal(code, 0, out);
  }
  assert.match(out, /SIGTERM: shutting down/);
  assert.throws(() => statSync(sock.host), 'socket removed on exit');
});

/** Guest script: find edu, read BAR0 through resource0 (devmem), take an INTx through uio. */
const GUEST_SCRIPT = `
DEV=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ]; then DEV=$d; fi
done
[ -n "$DEV" ] || { echo "NO-EDU"; ls /sys/bus/pci/devices; exit 1; }
echo "EDU-AT $(basename $DEV)"
echo "LSPCI-BEGIN"
lspci -nn -vv 2>&1
echo "LSPCI-END $?"
echo 1 > $DEV/enable 2>/dev/null
BAR=$(head -n1 $DEV/resource | cut -d' ' -f1)
echo "BAR0 $BAR"
echo "ID $(devmem $BAR 32)"
echo "UIO-NEW-ID"
echo "1234 11e8" > /sys/bus/pci/drivers/uio_pci_generic/new_id
sleep 1
ls /sys/class/uio/ 2>&1
[ -e /dev/uio0 ] || mknod /dev/uio0 c $(cut -d: -f1 /sys/class/uio/uio0/dev) $(cut -d: -f2 /sys/class/uio/uio0/dev)
echo "IRQS-BEFORE $(cat /proc/interrupts | grep uio | tr -s ' ')"
( sleep 1; devmem $((BAR + 0x60)) 32 1 ) &
COUNT=$(timeout 10 dd if=/dev/uio0 bs=4 count=1 2>/dev/null | od -An -tu4 | tr -d ' ')
echo "UIO-COUNT $COUNT"
echo "IRQS-AFTER $(cat /proc/interrupts | grep uio | tr -s ' ')"
IV=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/device)" = 0x1110 ]; then IV=$d; fi
done
echo "IVSHMEM-AT $(basename "$IV")"
echo 1 > $IV/enable 2>/dev/null
BAR2=$(sed -n 3p $IV/resource | cut -d' ' -f1)
echo "BAR2 $BAR2"
devmem $((BAR2 + 0x100)) 32 0xfeedbeef
echo "IV-READ $(devmem $((BAR2 + 0x100)) 32)"
sleep 1
[ -n "$COUNT" ] && [ "$COUNT" -ge 1 ]
`;

/**
 * The block `lspci -nn -vv` printed for the device `vendor:device` in the guest's output: its
 * first line up to the blank line that ends it (the console may add \r).
 */
function lspciBlock(output: string, id: string): string | undefined {
  const m = /LSPCI-BEGIN\r?\n([\s\S]*?)LSPCI-END/.exec(output);
  if (!m?.[1]) return undefined;
  const blocks = m[1].replace(/\r/g, '').split(/\n\s*\n/);
  return blocks.find((b) => b.split('\n')[0]?.includes(`[${id}]`));
}

async function bootWithDevices(
  p: Provisioned,
  kernel: KernelLabel,
  work: ChrootWorkDir,
  sockets: readonly string[],
) {
  const initramfs = await buildInitramfs(p, {
    kernel: p.kernels[kernel],
    script: GUEST_SCRIPT,
    modules: ['uio', 'uio_pci_generic'],
    hostFiles: HOST_LSPCI,
    // lspci -vv is long: read it from the output disk, not the console (which drops bytes).
    outputDisk: true,
  });
  try {
    return await bootGuest(p, {
      initramfs,
      qemu: 'trixie',
      workDir: work,
      memoryMiB: 512,
      args: [...sharedMemory(512), ...sockets.flatMap((sk) => vfioUserPci(sk))],
      timeoutMs: 120_000,
    });
  } finally {
    initramfs.cleanup();
  }
}

for (const kernel of ['6.1', '7.3'] as const) {
  test(`Linux ${kernel} guest under QEMU 11: sees edu over vfio-user, reads BAR0, takes an INTx; writes ivshmem BAR2`, async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const work = chrootWorkDir(p);
    const log: string[] = [];
    const eduSock = work.path('edu.sock');
    const ivSock = work.path('ivshmem.sock');
    const edu = serve('edu', eduSock.host, log);
    const iv = serve('ivshmem', ivSock.host, log);
    // The guest's write to BAR2 lands in the server's memory through the mmapped fd: watch for it
    // while the guest runs (the device is reset when the client goes).
    let seen = false;
    const bar2 = iv.device.regionOffset(2) + 0x100n;
    const poll = setInterval(() => {
      try {
        if (new DataView(iv.device.pread(bar2, 4).buffer).getUint32(0, true) === 0xfeedbeef) seen = true;
      } catch (e) {
        // While the guest has memory decode off (BAR sizing, before `enable`), BAR reads are EIO,
        // as in vfio-pci; look again at the next tick.
        if (!(e instanceof VfioError && e.errno === Errno.EIO)) throw e;
      }
    }, 50);
    try {
      const r = await bootWithDevices(p, kernel, work, [eduSock.chroot, ivSock.chroot]);
      const why = `${describeBoot(r)}\nserver:\n${log.join('\n')}`;
      assert.equal(r.outputFrom, 'disk', why);
      assert.match(r.output, /EDU-AT 0000:/, why);
      // pciutils' lspci in the guest: edu's IDs, class, BAR0 (1 MiB, 32-bit memory) and INTx.
      const eduLspci = lspciBlock(r.output, '1234:11e8');
      assert.ok(eduLspci, `lspci did not list 1234:11e8\n${why}`);
      assert.match(eduLspci, /^[0-9a-f]{2}:[0-9a-f]{2}\.\d .*\[00ff\].*\[1234:11e8\] \(rev 10\)/, eduLspci);
      assert.match(
        eduLspci,
        /^\s+Region 0: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\) \[size=1M\]$/m,
        eduLspci,
      );
      assert.match(eduLspci, /^\s+Interrupt: pin A routed to IRQ \d+$/m, eduLspci);
      assert.ok(lspciBlock(r.output, '1af4:1110'), `lspci did not list ivshmem\n${why}`);
      assert.match(r.output, /ID 0x010000ED/i, why);
      assert.match(r.output, /UIO-COUNT [1-9]/, why);
      assert.match(r.output, /IVSHMEM-AT 0000:/, why);
      assert.match(r.output, /IV-READ 0xFEEDBEEF/i, why);
      assert.equal(r.status, 0, why);
      assert.ok(seen, `the server never saw the guest's BAR2 write\n${why}`);
    } finally {
      clearInterval(poll);
      edu.close();
      iv.close();
      work.cleanup();
    }
  });
}
