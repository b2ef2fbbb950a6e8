/**
 * The PCI ID database (pci.ids, from the PCI ID Project, https://pci-ids.ucw.cz/; Debian ships it
 * in the pci.ids package as /usr/share/misc/pci.ids, Fedora in hwdata as
 * /usr/share/hwdata/pci.ids), read with our own parser, and the names lspci -nn prints from it.
 *
 * The format (the file's own header, and pci.ids(5)): `#` comments and blank lines; a vendor
 * line `vvvv  name`, its devices one tab in `dddd  name`, their subsystems two tabs in
 * `ssss dddd  name`; `C cc  name` opens the class list (subclasses one tab in, programming
 * interfaces two); `S vvvv` opens a generic subsystem list; any other `X ` block is skipped.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { MalformedError } from '../errors.js';
import { hex } from './format.js';
import type { PciConfig } from './pci-config.js';

/** Where distributions put the database, in the order lspci's builds look. */
export const PCI_IDS_PATHS: readonly string[] = [
  '/usr/share/misc/pci.ids',
  '/usr/share/hwdata/pci.ids',
  '/usr/share/pci.ids',
  '/usr/share/misc/pci.ids.gz',
  '/usr/share/hwdata/pci.ids.gz',
];

/** The file is about 1.4 MB; a file past this is not pci.ids. */
export const MAX_PCI_IDS_BYTES = 64 << 20;

/** A .gz database's text; a damaged or oversized one is MalformedError (zlib's own errors are not ours). */
function gunzip(raw: Buffer, path: string): Buffer {
  try {
    return gunzipSync(raw, { maxOutputLength: MAX_PCI_IDS_BYTES });
  } catch (e) {
    throw new MalformedError(
      path,
      `not a gzip file of at most ${MAX_PCI_IDS_BYTES} bytes (${(e as Error).message})`,
    );
  }
}

/** A named entry and the entries nested under it, by ID (a vendor's devices, a class's subclasses). */
interface Entry<Child> {
  readonly name: string;
  readonly children: Map<number, Child>;
}
/** Subsystems by (subvendor << 16 | subdevice). */
type Device = Entry<string>;
type Vendor = Entry<Device>;
/** Programming interfaces. */
type Subclass = Entry<string>;
type Klass = Entry<Subclass>;

const key = (hi: number, lo: number) => hi * 0x10000 + lo;

export class PciIdDatabase {
  private readonly vendors = new Map<number, Vendor>();
  private readonly generic = new Map<number, string>();
  private readonly classes = new Map<number, Klass>();

  private constructor(readonly source: string) {}

  /** Parses pci.ids text; MalformedError names the first line it cannot read. */
  static parse(text: string, source = 'pci.ids'): PciIdDatabase {
    const db = new PciIdDatabase(source);
    db.read(text);
    return db;
  }

  /**
   * The system's database: the first of `paths` that exists, or undefined when none does.
   * MalformedError when it exists but cannot be parsed.
   */
  static load(paths: readonly string[] = PCI_IDS_PATHS): PciIdDatabase | undefined {
    for (const path of paths) {
      let raw: Buffer;
      try {
        raw = readFileSync(path);
      } catch {
        continue;
      }
      if (path.endsWith('.gz')) raw = gunzip(raw, path);
      if (raw.length > MAX_PCI_IDS_BYTES)
        throw new MalformedError(path, `${raw.length} bytes, more than ${MAX_PCI_IDS_BYTES}`);
      return PciIdDatabase.parse(raw.toString('utf8'), path);
    }
    return undefined;
  }

