/**
 * The example devices (examples/) served by `vfio-ts serve --module` to QEMU 11's vfio-user-pci,
 * driven with `-accel qtest` (no guest code): identity through config space, BARs programmed,
 * register writes and reads at the BAR address (each a REGION_WRITE/READ), and MSI-X: the test
 * enables MSI-X in QEMU's emulated capability and programs a table entry whose address is guest
 * RAM, so when the device raises the vector (our eventfd, QEMU's vfio_msi_interrupt ->
 * msix_notify) QEMU's MSI write lands in RAM where qtest reads it. dma-copy also copies guest
 * RAM (QEMU's memfd, DMA_MAPped to us) into its BAR2, which QEMU maps from our fd, and back.
 * The command line in docs/writing-a-device.md is the one used here.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { DMA_COPY_ID, REG as DREG } from '../../examples/dma-copy.js';
import { DOORBELL_ID, REG } from '../../examples/doorbell.js';
import {
  type ChrootWorkDir,
  chrootWorkDir,
  type Provisioned,
  provisionedOrSkip,
  type QtestSession,
  repoRoot,
  vfioUserQtest,
  withQtest,
} from '../harness/index.js';

const BAR0 = 0xe000_0000;
const BAR2 = 0x1_4000_0000n;
/** Guest RAM the MSI-X messages are pointed at (one dword per vector). */
const MSI_AT = 0x60_0000;
const MSI_DATA = 0x5a5a_0000;
const PCI_CAP_ID_MSIX = 0x11;
const PCI_COMMAND_MEMORY_MASTER = 0x6;

