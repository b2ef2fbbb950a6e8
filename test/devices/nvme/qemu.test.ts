/**
 * The NVMe device as a disk of real Linux guests: QEMU 11's vfio-user-pci in front of our
 * server, Debian 6.1 and 7.3 kernels' nvme driver, ext4 made by busybox mke2fs. The guest
 * writes a file and 8 MiB, syncs, unmounts, drops its caches, mounts again and checks the
 * checksum; after it powers off, the host checks the image (e2fsck -fn, debugfs).
 *  - 6.1, memfd guest RAM: DMA straight into the mapped fds, MSI-X (the server on this thread's
 *    libuv loop, `--loop libuv`);
 *  - 7.3, memfd RAM, a 16 MiB CMB: the driver puts its I/O SQs there (P2PDMA), seen in the
 *    guest's sysfs and in the server's count of entries fetched from the CMB (the server in a
 *    worker with the blocking loop, as `vfio-ts serve` runs it; so the next two);
 *  - 6.1, plain RAM and pci=nomsi: DMA by DMA_READ/DMA_WRITE messages in the request window, INTx;
 *  - `vfio-ts serve` killed (SIGKILL) mid-I/O and started again on the image: what was flushed
 *    is there; SIGTERM then flushes and closes.
 * Needs the provisioned cache and root (chroot); never skipped under CI=true.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  chrootWorkDir,
  describeBoot,
  type Provisioned,
  provisionedOrSkip,
  repoRoot,
} from '../../harness/index.js';
import {
  bootNvmeGuest,
  debugfsCat,
  e2fsck,
  md5,
  serveNvme,
  serveNvmeInWorker,
  WAIT_FOR_DISK,
} from './guest.js';
import type { NvmeCounters } from './served.js';

const IMAGE_SIZE = 64 << 20;
const CMB_SIZE = 16 << 20;
const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-qemu-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** mke2fs, a file and 8 MiB, sync, umount, drop caches, mount, compare; markers for the host. */
const DISK_SCRIPT = `${WAIT_FOR_DISK}
for f in cmbloc cmbsz; do [ -e /sys/class/nvme/nvme0/$f ] && echo "@@NVME-$f $(cat /sys/class/nvme/nvme0/$f)"; done
P2P=/sys/class/nvme/nvme0/device/p2pmem
p2p() { [ -d $P2P ] && echo "@@P2PMEM-$1 size=$(cat $P2P/size) available=$(cat $P2P/available)"; }
p2p before
mke2fs $dev >/dev/null || exit 2
mkdir -p /mnt
mount -t ext4 $dev /mnt || exit 3
echo "vfio-ts nvme $(uname -r)" > /mnt/hello.txt
dd if=/dev/urandom of=/mnt/data.bin bs=1M count=8 2>/dev/null || exit 4
SUM=$(md5sum /mnt/data.bin | cut -d' ' -f1)
sync
umount /mnt || exit 5
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 $dev /mnt || exit 6
AGAIN=$(md5sum /mnt/data.bin | cut -d' ' -f1)
echo "@@DATA-MD5 $SUM $AGAIN"
[ "$SUM" = "$AGAIN" ] || exit 7
[ "$(cat /mnt/hello.txt)" = "vfio-ts nvme $(uname -r)" ] || exit 8
p2p after
umount /mnt || exit 9
grep nvme /proc/interrupts | tr -s ' ' | sed 's/^/@@IRQ/'
echo "@@NVME-DONE"
`;

interface DiskRun {
  kernel: '6.1' | '7.3';
  ram: 'memfd' | 'anonymous';
  cmb: number;
  append?: string;
  /** Where the server runs: a worker with the blocking loop (as `vfio-ts serve`), or this thread's libuv. */
  server: 'worker' | 'this thread';
}

