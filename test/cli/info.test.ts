/**
 * `vfio-ts info`: the formatter on a fixed report (exact text), and the command against our
 * vfio-user server listening on a temporary socket (text and --json), plus its error paths.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatInfo, type InfoReport, infoJson, pciAddress, runWith, sizeText } from '../../src/cli/info.js';
import { createDevice, type DeviceName } from '../../src/devices/index.js';
import { openFdCount } from '../../src/native/index.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';

const REPORT: InfoReport = {
  target: '/tmp/x.sock',
  transport: 'vfio-user',
  negotiated: { version: '0.1', maxDataXferSize: 1048576, maxMsgFds: 16, dmaLayout: 'spec' },
  vendorId: 0x1af4,
  deviceId: 0x1110,
  subsystemVendorId: 0x1af4,
  subsystemId: 0x1100,
  classCode: 0x050000,
  revision: 1,
  reset: false,
  numRegions: 10,
  numIrqs: 5,
  regions: [
    {
      index: 2,
      name: 'BAR2',
      size: 4n << 20n,
      offset: 2n << 40n,
      flags: ['READ', 'WRITE', 'MMAP', 'CAPS', 'PREFETCH'],
      caps: [
        {
          kind: 'sparse-mmap',
          areas: [
            { offset: 0n, size: 0x1000n },
            { offset: 0x3000n, size: 0x3fd000n },
          ],
        },
        { kind: 'msix-mappable' },
      ],
      wcPaths: ['cookie', 'dma-buf'],
    },
    {
      index: 9,
      name: 'DEV0',
      size: 4n << 20n,
      offset: 9n << 40n,
      flags: ['MMAP', 'CAPS'],
      caps: [{ kind: 'type', type: 0x8000ffff, subtype: 3 }],
      wcPaths: [],
    },
  ],
  irqs: [
    { index: 0, name: 'INTx', count: 1, flags: ['EVENTFD', 'MASKABLE', 'AUTOMASKED'] },
    { index: 3, name: 'ERR', errno: 'EINVAL' },
  ],
};

test('formatInfo: lspci -vv style text', () => {
  assert.equal(
    formatInfo(REPORT),
    [
      '/tmp/x.sock: Memory controller [0500]: Device 1af4:1110 (rev 01) (prog-if 00)',
      '\tSubsystem: Device 1af4:1100',
      '\tVFIO: vfio-user 0.1, max_data_xfer_size 1048576, max_msg_fds 16, DMA_READ/WRITE layout spec',
      '\tDevice: 10 regions, 5 IRQs, reset -',
      '\tRegion 2 (BAR2): size=4M offset=0x20000000000 [READ WRITE MMAP CAPS PREFETCH]',
      '\t\tSparse mmap: 2 areas',
      '\t\t\tmmap [0x0-0xfff] size=4K',
      '\t\t\tmmap [0x3000-0x3fffff] size=4084K',
      '\t\tMSI-X table mappable',
      '\t\tWrite-combining: cookie, dma-buf',
      '\tRegion 9 (BAR2 WC alias): size=4M offset=0x90000000000 [MMAP CAPS]',
      '\t\tType: 0x8000ffff subtype 0x3',
      '\tIRQ 0 (INTx): count=1 [EVENTFD MASKABLE AUTOMASKED]',
      '\tIRQ 3 (ERR): EINVAL',
    ].join('\n'),
  );
});

test('infoJson: bigints as hex strings, caps kept, round-trips through JSON', () => {
  const j = JSON.parse(JSON.stringify(infoJson(REPORT)));
  assert.equal(j.regions[0].size, '0x400000');
  assert.equal(j.regions[1].name, 'BAR2 WC alias');
  assert.deepEqual(j.regions[0].caps[0].areas[1], { offset: '0x3000', size: '0x3fd000' });
  assert.equal(j.negotiated.version, '0.1');
});

test('pciAddress and sizeText', () => {
  assert.equal(pciAddress('00:03.0'), '0000:00:03.0');
  assert.equal(pciAddress('0000:AF:1f.7'), '0000:af:1f.7');
  assert.equal(pciAddress('/tmp/00:03.0'), undefined);
  assert.equal(pciAddress('00:03.8'), undefined);
  assert.deepEqual([256n, 4096n, 1n << 20n, 3n << 30n, 5000n].map(sizeText), [
    '256',
    '4K',
    '1M',
    '3G',
    '5000',
  ]);
});

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { log: (l: string) => out.push(l), error: (l: string) => err.push(l) } };
}

async function withServer<T>(name: DeviceName, f: (path: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-info-'));
  const path = join(dir, `${name}.sock`);
  const dev = createDevice(name, { env: nativeEnvironment() });
  const server = new VfioUserServer(dev);
  server.listen(path);
  try {
    return await f(path);
  } finally {
    await server.idle();
    server.stop();
    dev.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('info <socket>: ivshmem over our vfio-user server', async () => {
  const before = openFdCount();
  const c = capture();
  const status = await withServer('ivshmem', (p) => runWith([p], c.io));
  assert.equal(status, 0, c.err.join('\n'));
  const text = c.out.join('\n');
  assert.match(text, /: Memory controller \[0500\]: Device 1af4:1110 \(rev 01\)/);
  assert.match(text, /\tVFIO: vfio-user 0\.0, max_data_xfer_size 1048576/);
  assert.match(
    text,
    /\tRegion 2 \(BAR2\): size=4M offset=0x20000000000 \[READ WRITE MMAP PREFETCH\]\n\t\tWrite-combining: cookie, dma-buf, alias-region\n/,
  );
  assert.match(
    text,
    /\tRegion 0 \(BAR0\): size=256 offset=0x0 \[READ WRITE MMAP\]\n\t\tWrite-combining: none\n/,
  );
  assert.match(text, /\tRegion 7 \(CONFIG\): size=256 offset=0x70000000000 \[READ WRITE\]/);
  assert.match(text, /\tIRQ 0 \(INTx\): count=0 \[EVENTFD MASKABLE AUTOMASKED\]/);
  assert.equal(openFdCount(), before);
});

test('info <socket> --json: edu, one JSON object with the same facts', async () => {
  const c = capture();
  const status = await withServer('edu', (p) => runWith([p, '--json'], c.io));
  assert.equal(status, 0, c.err.join('\n'));
  const j = JSON.parse(c.out.join('\n'));
  assert.equal(j.transport, 'vfio-user');
  assert.deepEqual([j.vendorId, j.deviceId, j.classCode, j.revision], [0x1234, 0x11e8, 0xff00, 0x10]);
  assert.deepEqual(j.regions[0], {
    index: 0,
    name: 'BAR0',
    size: '0x100000',
    offset: '0x0',
    flags: ['READ', 'WRITE'],
    caps: [],
    wcPaths: [],
  });
  assert.deepEqual(j.irqs[1], { index: 1, name: 'MSI', count: 1, flags: ['EVENTFD', 'NORESIZE'] });
});

test('info: errors are reported, not thrown', async () => {
  const c = capture();
  assert.equal(await runWith([], c.io), 2);
  assert.equal(await runWith(['/nonexistent/vfio-ts.sock'], c.io), 1);
  assert.match(c.err.at(-1)!, /vfio-ts info: \/nonexistent\/vfio-ts\.sock: connect: ENOENT/);
  const k = await runWith(['00:03.0'], c.io);
  assert.equal(k, 1);
  assert.match(c.err.at(-1)!, /vfio-ts info: (0000:)?00:03\.0/);
});
