/**
 * The device authoring API: one declarative shape for a PCI function, checked when it is
 * defined, and built into a VfioPciDevice (the vfio-pci model, device.ts) as often as needed.
 *
 *   export default defineDevice({
 *     name: 'counter',
 *     identity: { vendorId: 0x1b36, deviceId: 0x0042, classCode: 0xff0000 },
 *     bars: [{ index: 0, kind: 'mem32', size: 4096, backing: 'registers' }],
 *     msix: { vectors: 1, table: { bar: 0, offset: 0x800 }, pba: { bar: 0, offset: 0xc00 } },
 *     state: () => ({ count: 0n }),
 *     create: (dev) => ({
 *       bars: {
 *         0: {
 *           read: (offset) => (offset === 0 ? dev.state.count : 0n),
 *           write: (offset, _size, value) => {
 *             if (offset === 0) dev.state.count = value;
 *             dev.irq.raise(0);
 *           },
 *         },
 *       },
 *     }),
 *   });
 *
 * - BARs are 'registers' (every access reaches the handler `create` returns for it: one
 *   `read(offset, size)` and one `write(offset, size, value)`, bigint for every width) or
 *   'memory' (plain shared memory, mappable, handed to vfio-user peers).
 * - `create` gets the device's context (state, interrupts, DMA, BAR memory) once, when the
 *   device is built; it returns the handlers and whatever else the device wants to expose.
 * - A reset restores `state` to what `state()` returns, zeroes the memory BARs declared
 *   `reset: 'zero'` (others keep their bytes), then calls the model's `reset`.
 * Docs: docs/writing-a-device.md.
 */
import { Errno } from '../abi/errno.js';
import { fail, VfioError } from '../errors.js';
import type { AccessSize, BehaviourContext, DeviceBehaviour, RegisterHandlers } from './behaviour.js';
import { validateDescription } from './config/layout.js';
import { checkInstance, checkSpec, compile, DEFINE_OP } from './define-check.js';
import type { CapabilityPlacement, DeviceDescription, ExtendedCapability } from './description.js';
import { type DeviceOptions, VfioPciDevice } from './device.js';
import { checkState, type DeviceState, restoreState } from './state.js';

export type { AccessSize, RegisterHandlers } from './behaviour.js';
export type { DeviceState, StateValue } from './state.js';

export type BarIndex = 0 | 1 | 2 | 3 | 4 | 5;

export interface IdentitySpec {
  readonly vendorId: number;
  readonly deviceId: number;
  /** 24-bit class code: base class << 16 | sub class << 8 | prog-if. */
  readonly classCode: number;
  /** Default 0. */
  readonly revision?: number;
  /** Default: vendorId. */
  readonly subsystemVendorId?: number;
  /** Default: deviceId. */
  readonly subsystemId?: number;
}

interface BarSpecBase {
  /** BAR number. A 64-bit BAR takes this slot and the next (its upper half). */
  readonly index: BarIndex;
  /** Bytes, a power of two: 16 B..2 GiB for mem32, up to 2^52 for mem64, 4..256 for I/O. */
  readonly size: number;
  /** Prefetchable (memory BARs only; what the write-combining paths require by default). */
  readonly prefetchable?: boolean;
  /**
   * May a driver mmap it? Default: memory BARs of a page or more yes, register BARs no (the
   * mapping would be plain memory, not the registers).
   */
  readonly mmappable?: boolean;
}

export interface RegisterBarSpec extends BarSpecBase {
  readonly kind: 'mem32' | 'mem64' | 'io';
  readonly backing: 'registers';
  /**
   * The widest access the handler takes: 8 (default; on the 7.3 profile a pread of 8 aligned
   * bytes is one 8-byte access, Linux >= 6.11) or 4: an 8-byte access becomes two 4-byte ones,
   * low half first (QEMU's `.impl.max_access_size = 4`).
   */
  readonly maxAccessSize?: 4 | 8;
}

