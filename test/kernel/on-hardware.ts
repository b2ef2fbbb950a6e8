/**
 * The project's driver and kernel backend against the real vfio-pci, run by Node *inside* a QEMU
 * guest (in-guest.test.ts boots it: `node --test dist/test/kernel/on-hardware.js`). Not a
 * `.test.ts` file: on the host there is no device to bind, so the host runner never picks it up;
 * run anywhere else it skips (VFIO_TS_GUEST unset).
 *
 * Devices: edu, ivshmem-plain, nvme, e1000e (test/kernel/guest.ts). Write combining: ivshmem's
 * prefetchable BAR2 mapped through VfioDevice.map(2, {attribute: 'wc'}) must take the sysfs
 * resource2_wc path, and /sys/kernel/debug/x86/pat_memtype_list must list its range as
 * write-combining (the test prints that line as `PAT-LINE: ...`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import { type KernelDeviceFile, kernelPathFor, openKernelDevice } from '../../src/kernel/device.js';
import { bindVfioPci, boundDriver } from '../../src/kernel/sysfs.js';
import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, eventfdCreate, eventfdRead } from '../../src/native/index.js';
import { allocateShared } from '../../src/runtime.js';

const IN_GUEST = process.env.VFIO_TS_GUEST === '1';
const KERNEL_MAJOR = Number(readFileSync('/proc/sys/kernel/osrelease', 'utf8').split('.')[0]);
const IDS = {
  edu: [0x1234, 0x11e8],
  ivshmem: [0x1af4, 0x1110],
  nvme: [0x1b36, 0x0010],
  e1000e: [0x8086, 0x10d3],
} as const;
type Name = keyof typeof IDS;

function find(vendor: number, device: number): string {
  for (const d of readdirSync('/sys/bus/pci/devices').sort()) {
    const v = Number(readFileSync(`/sys/bus/pci/devices/${d}/vendor`, 'utf8'));
    const id = Number(readFileSync(`/sys/bus/pci/devices/${d}/device`, 'utf8'));
    if (v === vendor && id === device) return d;
  }
  throw new Error(`no PCI device ${vendor.toString(16)}:${device.toString(16)}`);
}

/** `start end flags` lines of sysfs `resource`, per BAR. */
function resources(bdf: string): { start: bigint; end: bigint; flags: bigint }[] {
  return readFileSync(`/sys/bus/pci/devices/${bdf}/resource`, 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const [s, e, f] = l
        .trim()
        .split(/\s+/)
        .map((x) => BigInt(x));
      return { start: s!, end: e!, flags: f! };
    });
}

async function errnoOf(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    if (e instanceof VfioError) return e.errno;
    throw e;
  }
}

