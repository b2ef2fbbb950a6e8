/**
 * `vfio-ts demo` (npm start): builds the example devices in-process on memfd-backed memory,
 * prints them as `vfio-ts info` does, then asks for a write-combining mapping of ivshmem's BAR2 through
 * every request path of the seed thread, writes through each mapping, reads the bytes back
 * through a region read, and exercises edu's registers, MSI and DMA. Exits 1 if anything fails.
 */
import { VFIO_PCI_MSI_IRQ_INDEX } from '../abi/vfio.js';
import { createDevice } from '../devices/index.js';
import { describeDevice, formatReport } from '../driver/describe.js';
import { VfioDevice, type WcPath } from '../driver/device.js';
import { hex } from '../driver/format.js';
import { LocalDeviceFile } from '../driver/local.js';
import { PciIdDatabase } from '../driver/pci-ids.js';
import { closeFd, eventfdCreate, eventfdRead, waitReadable } from '../native/index.js';
import { allocateShared, nativeEnvironment } from '../runtime.js';
import { CONSOLE, type CommandSpec, runCommand } from './args.js';

interface Check {
  readonly what: string;
  readonly ok: boolean;
  readonly detail: string;
}

export const DEMO: CommandSpec = {
  name: 'demo',
  operands: '',
  minOperands: 0,
  maxOperands: 0,
  description: `Builds edu and ivshmem (and the nvme model, whose MSI-X table sits inside BAR0) in-process on
memfd-backed memory and prints each the way vfio-ts info does; maps ivshmem's BAR2
write-combining through each of the four request paths (RFC region flags, mmap cookie, alias
region, DMA_BUF), writes through each mapping and reads the bytes back; then drives edu's
registers, an MSI through an eventfd, and a DMA round trip. npm start runs it.`,
  flags: [],
  notes: 'Exit status: 0 when every check passes, 1 when one fails (the FAIL lines name it), 2 usage.',
};

export function run(args: string[]): Promise<number> {
  return runCommand(DEMO, args, CONSOLE, () => demo());
}

async function demo(): Promise<number> {
  const env = nativeEnvironment();
  const names = systemNames();
  const checks: Check[] = [];
  const check = (what: string, ok: boolean, detail: string) => {
    checks.push({ what, ok, detail });
    console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}: ${detail}`);
  };

  const ivshmem = new VfioDevice(new LocalDeviceFile(createDevice('ivshmem', { env })));
  const edu = new VfioDevice(new LocalDeviceFile(createDevice('edu', { env })));
  // Neither example device has MSI-X; the nvme model (the differential test's) keeps its MSI-X
  // table inside BAR0, so its BAR0 shows how mmap areas exclude the table.
  // Its registers are trapped; mmapTrappedBars reports BAR0 mappable as the kernel does.
  const nvme = new VfioDevice(new LocalDeviceFile(createDevice('nvme', { env, mmapTrappedBars: true })));
  try {
    for (const [title, dev] of [
      ['ivshmem', ivshmem],
      ['edu', edu],
      ['nvme-model', nvme],
    ] as const)
      console.log(`${formatReport(await describeDevice(dev), { title, ...(names ? { names } : {}) })}\n`);

    console.log('Write-combining mappings of ivshmem BAR2, one per request path:');
    const paths: WcPath[] = ['rfc-region-flags', 'cookie', 'alias-region', 'dma-buf'];
    for (const [i, path] of paths.entries()) {
      const offset = BigInt(i) * 4096n;
      const m = await ivshmem.map(2, { attribute: 'wc', path, offset, length: 4096 });
      const pattern = new TextEncoder().encode(`written through ${path}`);
      m.bytes.set(pattern);
      const back = await ivshmem.read(2, offset, pattern.length);
      const same = Buffer.from(back).equals(Buffer.from(pattern));
      check(
        path,
        m.attribute === 'wc' && m.via === path && same,
        `attribute ${m.attribute}, via ${m.via}, region read ${same ? 'matches' : 'DIFFERS'}`,
      );
      m.unmap();
      if (path === 'rfc-region-flags') await ivshmem.setRegionFlags(2, false);
    }
    const uc = await ivshmem.map(2, { length: 4096 });
    check(
      'plain mmap stays uncached',
      uc.attribute === 'uc' && uc.via === 'region',
      `attribute ${uc.attribute}`,
    );
    uc.unmap();
    // Every WC path asks one gate: a trapped BAR, and a memory BAR that is not prefetchable.
    for (const [what, dev] of [
      ['edu BAR0 refuses WC', edu],
      ['nvme BAR0 refuses WC', nvme],
    ] as const) {
      try {
        (await dev.map(0, { attribute: 'wc', length: 4096 })).unmap();
        check(what, false, 'a WC mapping was granted');
      } catch (e) {
        check(what, true, `${(e as Error).message}`);
      }
    }

    console.log('\nedu through region reads and writes:');
    const id = await edu.read32(0, 0);
    check('identification register', id === 0x010000ed, hex(id, 8));
    await edu.write32(0, 8, 10);
    check('factorial of 10', (await edu.read32(0, 8)) === 3628800, `${await edu.read32(0, 8)}`);

    const efd = eventfdCreate();
    try {
      await edu.setIrqEventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, [efd]);
      await edu.write32(0, 0x60, 1);
      const fired = await waitReadable(efd, 1000);
      check(
        'MSI through an eventfd',
        fired && eventfdRead(efd) === 1n,
        fired ? 'eventfd signalled once' : 'no interrupt',
      );
      await edu.disableIrqs(VFIO_PCI_MSI_IRQ_INDEX);
    } finally {
      closeFd(efd);
    }

    const ram = allocateShared('demo-dma', 8192);
    try {
      await edu.dmaMap(0x10000n, ram);
      ram.bytes.set(new TextEncoder().encode('DMA payload'), 0);
      // RAM → edu buffer (0x40000), then edu buffer → RAM at +4096
      await edu.write32(0, 0x80, 0x10000);
      await edu.write32(0, 0x88, 0x40000);
      await edu.write32(0, 0x90, 11);
      await edu.write32(0, 0x98, 1);
      await settle(edu);
      await edu.write32(0, 0x80, 0x40000);
      await edu.write32(0, 0x88, 0x11000);
      await edu.write32(0, 0x98, 1 | 2);
      await settle(edu);
      const text = new TextDecoder().decode(ram.bytes.subarray(4096, 4096 + 11));
      check('DMA round trip', text === 'DMA payload', JSON.stringify(text));
      await edu.dmaUnmap(0x10000n, 8192n);
    } finally {
      ram.close();
    }
  } finally {
    await ivshmem.close();
    await edu.close();
    await nvme.close();
  }
  const failed = checks.filter((c) => !c.ok);
  console.log(`\ndemo: ${checks.length - failed.length} of ${checks.length} checks passed`);
  if (failed.length) console.error(`demo FAILED: ${failed.map((c) => c.what).join(', ')}`);
  return failed.length ? 1 : 0;
}

/** The system's pci.ids, or none (numbers only) when it is missing or unreadable. */
function systemNames(): PciIdDatabase | undefined {
  try {
    return PciIdDatabase.load();
  } catch {
    return undefined;
  }
}

/** Waits until edu's DMA command register shows the transfer done. */
async function settle(edu: VfioDevice): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (!((await edu.read32(0, 0x98)) & 1)) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}
