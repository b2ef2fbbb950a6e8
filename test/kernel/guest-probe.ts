/**
 * Runs inside a QEMU guest (node /app/dist/test/kernel/guest-probe.js [--paths group,cdev]
 * name=vendor:device ...): binds each named PCI function to vfio-pci with the project's own
 * helper, opens it with openKernelDevice once per path asked for (default: the path `auto`
 * takes), runs the differential probe sequence and the path cases (path-probe.ts) and prints the
 * transcripts as JSON between markers, for differential.test.ts on the host to parse.
 *
 * The serial console drops bytes under load (QEMU's 16550 gives up on a byte after a few
 * retries when the host side is slow), so with `--out /dev/vdX` the transcripts go to a raw
 * virtio disk instead: `VFIOTS <length>\n` then the JSON, read back from the image on the host.
 */
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { IOMMUFD_PATH, type KernelIommuPath, openKernelDevice } from '../../src/kernel/device.js';
import { bindVfioPci } from '../../src/kernel/sysfs.js';
import { closeFd, O_CLOEXEC, O_RDWR, openPath } from '../../src/native/index.js';
import { runPathProbe } from './path-probe.js';
import { runProbe } from './probe-sequence.js';

export const PROBE_BEGIN = '@@VFIO-TS-PROBE-BEGIN';
export const PROBE_END = '@@VFIO-TS-PROBE-END@@';

function find(vendor: number, device: number): string | undefined {
  for (const d of readdirSync('/sys/bus/pci/devices').sort()) {
    const v = Number(readFileSync(`/sys/bus/pci/devices/${d}/vendor`, 'utf8'));
    const id = Number(readFileSync(`/sys/bus/pci/devices/${d}/device`, 'utf8'));
    if (v === vendor && id === device) return d;
  }
  return undefined;
}

/** Writes `text` to a raw block device with a length header; waits for the device to appear. */
export async function writeOut(dev: string, text: string): Promise<void> {
  for (let i = 0; i < 100 && !existsSync(dev); i++) await new Promise((r) => setTimeout(r, 50));
  const body = Buffer.from(text, 'utf8');
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, Buffer.concat([Buffer.from(`VFIOTS ${body.length}\n`), body]), 0, undefined, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function main(argv: string[]): Promise<number> {
  let status = 0;
  let outDev: string | undefined;
  let paths: (KernelIommuPath | 'auto')[] = ['auto'];
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') outDev = argv[++i];
    else if (argv[i] === '--paths') paths = (argv[++i] ?? '').split(',') as KernelIommuPath[];
    else args.push(argv[i]!);
  }
  const all: unknown[] = [];
  for (const a of args) {
    const m = /^(\w+)=([0-9a-f]{4}):([0-9a-f]{4})$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    const name = m[1]!;
    const bdf = find(Number.parseInt(m[2]!, 16), Number.parseInt(m[3]!, 16));
    for (const want of paths) {
      let out: unknown;
      try {
        if (bdf === undefined) throw new Error(`no PCI device ${m[2]}:${m[3]}`);
        const bound = bindVfioPci(bdf);
        const file = await openKernelDevice(bdf, { path: want });
        const started = Date.now();
        const cases = await runProbe({ file, mmapPrivate: (o, l) => file.mmapPrivate(o, l) });
        // An iommufd of its own for the BIND case (none on a kernel without /dev/iommu).
        const iommufd = existsSync(IOMMUFD_PATH) ? openPath(IOMMUFD_PATH, O_RDWR | O_CLOEXEC) : undefined;
        let pathCases: unknown;
        try {
          pathCases = await runPathProbe(file, iommufd);
        } finally {
          if (iommufd !== undefined) closeFd(iommufd);
          await file.close();
        }
        out = { name, bdf, group: bound.group, path: file.path, ms: Date.now() - started, cases, pathCases };
      } catch (e) {
        status = 1;
        out = { name, bdf, path: want, error: String((e as Error).stack ?? e) };
      }
      all.push(out);
      const cases = (out as { cases?: unknown[] }).cases;
      if (outDev === undefined)
        process.stdout.write(`${PROBE_BEGIN} ${name}@@\n${JSON.stringify(out)}\n${PROBE_END}\n`);
      else
        console.log(
          `probe ${name} ${bdf} (${want}): ${cases ? `${cases.length} cases` : (out as { error: string }).error}`,
        );
    }
  }
  if (outDev !== undefined) await writeOut(outDev, JSON.stringify(all));
  return status;
}

if (process.argv[1]?.endsWith('guest-probe.js')) process.exitCode = await main(process.argv.slice(2));
