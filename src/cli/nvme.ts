/**
 * `vfio-ts nvme identify|perf SOCKET|PCI-ADDRESS ...`: the userspace NVMe driver
 * (src/driver/nvme) from the command line, over a vfio-user server's socket or a PCI device
 * bound to vfio-pci. `perf` is a small fio: IOPS, MB/s and latency percentiles, with the
 * submission queues in host memory or in the controller's CMB (write-combining), and a verify
 * mode that fails loudly on the first block that does not read back as written.
 *
 * Each subcommand is a command of its own to src/cli/args.ts (NVME_IDENTIFY, NVME_PERF: the
 * parser, `--help` and the usage errors come from their tables); `vfio-ts nvme` only picks one.
 * What a command line alone can refuse is a usage error (exit 2) before anything is opened; what
 * depends on the controller (a --bs its logical block does not divide, a --qd deeper than
 * CAP.MQES, a --size past the namespace) is runPerf's EINVAL, a failure (exit 1).
 */

import { VfioDevice } from '../driver/device.js';
import type { VfioDeviceFile } from '../driver/file.js';
import { sizeText } from '../driver/format.js';
import { probeCmbBar } from '../driver/nvme/cmb.js';
import { MAX_IO_QUEUE_DEPTH, NvmeController, versionText } from '../driver/nvme/index.js';
import {
  DEFAULT_VERIFY_SPAN,
  PERF_MODES,
  type PerfMode,
  type PerfResult,
  runPerf,
} from '../driver/nvme/perf.js';
import { cap, cmbsz, LBADS_MIN } from '../driver/nvme/spec.js';
import { jsonText } from '../driver/report-json.js';
import { openKernelDevice } from '../kernel/device.js';
import { iomemRelaxed, isBdf, normalizeBdf } from '../kernel/sysfs.js';
import {
  byteCountFlag,
  CONSOLE,
  type CommandSpec,
  choiceFlag,
  flagValue,
  hasFlag,
  helpText,
  integerFlag,
  type Output,
  orList,
  type ParsedArgs,
  positiveNumber,
  reportFailure,
  runCommand,
  UsageError,
} from './args.js';
import { connectSocket } from './target.js';

const SQ_PLACEMENTS = ['host', 'cmb'] as const;
const COMPLETIONS = ['poll', 'interrupt'] as const;
export const DEFAULT_PERF_BS = 4096;
export const DEFAULT_PERF_SECONDS = 5;
/** --bs is a multiple of this on every controller (LBADS_MIN); its own block may be larger. */
const MIN_BLOCK_BYTES = 1 << LBADS_MIN;
/** The deepest queue this driver creates holds MAX_IO_QUEUE_DEPTH entries, one always empty (§4.1.2: full at one less than its size). */
const MAX_PERF_QD = MAX_IO_QUEUE_DEPTH - 1;
/** An NSID for I/O: 1 up to FFFFFFFEh (NVMe 1.4 §6.1, Namespaces: 0 names none, FFFFFFFFh all). */
const MAX_NSID = 0xfffffffe;

const OPERANDS = 'SOCKET|PCI-ADDRESS';
const TARGET_TEXT = `SOCKET is a vfio-user server's UNIX socket (vfio-ts serve --device nvme); PCI-ADDRESS
(0000:00:04.0) a controller bound to vfio-pci (vfio-ts bind).`;
const JSON_FLAG = {
  name: '--json',
  help: 'one JSON object instead of text (numbers as JSON numbers, see\nvfio-ts info --help)',
} as const;

export const NVME_IDENTIFY: CommandSpec = {
  name: 'nvme identify',
  operands: OPERANDS,
  minOperands: 1,
  maxOperands: 1,
  description: `Resets and enables the controller, prints its Identify Controller and Namespace data, the
CMB, and how its BAR can be mapped write-combining; then shuts it down cleanly.
${TARGET_TEXT}`,
  flags: [JSON_FLAG],
  notes: 'Exit status: 0 identified, 1 the controller could not be opened or failed, 2 usage.',
};

