/**
 * The ABI probe: compiles a C program against a real <linux/vfio.h> and checks every constant,
 * sizeof and offsetof that src/abi/vfio.ts declares. Runs against the machine's own header
 * (linux-libc-dev) and, when provisioned, against Linux 7.3's header from trixie-backports
 * (scripts/provision.sh puts it in $VFIO_TS_CACHE/headers/7.3/usr/include).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import * as dmabuf from '../../src/abi/dmabuf.js';
import * as iommufd from '../../src/abi/iommufd.js';
import { fieldSize } from '../../src/abi/layout.js';
import * as pci from '../../src/abi/pci.js';
import * as abi from '../../src/abi/vfio.js';
import { requireOrSkip } from '../helpers/env.js';

/** What one probe asks a header about: one src/abi module's constants and layouts. */
interface AbiSpec {
  label: string;
  includes: string[];
  constants: [string, number][];
  /** C enum members: printed without #ifdef (the header must have them). */
  enums: ReadonlySet<string>;
  layouts: { l: abi.StructLayout; guard: string | undefined }[];
  /** Values a given header defines differently from ours (known, documented differences). */
  headerValues?: Readonly<Record<string, Readonly<Partial<Record<abi.HeaderVersion, number>>>>>;
}

function numeric(mod: Record<string, unknown>, re: RegExp, except: (n: string) => boolean = () => false) {
  return Object.entries(mod)
    .filter(([name, v]) => re.test(name) && !except(name) && (typeof v === 'number' || typeof v === 'bigint'))
    .map(([name, v]): [string, number] => [name, Number(v)]);
}

/** src/abi/vfio.ts: every exported numeric VFIO_/PCI_STD constant, the merged layouts. */
const VFIO_SPEC: AbiSpec = {
  label: 'vfio.ts',
  includes: ['linux/vfio.h', 'linux/pci_regs.h'],
  constants: numeric(abi, /^(VFIO_|PCI_STD)/),
  enums: abi.ENUM_CONSTANTS,
  // Merged ones; newer ones behind a guard macro.
  layouts: abi.ALL_LAYOUTS.filter((l) => l.origin === 'uapi' || l.origin === 'uapi-6.19').map((l) => ({
    l,
    guard: l.origin === 'uapi-6.19' ? 'VFIO_DEVICE_FEATURE_DMA_BUF' : undefined,
  })),
};

/** src/abi/pci.ts against <linux/pci_regs.h>: every numeric PCI_ constant (all are macros). */
const PCI_SPEC: AbiSpec = {
  label: 'pci.ts',
  includes: ['linux/pci_regs.h'],
  constants: numeric(pci, /^PCI_/),
  enums: new Set(),
  layouts: [],
  headerValues: pci.PCI_HEADER_VALUES,
};

/** src/abi/iommufd.ts against <linux/iommufd.h> and <linux/vfio.h>; *_SIZE are checked as sizeof. */
const IOMMUFD_SPEC: AbiSpec = {
  label: 'iommufd.ts',
  includes: ['linux/iommufd.h', 'linux/vfio.h'],
  constants: numeric(iommufd, /^(IOMMU|VFIO_)/, (n) => n in iommufd.IOMMUFD_SIZE_CONSTANTS),
  enums: iommufd.IOMMUFD_ENUM_CONSTANTS,
  layouts: iommufd.IOMMUFD_LAYOUTS.map((l) => ({ l, guard: undefined })),
};

/** src/abi/dmabuf.ts against <linux/udmabuf.h>; UDMABUF_CREATE_SIZE is checked as sizeof. */
const DMABUF_SPEC: AbiSpec = {
  label: 'dmabuf.ts',
  includes: ['linux/udmabuf.h'],
  constants: numeric(dmabuf, /^UDMABUF_/, (n) => n === 'UDMABUF_CREATE_SIZE'),
  enums: new Set(),
  layouts: [{ l: dmabuf.udmabuf_create, guard: undefined }],
};

/** Layouts no header has: the RFC's, the proposed DMA_BUF attribute's, vfio-ts's own. */
function headerless(): string[] {
  return abi.ALL_LAYOUTS.filter((l) => l.origin !== 'uapi' && l.origin !== 'uapi-6.19').map(
    (l) => `${l.name} (${l.origin})`,
  );
}

