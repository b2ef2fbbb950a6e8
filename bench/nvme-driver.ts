/**
 * The userspace NVMe driver: 4 KiB random reads and writes at queue depth 1 and 16, with the
 * I/O submission queue in host memory and in the controller's CMB mapped write-combining, and the
 * CMB/host IOPS ratio measured in the same run. Both queue pairs live on one controller and take
 * turns in short slices (host first, then CMB first, and so on), after one slice each to warm up,
 * so the load of a shared machine falls on both alike; each figure is the median of the slices'.
 *
 *  1. The store fence itself (barrier.ts: Atomics.store, a locked XCHG) against a plain store.
 *  2. Our NVMe device (src/devices/nvme) on an image file, in-process (LocalDeviceFile over the
 *     core) and over vfio-user from `vfio-ts serve --device nvme` as a child process.
 *  3. QEMU's nvme (cmb_size_mb=16) bound to vfio-pci inside a Linux 6.1 guest (TCG, intel-iommu,
 *     type1 DMA), on the kernel backend: this file runs in the guest with `--in-guest`. Needs
 *     scripts/provision.sh; `--no-guest` leaves it out.
 *
 * None of these has write-combining buffers between the driver and the CMB: in-process and over
 * vfio-user the CMB is a memfd mapped into this process (a WC mapping of ordinary memory), and
 * under TCG every store to the CMB is an MMIO access QEMU handles one by one. The ratios are the
 * noise of the machine (docs/nvme-driver.md says what real hardware gains and how to measure it
 * there). Run: `node dist/bench/nvme-driver.js`.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTarget } from '../src/cli/nvme.js';
import type { VfioDevice } from '../src/driver/device.js';
import { type IoQueuePair, NvmeController, storeFence } from '../src/driver/nvme/index.js';
import { type PerfMode, runPerf } from '../src/driver/nvme/perf.js';
import { bindVfioPci } from '../src/kernel/sysfs.js';
import { type Backend, openOurNvme } from '../test/driver/nvme/device-rig.js';
import { nvme, projectTrees, provisioned, runGuest, VFIO_MODULES } from '../test/harness/index.js';
import { readOut } from '../test/kernel/guest.js';
import { isMain, measure, printTable } from './lib.js';

const MODES: readonly PerfMode[] = ['randread', 'randwrite'];
const DEPTHS = [1, 16] as const;
const PLACEMENTS = ['host', 'cmb'] as const;
type Placement = (typeof PLACEMENTS)[number];
const GUEST_IMAGE_MIB = 64;
const ROUNDS = 10;

interface Row {
  rw: PerfMode;
  qd: number;
  sq: Placement;
  iops: number;
  p50: number;
  p99: number;
}

function printRows(title: string, rows: readonly Row[]): void {
  console.log(`\n${title}`);
  console.log('rw         qd  sq        IOPS    p50 us    p99 us  cmb/host');
  for (const r of rows) {
    const host = rows.find((h) => h.rw === r.rw && h.qd === r.qd && h.sq === 'host');
    const ratio = r.sq === 'cmb' && host ? `${(r.iops / host.iops).toFixed(2)}x` : '';
    console.log(
      `${r.rw.padEnd(10)} ${String(r.qd).padStart(2)}  ${r.sq.padEnd(4)} ${r.iops.toFixed(0).padStart(10)} ${r.p50.toFixed(1).padStart(9)} ${r.p99.toFixed(1).padStart(9)}  ${ratio.padStart(8)}`,
    );
  }
}

function fenceBench(): void {
  const plain = new Int32Array(new SharedArrayBuffer(4));
  let n = 0;
  printTable('store fence', [
    measure('plain Int32Array store', () => {
      plain[0] = n++;
    }),
    measure('storeFence (Atomics.store: xchg)', storeFence),
    measure('Atomics.add (lock cmpxchg loop)', () => Atomics.add(plain, 0, 1)),
  ]);
}

const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/**
 * Host and CMB queue pairs of one controller (opened with sq: 'cmb') take turns: `rounds`
 * slices of `slice` seconds each per configuration and placement; medians of the slices.
 */
