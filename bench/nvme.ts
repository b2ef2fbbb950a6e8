/**
 * Guest disk throughput through our NVMe device (vfio-user, QEMU 11) against QEMU's own
 * `-device nvme`, same image size, same guest, same run: dd of 64 MiB with O_DIRECT, written
 * then read (1 MiB blocks), and 4 KiB blocks one at a time (sequential, queue depth 1: the
 * per-command round trip). Each figure is the median of ROUNDS, timed in the guest with
 * CLOCK_MONOTONIC (/proc/timer_list); the rounds go round the devices in turn. Two boots: guest RAM in a memfd (our device DMAs into the mapped fd; one
 * of our devices also has a CMB, where Linux 7.3 puts its I/O SQ), and plain RAM (our device
 * reaches guest memory with DMA_READ/DMA_WRITE messages).
 *
 * Also printed, from the server's side: doorbell writes (posted REGION_WRITEs) per command, and
 * the server process's CPU time per command, to judge a faster doorbell path.
 *
 *   node dist/bench/nvme.js [--kernel 6.1|7.3]
 *
 * Needs scripts/provision.sh and root (QEMU 11 runs in the trixie chroot); says so and exits 0
 * otherwise.
 */
import { execFileSync } from 'node:child_process';
import { cpuUsage } from 'node:process';
import { bootNvmeGuest, type ServedNvme, serveNvme } from '../test/devices/nvme/guest.js';
import { chrootWorkDir, type KernelLabel, nvme, provisioned } from '../test/harness/index.js';

const IMAGE = 128 << 20;
const ROUNDS = 5;

/** One dd per measurement; prints `@@DD <serial> <what> <nanoseconds>` per round. */
const SCRIPT = (rounds: number) => `
i=0
while [ $(ls -d /sys/class/nvme/nvme* 2>/dev/null | wc -l) -lt $NVMES ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
# busybox dd prints no timing: nanoseconds of CLOCK_MONOTONIC from /proc/timer_list.
now() { sed -n 's/^now at \\([0-9]*\\) nsecs/\\1/p' /proc/timer_list | head -n 1; }
timed() { t0=$(now); "$@" 2>/dev/null; t1=$(now); echo $((t1 - t0)); }
for c in /sys/class/nvme/nvme*; do
  dev=/dev/$(basename $c)n1
  i=0; while [ ! -b $dev ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
done
# Rounds interleave the devices, so each sees the same moments of a shared, noisy host.
r=0
while [ $r -lt ${rounds} ]; do
  for c in /sys/class/nvme/nvme*; do
    ser=$(cat $c/serial | tr -d ' '); dev=/dev/$(basename $c)n1
    echo "@@DD $ser write64M $(timed dd if=/dev/zero of=$dev bs=1M count=64 oflag=direct)"
    echo "@@DD $ser read64M $(timed dd if=$dev of=/dev/null bs=1M count=64 iflag=direct)"
    echo "@@DD $ser write4k $(timed dd if=/dev/zero of=$dev bs=4k count=2048 oflag=direct)"
    echo "@@DD $ser read4k $(timed dd if=$dev of=/dev/null bs=4k count=2048 iflag=direct)"
  done
  r=$((r+1))
done
echo "@@BENCH-DONE"
`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

interface Served {
  label: string;
  s?: ServedNvme;
}