function probeSource(spec: AbiSpec, header: abi.HeaderVersion): string {
  const lines = ['#include <stdio.h>', '#include <stddef.h>', ...spec.includes.map((h) => `#include <${h}>`)];
  lines.push('int main(void) {');
  for (const [name] of spec.constants) {
    const print = `printf("C ${name} %llu\\n", (unsigned long long)(${name}) & 0xffffffffffffffffULL);`;
    if (spec.enums.has(name)) lines.push(print);
    else lines.push(`#ifdef ${name}`, print, '#else', `printf("C ${name} -\\n");`, '#endif');
  }
  for (const { l, guard } of spec.layouts) {
    const body = [`printf("S ${l.name} %zu\\n", sizeof(struct ${l.name}));`];
    for (const [field, fspec] of Object.entries(l.fields)) {
      if (fspec.since && fspec.since > header) continue;
      // A flexible array member has no sizeof: its offset is checked, its size reads as 0.
      const size =
        fspec.type === 'bytes' && fspec.length === undefined
          ? '(size_t)0'
          : `sizeof(((struct ${l.name} *)0)->${field})`;
      body.push(`printf("F ${l.name}.${field} %zu %zu\\n", offsetof(struct ${l.name}, ${field}), ${size});`);
    }
    if (guard) lines.push(`#ifdef ${guard}`, ...body, '#else', `printf("S ${l.name} -\\n");`, '#endif');
    else lines.push(...body);
  }
  lines.push('return 0; }');
  return lines.join('\n');
}

interface ProbeResult {
  checked: number;
  skipped: string[];
  mismatches: string[];
}

