/**
 * The pci.ids reader: a fixture in the file's format (test/cli/fixtures/pci.ids, made-up names)
 * read through every rule lspci's lookups follow, malformed files refused with the line named,
 * the gzip form, and the system's database where pciutils installed it.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { identityText, PCI_IDS_PATHS, PciIdDatabase } from '../../src/driver/pci-ids.js';
import { MalformedError } from '../../src/errors.js';
import { requireOrSkip } from '../helpers/env.js';

/** The fixture, from dist/test/cli/ back to the repository's test/cli/fixtures/. */
export const FIXTURE_PCI_IDS = fileURLToPath(new URL('../../../test/cli/fixtures/pci.ids', import.meta.url));

const db = () => PciIdDatabase.load([FIXTURE_PCI_IDS])!;

test('vendors and devices; trailing whitespace is not part of a name', () => {
  const d = db();
  assert.equal(d.source, FIXTURE_PCI_IDS);
  assert.equal(d.vendor(0x1af4), 'Shared Memory Co.');
  assert.equal(d.vendor(0x8086), 'Example Networks');
  assert.equal(d.device(0x1af4, 0x1110), 'Example shared memory');
  assert.equal(d.device(0x1af4, 0x9999), undefined);
  assert.equal(d.vendor(0xabcd), undefined);
});

test("subsystems: the device's own list, then the generic S list, then the device itself", () => {
  const d = db();
  assert.equal(d.subsystem(0x1af4, 0x1110, 0x1af4, 0x1100), 'Example Board');
  // Not under 1af4:1111, but in the generic list of subsystem vendor 1af4.
  assert.equal(d.subsystem(0x1af4, 0x1111, 0x1af4, 0x1100), 'Generic Example Machine');
  assert.equal(d.subsystem(0x1234, 0x11e8, 0x1af4, 0x1200), 'Another generic subsystem');
  // Subsystem IDs equal to the device's: the device's name.
  assert.equal(d.subsystem(0x1b36, 0x0010, 0x1b36, 0x0010), 'Example NVMe controller');
  assert.equal(d.subsystem(0x8086, 0x10d3, 0x8086, 0x0000), undefined);
  // The X block and its nested line are skipped, not read as vendor 0000's devices.
  assert.equal(d.vendor(0x0000), undefined);
});

test('classes, subclasses, programming interfaces', () => {
  const d = db();
  assert.equal(d.className(0x01), 'Mass storage controller');
  assert.equal(d.subclassName(0x01, 0x08), 'Non-Volatile memory controller');
  assert.equal(d.progIfName(0x01, 0x08, 0x02), 'NVM Express');
  assert.equal(d.subclassName(0x00, 0xff), undefined);
  assert.equal(d.className(0x02), undefined);
  // A class code's name: its subclass's, else its base class's (lspci's PCI_LOOKUP_CLASS).
  assert.equal(d.classCodeName(0x010802), 'Non-Volatile memory controller');
  assert.equal(d.classCodeName(0x010600), 'Mass storage controller');
  assert.equal(d.classCodeName(0x020000), undefined);
});

