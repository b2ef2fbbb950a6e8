/**
 * `vfio-ts info` beside `lspci -nn -vv` for the same devices, in a Linux 7.3 guest under QEMU 11:
 * QEMU's ivshmem-plain, this project's ivshmem served over vfio-user to QEMU's vfio-user-pci,
 * edu, an NVMe controller behind a PCIe root port (so it has a link) and e1000e, each bound to the
 * guest's vfio-pci with `vfio-ts bind` and described by `vfio-ts info` over the kernel backend,
 * next to pciutils' lspci reading the same device from sysfs. Our ivshmem is described once more
 * on the host, through its socket, after QEMU has gone.
 *
 * Every line `info` prints from config space must be lspci's line, except the ones that say
 * state vfio-pci itself changes by opening the device (the PM state, and Control, Status and
 * Latency: see SAME_DEVICE_STATE). What lspci prints that info leaves out: the PCIe version 2
 * registers, extended capabilities' bodies, and sysfs facts beyond the IRQ, IOMMU group and driver.
 *
 * The guest's output is recorded in test/cli/fixtures/guest/ (VFIO_TS_RECORD_GUEST=1 rewrites it)
 * so that the decoder is held to the real lspci on these devices without QEMU too: the recorded
 * hex dump (lspci -xxxx) goes through our decoder and must give the recorded lspci lines.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VFIO_PCI_ROM_REGION_INDEX } from '../../src/abi/vfio.js';
import { runWith } from '../../src/cli/info.js';
import { createDevice } from '../../src/devices/index.js';
import { type KernelFacts, lspciLines } from '../../src/driver/lspci.js';
import { decodeConfig } from '../../src/driver/pci-config.js';
import { nativeEnvironment } from '../../src/runtime.js';
import { VfioUserServer } from '../../src/server/index.js';
import {
  chrootWorkDir,
  describeBoot,
  e1000e,
  edu,
  HOST_LSPCI,
  ivshmemPlain,
  makeSparseImage,
  projectTrees,
  provisionedOrSkip,
  runGuest,
  sharedMemory,
  VFIO_MODULES,
  vfioUserPci,
} from '../harness/index.js';
import { GUEST_TIMEOUT_MS, OUT_DEVICE, readOut } from '../kernel/guest.js';

const FIXTURES = fileURLToPath(new URL('../../../test/cli/fixtures/guest/', import.meta.url));
/**
 * name=vendor:device:n (the nth function with these IDs, in sysfs order). `vfio-user-ivshmem` is
 * ours: this project's ivshmem served over vfio-user to QEMU's vfio-user-pci, after QEMU's own.
 */
const DEVICES = [
  'ivshmem=0x1af4:0x1110:1',
  'vfio-user-ivshmem=0x1af4:0x1110:2',
  'edu=0x1234:0x11e8:1',
  'nvme=0x1b36:0x0010:1',
  'e1000e=0x8086:0x10d3:1',
];
const SECTIONS = ['lspci', 'info', 'dump', 'json'] as const;
/** Guest RAM, shared (memfd) so QEMU can hand it to our vfio-user server with DMA_MAP. */
const GUEST_MEMORY_MIB = 1024;
type Section = (typeof SECTIONS)[number];

/** For each device: lspci -nn -vv once bound to vfio-pci, info, the raw config space, info --json. */
const SCRIPT = `
for spec in ${DEVICES.join(' ')}; do
  name=\${spec%%=*}; ids=\${spec#*=}
  bdf=$(pci_find $(echo $ids | tr : ' ')) || { echo "=== $name missing"; continue; }
  node dist/src/cli/main.js bind $bdf >/dev/null 2>&1 || echo "=== $name bind failed"
  echo "=== $name info"; node dist/src/cli/main.js info $bdf 2>&1; echo "status=$?"
  echo "=== $name lspci"; lspci -nn -vv -s $bdf 2>/dev/null
  echo "=== $name dump"; lspci -xxxx -s $bdf 2>/dev/null
  echo "=== $name json"; node dist/src/cli/main.js info $bdf --json 2>&1
done >/tmp/out.txt 2>&1
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${OUT_DEVICE} ] && break; sleep 0.2; done
{ printf 'VFIOTS %d\\n' "$(wc -c </tmp/out.txt)"; cat /tmp/out.txt; } >${OUT_DEVICE}
sync
grep -c '^===' /tmp/out.txt
`;

function sections(out: string): Map<string, Map<Section, string>> {
  const devices = new Map<string, Map<Section, string>>();
  for (const part of out.split(/^=== /m).slice(1)) {
    const nl = part.indexOf('\n');
    const [name, section] = part.slice(0, nl).split(' ') as [string, Section];
    if (!devices.has(name)) devices.set(name, new Map());
    devices.get(name)!.set(section, part.slice(nl + 1).replace(/\n+$/, ''));
  }
  return devices;
}

/**
 * Lines whose value is state vfio-pci changes while `info` holds the device open (it enables
 * the device and puts it in D0; lspci reads after it closed): compared by their name only.
 * The interrupt line: lspci prints the kernel's IRQ, info the Interrupt Line register.
 */