export const NVME_PERF: CommandSpec = {
  name: 'nvme perf',
  operands: OPERANDS,
  synopsis: `nvme perf ${OPERANDS} --rw MODE [options]`,
  minOperands: 1,
  maxOperands: 1,
  description: `Runs one workload on one I/O queue pair and prints IOPS, MB/s and p50/p99 latency (a small
fio), then shuts the controller down cleanly.
${TARGET_TEXT}`,
  flags: [
    {
      name: '--rw',
      value: 'MODE',
      help: 'required: read, write (sequential) or randread, randwrite (uniform\nover --size)',
    },
    {
      name: '--bs',
      value: 'BYTES',
      help: `bytes per I/O (4k, 64k, 1m, 4096; default ${sizeText(DEFAULT_PERF_BS).toLowerCase()}), a multiple of the\nnamespace's logical block (of ${MIN_BLOCK_BYTES} bytes or more)`,
    },
    { name: '--qd', value: 'N', help: `I/Os kept in flight (default 1, at most ${MAX_PERF_QD})` },
    { name: '--seconds', value: 'SECONDS', help: `how long to run (default ${DEFAULT_PERF_SECONDS})` },
    {
      name: '--sq',
      value: SQ_PLACEMENTS.join('|'),
      help: "where the I/O submission queue lives: host memory (default) or the\ncontroller's memory buffer, mapped write-combining (stores fenced\nbefore each doorbell)",
    },
    {
      name: '--completions',
      value: COMPLETIONS.join('|'),
      help: 'find completions by polling the queue (default) or from MSI-X\neventfds',
    },
    {
      name: '--verify',
      help: 'stamp every written block with a pattern (LBA, generation) and check\nevery block read back; read modes write the pattern first. Any\nmismatch fails the run',
    },
    {
      name: '--force',
      help: 'write even when the namespace starts with a partition table or a\nfilesystem (without it, write modes and --verify refuse: MBR, GPT,\next2/3/4, XFS, btrfs, FAT, LUKS, swap, LVM2, ISO 9660)',
    },
    { name: '--nsid', value: 'N', help: 'namespace (default 1)' },
    {
      name: '--size',
      value: 'BYTES',
      help: `bytes of the namespace to use from LBA 0 (default all; ${sizeText(DEFAULT_VERIFY_SPAN)} at most\nwith --verify)`,
    },
    JSON_FLAG,
  ],
  notes: `What depends on the controller fails (EINVAL) once it is asked: a --bs its namespace's logical
block does not divide, a --qd deeper than its queues (CAP.MQES), a --size past the namespace.
Exit status: 0 ran (and verified), 1 failure (the controller, a verify mismatch, the
filesystem guard's EPERM), 2 usage.`,
};

/** `vfio-ts nvme`'s subcommands, each its own command line. */
export const NVME_COMMANDS: Readonly<Record<string, CommandSpec>> = {
  identify: NVME_IDENTIFY,
  perf: NVME_PERF,
};

export interface PerfArgs {
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

/** NVME_PERF's flags, checked: a PerfArgs, or a UsageError naming the first problem. */
export function perfArgs(p: ParsedArgs): PerfArgs {
  const usage = (problem: string) => new UsageError(NVME_PERF.name, problem);
  const rw = choiceFlag(NVME_PERF, p, '--rw', PERF_MODES);
  if (rw === undefined) throw usage(`--rw is required: ${orList(PERF_MODES)}`);
  const bs = byteCountFlag(NVME_PERF, p, '--bs') ?? DEFAULT_PERF_BS;
  if (bs % MIN_BLOCK_BYTES)
    throw usage(
      `--bs needs a multiple of ${MIN_BLOCK_BYTES} bytes (the smallest NVMe logical block), not '${flagValue(p, '--bs')}'`,
    );
  const size = byteCountFlag(NVME_PERF, p, '--size');
  return {
    rw,
    bs,
    qd: integerFlag(NVME_PERF, p, '--qd', 1, 1, MAX_PERF_QD),
    seconds: positiveNumber(NVME_PERF, p, '--seconds', DEFAULT_PERF_SECONDS),
    sq: choiceFlag(NVME_PERF, p, '--sq', SQ_PLACEMENTS) ?? 'host',
    completions: choiceFlag(NVME_PERF, p, '--completions', COMPLETIONS) ?? 'poll',
    verify: hasFlag(p, '--verify'),
    force: hasFlag(p, '--force'),
    nsid: integerFlag(NVME_PERF, p, '--nsid', 1, 1, MAX_NSID),
    size: size === undefined ? undefined : BigInt(size),
  };
}

/** `vfio-ts nvme --help`: each subcommand's help, one after the other. */
export function nvmeHelp(): string {
  return Object.values(NVME_COMMANDS).map(helpText).join('\n\n');
}

/** What is wrong with `sub` as the word after `vfio-ts nvme`, or undefined for a subcommand. */
function subcommandProblem(sub: string | undefined): string | undefined {
  const choices = orList(Object.keys(NVME_COMMANDS));
  if (sub === undefined) return `${choices} is missing`;
  if (sub.startsWith('-')) return `unknown option '${sub}' (${choices} comes first)`;
  if (!Object.hasOwn(NVME_COMMANDS, sub)) return `unknown nvme command '${sub}' (${choices})`;
  return undefined;
}

export function run(args: string[]): Promise<number> {
  return runWith(args, CONSOLE);
}

export async function runWith(args: string[], out: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') {
    out.log(nvmeHelp());
    return 0;
  }
  const problem = subcommandProblem(sub);
  if (problem !== undefined) return reportFailure('nvme', new UsageError('nvme', problem), out);
  if (sub === 'identify')
    return runCommand(NVME_IDENTIFY, rest, out, async (p) => {
      const report = await identify(p.operands[0]!);
      out.log(hasFlag(p, '--json') ? jsonText(report) : identifyText(report));
      return 0;
    });
  return runCommand(NVME_PERF, rest, out, async (p) => {
    const r = await perf(p.operands[0]!, perfArgs(p));
    out.log(hasFlag(p, '--json') ? jsonText(r) : perfText(r));
    return 0;
  });
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
