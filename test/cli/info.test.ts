/**
 * `vfio-ts info` against our vfio-user server on a temporary socket: the lspci part and the VFIO
 * part of the text, the JSON convention, and every way it fails: each is one line on stderr and a
 * non-zero exit, nothing on stdout, no fd left open. A server that stops answering is a child
 * process that stops itself (SIGSTOP) on its first GET_IRQ_INFO.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Errno } from '../../src/abi/errno.js';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../../src/abi/vfio.js';
import { collectInfo, formatInfo, type InfoOptions, infoJson, runWith } from '../../src/cli/info.js';
import { connectSocket, kernelFacts } from '../../src/cli/target.js';
import type { VfioPciDevice } from '../../src/core/device.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { describeDevice } from '../../src/driver/describe.js';
import { VfioDevice } from '../../src/driver/device.js';
import { LocalDeviceFile } from '../../src/driver/local.js';
import { VfioError } from '../../src/errors.js';
import { closeFd, openFdCount, unixListen } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import { FIXTURE_PCI_IDS } from './pci-ids.test.js';

interface Run {
  status: number;
  out: string;
  err: string[];
}

async function info(args: string[], opts: InfoOptions = {}): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runWith(args, { log: (l) => out.push(l), error: (l) => err.push(l) }, opts);
  return { status, out: out.join('\n'), err };
}

/** Runs `f` with a temporary directory, removed afterwards. */
async function inTempDir<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-info-'));
  try {
    return await f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Serves `name` (or what `wrap` makes of it) on a temporary socket while `f` runs. */
async function withServer<T>(
  name: DeviceName,
  f: (path: string) => Promise<T>,
  wrap: (d: VfioPciDevice) => VfioPciDevice = (d) => d,
): Promise<T> {
  return inTempDir(async (dir) => {
    const path = join(dir, `${name}.sock`);
    const dev = createDevice(name, { env: nativeEnvironment() });
    const server = new VfioUserServer(wrap(dev));
    server.listen(path);
    try {
      return await f(path);
    } finally {
      await server.idle();
      server.stop();
      dev.close();
    }
  });
}

test('info <socket>: ivshmem read like lspci -nn -vv, then its VFIO regions, IRQs and WC paths', async () => {
  const before = openFdCount();
  const r = await withServer('ivshmem', (p) => info([p, '--pci-ids', FIXTURE_PCI_IDS]));
  assert.equal(r.status, 0, r.err.join('\n'));
  assert.deepEqual(r.err, []);
  const lines = r.out.split('\n');
  assert.match(
    lines[0]!,
    /^\/\S+\/ivshmem\.sock RAM memory \[0500\]: Shared Memory Co\. Example shared memory \[1af4:1110\] \(rev 01\)$/,
  );
  const expect = [
    '\tSubsystem: Shared Memory Co. Example Board [1af4:1100]',
    /^\tControl: I\/O[+-] Mem[+-] BusMaster- SpecCycle- MemWINV- VGASnoop- ParErr- Stepping- SERR[+-] FastB2B- DisINTx-$/,
    '\tStatus: Cap- 66MHz- UDF- FastB2B- ParErr- DEVSEL=fast >TAbort- <TAbort- <MAbort- >SERR- <PERR- INTx-',
    /^\tRegion 0: Memory at ([0-9a-f]+|<unassigned>) \(32-bit, non-prefetchable\)( \[disabled\])? \[size=256\]$/,
    /^\tRegion 2: Memory at ([0-9a-f]+|<unassigned>) \(64-bit, prefetchable\)( \[disabled\])? \[size=4M\]$/,
    '\tVFIO: vfio-user, protocol 0.0, max_data_xfer_size 1M, max_msg_fds 16, DMA_READ/WRITE layout spec',
    /^\tVFIO device: 9 regions, 5 IRQ indexes, (no reset|reset supported)$/,
    '\tVFIO region 0 (BAR0): offset 0 [size=256] [READ WRITE MMAP]',
    '\t\tWrite-combining: none',
    '\tVFIO region 2 (BAR2): offset 20000000000 [size=4M] [READ WRITE MMAP PREFETCH]',
    '\t\tWrite-combining: cookie, dma-buf, alias-region',
    '\tVFIO region 7 (CONFIG): offset 70000000000 [size=256] [READ WRITE]',
    '\tVFIO IRQ 0 (INTx): count 0 [EVENTFD MASKABLE AUTOMASKED]',
  ];
  assert.equal(lines.length, 18, r.out);
  for (const [i, e] of expect.entries()) {
    if (typeof e === 'string') assert.equal(lines[i + 1], e, r.out);
    else assert.match(lines[i + 1]!, e, r.out);
  }
  assert.doesNotMatch(r.out, /Capabilities:|Interrupt:/, 'ivshmem-plain has neither');
  assert.equal(openFdCount(), before);
});

test('info: without a pci.ids the names are numbers, as lspci -nn prints them without one', async () => {
  const r = await withServer('edu', (p) => info([p], { pciIds: ['/nonexistent/pci.ids'] }));
  assert.equal(r.status, 0, r.err.join('\n'));
  assert.match(
    r.out,
    /^\S+ Class \[00ff\]: Device \[1234:11e8\] \(rev 10\)\n\tSubsystem: Device \[1af4:1100\]\n/,
  );
  assert.match(r.out, /\n\tInterrupt: pin A routed to IRQ \d+\n/);
  assert.match(
    r.out,
    /\n\tCapabilities: \[40\] MSI: Enable- Count=1\/1 Maskable- 64bit\+\n\t\tAddress: [0-9a-f]{16} {2}Data: [0-9a-f]{4}\n/,
  );
});

/** Every integer in `v` is a JSON number: no string anywhere looks like a number. */
function assertNoNumericStrings(v: unknown, path = '$'): void {
  if (typeof v === 'string') assert.doesNotMatch(v, /^(0x[0-9a-f]+|\d+)$/i, `${path} = ${JSON.stringify(v)}`);
  else if (Array.isArray(v)) for (const [i, x] of v.entries()) assertNoNumericStrings(x, `${path}[${i}]`);
  else if (v && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) assertNoNumericStrings(x, `${path}.${k}`);
}

test('info --json: one object, every integer a JSON number, names where pci.ids has them', async () => {
  const r = await withServer('edu', (p) => info([p, '--json', '--pci-ids', FIXTURE_PCI_IDS]));
  assert.equal(r.status, 0, r.err.join('\n'));
  const j = JSON.parse(r.out);
  assertNoNumericStrings(j);
  assert.equal(j.transport, 'vfio-user');
  assert.deepEqual(j.protocol, {
    version: '0.0',
    maxDataXferSize: 1048576,
    maxMsgFds: 16,
    dmaLayout: 'spec',
  });
  assert.deepEqual(
    [j.vendorId, j.vendor, j.deviceId, j.device, j.classCode, j.class, j.revision],
    [0x1234, 'Example Vendor', 0x11e8, 'Example Teaching Device', 0x00ff00, 'Unclassified device', 0x10],
  );
  assert.deepEqual(j.bars[0], {
    index: 0,
    space: 'memory',
    type: '32-bit',
    prefetchable: false,
    address: j.bars[0].address,
    size: 1 << 20,
  });
  assert.equal(typeof j.bars[0].address, 'number');
  assert.equal(j.capabilities[0].kind, 'msi');
  assert.equal(j.capabilities[0].vectorsCapable, 1);
  assert.deepEqual(
    j.regions.find((g: { index: number }) => g.index === VFIO_PCI_CONFIG_REGION_INDEX),
    {
      index: 7,
      name: 'CONFIG',
      offset: 7 * 2 ** 40,
      size: 256,
      flags: ['READ', 'WRITE'],
      caps: [],
      wcPaths: [],
    },
  );
  assert.deepEqual(j.irqs[1], { index: 1, name: 'MSI', count: 1, flags: ['EVENTFD', 'NORESIZE'] });
  // Without names, the name keys are absent, not empty.
  const bare = await withServer('edu', (p) => info([p, '--json'], { pciIds: [] }));
  assert.equal(JSON.parse(bare.out).vendor, undefined);
});

test('info --json carries what sysfs says of a PCI address (kernel), as the text does', async () => {
  const report = await withServer('edu', async (p) => {
    const dev = new VfioDevice(await connectSocket(p));
    try {
      return await collectInfo(dev, p);
    } finally {
      await dev.close();
    }
  });
  const kernel = { irq: 21, iommuGroup: '5', driver: 'vfio-pci' };
  const text = formatInfo({ ...report, kernel });
  assert.match(text, /\n\tInterrupt: pin A routed to IRQ 21\n\tIOMMU group: 5\n/);
  assert.match(text, /\n\tKernel driver in use: vfio-pci\n/);
  assert.deepEqual(JSON.parse(infoJson({ ...report, kernel })).kernel, kernel);
  assert.equal(JSON.parse(infoJson(report)).kernel, undefined);
});

test('info --timeout the client cannot take is a usage error (exit 2), found before the target is looked at', async () => {
  for (const t of ['0.0001', '3000000']) {
    const r = await info(['/nonexistent/x.sock', '--timeout', t]);
    assert.equal(r.status, 2, r.err.join('\n'));
    assert.deepEqual(r.err, [
      `vfio-ts info: --timeout needs 0.001 to 2147483.647 seconds, not '${t}' (vfio-ts info --help)`,
    ]);
  }
});

/** A fake /sys/bus/pci/devices: 05.0 bound to e1000e (IRQ 21, IOMMU group 5), 06.0 to no driver. */
function fakeSysfs(dir: string): string {
  const sysfs = join(dir, 'devices');
  mkdirSync(join(dir, 'drivers', 'e1000e'), { recursive: true });
  mkdirSync(join(dir, 'iommu_groups', '5'), { recursive: true });
  mkdirSync(join(sysfs, '0000:00:05.0'), { recursive: true });
  mkdirSync(join(sysfs, '0000:00:06.0'), { recursive: true });
  symlinkSync(join(dir, 'drivers', 'e1000e'), join(sysfs, '0000:00:05.0', 'driver'));
  symlinkSync(join(dir, 'iommu_groups', '5'), join(sysfs, '0000:00:05.0', 'iommu_group'));
  writeFileSync(join(sysfs, '0000:00:05.0', 'irq'), '21\n');
  return sysfs;
}

test('kernelFacts: the IRQ, IOMMU group and driver lspci reads from sysfs, each only when there', () =>
  inTempDir(async (dir) => {
    const sysfs = fakeSysfs(dir);
    assert.deepEqual(kernelFacts('0000:00:05.0', sysfs), { irq: 21, iommuGroup: '5', driver: 'e1000e' });
    assert.deepEqual(kernelFacts('0000:00:06.0', sysfs), {});
  }));

test('info: every failure is one line naming the problem, exit 1, nothing on stdout, no fd left', () =>
  inTempDir(async (dir) => {
    const file = join(dir, 'plain.txt');
    writeFileSync(file, 'not a socket');
    const stale = join(dir, 'stale.sock');
    closeFd(unixListen(stale)); // a socket file nobody listens on
    const sysfs = fakeSysfs(dir);
    const cases: [string, RegExp][] = [
      [join(dir, 'no-dir', 'x.sock'), /: ENOENT \(no such file: directory \S+no-dir does not exist\)$/],
      [
        join(dir, 'x.sock'),
        /x\.sock: ENOENT \(no such file: neither a vfio-user socket nor a PCI address\)$/,
      ],
      [file, /plain\.txt: ENOTSOCK \(not a socket: it is a regular file\)$/],
      [dir, /: ENOTSOCK \(not a socket: it is a directory\)$/],
      [stale, /stale\.sock: ECONNREFUSED \(no server is listening on this socket/],
      [
        '0000:00:07.0',
        /^vfio-ts info: 0000:00:07\.0: ENODEV \(no such PCI device: \S+ has no 0000:00:07\.0; lspci -D lists the devices\)$/,
      ],
      [
        '00:05.0',
        /^vfio-ts info: 0000:00:05\.0: ENODEV \(bound to e1000e, not vfio-pci: vfio-ts bind 0000:00:05\.0 first\)$/,
      ],
      ['0000:00:06.0', /: ENODEV \(not bound to any driver: vfio-ts bind 0000:00:06\.0 first\)$/],
    ];
    const before = openFdCount();
    for (const [target, re] of cases) {
      const r = await info([target], { sysfs });
      assert.equal(r.status, 1, `${target}: ${r.err.join('\n')}`);
      assert.equal(r.out, '');
      assert.equal(r.err.length, 1, r.err.join('\n'));
      assert.match(r.err[0]!, re);
      assert.match(r.err[0]!, /^vfio-ts info: /);
    }
    assert.equal(openFdCount(), before);
    const bad = await info(['/x', '--pci-ids', file]);
    assert.equal(bad.status, 1);
    assert.match(bad.err.join('\n'), /^vfio-ts info: malformed \S+plain\.txt: line 1: vendor line/);
  }));

test('info: a system pci.ids that cannot be parsed is a warning, the IDs become numbers', () =>
  inTempDir(async (dir) => {
    const bad = join(dir, 'pci.ids');
    writeFileSync(bad, '1af4  Red Hat\n\tnot-hex  x\n');
    const r = await withServer('ivshmem', (p) => info([p], { pciIds: [bad] }));
    assert.equal(r.status, 0);
    assert.deepEqual(r.err, [
      `vfio-ts info: warning: malformed ${bad}: line 2: device line is not "\\tdddd  name": "\\tnot-hex  x"; IDs shown as numbers`,
    ]);
    assert.match(r.out, / Class \[0500\]: Device \[1af4:1110\]/);
  }));

test('info: a server whose device reads config space short: one line, exit 1, not a RangeError', async () => {
  // The device answers every config read with 10 bytes, whatever was asked; the server refuses
  // to send that as a reply (EINVAL), and that is what info says.
  const short = (d: VfioPciDevice) =>
    new Proxy(d, {
      get(t, k) {
        // The server reads regions into its reply (DevicePort.readRegionInto).
        if (k === 'readRegionInto')
          return (index: number, pos: number, dst: Uint8Array) => {
            const n = t.readRegionInto(index, pos, dst);
            return index === VFIO_PCI_CONFIG_REGION_INDEX ? Math.min(n, 10) : n;
          };
        const v = Reflect.get(t, k);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
  const r = await withServer('ivshmem', (p) => info([p]), short);
  assert.equal(r.status, 1, r.out);
  assert.equal(r.out, '');
  assert.equal(r.err.length, 1, r.err.join('\n'));
  assert.match(r.err[0]!, /^vfio-ts info: VFIO_USER_REGION_READ: EINVAL/);
});

test('describeDevice: a transport that returns a short config read fails EIO naming it', async () => {
  const dev = createDevice('ivshmem', { env: nativeEnvironment() });
  const file = new LocalDeviceFile(dev);
  const base = file.pread.bind(file);
  const configAt = dev.regionOffset(VFIO_PCI_CONFIG_REGION_INDEX);
  file.pread = async (offset: bigint, length: number) => {
    const b = await base(offset, length);
    return offset === configAt ? b.subarray(0, 10) : b;
  };
  const d = new VfioDevice(file);
  try {
    await assert.rejects(
      describeDevice(d),
      (e: unknown) =>
        e instanceof VfioError &&
        e.errno === Errno.EIO &&
        /read config space: EIO \(the device returned 10 of 256 bytes\)/.test(e.message),
    );
  } finally {
    await d.close();
  }
});

/** A server that stops itself (SIGSTOP) when the ioctl named in argv[3] reaches the device. */
const CHILD_SERVER = `
import { createDevice } from ${JSON.stringify(fileURLToPath(new URL('../../src/devices/index.js', import.meta.url)))};
import { VfioUserServer } from ${JSON.stringify(fileURLToPath(new URL('../../src/server/index.js', import.meta.url)))};
import { nativeEnvironment } from ${JSON.stringify(fileURLToPath(new URL('../../src/runtime.js', import.meta.url)))};
import * as abi from ${JSON.stringify(fileURLToPath(new URL('../../src/abi/vfio.js', import.meta.url)))};
const stopAt = abi[process.argv[3]];
const dev = createDevice('ivshmem', { env: nativeEnvironment() });
const port = new Proxy(dev, {
  get(t, k) {
    if (k === 'ioctl')
      return (req, arg) => {
        if (req === stopAt) process.kill(process.pid, 'SIGSTOP');
        return t.ioctl(req, arg);
      };
    const v = Reflect.get(t, k);
    return typeof v === 'function' ? v.bind(t) : v;
  },
});
new VfioUserServer(port).listen(process.argv[2]);
console.log('listening');
`;

/** Where the server stops, and the request info reports as timed out. */
const STOPS: [ioctl: string, op: string][] = [
  ['VFIO_DEVICE_GET_INFO', 'VFIO_USER_DEVICE_GET_INFO'],
  ['VFIO_DEVICE_FEATURE', 'VFIO_USER_DEVICE_FEATURE'], // the first write-combining probe
  ['VFIO_DEVICE_GET_IRQ_INFO', 'VFIO_USER_DEVICE_GET_IRQ_INFO'],
];

for (const [ioctl, op] of STOPS)
  test(`info: a server that stops answering at ${ioctl} is ETIMEDOUT, one line, exit 1`, () =>
    inTempDir(async (dir) => {
      const script = join(dir, 'server.mjs');
      writeFileSync(script, CHILD_SERVER);
      const sock = join(dir, 'stops.sock');
      const child: ChildProcess = spawn(process.execPath, [script, sock, ioctl], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      try {
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
          child.on('exit', (code) => reject(new Error(`child server exited ${code}`)));
        });
        const before = openFdCount();
        const r = await info([sock, '--timeout', '0.5']);
        assert.equal(r.status, 1, r.out);
        assert.equal(r.out, '');
        assert.deepEqual(r.err, [`vfio-ts info: ${op}: ETIMEDOUT (no reply in 500 ms)`]);
        assert.equal(openFdCount(), before);
      } finally {
        child.kill('SIGKILL');
      }
    }));