/** Boots DISK_SCRIPT against our server on a fresh image; checks the guest's and the host's view. */
async function diskRun(p: Provisioned, o: DiskRun) {
  const work = chrootWorkDir(p);
  const sock = work.path('nvme.sock');
  const image = join(dir, `disk-${o.kernel}-${o.ram}-${o.cmb}.img`);
  const s =
    o.server === 'worker'
      ? await serveNvmeInWorker(sock.host, image, IMAGE_SIZE, o.cmb)
      : await serveNvme(sock.host, image, IMAGE_SIZE, o.cmb);
  const stop = async (): Promise<NvmeCounters> => {
    if ('stop' in s) return s.stop();
    const ctl = s.behaviour.controller;
    const counters = {
      stats: { ...ctl.stats },
      ioStats: { ...ctl.ioStats },
      sq1: ctl.sqs[1] !== undefined,
      serial: ctl.options.serial ?? '',
    };
    s.close();
    return counters;
  };
  try {
    const r = await bootNvmeGuest(p, work, {
      kernel: o.kernel,
      ram: o.ram,
      sockets: [sock.chroot],
      script: DISK_SCRIPT,
      ...(o.append ? { append: o.append } : {}),
    });
    const ctl = await stop();
    const why = `${describeBoot(r)}\nserver (${o.server}):\n${s.log.join('\n')}\nstats ${JSON.stringify(ctl.stats)}`;
    assert.equal(r.status, 0, why);
    assert.match(r.output, /@@NVME-MODEL vfio-ts NVMe controller/, why);
    assert.match(r.output, /@@NVME-DONE/, why);
    const sum = /@@DATA-MD5 ([0-9a-f]{32}) \1/.exec(r.output)?.[1];
    assert.ok(sum, `no matching checksums in the guest\n${why}`);
    assert.equal(ctl.stats.fatal, undefined, why);
    assert.ok(ctl.ioStats.bytesWritten >= 8 << 20, `${ctl.ioStats.bytesWritten} bytes written`);
    // The host reads the image without mounting it.
    const fsck = e2fsck(image);
    assert.equal(fsck.status, 0, fsck.output);
    const release = p.kernels[o.kernel].release;
    assert.equal(debugfsCat(image, '/hello.txt').toString(), `vfio-ts nvme ${release}\n`);
    assert.equal(md5(debugfsCat(image, '/data.bin')), sum, 'debugfs reads what the guest wrote');
    return { r, ctl, why };
  } finally {
    await stop();
    work.cleanup();
  }
}

describe('NVMe device as a Linux disk under QEMU 11 (vfio-user-pci)', () => {
  test('Linux 6.1, memfd RAM (DMA into mapped fds), MSI-X: mke2fs, ext4, 8 MiB, remount, e2fsck', async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const { r, why } = await diskRun(p, { kernel: '6.1', ram: 'memfd', cmb: 0, server: 'this thread' });
    assert.match(r.output, /@@IRQ.*MSI.*nvme0q1/, why);
  });

  test('Linux 7.3, memfd RAM, a 16 MiB CMB: the I/O SQ lives in the CMB and the I/O goes through it', async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const { r, ctl, why } = await diskRun(p, {
      kernel: '7.3',
      ram: 'memfd',
      cmb: CMB_SIZE,
      server: 'worker',
    });
    // The guest's view: CMBLOC (BIR 2, CQMMS) and CMBSZ (16 x 1 MiB, SQS) in sysfs, and P2PDMA
    // memory handed out of the BAR (1024 64-byte entries for the one I/O SQ).
    assert.match(r.output, /@@NVME-cmbloc 10\b/, why);
    assert.match(r.output, /@@NVME-cmbsz 66049\b/, why);
    const after = /@@P2PMEM-after size=(\d+) available=(\d+)/.exec(r.output);
    assert.ok(after, why);
    assert.equal(Number(after[1]), CMB_SIZE);
    assert.ok(Number(after[2]) < CMB_SIZE, `nothing allocated from the CMB\n${why}`);
    // The device's view: every I/O command came from the CMB (admin ones from host memory).
    assert.equal(ctl.sq1, false, 'the queues were deleted at shutdown');
    assert.ok(ctl.stats.sqesFromCmb > 500, `${ctl.stats.sqesFromCmb} SQ entries from the CMB\n${why}`);
    assert.ok(ctl.ioStats.writes + ctl.ioStats.reads <= ctl.stats.sqesFromCmb, JSON.stringify(ctl.stats));
  });

  test('Linux 6.1, plain RAM (DMA_READ/DMA_WRITE messages) and pci=nomsi (INTx)', async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (!p) return;
    const { r, why } = await diskRun(p, {
      kernel: '6.1',
      ram: 'anonymous',
      cmb: 0,
      append: 'pci=nomsi',
      server: 'worker',
    });
    assert.match(r.output, /@@IRQ.*IO-APIC.*nvme0q0, nvme0q1/, why);
  });
});

