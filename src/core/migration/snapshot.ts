/**
 * A device's state as the migration stream's PCI, STATE and MODEL sections (the memory areas
 * travel as MEMORY sections, stream.ts), and its restore on the resuming device.
 *
 *   PCI    config space (the device's registers and vfio-pci's virtual copy, as config.ts keeps
 *          them; the power state) and the INTx line's level (intx.ts)
 *   STATE  the plain-data `state` a definition declares (define.ts), walked without asking it
 *   MODEL  what the model's `migration.save` returns (state the model keeps outside `state`)
 *
 * Not carried: what the user set up through vfio (interrupt eventfds, DMA mappings, mmaps), which
 * the user sets up again on the target as a VMM does (QEMU's vfio_pci_load_config re-enables
 * MSI/MSI-X with SET_IRQS). The restored config space therefore says what the target's own
 * SET_IRQS says about MSI and MSI-X enable (config.ts setMsiEnabled / setMsixEnabled).
 *
 * Restore is checked before anything changes (lengths, the state's shape); the model's `load`
 * may still refuse. Then everything is put back as it was, and only when that fails too is the
 * device left in ERROR (vfio.h: "unable to restore the device to any valid device_state").
 */
import { Errno } from '../../abi/errno.js';
import { MigSection } from '../../abi/migration.js';
import { fail, VfioError } from '../../errors.js';
import type { DeviceBehaviour } from '../behaviour.js';
import type { ConfigSpace } from '../config.js';
import type { IntxLine } from '../intx.js';
import type { IrqState } from '../irqs.js';
import { checkState, type DeviceState, restoreState, type StateValue } from '../state.js';
import type { LoadedStream } from './load.js';
import type { MemoryArea } from './stream.js';
import { checkFits, decodeValue, encodeValue } from './value.js';

const OP = 'migration stream';

/** What capture and restore need of the device. */
export interface SnapshotHost {
  readonly config: ConfigSpace;
  readonly intx: IntxLine;
  readonly irqs: IrqState;
  readonly behaviour: DeviceBehaviour;
  memoryAreas(): readonly MemoryArea[];
}

interface PciImage {
  readonly hw: Uint8Array;
  readonly vconfig: Uint8Array;
  readonly power: number;
  readonly intx: boolean;
}

/** The device's PCI, STATE and MODEL sections, now (the device is stopped). */
export function capture(host: SnapshotHost): [number, Uint8Array][] {
  const c = host.config.saveState();
  const pci: PciImage = { ...c, intx: host.intx.asserted };
  const out: [number, Uint8Array][] = [
    [MigSection.PCI, encodeValue({ ...pci })],
    [MigSection.STATE, encodeValue(host.behaviour.state ?? {})],
  ];
  const save = host.behaviour.migration?.save;
  if (save) {
    const v = save();
    checkState(v, `${OP}: the model's save`, 'model');
    out.push([MigSection.MODEL, encodeValue(v)]);
  }
  return out;
}

/** Whether the device has a MODEL section (a stream for it must carry one). */
export function hasModel(b: DeviceBehaviour): boolean {
  return b.migration?.save !== undefined || b.migration?.load !== undefined;
}

function pciImage(v: StateValue, size: number): PciImage {
  const bad = (why: string): never => fail(Errno.EINVAL, OP, `PCI section: ${why}`);
  if (typeof v !== 'object' || v instanceof Uint8Array || Array.isArray(v)) return bad('not a record');
  const r = v as Record<string, StateValue>;
  const bytes = (k: string) => {
    const b = r[k];
    if (!(b instanceof Uint8Array) || b.length !== size)
      bad(`${k} is not ${size} bytes of config space (this device has ${size})`);
    return b as Uint8Array;
  };
  const power = r.power;
  if (typeof power !== 'number' || !Number.isInteger(power) || power < 0 || power > 3)
    bad(`power state ${String(power)}`);
  if (typeof r.intx !== 'boolean') bad('intx is not a boolean');
  return { hw: bytes('hw'), vconfig: bytes('vconfig'), power: power as number, intx: r.intx as boolean };
}

/** Thrown when a restore failed and so did putting the device back: the device is in ERROR. */
export class RestoreLost extends VfioError {}

/**
 * Restores `loaded` into the device. @throws VfioError(EINVAL) with the device as it was;
 * RestoreLost when it could not be put back.
 */
export function restore(host: SnapshotHost, loaded: LoadedStream): void {
  const pci = pciImage(decodeValue(loaded.pci, 'PCI section'), host.config.size);
  const live: DeviceState = host.behaviour.state ?? {};
  const state = decodeValue(loaded.state, 'STATE section');
  checkFits(live, state);
  const model = loaded.model && decodeValue(loaded.model, 'MODEL section');
  const hooks = host.behaviour.migration;

  const before = {
    config: host.config.saveState(),
    intx: host.intx.asserted,
    state: decodeValue(encodeValue(live), 'state'),
    model: hooks?.save?.(),
  };
  const put = (p: Omit<PciImage, 'intx'>, intx: boolean, s: StateValue) => {
    host.config.loadState(p);
    host.intx.restore(intx);
    restoreState(live, s as DeviceState);
  };
  put(pci, pci.intx, state);
  if (model !== undefined && hooks?.load) {
    try {
      hooks.load(model);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      try {
        put(before.config, before.intx, before.state);
        if (before.model !== undefined) hooks.load(before.model);
      } catch (again) {
        throw new RestoreLost(
          Errno.EIO,
          OP,
          `the device refused the state (${why}) and could not take its own back: ${again}`,
        );
      }
      if (e instanceof VfioError) throw e;
      fail(Errno.EINVAL, OP, `the device refused the MODEL section: ${why}`);
    }
  }
  for (const a of host.memoryAreas()) {
    const staged = loaded.memory.get(a.id);
    if (staged) a.bytes.set(staged);
  }
  reflectIrqs(host);
}

/**
 * After config space came from another device: MSI and MSI-X enable as this device's SET_IRQS
 * left them (vfio_msi_enable / vfio_msi_disable program the device's own capability).
 */
function reflectIrqs(host: SnapshotHost): void {
  const { config, irqs } = host;
  if (config.desc.msi) {
    if (irqs.type === 'msi') config.setMsiEnabled(true, Math.max(1, irqs.allocated));
    else config.setMsiEnabled(false);
  }
  if (config.desc.msix) config.setMsixEnabled(irqs.type === 'msix');
}