test('identityText: the words lspci -nn prints, with and without the database', () => {
  const ivshmem = {
    vendorId: 0x1af4,
    deviceId: 0x1110,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    classCode: 0x050000,
  };
  assert.deepEqual(identityText(ivshmem, db()), {
    class: 'RAM memory [0500]',
    device: 'Shared Memory Co. Example shared memory [1af4:1110]',
    subsystem: 'Shared Memory Co. Example Board [1af4:1100]',
    progIf: '',
  });
  assert.deepEqual(identityText(ivshmem, undefined), {
    class: 'Class [0500]',
    device: 'Device [1af4:1110]',
    subsystem: 'Device [1af4:1100]',
    progIf: '',
  });
  const nvme = {
    vendorId: 0x1b36,
    deviceId: 0x0010,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1101,
    classCode: 0x010802,
  };
  assert.deepEqual(identityText(nvme, db()), {
    class: 'Non-Volatile memory controller [0108]',
    device: 'Example Storage Labs Example NVMe controller [1b36:0010]',
    // A known subsystem vendor with an unknown subsystem: "<vendor> Device [ids]".
    subsystem: 'Shared Memory Co. Device [1af4:1101]',
    progIf: ' (prog-if 02 [NVM Express])',
  });
  // Only the base class known: its name; an unnamed non-zero programming interface: the number.
  const edu = {
    vendorId: 0x1234,
    deviceId: 0x11e8,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    classCode: 0x00ff05,
  };
  const t = identityText(edu, db());
  assert.equal(t.class, 'Unclassified device [00ff]');
  assert.equal(t.progIf, ' (prog-if 05)');
  assert.equal(identityText({ ...edu, vendorId: 0xabcd }, db()).device, 'Device [abcd:11e8]');
});

test('a malformed line is refused with its number; nothing else is guessed', () => {
  const cases: [string, RegExp][] = [
    ['1af4  Red Hat\n\t11  short device id\n', /line 2: device line/],
    ['zzzz  not hex\n', /line 1: vendor line/],
    ['\tdead  a device before any vendor\n', /line 1: device outside a vendor/],
    ['1af4  V\n\t1110  D\n\t\t1af4  a subsystem without its device id\n', /line 3: subsystem line/],
    ['C 0  one-digit class\n', /line 1: class line/],
    ['C 01  Storage\n\t\t02  interface before a subclass\n', /line 2: programming interface outside/],
    ['1af4  V\n\t\t\t0001  three tabs\n', /line 2: 3 tabs deep/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => PciIdDatabase.parse(text, 'bad.ids'),
      (e: unknown) =>
        e instanceof MalformedError && /^malformed bad\.ids: /.test(e.message) && re.test(e.message),
      text,
    );
  }
});

test('load: the first path that exists, gzip read, none gives undefined', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-ids-'));
  try {
    const gz = join(dir, 'pci.ids.gz');
    writeFileSync(gz, gzipSync(readFileSync(FIXTURE_PCI_IDS)));
    const d = PciIdDatabase.load([join(dir, 'missing.ids'), gz]);
    assert.equal(d?.source, gz);
    assert.equal(d?.device(0x1b36, 0x0010), 'Example NVMe controller');
    assert.equal(PciIdDatabase.load([join(dir, 'missing.ids')]), undefined);
    writeFileSync(join(dir, 'bad.ids'), '1af4  V\nnot a line\n');
    assert.throws(() => PciIdDatabase.load([join(dir, 'bad.ids')]), /bad\.ids: line 2/);
    // A damaged .gz is malformed (info then warns and prints numbers), not zlib's bare Error.
    const damaged = join(dir, 'damaged.ids.gz');
    writeFileSync(damaged, gzipSync(readFileSync(FIXTURE_PCI_IDS)).subarray(0, 100));
    assert.throws(
      () => PciIdDatabase.load([damaged]),
      (e: unknown) => e instanceof MalformedError && /damaged\.ids\.gz: not a gzip file/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the system's pci.ids (pciutils) parses and names QEMU's devices", (t) => {
  const path = PCI_IDS_PATHS.find((p) => existsSync(p));
  if (!requireOrSkip(t, path ? undefined : PCI_IDS_PATHS.join(' or '), 'apt-get install -y pci.ids')) return;
  const started = performance.now();
  const d = PciIdDatabase.load()!;
  const ms = performance.now() - started;
  assert.equal(d.source, path);
  assert.match(d.vendor(0x1af4) ?? '', /Red Hat/);
  assert.match(d.device(0x1af4, 0x1110) ?? '', /shared memory/i);
  assert.match(d.subclassName(0x01, 0x08) ?? '', /Non-Volatile memory/);
  console.log(`pci.ids: ${path} parsed in ${ms.toFixed(0)} ms`);
});
