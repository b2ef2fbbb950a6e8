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
import { test } from 'node:test';
import * as abi from '../../src/abi/vfio.js';
import { requireOrSkip } from '../helpers/env.js';

const FIELD_SIZES: Record<abi.FieldType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8, cap: 8 };

/** Every exported numeric VFIO_/PCI_ constant of src/abi/vfio.ts. */
function constants(): [string, number][] {
  return Object.entries(abi)
    .filter(([name, v]) => /^(VFIO_|PCI_STD)/.test(name) && (typeof v === 'number' || typeof v === 'bigint'))
    .map(([name, v]) => [name, Number(v)]);
}

/** Layouts the header can be asked about: merged ones (newer ones behind a guard macro). */
function probedLayouts(): { l: abi.StructLayout; guard: string | undefined }[] {
  return abi.ALL_LAYOUTS.filter((l) => l.origin === 'uapi' || l.origin === 'uapi-6.19').map((l) => ({
    l,
    guard: l.origin === 'uapi-6.19' ? 'VFIO_DEVICE_FEATURE_DMA_BUF' : undefined,
  }));
}

function probeSource(header: abi.HeaderVersion): string {
  const lines = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <linux/vfio.h>',
    '#include <linux/pci_regs.h>',
    'int main(void) {',
  ];
  for (const [name] of constants()) {
    const print = `printf("C ${name} %llu\\n", (unsigned long long)(${name}) & 0xffffffffffffffffULL);`;
    if (abi.ENUM_CONSTANTS.has(name)) lines.push(print);
    else lines.push(`#ifdef ${name}`, print, '#else', `printf("C ${name} -\\n");`, '#endif');
  }
  for (const { l, guard } of probedLayouts()) {
    const body = [`printf("S ${l.name} %zu\\n", sizeof(struct ${l.name}));`];
    for (const [field, spec] of Object.entries(l.fields)) {
      if (spec.since && spec.since > header) continue;
      body.push(
        `printf("F ${l.name}.${field} %zu %zu\\n", offsetof(struct ${l.name}, ${field}), sizeof(((struct ${l.name} *)0)->${field}));`,
      );
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

function runProbe(includeDir: string | undefined, header: abi.HeaderVersion): ProbeResult {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-abi-'));
  try {
    const src = join(dir, 'probe.c');
    const exe = join(dir, 'probe');
    writeFileSync(src, probeSource(header));
    const inc = includeDir ? ['-I', includeDir] : [];
    execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', ...inc, '-o', exe, src], { stdio: 'pipe' });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const res: ProbeResult = { checked: 0, skipped: [], mismatches: [] };
    const ours = new Map(constants());
    for (const line of out.trim().split('\n')) {
      const [kind, name, a, b] = line.split(' ') as [string, string, string, string?];
      if (a === '-') {
        res.skipped.push(name);
        continue;
      }
      res.checked++;
      if (kind === 'C') {
        const want = BigInt.asUintN(32, BigInt(ours.get(name)!));
        const got = BigInt.asUintN(32, BigInt(a));
        if (want !== got) res.mismatches.push(`${name}: ours ${want}, header ${got}`);
      } else if (kind === 'S') {
        const l = abi.ALL_LAYOUTS.find((x) => x.name === name)!;
        const want = abi.sizeIn(l, header);
        if (want !== Number(a))
          res.mismatches.push(`sizeof(${name}): ours ${want} for ${header}, header ${a}`);
      } else if (kind === 'F') {
        const [sname, fname] = name.split('.') as [string, string];
        const field = abi.ALL_LAYOUTS.find((x) => x.name === sname)!.fields[fname]!;
        if (field.offset !== Number(a))
          res.mismatches.push(`offsetof(${name}): ours ${field.offset}, header ${a}`);
        if (FIELD_SIZES[field.type] !== Number(b))
          res.mismatches.push(`sizeof(${name}): ours ${FIELD_SIZES[field.type]}, header ${b}`);
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

test('ioctl numbers follow _IO(VFIO_TYPE, VFIO_BASE + n)', () => {
  assert.equal(abi.VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
  assert.equal(abi.VFIO_DEVICE_FEATURE, 0x3b75);
  assert.equal(abi.VFIO_DEVICE_SET_REGION_FLAGS, 0x3b79);
});

test('installed <linux/vfio.h> agrees with src/abi', () => {
  const r = runProbe(undefined, '6.1');
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
  const dir = join(process.env.VFIO_TS_CACHE ?? '/var/cache/vfio-ts', 'headers/7.3/usr/include');
  if (
    !requireOrSkip(
      t,
      existsSync(join(dir, 'linux/vfio.h')) ? undefined : `${dir}/linux/vfio.h`,
      'run scripts/provision.sh',
    )
  )
    return;
  const r = runProbe(dir, '7.3');
  report('7.3 header', r);
  assert.deepEqual(r.mismatches, []);
  for (const name of ['VFIO_DEVICE_FEATURE_DMA_BUF', 'vfio_device_feature_dma_buf', 'vfio_region_dma_range'])
    assert.ok(!r.skipped.includes(name), `${name} should be in the 7.3 header`);
  // The WC attribute is not merged as of 7.3: if it ever appears, its value must match (checked above).
});
