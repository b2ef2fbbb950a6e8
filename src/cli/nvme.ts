/**
 * `vfio-ts nvme identify|perf <socket|pci-address> ...`: the userspace NVMe driver
 * (src/driver/nvme) from the command line, over a vfio-user server's socket or a PCI device
 * bound to vfio-pci. `perf` is a small fio: IOPS, MB/s and latency percentiles, with the
 * submission queues in host memory or in the controller's CMB (write-combining), and a verify
 * mode that fails loudly on the first block that does not read back as written.
 */
import { Errno } from '../abi/errno.js';
import { VfioDevice } from '../driver/device.js';
import type { VfioDeviceFile } from '../driver/file.js';
import { probeCmbBar } from '../driver/nvme/cmb.js';
import { NvmeController, versionText } from '../driver/nvme/index.js';
import { PERF_MODES, type PerfMode, type PerfResult, runPerf } from '../driver/nvme/perf.js';
import { cap, cmbsz } from '../driver/nvme/spec.js';
import { jsonText } from '../driver/report-json.js';
import { fail } from '../errors.js';
import { openKernelDevice } from '../kernel/device.js';
import { iomemRelaxed, isBdf, normalizeBdf } from '../kernel/sysfs.js';
import { byteCount, type Output, reportFailure } from './args.js';
import { connectSocket } from './target.js';

const TARGET = `<target> is a vfio-user socket path, or a PCI address (0000:00:04.0) bound to vfio-pci (vfio-ts bind).`;
const USAGE = `usage: vfio-ts nvme identify <target> [--json]
       vfio-ts nvme perf <target> --rw read|write|randread|randwrite [--bs 4k] [--qd 1] [--seconds 5]
                         [--sq host|cmb] [--completions poll|interrupt] [--verify] [--force]
                         [--nsid 1] [--size BYTES] [--json]
${TARGET}
identify  resets and enables the controller, prints Identify Controller and Namespace data,
          the CMB, and how its BAR can be mapped write-combining; then shuts it down cleanly.
perf      runs one workload on one I/O queue pair and prints IOPS, MB/s and p50/p99 latency:
  --rw           read, write (sequential) or randread, randwrite (uniform over --size)
  --bs           bytes per I/O, a multiple of the logical block (4k, 64k, 1m, 4096; default 4k)
  --qd           I/Os kept in flight (default 1)
  --seconds      how long to run (default 5)
  --sq           where the I/O submission queue lives: host memory (default) or the controller's
                 memory buffer, mapped write-combining (stores fenced before each doorbell)
  --completions  find completions by polling the queue (default) or from MSI-X eventfds
  --verify       stamp every written block with a pattern (LBA, generation) and check every block
                 read back; read modes write the pattern first. Any mismatch fails the run
  --force        write even when the namespace starts with a partition table or a filesystem
                 (without it, write modes and --verify refuse: MBR, GPT, ext2/3/4, XFS, btrfs,
                 FAT, LUKS, swap, LVM2, ISO 9660)
  --nsid         namespace (default 1)
  --size         bytes of the namespace to use from LBA 0 (default all; 1 GiB at most with --verify)
  --json         one JSON object instead of text`;

interface PerfArgs {
  rw: PerfMode;
  bs: number;
  qd: number;
  seconds: number;
  sq: 'host' | 'cmb';
  completions: 'poll' | 'interrupt';
  verify: boolean;
  force: boolean;
  nsid: number;
  size: bigint | undefined;
}

/** `4k` → 4096, `1m` → 1 MiB (binary units, as fio's bs): args.ts byteCount, or EINVAL. */
export function parseSize(s: string): number {
  return (
    byteCount(s) ??
    fail(Errno.EINVAL, 'nvme', `size '${s}' is not a positive number with an optional k, m, g or t`)
  );
}

function parsePerf(flags: Map<string, string>): PerfArgs {
  const rw = flags.get('--rw');
  if (!rw || !(PERF_MODES as readonly string[]).includes(rw))
    fail(Errno.EINVAL, 'nvme perf', `--rw must be one of ${PERF_MODES.join(', ')}`);
  const int = (name: string, dflt: number, min: number) => {
    const v = flags.get(name);
    const n = v === undefined ? dflt : Number(v);
    if (!Number.isSafeInteger(n) || n < min)
      fail(Errno.EINVAL, 'nvme perf', `${name} needs an integer >= ${min}, not ${v}`);
    return n;
  };
  const choice = <T extends string>(name: string, options: readonly T[]): T => {
    const v = flags.get(name) ?? options[0]!;
    if (!(options as readonly string[]).includes(v))
      fail(Errno.EINVAL, 'nvme perf', `${name} must be ${options.join(' or ')}`);
    return v as T;
  };
  const seconds = Number(flags.get('--seconds') ?? '5');
  if (!(seconds > 0) || !Number.isFinite(seconds))
    fail(Errno.EINVAL, 'nvme perf', `--seconds ${flags.get('--seconds')}`);
  const size = flags.get('--size');
  return {
    rw: rw as PerfMode,
    bs: parseSize(flags.get('--bs') ?? '4k'),
    qd: int('--qd', 1, 1),
    seconds,
    sq: choice('--sq', ['host', 'cmb'] as const),
    completions: choice('--completions', ['poll', 'interrupt'] as const),
    verify: flags.has('--verify'),
    force: flags.has('--force'),
    nsid: int('--nsid', 1, 1),
    size: size === undefined ? undefined : BigInt(parseSize(size)),
  };
}