export interface MemoryBarSpec extends BarSpecBase {
  readonly kind: 'mem32' | 'mem64';
  readonly backing: 'memory';
  /** What a device reset does to the bytes: 'keep' (default) or 'zero'. */
  readonly reset?: 'keep' | 'zero';
}

export type BarSpec = RegisterBarSpec | MemoryBarSpec;

export interface MsixSpec {
  /** Table entries, 1..2048. */
  readonly vectors: number;
  /** Where the table and the Pending Bit Array live: a memory-space BAR, 8-byte aligned, apart. */
  readonly table: { readonly bar: BarIndex; readonly offset: number };
  readonly pba: { readonly bar: BarIndex; readonly offset: number };
}

export interface MsiSpec {
  /** 1, 2, 4, 8, 16 or 32. */
  readonly vectors: number;
  /** 64-bit message address capable (default true). */
  readonly addr64?: boolean;
  /** Per-vector masking capable (default false). */
  readonly perVectorMask?: boolean;
}

/** Host memory as the device reaches it: the driver's DMA mappings, at bus addresses. */
export interface DeviceDma {
  /** A copy of `length` bytes at `address`; rejects EFAULT when not mapped. */
  read(address: bigint, length: number): Promise<Uint8Array>;
  /** Fills `into` from `address` (no allocation). */
  readInto(address: bigint, into: Uint8Array): Promise<void>;
  write(address: bigint, data: Uint8Array): Promise<void>;
}

export interface DeviceIrq {
  /** The mechanism the driver enabled. */
  readonly type: 'none' | 'intx' | 'msi' | 'msix';
  /**
   * Sends MSI or MSI-X vector `vector`, or asserts INTx (vector 0; a level, held until
   * `lower`). False when nothing was delivered (no trigger set, masked, or disabled).
   */
  raise(vector?: number): boolean;
  /** Deasserts INTx (QEMU's pci_set_irq(dev, 0)); nothing for MSI/MSI-X. */
  lower(): void;
}

/** What `create` gets: the device's own view of the machine. */
export interface DeviceContext<S extends DeviceState = DeviceState> {
  readonly name: string;
  /** The live state (what `state()` returned); a reset restores it in place. */
  readonly state: S;
  readonly irq: DeviceIrq;
  readonly dma: DeviceDma;
  /** The bytes of memory BAR `bar` (what every mapping of it shows). */
  memory(bar: BarIndex): Uint8Array;
  /** The address the driver programmed into BAR `bar` (config space), if any. */
  barAddress(bar: BarIndex): bigint | undefined;
  /**
   * Tracks async work the device started (a DMA, a command): a rejection is logged, never
   * thrown at the event loop, and `VfioPciDevice.settled()` waits for it. The returned promise
   * resolves when the task has settled.
   */
  work(task: Promise<unknown>): Promise<void>;
  log(line: string): void;
}

/** What `create` returns: the register handlers, and anything else the device exposes. */
export interface DeviceModel {
  /** One handler per register BAR, by BAR index. */
  readonly bars?: { readonly [index: number]: RegisterHandlers | undefined };
  /** What a reset does besides restoring the state and memory (stop timers, drop queues). */
  reset?(): void;
  /** The device is closed. If it returns a promise (a flush), `settled()` waits for it. */
  close?(): unknown;
}

export interface DeviceSpec<S extends DeviceState, M extends DeviceModel> {
  /** Short name: logs, memfd names. */
  readonly name: string;
  readonly identity: IdentitySpec;
  readonly bars: readonly BarSpec[];
  readonly msix?: MsixSpec;
  readonly msi?: MsiSpec;
  /** An INTx pin (INTA#). Default false. */
  readonly intx?: boolean;
  /** A PCI Express endpoint (PCIe capability, 4 KiB config space). Default false. */
  readonly pcie?: boolean;
  /** A power-management capability. Default false. */
  readonly pm?: boolean;
  /** The driver may reset the function (FLR / PM reset): DEVICE_GET_INFO reports RESET. */
  readonly resettable?: boolean;
  readonly rom?: { readonly size: number };
  /** Where capabilities sit, for a device whose layout must match real hardware. */
  readonly capabilityLayout?: readonly CapabilityPlacement[];
  readonly extendedCapabilities?: readonly ExtendedCapability[];
  /** The device's registers and buffers as plain data, in their reset values (state.ts). */
  readonly state?: () => S;
  /** Builds one instance's behaviour. Needed when a BAR is 'registers'. */
  readonly create?: (device: DeviceContext<S>) => M;
}