async function slices(c: NvmeController, rounds: number, slice: number): Promise<Row[]> {
  const qps: Record<Placement, IoQueuePair> = {
    host: await c.createQueuePair({ depth: 32, sq: 'host' }),
    cmb: await c.createQueuePair({ depth: 32, sq: 'cmb' }),
  };
  const rows: Row[] = [];
  for (const rw of MODES)
    for (const qd of DEPTHS) {
      const acc = Object.fromEntries(
        PLACEMENTS.map((sq) => [sq, { iops: [] as number[], p50: [] as number[], p99: [] as number[] }]),
      ) as Record<Placement, { iops: number[]; p50: number[]; p99: number[] }>;
      // One slice each first, not counted: both processes' JIT and the image's page cache warm.
      for (const sq of PLACEMENTS)
        await runPerf(c, qps[sq], { rw, bs: 4096, qd, seconds: slice, force: true });
      for (let r = 0; r < rounds; r++)
        for (const sq of r % 2 ? [...PLACEMENTS].reverse() : PLACEMENTS) {
          const p = await runPerf(c, qps[sq], { rw, bs: 4096, qd, seconds: slice, force: true, seed: r + 1 });
          acc[sq].iops.push(p.iops);
          acc[sq].p50.push(p.latencyUs.p50);
          acc[sq].p99.push(p.latencyUs.p99);
        }
      for (const sq of PLACEMENTS)
        rows.push({
          rw,
          qd,
          sq,
          iops: median(acc[sq].iops),
          p50: median(acc[sq].p50),
          p99: median(acc[sq].p99),
        });
    }
  return rows;
}

async function onController(dev: VfioDevice, rounds: number, slice: number): Promise<Row[]> {
  const c = await NvmeController.open(dev, { sq: 'cmb', ioQueues: 2 });
  try {
    return await slices(c, rounds, slice);
  } finally {
    await c.close();
  }
}

/** Our NVMe device on an 8 MiB image with a 2 MiB CMB, in-process or served by a child. */
async function deviceBench(backend: Backend): Promise<Row[]> {
  const rig = await openOurNvme(backend);
  try {
    return await onController(rig.dev, ROUNDS, 0.2);
  } finally {
    await rig.close();
  }
}

/** Inside the guest (`--in-guest`): QEMU's nvme through the kernel backend; JSON rows out. */
async function inGuest(): Promise<void> {
  const bdf = readdirSync('/sys/bus/pci/devices').find(
    (d) =>
      readFileSync(`/sys/bus/pci/devices/${d}/vendor`, 'utf8').trim() === '0x1b36' &&
      readFileSync(`/sys/bus/pci/devices/${d}/device`, 'utf8').trim() === '0x0010',
  );
  if (!bdf) throw new Error('no QEMU nvme in this guest');
  bindVfioPci(bdf);
  const dev = await openTarget(bdf, 'cmb');
  try {
    console.log(JSON.stringify(await onController(dev, ROUNDS, 0.5)));
  } finally {
    await dev.close();
  }
}

/** Boots a Linux 6.1 guest with QEMU's nvme and a 16 MiB CMB and runs `--in-guest` there. */
async function guestBench(): Promise<Row[] | string> {
  const p = provisioned();
  if ('missing' in p) return `skipped: ${p.missing} (run scripts/provision.sh)`;
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-nvme-bench-'));
  try {
    // Written out, not sparse: a first write to a hole costs the host an allocation.
    const image = join(dir, 'nvme.img');
    writeFileSync(image, Buffer.alloc(GUEST_IMAGE_MIB << 20, 0xa5));
    const outImage = join(dir, 'out.img');
    writeFileSync(outImage, Buffer.alloc(1 << 20));
    const boot = await runGuest(p, {
      kernel: p.kernels['6.1'],
      node: true,
      trees: projectTrees(),
      modules: [...VFIO_MODULES, 'virtio_pci?', 'virtio_blk'],
      script: `cd /app || exit 90
node dist/bench/nvme-driver.js --in-guest >/tmp/out.txt 2>&1
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/out.txt)"; cat /tmp/out.txt; } >/dev/vda; sync`,
      args: [
        ...nvme({ image, cmbSizeMiB: 16 }),
        '-drive',
        `file=${outImage},format=raw,if=none,id=vfiotsout`,
        '-device',
        'virtio-blk-pci,drive=vfiotsout',
      ],
      timeoutMs: 600_000,
    });
    const out = readOut(readFileSync(outImage));
    const json = out?.trim().split('\n').at(-1);
    if (boot.status !== 0 || !json?.startsWith('['))
      return `guest failed: status ${boot.status}\n${out ?? boot.console.slice(-2000)}`;
    return JSON.parse(json) as Row[];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMain(import.meta.url)) {
  if (process.argv.includes('--in-guest')) await inGuest();
  else {
    fenceBench();
    for (const [b, what] of [
      ['in-process', 'in-process (LocalDeviceFile over the core)'],
      ['vfio-user', 'over vfio-user from `vfio-ts serve --device nvme` (a child process)'],
    ] as const)
      printRows(
        `our NVMe device, ${what}: 4 KiB, ${ROUNDS} alternating slices of 0.2 s, medians`,
        await deviceBench(b),
      );
    if (!process.argv.includes('--no-guest')) {
      const g = await guestBench();
      if (typeof g === 'string') console.log(`\nkernel backend, Linux 6.1 guest: ${g}`);
      else
        printRows(
          `kernel backend, QEMU nvme (cmb_size_mb=16), Linux 6.1 TCG guest: 4 KiB, ${ROUNDS} alternating slices of 0.5 s, medians`,
          g,
        );
    }
  }
}