async function run(kernel: KernelLabel, ram: 'memfd' | 'anonymous'): Promise<void> {
  const p = provisioned({ chroot: true });
  if ('missing' in p) return;
  const work = chrootWorkDir(p);
  const devices: Served[] = [];
  try {
    const ours = work.path('ours.sock');
    const oursCmb = work.path('ours-cmb.sock');
    const qemuImage = work.path('qemu.img');
    execFileSync('truncate', ['-s', String(IMAGE), qemuImage.host]);
    const plain = await serveNvme(ours.host, work.path('ours.img').host, IMAGE);
    devices.push({ label: `ours (${ram === 'memfd' ? 'mapped fds' : 'DMA messages'})`, s: plain });
    const sockets = [ours.chroot];
    if (ram === 'memfd') {
      const cmb = await serveNvme(oursCmb.host, work.path('ours-cmb.img').host, IMAGE, 16 << 20);
      devices.push({ label: 'ours, SQ in the CMB', s: cmb });
      sockets.push(oursCmb.chroot);
    }
    devices.push({ label: "QEMU's -device nvme" });
    const serials = new Map<string, string>();
    const cpu0 = cpuUsage();
    const r = await bootNvmeGuest(p, work, {
      kernel,
      ram,
      sockets,
      args: nvme({ image: qemuImage.chroot, serial: 'qemunvme' }),
      script: `NVMES=${sockets.length + 1}\n${SCRIPT(ROUNDS)}`,
      timeoutMs: 900_000,
    });
    const cpu = cpuUsage(cpu0);
    if (!/@@BENCH-DONE/.test(r.output)) {
      console.log(`nvme bench (${kernel}, ${ram}): the guest did not finish\n${r.console.slice(-3000)}`);
      return;
    }
    for (const d of devices)
      serials.set(d.s ? (d.s.behaviour.controller.options.serial ?? '') : 'qemunvme', d.label);
    const fig = new Map<string, Map<string, number[]>>();
    for (const m of r.output.matchAll(/@@DD (\S+) (\S+) (\d+)/g)) {
      const label = serials.get(m[1]!) ?? m[1]!;
      const per = fig.get(label) ?? new Map<string, number[]>();
      fig.set(label, per);
      per.set(m[2]!, [...(per.get(m[2]!) ?? []), Number(m[3]) / 1e9]);
    }
    const qemu = fig.get("QEMU's -device nvme");
    console.log(`\nLinux ${kernel} guest, guest RAM ${ram}, median of ${ROUNDS}:`);
    console.log(
      `${'device'.padEnd(30)} ${'write 64M'.padStart(12)} ${'read 64M'.padStart(12)} ${'4K write'.padStart(12)} ${'4K read'.padStart(12)}`,
    );
    for (const [label, per] of fig) {
      const cells = [
        ['write64M', 64, 'MB/s'],
        ['read64M', 64, 'MB/s'],
        ['write4k', 2048, 'IOPS'],
        ['read4k', 2048, 'IOPS'],
      ] as const;
      const row = cells.map(([k, n, unit]) => {
        const v = n / median(per.get(k) ?? []);
        const base = n / median(qemu?.get(k) ?? []);
        return `${v.toFixed(0)} ${unit === 'MB/s' ? 'MB/s' : 'op/s'} ${label === "QEMU's -device nvme" ? '' : `(${(v / base).toFixed(2)}x)`}`.padStart(
          12,
        );
      });
      console.log(`${label.padEnd(30)} ${row.join(' ')}`);
    }
    for (const d of devices)
      if (d.s) {
        const st = d.s.behaviour.controller.stats;
        console.log(
          `  ${d.label}: ${st.commands} commands, ${(st.doorbells / st.commands).toFixed(2)} doorbell writes per command, ` +
            `${st.sqesFromCmb} SQ entries from the CMB`,
        );
      }
    const commands = devices.reduce((n, d) => n + (d.s?.behaviour.controller.stats.commands ?? 0), 0);
    console.log(
      `  server process CPU (all our devices, whole boot): ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms, ` +
        `${((cpu.user + cpu.system) / commands).toFixed(1)} us per command`,
    );
  } finally {
    for (const d of devices) d.s?.close();
    work.cleanup();
  }
}

const kernel = (
  process.argv.includes('--kernel') ? process.argv[process.argv.indexOf('--kernel') + 1] : '7.3'
) as KernelLabel;
const p = provisioned({ chroot: true });
if ('missing' in p) console.log(`nvme bench skipped: needs ${p.missing} (scripts/provision.sh, root)`);
else {
  await run(kernel, 'memfd');
  await run(kernel, 'anonymous');
}