/** A built device: the vfio-pci model, the device's own model and its live state. */
export interface DeviceInstance<M extends DeviceModel = DeviceModel, S extends DeviceState = DeviceState> {
  readonly device: VfioPciDevice;
  readonly model: M;
  readonly state: S;
}

const DEFINITION = Symbol.for('vfio-ts.device-definition');

export interface DeviceDefinition<M extends DeviceModel = DeviceModel, S extends DeviceState = DeviceState> {
  readonly [DEFINITION]: true;
  readonly name: string;
  /** What the core builds from (identity, BARs, capabilities). */
  readonly description: DeviceDescription;
  /** Builds a new device: its own state, memory and model. */
  instantiate(options: DeviceOptions): DeviceInstance<M, S>;
}

/**
 * Is `value` a definition from defineDevice (from this copy of vfio-ts or another: a device
 * module may import its own)?
 */
export function isDeviceDefinition(value: unknown): value is DeviceDefinition {
  return (
    typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[DEFINITION] === true
  );
}

/** Checks `spec` (every error names its field) and returns the definition. @throws VfioError EINVAL */
export function defineDevice<
  S extends DeviceState = Record<never, never>,
  M extends DeviceModel = DeviceModel,
>(spec: DeviceSpec<S, M>): DeviceDefinition<M, S> {
  checkSpec(spec);
  const description = compile(spec);
  validateDescription(description, `${DEFINE_OP} ${spec.name}`);
  const initial = (): S => {
    const s = spec.state?.() ?? ({} as S);
    checkState(s, `${DEFINE_OP} ${spec.name}`);
    return s;
  };
  initial(); // a bad state is the definition's error, not the first device's
  return Object.freeze({
    [DEFINITION]: true as const,
    name: spec.name,
    description,
    instantiate(options: DeviceOptions): DeviceInstance<M, S> {
      let model: M | undefined;
      let state: S | undefined;
      const device = new VfioPciDevice(
        description,
        (core) => {
          state = initial();
          const built = build<S, M>(spec, description, core, state, initial);
          model = built.model;
          return built.behaviour;
        },
        options,
      );
      return { device, model: model!, state: state! };
    },
  });
}

function build<S extends DeviceState, M extends DeviceModel>(
  spec: DeviceSpec<S, M>,
  description: DeviceDescription,
  core: BehaviourContext,
  state: S,
  initial: () => S,
): { model: M; behaviour: DeviceBehaviour } {
  const name = spec.name;
  const work = new WorkSet((e) => core.log(`${name}: ${e instanceof Error ? e.message : String(e)}`));
  const ctx: DeviceContext<S> = {
    name,
    state,
    irq: {
      get type() {
        return core.irqType;
      },
      raise: (vector = 0) => core.raise(vector),
      lower: () => core.lower(),
    },
    dma: {
      read: (address, length) => core.dma.read(address, length),
      readInto: (address, into) => core.dma.readInto(address, into),
      write: (address, data) => core.dma.write(address, data),
    },
    memory(bar) {
      const b = description.bars[bar];
      if (b?.backing !== 'memory')
        fail(Errno.EINVAL, `${name}: memory`, `BAR${bar} is not a memory BAR of this device`);
      return core.barMemory(bar)!;
    },
    barAddress: (bar) => core.config.barAddress(bar),
    work: (task) => work.add(task),
    log: (line) => core.log(`${name}: ${line}`),
  };
  const model = spec.create?.(ctx) ?? ({} as M);
  checkInstance(spec, model);
  const bars: RegisterHandlers[] = [];
  for (const b of spec.bars)
    if (b.backing === 'registers')
      bars[b.index] = guarded(name, b.index, model.bars![b.index]!, pbaOf(spec, b.index));
  return {
    model,
    behaviour: {
      bars,
      reset() {
        restoreState(state, initial());
        model.reset?.();
      },
      close() {
        const closing = model.close?.();
        if (closing instanceof Promise) void work.add(closing);
      },
      settled: () => work.settled(),
    },
  };
}

