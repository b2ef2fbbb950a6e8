/**
 * The project's driver and kernel backend against the real vfio-pci, run by Node *inside* a QEMU
 * guest (in-guest.test.ts boots it: `node --test dist/test/kernel/on-hardware.js`). Not a
 * `.test.ts` file: on the host there is no device to bind, so the host runner never picks it up;
 * run anywhere else it skips (VFIO_TS_GUEST unset).
 *
 * Devices: edu, ivshmem-plain, nvme, e1000e (test/kernel/guest.ts), and a conventional PCI
 * bridge with a second edu and virtio-rng behind it (in-guest.test.ts: one IOMMU group).
 *
 * Paths: on Debian's kernels openKernelDevice takes the group path; on the kernels built with
 * iommufd (7.3-iommufd, 7.3-cdev) it takes the device cdev, and these tests run through it
 * (on-hardware-iommufd.ts adds the iommufd-only ones). Where they answer otherwise by path, the
 * test says which (the bind output's device nodes, `info`'s path, EBUSY against EPERM for a group
 * that is not viable).
 *
 * Write combining: ivshmem's prefetchable BAR2 mapped through VfioDevice.map(2, {attribute:
 * 'wc'}) takes the sysfs resource2_wc path. /sys/kernel/debug/x86/pat_memtype_list is read before
 * the map, after it and after unmap: on 6.1 the map must add exactly one write-combining entry,
 * for exactly the mapped range, gone after unmap (printed as `PAT-LINE: ...`). 7.3 refuses the
 * mapping of an open device (EINVAL, printed as `WC-REFUSED: ...`); booted with iomem=relaxed it
 * would map it uncached-minus (PAT inherits vfio-pci's own ioremap of the BAR), which the backend
 * refuses, and a BAR mapped before open (wcBars) is write-combining while the device is open
 * (`PAT-LINE-WCBARS: ...`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Errno } from '../../src/abi/errno.js';
import {
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_PREFETCH,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../../src/abi/vfio.js';
import { VfioDevice } from '../../src/driver/device.js';
import { VfioError } from '../../src/errors.js';
import {
  IOMMUFD_PATH,
  type KernelDeviceFile,
  kernelPathFor,
  openKernelDevice,
} from '../../src/kernel/device.js';
import { type PatEntry, patAdded, readPatList } from '../../src/kernel/pat.js';
import {
  bindVfioPci,
  boundDriver,
  groupViability,
  iomemRelaxed,
  iommuGroup,
  resourceRange,
} from '../../src/kernel/sysfs.js';
import { closeFd, EFD_CLOEXEC, EFD_NONBLOCK, eventfdCreate, eventfdRead } from '../../src/native/index.js';
import { allocateShared } from '../../src/runtime.js';
import { NO_MODULE_OUT } from './guest.js';
import { eduDma, enableBusMaster, errnoOf, find, IDS, IN_GUEST, type Name } from './guest-util.js';

const KERNEL_MAJOR = IN_GUEST ? Number(readFileSync('/proc/sys/kernel/osrelease', 'utf8').split('.')[0]) : 0;
const RELAXED = IN_GUEST && iomemRelaxed();
/** The kernels built with iommufd (7.3-iommufd, 7.3-cdev): openKernelDevice takes the cdev path. */
const IOMMUFD = IN_GUEST && existsSync(IOMMUFD_PATH);
/** The group path's devices exist (every kernel but 7.3-cdev). */
const GROUPS = IN_GUEST && existsSync('/dev/vfio/vfio');
/** vfio-pci is a module the guest script can unload (Debian's kernels), not built in. */
const VFIO_PCI_MODULE = IN_GUEST && existsSync('/sys/module/vfio_pci/initstate');

/** The PAT list (debugfs is mounted by the guest's /init); entries overlapping [start, end). */
function pat(): PatEntry[] {
  const l = readPatList();
  assert.ok(l, '/sys/kernel/debug/x86/pat_memtype_list is not readable');
  return l;
}
const overlapping = (l: readonly PatEntry[], r: { start: bigint; end: bigint }) =>
  l.filter((e) => e.start < r.end && e.end > r.start);

function cliRun(args: string[]): { args: string; status: number | null; out: string } {
  const r = spawnSync(process.execPath, ['dist/src/cli/main.js', ...args], { encoding: 'utf8' });
  return { args: args.join(' '), status: r.status, out: `${r.stdout}${r.stderr}` };
}