  private read(text: string): void {
    let vendor: Vendor | undefined;
    let device: Device | undefined;
    let klass: Klass | undefined;
    let subclass: Subclass | undefined;
    let genericVendor: number | undefined;
    let block: 'vendor' | 'class' | 'generic' | 'skip' = 'vendor';
    const lines = text.split('\n');
    for (let n = 0; n < lines.length; n++) {
      const line = lines[n]!.replace(/[\r \t]+$/, '');
      if (line === '' || /^\s*#/.test(line)) continue;
      const bad: (why: string) => never = (why) => {
        throw new MalformedError(this.source, `line ${n + 1}: ${why}: ${JSON.stringify(line.slice(0, 80))}`);
      };
      const depth = /^\t*/.exec(line)![0].length;
      const body = line.slice(depth);
      if (depth === 0) {
        vendor = device = klass = subclass = undefined;
        if (/^[A-Z] /.test(body)) {
          const m = /^([A-Z]) ([0-9a-fA-F]+)(?:\s+(.*))?$/.exec(body);
          if (body[0] === 'C') {
            if (!m || m[2]!.length !== 2 || !m[3]) bad('class line is not "C cc  name"');
            klass = { name: m[3]!, children: new Map() };
            this.classes.set(parseInt(m[2]!, 16), klass);
            block = 'class';
          } else if (body[0] === 'S') {
            if (!m || m[2]!.length !== 4) bad('generic subsystem line is not "S vvvv"');
            genericVendor = parseInt(m[2]!, 16);
            block = 'generic';
          } else block = 'skip'; // an unknown block: reserved for future use
          continue;
        }
        const m = /^([0-9a-fA-F]{4})\s+(.+)$/.exec(body) ?? bad('vendor line is not "vvvv  name"');
        vendor = { name: m[2]!, children: new Map() };
        this.vendors.set(parseInt(m[1]!, 16), vendor);
        block = 'vendor';
        continue;
      }
      if (block === 'skip') continue;
      if (block === 'class') {
        const m = /^([0-9a-fA-F]{2})\s+(.+)$/.exec(body) ?? bad('class entry is not "nn  name"');
        const id = parseInt(m[1]!, 16);
        if (depth === 1) {
          if (!klass) bad('subclass outside a class');
          subclass = { name: m[2]!, children: new Map() };
          klass.children.set(id, subclass);
        } else if (depth === 2 && subclass) subclass.children.set(id, m[2]!);
        else bad('programming interface outside a subclass');
        continue;
      }
      if (block === 'generic') {
        const m = /^([0-9a-fA-F]{4})\s+(.+)$/.exec(body);
        if (depth !== 1 || !m) bad('generic subsystem entry is not "\\tdddd  name"');
        this.generic.set(key(genericVendor!, parseInt(m[1]!, 16)), m[2]!);
        continue;
      }
      if (depth === 1) {
        const m = /^([0-9a-fA-F]{4})\s+(.+)$/.exec(body) ?? bad('device line is not "\\tdddd  name"');
        if (!vendor) bad('device outside a vendor');
        device = { name: m[2]!, children: new Map() };
        vendor.children.set(parseInt(m[1]!, 16), device);
      } else if (depth === 2) {
        const m =
          /^([0-9a-fA-F]{4}) ([0-9a-fA-F]{4})\s+(.+)$/.exec(body) ??
          bad('subsystem line is not "\\t\\tvvvv dddd  name"');
        if (!device) bad('subsystem outside a device');
        device.children.set(key(parseInt(m[1]!, 16), parseInt(m[2]!, 16)), m[3]!);
      } else bad(`${depth} tabs deep`);
    }
  }

  vendor(v: number): string | undefined {
    return this.vendors.get(v)?.name;
  }

  device(v: number, d: number): string | undefined {
    return this.vendors.get(v)?.children.get(d)?.name;
  }

  /**
   * A subsystem's name as lspci's id_lookup_subsys finds it: listed under the device, else in the
   * generic `S` list of the subsystem vendor, else the device's own name when the subsystem IDs
   * are the device's IDs.
   */
  subsystem(v: number, d: number, sv: number, sd: number): string | undefined {
    return (
      this.vendors.get(v)?.children.get(d)?.children.get(key(sv, sd)) ??
      this.generic.get(key(sv, sd)) ??
      (v === sv && d === sd ? this.device(v, d) : undefined)
    );
  }

  className(base: number): string | undefined {
    return this.classes.get(base)?.name;
  }

  subclassName(base: number, sub: number): string | undefined {
    return this.classes.get(base)?.children.get(sub)?.name;
  }

  /**
   * The name lspci gives a 24-bit class code (lib/names.c, PCI_LOOKUP_CLASS): its subclass's,
   * else its base class's.
   */
  classCodeName(classCode: number): string | undefined {
    const base = classCode >> 16;
    return this.subclassName(base, (classCode >> 8) & 0xff) ?? this.className(base);
  }

  progIfName(base: number, sub: number, progIf: number): string | undefined {
    return this.classes.get(base)?.children.get(sub)?.children.get(progIf);
  }
}

/**
 * The names lspci -nn prints for a function, numbers in brackets after them; with no database
 * (or an unlisted ID) the same words lspci falls back to ("Device [1af4:1110]", "Class [0500]").
 */
export interface PciIdentityText {
  /** `RAM memory [0500]` */
  readonly class: string;
  /** `Red Hat, Inc. Inter-VM shared memory [1af4:1110]` */
  readonly device: string;
  /** `Red Hat, Inc. QEMU Virtual Machine [1af4:1100]` */
  readonly subsystem: string;
  /** ` (prog-if 02 [NVM Express])`, or empty when the interface is 0 and unnamed. */
  readonly progIf: string;
}

/** The IDs the names are looked up by, as config space holds them. */
export type PciIdentity = Pick<
  PciConfig,
  'vendorId' | 'deviceId' | 'subsystemVendorId' | 'subsystemId' | 'classCode'
>;

/** lib/names.c's format_name_pair in -nn (PCI_LOOKUP_MIXED) mode, in our words. */
function pair(v: string | undefined, d: string | undefined, num: string): string {
  if (v && d) return `${v} ${d} [${num}]`;
  return v ? `${v} Device [${num}]` : `Device [${num}]`;
}

export function identityText(id: PciIdentity, db: PciIdDatabase | undefined): PciIdentityText {
  const base = id.classCode >> 16;
  const sub = (id.classCode >> 8) & 0xff;
  const prog = id.classCode & 0xff;
  const cls = db?.classCodeName(id.classCode) ?? 'Class';
  const progName = db?.progIfName(base, sub, prog);
  return {
    class: `${cls} [${hex(id.classCode >> 8, 4)}]`,
    device: pair(
      db?.vendor(id.vendorId),
      db?.device(id.vendorId, id.deviceId),
      `${hex(id.vendorId, 4)}:${hex(id.deviceId, 4)}`,
    ),
    subsystem: pair(
      db?.vendor(id.subsystemVendorId),
      db?.subsystem(id.vendorId, id.deviceId, id.subsystemVendorId, id.subsystemId),
      `${hex(id.subsystemVendorId, 4)}:${hex(id.subsystemId, 4)}`,
    ),
    progIf: prog || progName ? ` (prog-if ${hex(prog, 2)}${progName ? ` [${progName}]` : ''})` : '',
  };
}