const SAME_DEVICE_STATE = [
  /^\tControl: /,
  /^\tStatus: /,
  /^\tInterrupt: pin [A-D] routed to IRQ /,
  /^\t\tStatus: D\d /,
  /^\tLatency: /,
];

/** lspci lines that are not from config space, or that info leaves out (see the file comment). */
function leftOut(block: string, line: string, devCap2: boolean): boolean {
  if (/^\t(Kernel driver in use|Kernel modules|IOMMU group|NUMA node|Physical Slot|DeviceName): /.test(line))
    return true;
  if (/^\tCapabilities: \[[0-9a-f]{3} v\d+\]/.test(block)) return line.startsWith('\t\t');
  return / Express \(v2\) /.test(block) && devCap2 && line.startsWith('\t\t');
}

/** Compares our lines with lspci's: what differs beyond SAME_DEVICE_STATE and leftOut. */
function differences(ours: readonly string[], theirs: readonly string[]): string[] {
  const problems: string[] = [];
  const state = (l: string) => SAME_DEVICE_STATE.find((re) => re.test(l));
  let at = 0;
  for (const line of ours) {
    const re = state(line);
    const found = theirs.findIndex((t, i) => i >= at && (re ? re.test(t) : t === line));
    if (found < 0) problems.push(`ours only: ${JSON.stringify(line)}`);
    else at = found + 1;
  }
  let block = '';
  let devCap2 = false;
  for (const line of theirs) {
    if (line.startsWith('\tCapabilities: ')) [block, devCap2] = [line, false];
    if (line.startsWith('\t\tDevCap2:')) devCap2 = true;
    const re = state(line);
    if (!(re ? ours.some((o) => re.test(o)) : ours.includes(line)) && !leftOut(block, line, devCap2))
      problems.push(`lspci only: ${JSON.stringify(line)}`);
  }
  return problems;
}

/** `lspci -xxxx`: a title line, then `off: bytes`. */
function parseDump(text: string): Uint8Array {
  const bytes: number[] = [];
  for (const m of text.matchAll(/^[0-9a-f]+: ((?:[0-9a-f]{2} ?)+)$/gm))
    bytes.push(
      ...m[1]!
        .trim()
        .split(' ')
        .map((h) => parseInt(h, 16)),
    );
  return Uint8Array.from(bytes);
}

/** The config-space lines of `info`'s text: everything before its VFIO part, which comes last. */
function infoLines(info: string): string[] {
  const lines = info.split('\n');
  const vfio = lines.findIndex((l) => l.startsWith('\tVFIO'));
  return vfio < 0 ? lines : lines.slice(0, vfio);
}

/** lspci's first line begins with the bus address, info's with the target it was given. */
const withoutSlot = (lines: string[]) => lines.map((l, i) => (i === 0 ? l.replace(/^\S+ /, '') : l));