const BOOLEAN_FLAGS = new Set(['--json', '--verify', '--force']);
const VALUE_FLAGS = new Set([
  '--rw',
  '--bs',
  '--qd',
  '--seconds',
  '--sq',
  '--completions',
  '--nsid',
  '--size',
]);
/** Every flag `nvme perf` takes (the --help text explains each). */
export const PERF_FLAGS: readonly string[] = [...VALUE_FLAGS, ...BOOLEAN_FLAGS];

export async function run(args: string[]): Promise<number> {
  return runWith(args, { log: (l) => console.log(l), error: (l) => console.error(l) });
}

export async function runWith(args: string[], out: Output): Promise<number> {
  const [cmd, ...rest] = args;
  if (
    cmd === undefined ||
    cmd === '-h' ||
    cmd === '--help' ||
    rest.includes('--help') ||
    rest.includes('-h')
  ) {
    (cmd === undefined ? out.error : out.log)(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (BOOLEAN_FLAGS.has(a)) flags.set(a, '');
    else if (VALUE_FLAGS.has(a)) {
      const v = rest[++i];
      if (v === undefined) return usage(out, `${a} needs a value`);
      flags.set(a, v);
    } else if (a.startsWith('-')) return usage(out, `unknown option ${a}`);
    else positional.push(a);
  }
  if ((cmd !== 'identify' && cmd !== 'perf') || positional.length !== 1)
    return usage(
      out,
      cmd === 'identify' || cmd === 'perf' ? 'one <target> is needed' : `unknown nvme command '${cmd}'`,
    );
  const target = positional[0]!;
  try {
    if (cmd === 'identify') {
      const report = await identify(target);
      out.log(flags.has('--json') ? jsonText(report) : identifyText(report));
      return 0;
    }
    const p = parsePerf(flags);
    const r = await perf(target, p);
    out.log(flags.has('--json') ? jsonText(r) : perfText(r));
    return 0;
  } catch (e) {
    // The error names the target where it matters (connectSocket, openKernelDevice say the path).
    return reportFailure(`nvme ${cmd}`, e, out);
  }
}

function usage(out: Output, why: string): number {
  out.error(`vfio-ts nvme: ${why} (vfio-ts nvme --help)`);
  return 2;
}

/**
 * Opens the target. For a kernel device whose submission queues go to the CMB on a kernel booted
 * with iomem=relaxed, the CMB BAR is premapped write-combining before the real open
 * (OpenKernelOptions.wcBars: the route Linux 7.3 needs, where vfio-pci claims and ioremaps the
 * BARs at open); which BAR that is, a first open asks the controller (CMBLOC.BIR).
 */
export async function openTarget(target: string, sq: 'host' | 'cmb' = 'host'): Promise<VfioDevice> {
  if (!isBdf(target)) return new VfioDevice(await connectSocket(target));
  const bdf = normalizeBdf(target);
  let wcBars: number[] = [];
  if (sq === 'cmb' && iomemRelaxed()) {
    const probe = new VfioDevice(await openKernelDevice(bdf));
    try {
      const bar = await probeCmbBar(probe);
      if (bar !== undefined) wcBars = [bar];
    } finally {
      await probe.close();
    }
  }
  const file: VfioDeviceFile = await openKernelDevice(bdf, { wcBars });
  return new VfioDevice(file);
}

export interface IdentifyReport {
  target: string;
  transport: string;
  model: string;
  serial: string;
  firmware: string;
  version: string;
  vendorId: number;
  controllerId: number;
  maxTransferBytes: number;
  maxQueueEntries: number;
  doorbellStride: number;
  readyTimeoutMs: number;
  ioQueuesGranted: number;
  registers: string;
  cmb?: { bar: number; offset: bigint; size: bigint; sqs: boolean; cqs: boolean; wcPaths: string[] };
  namespaces: { nsid: number; blocks: bigint; blockBytes: number; bytes: bigint }[];
}

export async function identify(target: string): Promise<IdentifyReport> {
  const dev = await openTarget(target);
  try {
    const c = await NvmeController.open(dev);
    try {
      const id = c.identity;
      const cmb = c.cmbInfo;
      return {
        target,
        transport: dev.transport,
        model: id.model,
        serial: id.serial,
        firmware: id.firmware,
        version: versionText(id.version || c.version),
        vendorId: id.vid,
        controllerId: id.cntlid,
        maxTransferBytes: c.maxTransferBytes,
        maxQueueEntries: cap.mqes(c.cap),
        doorbellStride: 4 << cap.dstrd(c.cap),
        readyTimeoutMs: cap.toMs(c.cap),
        ioQueuesGranted: c.ioQueuesGranted,
        registers: c.regs.route,
        ...(cmb && {
          cmb: {
            bar: cmb.bar,
            offset: cmb.offset,
            size: cmb.size,
            sqs: cmbsz.sqs(cmb.cmbsz),
            cqs: cmbsz.cqs(cmb.cmbsz),
            wcPaths: await dev.wcPaths(cmb.bar),
          },
        }),
        namespaces: [...c.namespaces.values()].map((n) => ({
          nsid: n.nsid,
          blocks: n.nsze,
          blockBytes: n.blockBytes,
          bytes: n.nsze * BigInt(n.blockBytes),
        })),
      };
    } finally {
      await c.close();
    }
  } finally {
    await dev.close();
  }
}

function identifyText(r: IdentifyReport): string {
  const lines = [
    `${r.target} (${r.transport}): ${r.model}, serial ${r.serial}, firmware ${r.firmware}, NVMe ${r.version}`,
    `\tPCI vendor 0x${r.vendorId.toString(16).padStart(4, '0')}, controller ID ${r.controllerId}, registers by ${r.registers}`,
    `\tlargest transfer ${r.maxTransferBytes} bytes, queues up to ${r.maxQueueEntries} entries, doorbell stride ${r.doorbellStride}, CAP.TO ${r.readyTimeoutMs} ms, ${r.ioQueuesGranted} I/O queue pairs granted`,
    r.cmb
      ? `\tCMB: BAR${r.cmb.bar} offset 0x${r.cmb.offset.toString(16)} size ${r.cmb.size} bytes, submission queues ${r.cmb.sqs ? 'yes' : 'no'}, completion queues ${r.cmb.cqs ? 'yes' : 'no'}; write-combining via ${r.cmb.wcPaths.join(', ') || 'none'}`
      : '\tCMB: none',
  ];
  for (const n of r.namespaces)
    lines.push(`\tnamespace ${n.nsid}: ${n.blocks} blocks of ${n.blockBytes} bytes (${n.bytes} bytes)`);
  return lines.join('\n');
}

export interface PerfReport extends PerfResult {
  target: string;
  transport: string;
  sq: 'host' | 'cmb';
  completions: 'poll' | 'interrupt';
  cmbMapping?: { via: string; attribute: string };
}

export async function perf(target: string, p: PerfArgs): Promise<PerfReport> {
  const dev = await openTarget(target, p.sq);
  try {
    const c = await NvmeController.open(dev, { sq: p.sq, completions: p.completions, ioQueues: 1 });
    try {
      const qp = await c.createQueuePair({ depth: Math.max(2, p.qd + 1) });
      const r = await runPerf(c, qp, {
        rw: p.rw,
        bs: p.bs,
        qd: p.qd,
        seconds: p.seconds,
        nsid: p.nsid,
        verify: p.verify,
        force: p.force,
        ...(p.size === undefined ? {} : { size: p.size }),
      });
      return {
        target,
        transport: dev.transport,
        sq: c.sqPlacement,
        completions: p.completions,
        ...(c.cmb && { cmbMapping: { via: c.cmb.mapping.via, attribute: c.cmb.mapping.attribute } }),
        ...r,
      };
    } finally {
      await c.close();
    }
  } finally {
    await dev.close();
  }
}

function perfText(r: PerfReport): string {
  const f = (n: number) => n.toFixed(1);
  const where = r.cmbMapping ? `cmb (${r.cmbMapping.attribute} via ${r.cmbMapping.via})` : r.sq;
  return [
    `nvme perf ${r.target} (${r.transport}): ${r.rw} bs=${r.bs} qd=${r.qd} sq=${where} completions=${r.completions}`,
    `\t${r.ios} I/Os in ${r.seconds.toFixed(2)} s: ${f(r.iops)} IOPS, ${r.mbPerSec.toFixed(2)} MB/s`,
    `\tlatency (us): p50 ${f(r.latencyUs.p50)}  p99 ${f(r.latencyUs.p99)}  mean ${f(r.latencyUs.mean)}  max ${f(r.latencyUs.max)}`,
    ...(r.verifiedBlocks ? [`\tverify: ${r.verifiedBlocks} logical blocks checked, all as written`] : []),
  ].join('\n');
}