/** `vfio-ts serve --device nvme` as its own process; resolves once it serves. */
async function serveProcess(
  socket: string,
  image: string,
): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(
    process.execPath,
    [`${repoRoot()}/dist/src/cli/main.js`, 'serve', '--device', 'nvme', '--socket', socket, '--disk', image],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  for (let i = 0; i < 200 && !/serving nvme/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(out, /serving nvme/);
  return { child, out: () => out };
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

test('the server killed mid-I/O and started again on the image: what was flushed is there', async (t) => {
  const p = provisionedOrSkip(t, { chroot: true });
  if (!p) return;
  const image = join(dir, 'kill.img');
  // An ext4 with a journal (e2fsprogs), so the second boot finds a consistent filesystem.
  execFileSync('truncate', ['-s', String(IMAGE_SIZE), image]);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', image]);
  const work = chrootWorkDir(p);
  const sock = work.path('nvme.sock');
  try {
    const a = await serveProcess(sock.host, image);
    let killedAt = '';
    let consoleText = '';
    const first = await bootNvmeGuest(p, work, {
      kernel: '7.3',
      ram: 'memfd',
      sockets: [sock.chroot],
      // The driver gives up on a dead controller quickly, so the boot ends.
      append: 'nvme_core.io_timeout=5 nvme_core.admin_timeout=5',
      timeoutMs: 150_000,
      script: `${WAIT_FOR_DISK}
mkdir -p /mnt
mount -t ext4 $dev /mnt || exit 3
dd if=/dev/urandom of=/mnt/flushed.bin bs=1M count=4 2>/dev/null || exit 4
sync
echo "@@FLUSHED $(md5sum /mnt/flushed.bin | cut -d' ' -f1)"
i=0
while [ $i -lt 40 ]; do
  dd if=/dev/urandom of=/mnt/noise.$i bs=1M count=1 conv=fsync 2>/dev/null || break
  echo "@@NOISE $i"
  i=$((i+1))
done
echo "@@NOISE-END $i"
`,
      onConsole: (chunk) => {
        // A few fsync'd writes after the flush, then SIGKILL while the next ones run.
        consoleText += chunk;
        if (!killedAt && /@@NOISE 1\r?\n/.test(consoleText)) {
          killedAt = consoleText.slice(-200);
          a.child.kill('SIGKILL');
        }
      },
    });
    if (!killedAt) a.child.kill('SIGKILL');
    await exited(a.child);
    const flushed = /@@FLUSHED ([0-9a-f]{32})/.exec(first.output)?.[1];
    assert.ok(flushed, `the guest never flushed\n${describeBoot(first)}\n${a.out()}`);
    assert.ok(killedAt, `the server was not killed mid-I/O\n${describeBoot(first)}`);
    assert.equal(a.child.signalCode, 'SIGKILL');
    assert.doesNotMatch(first.output, /@@NOISE 39\b/, 'the writes did not all finish: the kill came mid-I/O');

    const b = await serveProcess(sock.host, image);
    try {
      const second = await bootNvmeGuest(p, work, {
        kernel: '7.3',
        ram: 'memfd',
        sockets: [sock.chroot],
        script: `${WAIT_FOR_DISK}
mkdir -p /mnt
mount -t ext4 $dev /mnt || exit 3
echo "@@AFTER $(md5sum /mnt/flushed.bin | cut -d' ' -f1)"
umount /mnt || exit 5
`,
      });
      const why = `${describeBoot(second)}\n${b.out()}`;
      assert.equal(second.status, 0, why);
      assert.match(second.output, new RegExp(`@@AFTER ${flushed}`), why);
    } finally {
      b.child.kill('SIGTERM');
      await exited(b.child);
    }
    // The second guest replayed the journal and unmounted cleanly.
    const fsck = e2fsck(image);
    assert.equal(fsck.status, 0, fsck.output);
    assert.equal(md5(debugfsCat(image, '/flushed.bin')), flushed);
  } finally {
    work.cleanup();
  }
});