const REGION_FLAG_NAMES: [number, string][] = [
  [VFIO_REGION_INFO_FLAG_READ, 'READ'],
  [VFIO_REGION_INFO_FLAG_WRITE, 'WRITE'],
  [VFIO_REGION_INFO_FLAG_MMAP, 'MMAP'],
  [VFIO_REGION_INFO_FLAG_CAPS, 'CAPS'],
  [VFIO_REGION_INFO_FLAG_PREFETCH, 'PREFETCH'],
];
const IRQ_FLAG_NAMES: [number, string][] = [
  [VFIO_IRQ_INFO_EVENTFD, 'EVENTFD'],
  [VFIO_IRQ_INFO_MASKABLE, 'MASKABLE'],
  [VFIO_IRQ_INFO_AUTOMASKED, 'AUTOMASKED'],
  [VFIO_IRQ_INFO_NORESIZE, 'NORESIZE'],
];
const names = (flags: number, table: [number, string][]) =>
  table.filter(([b]) => flags & b).map(([, n]) => n);

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
  const more = new Map<string, { args: string; status: number | null; out: string }>();
  const bridged = { edu: '', rng: '' };
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
    // ivshmem described by `vfio-ts info` (its own process: the group is opened once), and the
    // edu behind the bridge, whose group virtio-rng (bound to virtio-pci) keeps from being viable.
    const iv = find(IDS.ivshmem[0], IDS.ivshmem[1]);
    bindVfioPci(iv);
    bridged.edu = find(IDS.edu[0], IDS.edu[1], 2);
    bridged.rng = find(0x1af4, 0x1005);
    for (const args of [
      ['info', iv, '--json'],
      ['info', iv],
      ['bind', bridged.edu],
      ['info', bridged.edu],
    ])
      more.set(args.join(' ').replace(iv, 'ivshmem').replace(bridged.edu, 'bridged-edu'), cliRun(args));
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
      assert.equal(files[name].path, IOMMUFD ? 'cdev' : 'group');
      assert.equal(files[name].transport, 'kernel');
    }
  });

  it('vfio-ts bind / unbind on e1000e', () => {
    const [bind, unbind, rebind, missing] = cli;
    assert.equal(bind?.status, 0, bind?.out);
    assert.match(bind!.out, /bound to vfio-pci \(was unbound\), IOMMU group \d+: /);
    // The device nodes that open it: the group's where the kernel has groups, the cdev's where
    // it has iommufd (7.3-cdev: only the cdev).
    assert.equal(/: \/dev\/vfio\/\d+/.test(bind!.out), GROUPS, bind!.out);
    assert.equal(/\/dev\/vfio\/devices\/vfio\d+/.test(bind!.out), IOMMUFD, bind!.out);
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
    const report = JSON.parse(json!.out) as { numRegions?: number; opened?: { path: string } };
    assert.equal(report.numRegions, 9, json!.out);
    assert.equal(report.opened?.path, IOMMUFD ? 'cdev' : 'group', json!.out);
    assert.equal(plain?.status, 0, plain?.out);
    assert.match(plain!.out, /8086:10d3|10d3/i);
    assert.match(
      plain!.out,
      IOMMUFD
        ? /VFIO: kernel, device cdev \/dev\/vfio\/devices\/vfio\d+ bound to \/dev\/iommu \(devid \d+, IOAS \d+\)/
        : /VFIO: kernel, group \/dev\/vfio\/\d+ in container \/dev\/vfio\/vfio/,
    );
  });

  it('no iommufd device cdev in the Debian kernels: auto picks the group path, forcing cdev is ENODEV', async (t) => {
    if (IOMMUFD) return t.skip('this kernel has iommufd (on-hardware-iommufd.ts tests the cdev path)');
    assert.equal(kernelPathFor(bdf.ivshmem), 'group');
    await assert.rejects(openKernelDevice(bdf.ivshmem, { path: 'cdev' }), (e: unknown) => {
      assert.ok(e instanceof VfioError);
      assert.equal(e.errno, Errno.ENODEV);
      assert.match(e.message, /CONFIG_IOMMUFD/);
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
  // first read, write or mmap through the device fd on 6.1, at open on 7.3), CONFIG_IO_STRICT_DEVMEM
  // makes sysfs refuse to map it (pci_mmap_resource: iomem_is_exclusive), until the device is closed.
  it('write combining after open through resource2_wc: 6.1 adds exactly one write-combining PAT entry for the mapped range, gone after unmap; 7.3 refuses, naming iomem=relaxed; 7.3 with iomem=relaxed refuses the uncached-minus PAT gives', async () => {
    const bar = resourceRange(bdf.ivshmem, 2);
    assert.ok(bar);
    const before = pat();
    if (KERNEL_MAJOR >= 7) {
      // 7.3 claims (and ioremaps, uncached-minus) the BARs when the device is opened.
      const want = RELAXED ? Errno.EOPNOTSUPP : Errno.EINVAL;
      const why = RELAXED ? /given uncached-minus, not write-combining/ : /IO_STRICT_DEVMEM.*iomem=relaxed/;
      await assert.rejects(devs.ivshmem.map(2, { attribute: 'wc' }), (e: unknown) => {
        assert.ok(e instanceof VfioError);
        assert.equal(e.errno, want, e.message);
        assert.match(e.message, why);
        console.log(`WC-REFUSED: ${e.message}`);
        return true;
      });
      // Nothing left behind: what the relaxed kernel mapped, the backend unmapped.
      assert.deepEqual(overlapping(patAdded(before, pat()), bar), []);
      return;
    }
    const m = await devs.ivshmem.map(2, { attribute: 'wc' });
    let added: PatEntry[] = [];
    try {
      assert.equal(m.via, 'sysfs-resource-wc');
      assert.equal(m.attribute, 'wc');
      added = patAdded(before, pat());
      // Only through the WC mapping while it lives: a vfio access to BAR2 would revoke it.
      for (let i = 0; i < 4096; i++) m.bytes[i] = (i * 13) & 0xff;
      assert.equal(m.bytes[4095], (4095 * 13) & 0xff);
    } finally {
      m.unmap();
    }
    const afterUnmap = pat();
    console.log(`PAT-LINE: ${added.map((e) => e.line).join(' | ') || '(none)'}`);
    assert.equal(
      added.length,
      1,
      `the WC map added ${added.length} PAT entries: ${added.map((e) => e.line)}`,
    );
    const [e] = added;
    assert.equal(e!.type, 'write-combining', e!.line);
    assert.deepEqual([e!.start, e!.end], [bar.start, bar.start + BigInt(m.length)], e!.line);
    assert.deepEqual(patAdded(before, afterUnmap), [], 'the entry is gone after unmap');
    // The writes reached the device memory: read them back through the device fd.
    const back = await devs.ivshmem.read(2, 0, 4096);
    assert.equal(back[4095], (4095 * 13) & 0xff);
    assert.equal(back[100], (100 * 13) & 0xff);
    // Now vfio-pci has claimed BAR2: the sysfs path is refused, with the reason and the remedy.
    await assert.rejects(devs.ivshmem.map(2, { attribute: 'wc' }), /IO_STRICT_DEVMEM.*iomem=relaxed/);
  });

  it('wcPaths lists sysfs-resource-wc only where resourceN_wc exists (ivshmem BAR2, not BAR0)', async () => {
    const dir = `/sys/bus/pci/devices/${bdf.ivshmem}`;
    assert.ok(existsSync(`${dir}/resource2_wc`));
    assert.ok(!existsSync(`${dir}/resource0_wc`));
    assert.deepEqual(await devs.ivshmem.wcPaths(2), ['sysfs-resource-wc']);
    assert.deepEqual(await devs.ivshmem.wcPaths(0), []);
    for (const name of ['edu', 'nvme', 'e1000e'] as const)
      for (let i = 0; i < 6; i++)
        assert.equal(
          (await devs[name].wcPaths(i)).includes('sysfs-resource-wc'),
          existsSync(`/sys/bus/pci/devices/${bdf[name]}/resource${i}_wc`),
          `${name} BAR${i}`,
        );
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

  it('DMA: edu copies from process memory mapped through the IOMMU (VFIO_IOMMU_MAP_DMA, or IOMMU_IOAS_MAP_FILE on the cdev path)', async () => {
    const mem = allocateShared('edu-dma', 4096);
    const iova = 0x10_0000n; // edu's DMA mask is 28 bits
    try {
      for (let i = 0; i < 256; i++) mem.bytes[i] = (i ^ 0xa5) & 0xff;
      await devs.edu.dmaMap(iova, { fd: mem.fd, size: mem.size, bytes: mem.bytes });
      await enableBusMaster(devs.edu);
      // QEMU's edu has no MMIO window on its DMA buffer: copy RAM -> buffer -> RAM and compare.
      await eduDma(devs.edu, 'toDevice', iova, 256);
      await eduDma(devs.edu, 'toRam', iova + 2048n, 256);
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

  it('vfio-ts info <ivshmem>: regions, flags, sizes, IRQs and WC paths as the kernel reports them', async () => {
    const json = more.get('info ivshmem --json')!;
    const text = more.get('info ivshmem')!;
    assert.equal(json.status, 0, json.out);
    assert.equal(text.status, 0, text.out);
    const r = JSON.parse(json.out) as {
      transport: string;
      vendorId: number;
      deviceId: number;
      numRegions: number;
      numIrqs: number;
      regions: {
        index: number;
        size: string;
        offset: string;
        flags: string[];
        wcPaths: string[];
        wcNote?: string;
      }[];
      irqs: ({ index: number; count: number; flags: string[] } | { index: number; errno: string })[];
    };
    const info = await devs.ivshmem.info();
    assert.deepEqual([r.transport, r.vendorId, r.deviceId], ['kernel', IDS.ivshmem[0], IDS.ivshmem[1]]);
    assert.deepEqual([r.numRegions, r.numIrqs], [info.numRegions, info.numIrqs]);
    const regions = (await devs.ivshmem.regions()).filter((x) => x.size !== 0n || x.flags !== 0);
    assert.deepEqual(
      r.regions.map((g) => [g.index, BigInt(g.size), BigInt(g.offset), g.flags]),
      regions.map((x) => [x.index, x.size, x.offset, names(x.flags, REGION_FLAG_NAMES)]),
    );
    const bar2 = r.regions.find((g) => g.index === 2)!;
    assert.equal(BigInt(bar2.size), 4n << 20n);
    // The kernel reports no PREFETCH flag (the RFC's, not merged) although sysfs says prefetchable.
    assert.ok(!bar2.flags.includes('PREFETCH'));
    assert.ok(resources(bdf.ivshmem)[2]!.flags & 0x2000n, 'IORESOURCE_PREFETCH in sysfs resource');
    assert.deepEqual(bar2.wcPaths, ['sysfs-resource-wc']);
    assert.match(bar2.wcNote ?? '', /6\.1.*7\.3.*iomem=relaxed/);
    assert.deepEqual(r.regions.find((g) => g.index === 0)?.wcPaths, []);
    for (const q of r.irqs) {
      const got = await devs.ivshmem.irqInfo(q.index).then(
        (i) => ({ index: q.index, count: i.count, flags: names(i.flags, IRQ_FLAG_NAMES) }),
        (e: unknown) => ({ index: q.index, errno: e instanceof VfioError ? e.code : String(e) }),
      );
      assert.deepEqual({ ...q, name: undefined }, { ...got, name: undefined }, `IRQ ${q.index}`);
    }
    // The text says the same: one line per region and IRQ, WC only on BAR2, with where it works.
    assert.match(text.out, /VFIO region 2 \(BAR2\): offset 20000000000 \[size=4M\] \[READ WRITE MMAP\]/);
    assert.match(
      text.out,
      /VFIO region 0 \(BAR0\): offset 0 \[size=256\] \[READ WRITE MMAP\]\n\t\tWrite-combining: none/,
    );
    assert.equal(text.out.match(/Write-combining: sysfs-resource-wc/g)?.length, 1, text.out);
    assert.match(text.out, /Write-combining: sysfs-resource-wc\n\t\t\tsysfs resourceN_wc: .*iomem=relaxed/);
    for (const q of r.irqs)
      assert.match(
        text.out,
        'errno' in q
          ? new RegExp(`VFIO IRQ ${q.index} \\(\\S+\\): ${q.errno}`)
          : new RegExp(`VFIO IRQ ${q.index} \\(\\S+\\): count ${q.count} \\[${q.flags.join(' ')}\\]`),
      );
  });

  it('vfio-ts bind with the vfio-pci module not loaded: ENODEV, naming the module (run before modprobe)', (t) => {
    if (!VFIO_PCI_MODULE) return t.skip('vfio-pci is built into this kernel');
    assert.ok(existsSync(NO_MODULE_OUT), `${NO_MODULE_OUT} missing: in-guest.test.ts's script writes it`);
    const out = readFileSync(NO_MODULE_OUT, 'utf8');
    assert.match(out, /status=1/, out);
    assert.match(out, /ENODEV.*vfio-pci module is not loaded/, out);
  });

  it('a group made not viable by a device behind the same bridge: bind fails EBUSY and open EBUSY (group path) or EPERM (cdev path), naming it; pci-stub and a driverless bridge are fine', async () => {
    // The group path reads VFIO_GROUP_GET_STATUS (EBUSY from the backend); the cdev path's
    // VFIO_DEVICE_BIND_IOMMUFD is EPERM (iommu_device_claim_dma_owner: another owner).
    const refused = IOMMUFD ? 'EPERM' : 'EBUSY';
    const group = iommuGroup(bridged.edu);
    assert.equal(
      iommuGroup(bridged.rng),
      group,
      'edu and virtio-rng behind one conventional bridge share a group',
    );
    const v = groupViability(bridged.edu);
    const bridge = v.members.find((m) => readFileSync(`/sys/bus/pci/devices/${m.bdf}/config`)[0x0e]! & 0x7f);
    assert.ok(bridge, `the bridge is in the group: ${JSON.stringify(v.members)}`);
    assert.equal(bridge.driver, undefined);
    assert.equal(v.viable, false);
    assert.deepEqual(v.blocking, [{ bdf: bridged.rng, driver: 'virtio-pci' }]);
    const bind = more.get('bind bridged-edu')!;
    assert.equal(bind.status, 1, bind.out);
    assert.match(
      bind.out,
      new RegExp(`EBUSY: IOMMU group ${group} is not viable: ${bridged.rng} \\(virtio-pci\\)`),
    );
    assert.equal(boundDriver(bridged.edu), 'vfio-pci');
    const info = more.get('info bridged-edu')!;
    assert.equal(info.status, 1, info.out);
    assert.match(info.out, new RegExp(`${refused}.*${bridged.rng} \\(virtio-pci\\)`));
    await assert.rejects(openKernelDevice(bridged.edu), (e: unknown) => {
      assert.ok(e instanceof VfioError);
      assert.equal(e.code, refused);
      assert.match(e.message, new RegExp(`${bridged.rng} \\(virtio-pci\\)`));
      return true;
    });
    // virtio-rng to pci-stub (driver_managed_dma): the kernel and groupViability both say viable.
    writeFileSync(`/sys/bus/pci/devices/${bridged.rng}/driver_override`, 'pci-stub');
    writeFileSync(`/sys/bus/pci/devices/${bridged.rng}/driver/unbind`, bridged.rng);
    writeFileSync('/sys/bus/pci/drivers_probe', bridged.rng);
    assert.equal(boundDriver(bridged.rng), 'pci-stub');
    assert.equal(groupViability(bridged.edu).viable, true);
    const f = await openKernelDevice(bridged.edu);
    try {
      const d = new VfioDevice(f);
      assert.equal(await d.read32(0, 0), 0x010000ed);
    } finally {
      await f.close();
    }
  });

  it('wcBars: BAR2 mapped before open (iomem=relaxed: write-combining while the device is open, gone at close; strict: EINVAL naming iomem=relaxed)', async () => {
    if (!RELAXED) {
      await assert.rejects(openKernelDevice(bdf.ivshmem, { wcBars: [2] }), (e: unknown) => {
        assert.ok(e instanceof VfioError);
        assert.equal(e.errno, Errno.EINVAL);
        assert.match(e.message, /iomem=relaxed/);
        return true;
      });
      return;
    }
    const bar = resourceRange(bdf.ivshmem, 2);
    assert.ok(bar);
    await devs.ivshmem.close();
    const before = pat();
    assert.deepEqual(overlapping(before, bar), [], 'nothing maps BAR2 while the device is closed');
    const dev = new VfioDevice(await openKernelDevice(bdf.ivshmem, { wcBars: [2] }));
    devs.ivshmem = dev;
    // The premap's entry, and vfio-pci's ioremap at open, which PAT gives the same type.
    const added = overlapping(patAdded(before, pat()), bar);
    console.log(`PAT-LINE-WCBARS: ${added.map((e) => e.line).join(' | ') || '(none)'}`);
    assert.ok(added.length >= 1);
    for (const e of added) assert.equal(e.type, 'write-combining', e.line);
    assert.ok(added.some((e) => e.start === bar.start && e.end === bar.end));
    const m = await dev.map(2, { attribute: 'wc', length: 8192 });
    assert.deepEqual([m.via, m.attribute], ['sysfs-resource-wc', 'wc']);
    for (let i = 0; i < 4096; i++) m.bytes[i] = (i * 29 + 1) & 0xff;
    const back = await dev.read(2, 0, 4096);
    assert.equal(back[4095], (4095 * 29 + 1) & 0xff);
    assert.equal(back[77], (77 * 29 + 1) & 0xff);
    await dev.write32(2, 4096, 0xcafef00d);
    assert.equal(new DataView(m.bytes.buffer, m.bytes.byteOffset).getUint32(4096, true), 0xcafef00d);
    m.unmap();
    await dev.close();
    assert.deepEqual(overlapping(pat(), bar), [], 'every BAR2 entry is gone after close');
    devs.ivshmem = new VfioDevice(await openKernelDevice(bdf.ivshmem));
  });
});