function runProbe(spec: AbiSpec, includeDir: string | undefined, header: abi.HeaderVersion): ProbeResult {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-abi-'));
  try {
    const src = join(dir, 'probe.c');
    const exe = join(dir, 'probe');
    writeFileSync(src, probeSource(spec, header));
    const inc = includeDir ? ['-I', includeDir] : [];
    execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', ...inc, '-o', exe, src], { stdio: 'pipe' });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const res: ProbeResult = { checked: 0, skipped: [], mismatches: [] };
    const ours = new Map(spec.constants);
    const layoutOf = (name: string) => spec.layouts.find((x) => x.l.name === name)!.l;
    for (const line of out.trim().split('\n')) {
      const [kind, name, a, b] = line.split(' ') as [string, string, string, string?];
      if (a === '-') {
        res.skipped.push(name);
        continue;
      }
      res.checked++;
      if (kind === 'C') {
        const want = BigInt.asUintN(32, BigInt(spec.headerValues?.[name]?.[header] ?? ours.get(name)!));
        const got = BigInt.asUintN(32, BigInt(a));
        if (want !== got) res.mismatches.push(`${name}: ours ${want}, header ${got}`);
      } else if (kind === 'S') {
        const want = abi.sizeIn(layoutOf(name), header);
        if (want !== Number(a))
          res.mismatches.push(`sizeof(${name}): ours ${want} for ${header}, header ${a}`);
      } else if (kind === 'F') {
        const [sname, fname] = name.split('.') as [string, string];
        const field = layoutOf(sname).fields[fname]!;
        if (field.offset !== Number(a))
          res.mismatches.push(`offsetof(${name}): ours ${field.offset}, header ${a}`);
        if (fieldSize(field) !== Number(b))
          res.mismatches.push(`sizeof(${name}): ours ${fieldSize(field)}, header ${b}`);
      }
    }
    return res;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function report(label: string, r: ProbeResult): void {
  console.log(`abi probe (${label}): ${r.checked} checked, ${r.mismatches.length} mismatches`);
  if (r.skipped.length)
    console.log(`abi probe (${label}): SKIPPED (not in this header): ${r.skipped.join(', ')}`);
}

/** The provisioned Linux 7.3 uAPI headers, or undefined (skipped loudly; never under CI=true). */
function headers73(t: TestContext, file: string): string | undefined {
  const dir = join(process.env.VFIO_TS_CACHE ?? '/var/cache/vfio-ts', 'headers/7.3/usr/include');
  if (
    !requireOrSkip(t, existsSync(join(dir, file)) ? undefined : `${dir}/${file}`, 'run scripts/provision.sh')
  )
    return undefined;
  return dir;
}

test('ioctl numbers follow _IO(VFIO_TYPE, VFIO_BASE + n)', () => {
  assert.equal(abi.VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
  assert.equal(abi.VFIO_DEVICE_FEATURE, 0x3b75);
  assert.equal(abi.VFIO_DEVICE_SET_REGION_FLAGS, 0x3b79);
});

test('installed <linux/vfio.h> agrees with src/abi', () => {
  const r = runProbe(VFIO_SPEC, undefined, '6.1');
  report('system header', r);
  assert.deepEqual(r.mismatches, []);
  // Everything plain-uapi must be in the header; only newer/RFC/proposed/ours may be missing.
  const unexpected = r.skipped.filter(
    (n) => !(n in abi.CONSTANT_ORIGIN) && !abi.ALL_LAYOUTS.some((l) => l.name === n && l.origin !== 'uapi'),
  );
  assert.deepEqual(unexpected, [], 'uapi constants missing from the header');
  assert.ok(r.checked > 80, `only ${r.checked} items checked`);
});

test('Linux 7.3 <linux/vfio.h> agrees with src/abi (DMA_BUF layouts)', (t) => {
  const dir = headers73(t, 'linux/vfio.h');
  if (dir === undefined) return;
  const r = runProbe(VFIO_SPEC, dir, '7.3');
  report('7.3 header', r);
  assert.deepEqual(r.mismatches, []);
  for (const name of ['VFIO_DEVICE_FEATURE_DMA_BUF', 'vfio_device_feature_dma_buf', 'vfio_region_dma_range'])
    assert.ok(!r.skipped.includes(name), `${name} should be in the 7.3 header`);
  // The WC attribute is not merged as of 7.3: if it ever appears, its value must match (checked above).
});

test('RFC, proposed and vfio-ts structs are in no header: reported by name', () => {
  const names = headerless();
  console.log(`abi probe: not in any header (RFC/ours): ${names.join(', ')}`);
  for (const n of ['vfio_region_flags', 'vfio_ts_mmap_cookie', 'vfio_ts_alias_region'])
    assert.ok(
      names.some((x) => x.startsWith(`${n} `)),
      `${n} should be listed`,
    );
});

test('installed <linux/pci_regs.h> agrees with src/abi/pci.ts', () => {
  const r = runProbe(PCI_SPEC, undefined, '6.1');
  report('pci.ts, system header', r);
  assert.deepEqual(r.mismatches, []);
  assert.ok(r.checked > 150, `only ${r.checked} checked`);
});

test('Linux 7.3 <linux/pci_regs.h> agrees with src/abi/pci.ts', (t) => {
  const dir = headers73(t, 'linux/pci_regs.h');
  if (dir === undefined) return;
  const r = runProbe(PCI_SPEC, dir, '7.3');
  report('pci.ts, 7.3 header', r);
  assert.deepEqual(r.mismatches, []);
  assert.ok(r.checked > 150, `only ${r.checked} checked`);
});

test('Linux 7.3 <linux/iommufd.h> agrees with src/abi/iommufd.ts (constants, sizes, offsets)', (t) => {
  const dir = headers73(t, 'linux/iommufd.h');
  if (dir === undefined) return;
  const r = runProbe(IOMMUFD_SPEC, dir, '7.3');
  report('iommufd.ts, 7.3 header', r);
  assert.deepEqual(r.mismatches, []);
  assert.deepEqual(r.skipped, [], 'everything in iommufd.ts is merged uAPI');
  // Every struct the cdev path sends, and every field of it, was asked about.
  const fields = IOMMUFD_SPEC.layouts.reduce((n, { l }) => n + 1 + Object.keys(l.fields).length, 0);
  assert.equal(r.checked, IOMMUFD_SPEC.constants.length + fields);
  // The sizes the backend sends are the first versions: never beyond what 7.3 defines.
  for (const [name, l] of Object.entries(iommufd.IOMMUFD_SIZE_CONSTANTS))
    assert.equal((iommufd as Record<string, unknown>)[name], l.size, name);
});

test('Linux 7.3 <linux/udmabuf.h> agrees with src/abi/dmabuf.ts', (t) => {
  const dir = headers73(t, 'linux/udmabuf.h');
  if (dir === undefined) return;
  const r = runProbe(DMABUF_SPEC, dir, '7.3');
  report('dmabuf.ts, 7.3 header', r);
  assert.deepEqual(r.mismatches, []);
  assert.deepEqual(r.skipped, []);
  assert.equal(
    r.checked,
    DMABUF_SPEC.constants.length + 1 + Object.keys(dmabuf.udmabuf_create.fields).length,
  );
  assert.equal(dmabuf.UDMABUF_CREATE_SIZE, dmabuf.udmabuf_create.size);
});