/** `vfio-ts serve --module dist/examples/NAME.js` in the chroot's work dir; QEMU runs `fn`. */
async function withExample(
  p: Provisioned,
  name: string,
  fn: (q: QtestSession, dev: number, out: () => string) => Promise<void>,
): Promise<string> {
  const work: ChrootWorkDir = chrootWorkDir(p);
  const sock = work.path(`${name}.sock`);
  const mod = join(repoRoot(), 'dist/examples', `${name}.js`);
  const child = spawn(
    process.execPath,
    [join(repoRoot(), 'dist/src/cli/main.js'), 'serve', '--module', mod, '--socket', sock.host],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    for (let i = 0; i < 200 && !new RegExp(`serving ${name}`).test(out); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.match(out, new RegExp(`serving ${name}`));
    await withQtest(p, vfioUserQtest([sock.chroot]), async (q) => {
      let dev = -1;
      for (let d = 0; d < 32 && dev < 0; d++)
        if (((await q.pciConfigRead32(0, d, 0, 0)) & 0xffff) === 0x1b36) dev = d;
      assert.ok(dev >= 0, `${name} not found on bus 0\n${q.stderr}\n${out}`);
      await fn(q, dev, () => out);
    });
  } finally {
    child.kill('SIGTERM');
    const code = await exited;
    work.cleanup();
    assert.equal(code, 0, out);
  }
  return out;
}

/** BAR0 (32-bit) at BAR0, BAR2 (64-bit) at BAR2 when asked; memory decode and bus master on. */
async function program(q: QtestSession, dev: number, bar2: boolean): Promise<void> {
  await q.pciConfigWrite32(0, dev, 0, 0x10, BAR0);
  if (bar2) {
    await q.pciConfigWrite32(0, dev, 0, 0x18, Number(BAR2 & 0xffff_ffffn));
    await q.pciConfigWrite32(0, dev, 0, 0x1c, Number(BAR2 >> 32n));
  }
  const cmd = await q.pciConfigRead32(0, dev, 0, 4);
  await q.pciConfigWrite32(0, dev, 0, 4, (cmd & 0xffff) | PCI_COMMAND_MEMORY_MASTER);
}

/**
 * MSI-X on (the capability's Message Control, PCI 3.0 §6.8.2.3) and `vectors` table entries
 * unmasked, each pointing at MSI_AT + 4 * vector with data MSI_DATA | vector. The table is in
 * BAR0 where the capability's Table Offset/BIR says (BIR 0 for both examples).
 */
async function enableMsix(q: QtestSession, dev: number, vectors: number): Promise<void> {
  let cap = (await q.pciConfigRead32(0, dev, 0, 0x34)) & 0xfc;
  while (cap && ((await q.pciConfigRead32(0, dev, 0, cap)) & 0xff) !== PCI_CAP_ID_MSIX)
    cap = ((await q.pciConfigRead32(0, dev, 0, cap)) >> 8) & 0xfc;
  assert.ok(cap, 'an MSI-X capability');
  const head = await q.pciConfigRead32(0, dev, 0, cap);
  assert.equal(((head >>> 16) & 0x7ff) + 1, vectors, 'table size');
  const table = (await q.pciConfigRead32(0, dev, 0, cap + 4)) >>> 0;
  assert.equal(table & 7, 0, 'table in BAR0');
  await q.pciConfigWrite32(0, dev, 0, cap, (head & 0xffff) | (0x8000 << 16)); // MSI-X Enable
  for (let v = 0; v < vectors; v++) {
    const entry = BAR0 + (table & ~7) + 16 * v;
    await q.writel(entry, MSI_AT + 4 * v);
    await q.writel(entry + 4, 0);
    await q.writel(entry + 8, MSI_DATA | v);
    await q.writel(entry + 12, 0); // unmasked
  }
}

/** Waits until QEMU's MSI write for `vector` shows in guest RAM, then clears it. */
async function msiSeen(q: QtestSession, vector: number, why: () => string): Promise<void> {
  const at = MSI_AT + 4 * vector;
  for (let i = 0; i < 250; i++) {
    if ((await q.readl(at)) === (MSI_DATA | vector)) {
      await q.writel(at, 0);
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`no MSI-X message for vector ${vector}\n${q.stderr}\n${why()}`);
}

test('QEMU 11 qtest: examples/doorbell.js via serve --module: identity, registers, an MSI-X message per vector', async (t) => {
  const p = provisionedOrSkip(t, { chroot: true });
  if (!p) return;
  await withExample(p, 'doorbell', async (q, dev, out) => {
    assert.equal(await q.pciConfigRead32(0, dev, 0, 0), 0x00d01b36, 'vendor and device');
    assert.equal(await q.pciConfigRead32(0, dev, 0, 8), 0xff000001, 'class and revision');
    await program(q, dev, false);
    assert.equal(await q.readl(BAR0 + REG.ID), Number(DOORBELL_ID));
    await q.writel(BAR0 + REG.SCRATCH, 0x89abcdef);
    await q.writel(BAR0 + REG.SCRATCH + 4, 0x01234567);
    assert.equal(await q.readl(BAR0 + REG.SCRATCH + 4), 0x01234567);
    assert.equal(await q.readl(BAR0 + REG.SCRATCH), 0x89abcdef);
    await enableMsix(q, dev, 4);
    for (const v of [1, 3, 0]) {
      await q.writel(BAR0 + REG.RING, v);
      await msiSeen(q, v, out);
    }
    assert.equal(await q.readl(BAR0 + REG.RINGS), 3);
    assert.equal(await q.readl(MSI_AT + 8), 0, 'vector 2 never rang');
  });
});

test('QEMU 11 qtest: examples/dma-copy.js via serve --module: guest RAM -> BAR2 -> guest RAM, MSI-X on each', async (t) => {
  const p = provisionedOrSkip(t, { chroot: true });
  if (!p) return;
  await withExample(p, 'dma-copy', async (q, dev, out) => {
    assert.equal(await q.pciConfigRead32(0, dev, 0, 0), 0x00d11b36);
    // BAR2: 64-bit prefetchable, 64 KiB.
    await q.pciConfigWrite32(0, dev, 0, 0x18, 0xffffffff);
    const lo = await q.pciConfigRead32(0, dev, 0, 0x18);
    assert.equal(lo & 0xf, 0xc, '64-bit prefetchable memory BAR');
    assert.equal((~(lo & ~0xf) + 1) >>> 0, 64 << 10);
    await program(q, dev, true);
    assert.equal(await q.readl(BAR0 + DREG.ID), Number(DMA_COPY_ID));
    await enableMsix(q, dev, 1);
    const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 13 + 1) & 0xff);
    await q.write(0x10_0000, pattern);
    const copy = async (cmd: number, src: number | bigint, dst: number | bigint) => {
      await q.writeq(BAR0 + DREG.SRC, BigInt(src));
      await q.writeq(BAR0 + DREG.DST, BigInt(dst));
      await q.writel(BAR0 + DREG.LEN, pattern.length);
      await q.writel(BAR0 + DREG.CMD, cmd);
      await msiSeen(q, 0, out);
      assert.equal(await q.readl(BAR0 + DREG.STATUS), 2, `status\n${out()}`);
    };
    await copy(1, 0x10_0000, 0x800);
    assert.deepEqual(await q.read(BAR2 + 0x800n, pattern.length), pattern, "in BAR2, through QEMU's mapping");
    await copy(2, 0x800, 0x20_0000);
    assert.deepEqual(await q.read(0x20_0000, pattern.length), pattern, 'back in guest RAM');
  });
});