describe('vfio-ts info beside lspci -nn -vv in a Linux guest', () => {
  it('recorded from the guest: the config space dump decodes to the lines lspci printed', () => {
    const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.txt'));
    assert.deepEqual(files.sort(), [
      'e1000e.txt',
      'edu.txt',
      'ivshmem.txt',
      'nvme.txt',
      'vfio-user-ivshmem.txt',
    ]);
    // The names came from the recording host's pci.ids; this host's may be another version (or
    // missing), so names are left out and compared by the IDs in brackets, the rest line for line.
    const idsOnly = (lines: string[]) =>
      lines.map((l, i) =>
        i === 0 || l.startsWith('\tSubsystem: ')
          ? [...l.matchAll(/\[[0-9a-f:]+\]|\((rev|prog-if) [0-9a-f]{2}/g)].map((m) => m[0]).join(' ')
          : l,
      );
    for (const f of files) {
      const s = sections(readFileSync(join(FIXTURES, f), 'utf8'))
        .values()
        .next().value!;
      const json = JSON.parse(s.get('json')!) as {
        regions: { index: number; size: number }[];
        kernel: KernelFacts;
      };
      const size = (i: number) => BigInt(json.regions.find((g) => g.index === i)?.size ?? 0);
      const ours = lspciLines(
        decodeConfig(parseDump(s.get('dump')!)),
        'slot',
        { bars: [0, 1, 2, 3, 4, 5].map(size), rom: size(VFIO_PCI_ROM_REGION_INDEX) },
        undefined,
        json.kernel,
      );
      const theirs = s.get('lspci')!.split('\n');
      assert.deepEqual(differences(idsOnly(ours), idsOnly(theirs)), [], `${f}\nours:\n${ours.join('\n')}`);
      assert.match(theirs[0]!, /\[[0-9a-f]{4}\]: .* \[[0-9a-f]{4}:[0-9a-f]{4}\]/);
      // And what info printed in the guest is lspci's lines, names and all (the same decoder, through VFIO).
      assert.deepEqual(differences(withoutSlot(infoLines(s.get('info')!)), withoutSlot(theirs)), [], f);
    }
  });

  it("Linux 7.3 under QEMU 11: ivshmem (QEMU's and ours over vfio-user), edu, nvme behind a root port, e1000e", async (t) => {
    const p = provisionedOrSkip(t, { chroot: true });
    if (p === undefined) return;
    const work = chrootWorkDir(p);
    const sock = work.path('ivshmem.sock');
    const ours = createDevice('ivshmem', { env: nativeEnvironment() });
    const log: string[] = [];
    const server = new VfioUserServer(ours, { log: (l) => log.push(l) });
    server.listen(sock.host);
    try {
      const image = makeSparseImage(work.path('nvme.img').host, 16);
      const outImage = makeSparseImage(work.path('out.img').host, 16);
      const boot = await runGuest(p, {
        kernel: p.kernels['7.3'],
        node: true,
        trees: projectTrees(),
        hostFiles: HOST_LSPCI,
        modules: [...VFIO_MODULES, 'virtio_pci?', 'virtio_blk'],
        script: `cd /app || exit 90\n${SCRIPT}`,
        qemu: 'trixie',
        workDir: work,
        memoryMiB: GUEST_MEMORY_MIB,
        args: [
          // A vfio(-user) device behind QEMU's vIOMMU needs caching mode (intel_iommu.c refuses
          // it otherwise, and the first DMA map aborts QEMU).
          '-global',
          'intel-iommu.caching-mode=on',
          ...sharedMemory(GUEST_MEMORY_MIB),
          ...ivshmemPlain(),
          ...vfioUserPci(sock.chroot),
          ...edu(),
          '-device',
          'pcie-root-port,id=rp0,chassis=1',
          '-drive',
          `file=${work.path('nvme.img').chroot},if=none,id=nvme0-drive,format=raw`,
          '-device',
          'nvme,drive=nvme0-drive,serial=vfiots0,bus=rp0',
          ...e1000e(),
          '-drive',
          `file=${work.path('out.img').chroot},format=raw,if=none,id=vfiotsout`,
          '-device',
          'virtio-blk-pci,drive=vfiotsout',
        ],
        // Five devices, ten node runs under TCG on a shared machine: 134-195 s alone, more under load.
        timeoutMs: GUEST_TIMEOUT_MS * 4,
      });
      assert.ok(image);
      const out = readOut(readFileSync(outImage));
      assert.ok(out, `no output came back\n${describeBoot(boot)}\nserver:\n${log.slice(-40).join('\n')}`);
      const devices = sections(out);
      assert.deepEqual(
        [...devices.keys()],
        DEVICES.map((d) => d.split('=')[0]),
        out,
      );
      if (process.env.VFIO_TS_RECORD_GUEST) mkdirSync(FIXTURES, { recursive: true });
      for (const [name, s] of devices) {
        assert.deepEqual([...s.keys()].sort(), [...SECTIONS].sort(), `${name}\n${out}`);
        const info = s.get('info')!;
        assert.match(info, /\nstatus=0$/, info);
        const problems = differences(withoutSlot(infoLines(info)), withoutSlot(s.get('lspci')!.split('\n')));
        console.log(`--- ${name}: vfio-ts info\n${info}\n--- ${name}: lspci -nn -vv\n${s.get('lspci')}`);
        assert.deepEqual(problems, [], `${name}\n${info}\n${s.get('lspci')}`);
        if (process.env.VFIO_TS_RECORD_GUEST)
          writeFileSync(
            join(FIXTURES, `${name}.txt`),
            SECTIONS.map((k) => `=== ${name} ${k}\n${s.get(k)}\n`).join(''),
          );
      }
      // Our ivshmem once QEMU has gone, read on the host through its socket: the lines that do
      // not depend on what the guest programmed are the guest lspci's.
      await server.idle();
      const host: string[] = [];
      const status = await runWith([sock.host], { log: (l) => host.push(l), error: (l) => host.push(l) });
      assert.equal(status, 0, host.join('\n'));
      console.log(`--- vfio-user-ivshmem: vfio-ts info ${sock.host} on the host\n${host.join('\n')}`);
      const guestLspci = devices.get('vfio-user-ivshmem')!.get('lspci')!.split('\n');
      const stateless = (lines: string[]) =>
        withoutSlot(lines)
          .filter((l) => !/^\t(Control|Status|Interrupt|IOMMU group|Kernel driver in use):/.test(l))
          .map((l) => l.replace(/Memory at \S+ (\([^)]*\))( \[disabled\])?/, 'Memory at - $1'));
      const hostLines = stateless(infoLines(host.join('\n')));
      const guestLines = stateless(guestLspci);
      for (const l of hostLines) assert.ok(guestLines.includes(l), `host info only: ${JSON.stringify(l)}`);
      for (const l of guestLines)
        if (/^\t(Region|Subsystem)|^[^\t]/.test(l))
          assert.ok(hostLines.includes(l), `guest lspci only: ${JSON.stringify(l)}`);
    } finally {
      server.stop();
      ours.close();
      work.cleanup();
    }
  });
});