async function waitCount(efd: number, ms = 2000): Promise<bigint> {
  const until = Date.now() + ms;
  for (;;) {
    const v = eventfdRead(efd);
    if (v !== null || Date.now() > until) return v ?? 0n;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('the driver on real vfio-pci (in a QEMU guest)', {
  skip: IN_GUEST ? false : 'runs only inside the QEMU guest',
}, () => {
  const bdf = {} as Record<Name, string>;
  const files = {} as Record<Name, KernelDeviceFile>;
  const devs = {} as Record<Name, VfioDevice>;

  const cli: { args: string; status: number | null; out: string }[] = [];
  before(async () => {
    // The command line first, on e1000e before anything holds it open: bind from no driver,
    // unbind, bind again (src/cli/bind.ts through dist/src/cli/main.js).
    const e1000e = find(IDS.e1000e[0], IDS.e1000e[1]);
    for (const args of [
      ['bind', e1000e],
      ['unbind', e1000e, '--json'],
      ['bind', e1000e, '--json'],
      ['bind', '0000:00:1e.7'],
    ]) {
      const r = spawnSync(process.execPath, ['dist/src/cli/main.js', ...args], { encoding: 'utf8' });
      cli.push({ args: args.join(' '), status: r.status, out: `${r.stdout}${r.stderr}` });
    }
    // vfio-ts info on a kernel device (src/cli/info.ts through openKernelDevice), before this
    // process opens the group (a group is opened once).
    for (const args of [
      ['info', e1000e, '--json'],
      ['info', e1000e],
    ]) {
      const r = spawnSync(process.execPath, ['dist/src/cli/main.js', ...args], { encoding: 'utf8' });
      cli.push({ args: args.join(' '), status: r.status, out: `${r.stdout}${r.stderr}` });
    }
    for (const name of Object.keys(IDS) as Name[]) {
      const [v, d] = IDS[name];
      bdf[name] = find(v, d);
      bindVfioPci(bdf[name]);
      files[name] = await openKernelDevice(bdf[name]);
      devs[name] = new VfioDevice(files[name]);
    }
  });
  after(async () => {
    for (const d of Object.values(devs)) await d.close();
  });

  it('binds with the project helper: vfio-pci driver, a group, idempotent', () => {
    for (const name of Object.keys(IDS) as Name[]) {
      assert.equal(boundDriver(bdf[name]), 'vfio-pci');
      const again = bindVfioPci(bdf[name]);
      assert.equal(again.previousDriver, 'vfio-pci');
      assert.equal(again.viable, true);
      assert.equal(files[name].path, 'group');
      assert.equal(files[name].transport, 'kernel');
    }
  });

  it('vfio-ts bind / unbind on e1000e', () => {
    const [bind, unbind, rebind, missing] = cli;
    assert.equal(bind?.status, 0, bind?.out);
    assert.match(bind!.out, /bound to vfio-pci \(was unbound\), IOMMU group \d+/);
    assert.equal(unbind?.status, 0, unbind?.out);
    assert.equal(JSON.parse(unbind!.out).driver, undefined);
    assert.equal(rebind?.status, 0, rebind?.out);
    assert.equal(JSON.parse(rebind!.out).previousDriver, undefined);
    assert.equal(missing?.status, 1);
    assert.match(missing!.out, /ENODEV/);
  });

  it('vfio-ts info <pci-address> on a kernel device, plain and --json', () => {
    const [json, plain] = cli.slice(4);
    assert.equal(json?.status, 0, json?.out);
    const report = JSON.parse(json!.out) as { numRegions?: number; target?: string };
    assert.equal(report.numRegions, 9, json!.out);
    assert.equal(plain?.status, 0, plain?.out);
    assert.match(plain!.out, /8086:10d3|10d3/i);
  });

  it('no iommufd device cdev in these kernels: auto picks the group path, forcing cdev is ENODEV', async () => {
    assert.equal(kernelPathFor(bdf.ivshmem), 'group');
    await assert.rejects(openKernelDevice(bdf.ivshmem, { path: 'cdev' }), (e: unknown) => {
      assert.ok(e instanceof VfioError);
      assert.equal(e.errno, Errno.ENODEV);
      assert.match(e.message, /CONFIG_VFIO_DEVICE_CDEV/);
      return true;
    });
  });

  it('an address with no device is ENODEV', async () => {
    assert.equal(await errnoOf(openKernelDevice('0000:00:1e.7')), Errno.ENODEV);
  });

  it('region sizes match the sysfs resource files; offsets are index << 40', async () => {
    for (const name of Object.keys(IDS) as Name[]) {
      const regions = await devs[name].regions();
      for (const r of regions.filter((x) => x.index < 6)) {
        let size = 0;
        try {
          size = statSync(`/sys/bus/pci/devices/${bdf[name]}/resource${r.index}`).size;
        } catch {
          size = 0;
        }
        const res = resources(bdf[name])[r.index]!;
        const resSize = res.end > res.start ? Number(res.end - res.start + 1n) : 0;
        assert.equal(Number(r.size), resSize, `${name} region ${r.index}`);
        if (size) assert.equal(Number(r.size), size);
        assert.equal(r.offset, BigInt(r.index) << 40n);
      }
    }
  });

  it('config space: vendor, device and class match sysfs', async () => {
    for (const name of Object.keys(IDS) as Name[]) {
      const b = await devs[name].readConfig(0, 12);
      const dv = new DataView(b.buffer, b.byteOffset);
      assert.equal(dv.getUint16(0, true), IDS[name][0]);
      assert.equal(dv.getUint16(2, true), IDS[name][1]);
      const cls = Number(readFileSync(`/sys/bus/pci/devices/${bdf[name]}/class`, 'utf8'));
      assert.equal(dv.getUint32(8, true) >>> 8, cls);
    }
  });

  // First access of BAR2: once vfio-pci has claimed a BAR (pci_request_selected_regions on the
  // first read, write or mmap through the device fd), CONFIG_IO_STRICT_DEVMEM makes sysfs refuse
  // to map it (pci_mmap_resource_range: iomem_is_exclusive), until the device is closed.
  it('write combining: ivshmem BAR2 through sysfs resource2_wc (6.1: PAT lists it write-combining; 7.3: refused, named)', async () => {
    assert.deepEqual(await devs.ivshmem.wcPaths(2), ['sysfs-resource-wc']);
    const bar = resources(bdf.ivshmem)[2]!;
    const hex = (n: bigint) => `0x${n.toString(16).padStart(16, '0')}`;
    const patNow = () => readFileSync('/sys/kernel/debug/x86/pat_memtype_list', 'utf8').split('\n');
    if (KERNEL_MAJOR >= 7) {
      // 7.3 claims the BARs when the device is opened: sysfs maps none of them (see device.ts).
      await assert.rejects(devs.ivshmem.map(2, { attribute: 'wc' }), (e: unknown) => {
        assert.ok(e instanceof VfioError);
        assert.equal(e.errno, Errno.EINVAL);
        assert.match(e.message, /IO_STRICT_DEVMEM/);
        console.log(`WC-REFUSED: ${e.message}`);
        return true;
      });
      return;
    }
    const m = await devs.ivshmem.map(2, { attribute: 'wc' });
    let line: string | undefined;
    try {
      assert.equal(m.via, 'sysfs-resource-wc');
      assert.equal(m.attribute, 'wc');
      // Only through the WC mapping while it lives: a vfio access to BAR2 would revoke it.
      for (let i = 0; i < 4096; i++) m.bytes[i] = (i * 13) & 0xff;
      assert.equal(m.bytes[4095], (4095 * 13) & 0xff);
      line = patNow().find((l) => l.includes(`[mem ${hex(bar.start)}-`) && l.includes('write-combining'));
      console.log(`PAT-LINE: ${line ?? '(none)'}`);
    } finally {
      m.unmap();
    }
    assert.ok(line, `no write-combining PAT entry for ${hex(bar.start)}:\n${patNow().join('\n')}`);
    // The writes reached the device memory: read them back through the device fd.
    const back = await devs.ivshmem.read(2, 0, 4096);
    assert.equal(back[4095], (4095 * 13) & 0xff);
    assert.equal(back[100], (100 * 13) & 0xff);
    // Now vfio-pci has claimed BAR2: the sysfs path is refused, with the reason.
    await assert.rejects(devs.ivshmem.map(2, { attribute: 'wc' }), /IO_STRICT_DEVMEM/);
  });

  it('write combining on a non-prefetchable BAR is refused, naming why', async () => {
    await assert.rejects(devs.ivshmem.map(0, { attribute: 'wc' }), (e: unknown) => {
      assert.ok(e instanceof VfioError);
      assert.equal(e.errno, Errno.EOPNOTSUPP);
      assert.match(e.message, /resource0_wc/);
      return true;
    });
    // With allowUcFallback the same request gives the plain (UC) mapping of the region.
    const m = await devs.ivshmem.map(0, { attribute: 'wc', allowUcFallback: true });
    assert.deepEqual([m.via, m.attribute], ['region', 'uc']);
    m.unmap();
  });

  it('ivshmem BAR2: mmap, write, read back through pread and pwrite', async () => {
    const m = await devs.ivshmem.map(2, { length: 4096 });
    try {
      assert.equal(m.via, 'region');
      for (let i = 0; i < 64; i++) m.bytes[i] = (i * 7 + 3) & 0xff;
      const back = await devs.ivshmem.read(2, 0, 64);
      assert.deepEqual([...back], [...m.bytes.subarray(0, 64)]);
      await devs.ivshmem.write32(2, 128, 0xdeadbeef);
      assert.equal(new DataView(m.bytes.buffer, m.bytes.byteOffset).getUint32(128, true), 0xdeadbeef);
    } finally {
      m.unmap();
    }
  });

  it('edu: registers through pread/pwrite (ID, liveness)', async () => {
    assert.equal(await devs.edu.read32(0, 0), 0x010000ed);
    await devs.edu.write32(0, 4, 0x12345678);
    assert.equal(await devs.edu.read32(0, 4), ~0x12345678 >>> 0);
  });

  it('DMA: edu copies from process memory mapped through the IOMMU (VFIO_IOMMU_MAP_DMA)', async () => {
    const mem = allocateShared('edu-dma', 4096);
    const iova = 0x10_0000n; // edu's DMA mask is 28 bits
    try {
      for (let i = 0; i < 256; i++) mem.bytes[i] = (i ^ 0xa5) & 0xff;
      await devs.edu.dmaMap(iova, { fd: mem.fd, size: mem.size, bytes: mem.bytes });
      // Bus mastering on (command bit 2), then edu's DMA: RAM (iova) -> its buffer at 0x40000.
      const cmd = await devs.edu.readConfig(4, 2);
      await devs.edu.writeConfig(4, new Uint8Array([cmd[0]! | 0x06, cmd[1]!]));
      const dma = async (src: number, dst: number, cmd: number) => {
        await devs.edu.write32(0, 0x80, src);
        await devs.edu.write32(0, 0x84, 0);
        await devs.edu.write32(0, 0x88, dst);
        await devs.edu.write32(0, 0x8c, 0);
        await devs.edu.write32(0, 0x90, 256);
        await devs.edu.write32(0, 0x98, cmd);
        const until = Date.now() + 2000;
        while ((await devs.edu.read32(0, 0x98)) & 1 && Date.now() < until)
          await new Promise((r) => setTimeout(r, 5));
      };
      // QEMU's edu has no MMIO window on its DMA buffer: copy RAM -> buffer -> RAM and compare.
      await dma(Number(iova), 0x40000, 1);
      await dma(0x40000, Number(iova) + 2048, 3);
      assert.deepEqual([...mem.bytes.subarray(2048, 2048 + 256)], [...mem.bytes.subarray(0, 256)]);
      await devs.edu.dmaUnmap(iova, 4096n);
    } finally {
      mem.close();
    }
  });

  it('MSI: edu raises an interrupt, the kernel signals the eventfd', async () => {
    const efd = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      await devs.edu.setIrqEventfds(1, 0, [efd]);
      await devs.edu.write32(0, 0x60, 1); // raise
      assert.ok((await waitCount(efd)) >= 1n);
      await devs.edu.write32(0, 0x64, 1); // acknowledge
      await devs.edu.disableIrqs(1);
    } finally {
      closeFd(efd);
    }
  });

  it('nvme: MSI-X with the table inside BAR0, loopback trigger, and reset', async () => {
    const info = await devs.nvme.irqInfo(2);
    assert.equal(info.count, 65);
    const efd = eventfdCreate(EFD_CLOEXEC | EFD_NONBLOCK);
    try {
      await devs.nvme.setIrqEventfds(2, 0, [efd]);
      await devs.nvme.triggerIrqs(2, 0, 1);
      assert.equal(await waitCount(efd), 1n);
      await devs.nvme.disableIrqs(2);
    } finally {
      closeFd(efd);
    }
    const dinfo = await devs.nvme.info();
    assert.ok(dinfo.flags & 1, 'RESET flag');
    await devs.nvme.reset();
    assert.equal(await errnoOf(devs.edu.reset()), Errno.EINVAL);
  });
});