/** [start, end) of the PBA when it lies in register BAR `index`. */
function pbaOf(spec: { readonly msix?: MsixSpec }, index: number): [number, number] | undefined {
  const x = spec.msix;
  if (!x || x.pba.bar !== index) return undefined;
  return [x.pba.offset, x.pba.offset + Math.ceil(x.vectors / 64) * 8];
}

/**
 * A register BAR's handler as the core calls it. The PBA, when it lies in this BAR, reads 0 and
 * drops writes: the model never holds a message back (a masked vector's interrupt is QEMU's to
 * keep pending, in its emulated table), and software never writes the PBA (PCI 3.0 §6.8.2.10).
 * A handler that throws, or returns something other than a bigint, fails the access with EIO
 * naming the BAR and offset; the server answers that access with EIO and keeps serving.
 */
function guarded(name: string, index: number, h: RegisterHandlers, pba: [number, number] | undefined) {
  const where = (offset: number) => `${name}: BAR${index} at 0x${offset.toString(16)}`;
  const wrap = (op: string, offset: number, e: unknown): VfioError =>
    e instanceof VfioError
      ? e
      : new VfioError(
          Errno.EIO,
          op,
          `${where(offset)}: handler threw ${e instanceof Error ? e.message : String(e)}`,
        );
  return {
    read(offset: number, size: AccessSize): bigint {
      if (pba && offset >= pba[0] && offset < pba[1]) return 0n;
      let v: unknown;
      try {
        v = h.read(offset, size);
      } catch (e) {
        throw wrap('pread', offset, e);
      }
      if (typeof v !== 'bigint')
        fail(Errno.EIO, 'pread', `${where(offset)}: read returned a ${typeof v}, not a bigint`);
      return v;
    },
    write(offset: number, size: AccessSize, value: bigint): void {
      if (pba && offset >= pba[0] && offset < pba[1]) return;
      try {
        h.write(offset, size, value);
      } catch (e) {
        throw wrap('pwrite', offset, e);
      }
    },
  };
}

/** The device's async work in flight. */
class WorkSet {
  readonly #tasks = new Set<Promise<void>>();

  constructor(private readonly onError: (e: unknown) => void) {}

  add(task: Promise<unknown>): Promise<void> {
    const p: Promise<void> = task.then(
      () => {
        this.#tasks.delete(p);
      },
      (e: unknown) => {
        this.#tasks.delete(p);
        this.onError(e);
      },
    );
    this.#tasks.add(p);
    return p;
  }

  /** Resolves once nothing is in flight, work started meanwhile included. */
  async settled(): Promise<void> {
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }
}

/**
 * The part of a wide register (a 64-bit address, say) that an access reads when it starts `at`
 * bytes into it: a 4-byte read of the high half is `registerRead(reg, 4)`. The core keeps the
 * access's own bytes.
 */
export function registerRead(register: bigint, at: number): bigint {
  return register >> BigInt(at * 8);
}

/** `register` with the `size` bytes at `at` (bytes into it) replaced by an access's `value`. */
export function registerWrite(register: bigint, at: number, size: AccessSize, value: bigint): bigint {
  const shift = BigInt(at * 8);
  const mask = ((1n << BigInt(size * 8)) - 1n) << shift;
  return (register & ~mask) | ((value << shift) & mask);
}
