/**
 * defineDevice's checks and its translation into the core's DeviceDescription. What the
 * description check (config/layout.ts validateDescription) already refuses with the BAR's number
 * (sizes, 64-bit BARs and their upper halves, MSI-X placement and overlap) is left to it; here
 * is what only the definition knows: its shape (a module written in plain JavaScript has no
 * type checker), duplicate BARs, what each backing allows, and the handlers `create` returns.
 * Every error is VfioError(EINVAL) naming the field, e.g. `bars[1].reset`.
 */
import { Errno } from '../abi/errno.js';
import { PCI_STD_NUM_BARS } from '../abi/vfio.js';
import { fail } from '../errors.js';
import type { BarSpec, DeviceModel, DeviceSpec } from './define.js';
import type { BarDescription, DeviceDescription } from './description.js';
import type { DeviceState } from './state.js';

export const DEFINE_OP = 'defineDevice';
/** Longest device name (it names memfds and log lines). */
export const MAX_DEVICE_NAME = 64;

const SPEC_FIELDS = [
  'name',
  'identity',
  'bars',
  'msix',
  'msi',
  'intx',
  'pcie',
  'pm',
  'resettable',
  'rom',
  'capabilityLayout',
  'extendedCapabilities',
  'state',
  'create',
];
const IDENTITY_FIELDS = ['vendorId', 'deviceId', 'classCode', 'revision', 'subsystemVendorId', 'subsystemId'];
const BAR_FIELDS: Record<BarSpec['backing'], string[]> = {
  registers: ['index', 'kind', 'size', 'backing', 'prefetchable', 'mmappable', 'maxAccessSize'],
  memory: ['index', 'kind', 'size', 'backing', 'prefetchable', 'mmappable', 'reset'],
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The object at `path` has only `allowed` fields (a misspelt field is an error, not ignored). */
function fields(op: string, path: string, v: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (!isObject(v)) fail(Errno.EINVAL, op, `${path} must be an object`);
  for (const k of Object.keys(v))
    if (!allowed.includes(k)) fail(Errno.EINVAL, op, `${path}.${k} is not a field (${allowed.join(', ')})`);
  return v;
}

function optional(op: string, path: string, v: unknown, type: 'boolean' | 'function' | 'number'): void {
  if (v !== undefined && typeof v !== type) fail(Errno.EINVAL, op, `${path} must be a ${type}`);
}

function checkBar(op: string, path: string, bar: unknown): BarSpec {
  if (!isObject(bar)) return fail(Errno.EINVAL, op, `${path} must be an object`);
  if (bar.backing !== 'registers' && bar.backing !== 'memory')
    fail(Errno.EINVAL, op, `${path}.backing must be 'registers' or 'memory'`);
  const b = fields(op, path, bar, BAR_FIELDS[bar.backing as BarSpec['backing']]) as unknown as BarSpec;
  if (!Number.isInteger(b.index) || b.index < 0 || b.index >= PCI_STD_NUM_BARS)
    fail(Errno.EINVAL, op, `${path}.index must be 0..5`);
  if (b.kind !== 'mem32' && b.kind !== 'mem64' && b.kind !== 'io')
    fail(Errno.EINVAL, op, `${path}.kind must be 'mem32', 'mem64' or 'io'`);
  if (typeof b.size !== 'number') fail(Errno.EINVAL, op, `${path}.size must be a number`);
  optional(op, `${path}.prefetchable`, b.prefetchable, 'boolean');
  optional(op, `${path}.mmappable`, b.mmappable, 'boolean');
  if (b.backing === 'memory') {
    if ((b.kind as string) === 'io')
      fail(Errno.EINVAL, op, `${path}: an I/O BAR has no memory; make it 'registers'`);
    if (b.reset !== undefined && b.reset !== 'keep' && b.reset !== 'zero')
      fail(Errno.EINVAL, op, `${path}.reset must be 'keep' or 'zero'`);
  } else if (b.maxAccessSize !== undefined && b.maxAccessSize !== 4 && b.maxAccessSize !== 8) {
    fail(Errno.EINVAL, op, `${path}.maxAccessSize must be 4 or 8`);
  }
  return b;
}

/** The definition's own checks (see the header). */
export function checkSpec(spec: unknown): void {
  if (!isObject(spec)) fail(Errno.EINVAL, DEFINE_OP, 'the definition must be an object');
  if (typeof spec.name !== 'string' || spec.name === '' || spec.name.length > MAX_DEVICE_NAME)
    fail(Errno.EINVAL, DEFINE_OP, `name must be a string of 1..${MAX_DEVICE_NAME} characters`);
  const op = `${DEFINE_OP} ${spec.name}`;
  fields(op, 'definition', spec, SPEC_FIELDS);
  const id = fields(op, 'identity', spec.identity, IDENTITY_FIELDS);
  for (const k of ['vendorId', 'deviceId', 'classCode'])
    if (typeof id[k] !== 'number') fail(Errno.EINVAL, op, `identity.${k} must be a number`);
  if (id.vendorId === 0xffff)
    fail(Errno.EINVAL, op, 'identity.vendorId 0xffff is what an absent function reads');
  if (!Array.isArray(spec.bars)) fail(Errno.EINVAL, op, 'bars must be an array');
  const seen = new Map<number, number>();
  spec.bars.forEach((raw: unknown, i: number) => {
    const b = checkBar(op, `bars[${i}]`, raw);
    const other = seen.get(b.index);
    if (other !== undefined) fail(Errno.EINVAL, op, `bars[${i}]: BAR${b.index} is already bars[${other}]`);
    seen.set(b.index, i);
  });
  // A slot taken by a 64-bit BAR's upper half, named by both entries.
  for (const [index, i] of seen) {
    const upper = seen.get(index + 1);
    if ((spec.bars[i] as BarSpec).kind === 'mem64' && upper !== undefined)
      fail(
        Errno.EINVAL,
        op,
        `bars[${upper}]: BAR${index + 1} is the upper half of 64-bit BAR${index} (bars[${i}])`,
      );
  }
  if (spec.msix !== undefined) {
    const x = fields(op, 'msix', spec.msix, ['vectors', 'table', 'pba']);
    for (const part of ['table', 'pba']) {
      const p = fields(op, `msix.${part}`, x[part], ['bar', 'offset']);
      const bar = seen.get(p.bar as number);
      if (bar === undefined) fail(Errno.EINVAL, op, `msix.${part}.bar ${String(p.bar)} is not one of bars`);
      if ((spec.bars[bar] as BarSpec).kind === 'io')
        fail(Errno.EINVAL, op, `msix.${part}.bar: BAR${String(p.bar)} is an I/O BAR`);
    }
  }
  if (spec.msi !== undefined) fields(op, 'msi', spec.msi, ['vectors', 'addr64', 'perVectorMask']);
  if (spec.rom !== undefined) fields(op, 'rom', spec.rom, ['size']);
  for (const k of ['intx', 'pcie', 'pm', 'resettable']) optional(op, k, spec[k], 'boolean');
  optional(op, 'state', spec.state, 'function');
  optional(op, 'create', spec.create, 'function');
  const registers = (spec.bars as BarSpec[]).find((b) => b.backing === 'registers');
  if (registers && spec.create === undefined)
    fail(
      Errno.EINVAL,
      op,
      `BAR${registers.index} is 'registers': create() must return its handlers (bars: { ${registers.index}: { read, write } })`,
    );
}

/** What `create` returned: a handler with read and write for every register BAR, none for others. */
export function checkInstance<S extends DeviceState, M extends DeviceModel>(
  spec: DeviceSpec<S, M>,
  model: unknown,
): asserts model is DeviceModel {
  const op = `${DEFINE_OP} ${spec.name}`;
  if (!isObject(model)) fail(Errno.EINVAL, op, 'create() must return an object');
  const bars = model.bars;
  if (bars !== undefined && !isObject(bars))
    fail(Errno.EINVAL, op, 'create(): bars must be an object keyed by BAR index');
  for (const key of Object.keys(bars ?? {})) {
    const b = spec.bars.find((s) => String(s.index) === key);
    if (!b) fail(Errno.EINVAL, op, `create(): bars[${key}]: the definition has no BAR${key}`);
    if (b.backing !== 'registers')
      fail(
        Errno.EINVAL,
        op,
        `create(): bars[${key}]: BAR${key} is a memory BAR; only register BARs take handlers`,
      );
  }
  for (const b of spec.bars) {
    if (b.backing !== 'registers') continue;
    const h = bars?.[b.index];
    if (!isObject(h))
      fail(Errno.EINVAL, op, `create(): bars[${b.index}]: BAR${b.index} is 'registers' and has no handler`);
    for (const fn of ['read', 'write'])
      if (typeof h[fn] !== 'function')
        fail(Errno.EINVAL, op, `create(): bars[${b.index}].${fn} must be a function`);
  }
  for (const fn of ['reset', 'close']) optional(op, `create(): ${fn}`, model[fn], 'function');
}

/** The core's description of a checked definition. */
export function compile<S extends DeviceState, M extends DeviceModel>(
  spec: DeviceSpec<S, M>,
): DeviceDescription {
  const bars: (BarDescription | undefined)[] = new Array(PCI_STD_NUM_BARS).fill(undefined);
  for (const b of spec.bars) {
    const common = {
      size: b.size,
      kind: b.kind,
      ...(b.prefetchable !== undefined && { prefetchable: b.prefetchable }),
      ...(b.mmappable !== undefined && { mmappable: b.mmappable }),
    };
    bars[b.index] =
      b.backing === 'registers'
        ? {
            ...common,
            backing: 'trapped',
            ...(b.maxAccessSize !== undefined && { maxAccessSize: b.maxAccessSize }),
          }
        : { ...common, backing: 'memory', reset: b.reset ?? 'keep' };
  }
  const id = spec.identity;
  const x = spec.msix;
  return {
    name: spec.name,
    identity: {
      vendorId: id.vendorId,
      deviceId: id.deviceId,
      subsystemVendorId: id.subsystemVendorId ?? id.vendorId,
      subsystemId: id.subsystemId ?? id.deviceId,
      classCode: id.classCode,
      revision: id.revision ?? 0,
      interruptPin: spec.intx ? 1 : 0,
    },
    bars,
    ...(spec.rom && { rom: spec.rom }),
    ...(spec.msi && {
      msi: {
        vectors: spec.msi.vectors,
        addr64: spec.msi.addr64 ?? true,
        perVectorMask: spec.msi.perVectorMask ?? false,
      },
    }),
    ...(x && {
      msix: {
        tableSize: x.vectors,
        tableBar: x.table.bar,
        tableOffset: x.table.offset,
        pbaBar: x.pba.bar,
        pbaOffset: x.pba.offset,
      },
    }),
    ...(spec.pcie !== undefined && { pcie: spec.pcie }),
    ...(spec.pm !== undefined && { pm: spec.pm }),
    ...(spec.resettable !== undefined && { resettable: spec.resettable }),
    ...(spec.capabilityLayout && { capabilityLayout: spec.capabilityLayout }),
    ...(spec.extendedCapabilities && { extendedCapabilities: spec.extendedCapabilities }),
  };
}
