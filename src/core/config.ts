/**
 * PCI configuration space of an emulated device, as a user of vfio-pci sees it through the
 * config region (VFIO_PCI_CONFIG_REGION_INDEX).
 *
 * Two layers, like the kernel:
 * - the device's own registers (`hw`, built by config/layout.ts) with the device's write masks;
 * - vfio-pci's virtual copy (`vconfig`) and per-bit permission tables (config/perms.ts), which
 *   decide for every access which bits come from where and which bits a write may change.
 *
 * Follows drivers/vfio/pci/vfio_pci_config.c (function names cited where each rule lives):
 * accesses are cut into aligned chunks that never cross a dword or a capability
 * (vfio_config_do_rw), each chunk goes through its capability's read/write function, BARs are
 * fully virtual and sized by vfio_bar_fixup, MSI is virtualized (vfio_msi_config_read/write),
 * MSI-X is read-only, writes to read-only bits are dropped without an error.
 */
import { Errno } from '../abi/errno.js';
import * as P from '../abi/pci.js';
import { VfioError } from '../errors.js';
import { buildDeviceConfig, type DeviceConfigLayout } from './config/layout.js';
import { type Area, capArea, getLE, mask, setLE, UNASSIGNED } from './config/map.js';
import { basicPerms } from './config/perms.js';
import type { DeviceDescription } from './description.js';

export type { BarLayout, CapLayout, DeviceConfigLayout } from './config/layout.js';
export { buildDeviceConfig, validateDescription } from './config/layout.js';

/**
 * errno of an access outside the config region. vfio_config_do_rw returns -EFAULT when
 * `*ppos >= cfg_size || *ppos + count > cfg_size`, and vfio_pci_rw does no range check of its own
 * for the config region, so pread/pwrite past the end fail with EFAULT, not EINVAL.
 */
export const CONFIG_RANGE_ERRNO = Errno.EFAULT;

/** Region index of the expansion ROM (vfio.h VFIO_PCI_ROM_REGION_INDEX), used by `barAddress`. */
export const ROM_BAR_INDEX = 6;

/** How many capabilities a walk follows at most: (256 - 64) / 4, as vfio_cap_init bounds it. */
export const MAX_CAP_WALK = (P.PCI_CFG_SPACE_SIZE - P.PCI_STD_HEADER_SIZEOF) / P.PCI_CAP_SIZEOF;

export interface ConfigHooks {
  /** The command register as a user reads it changed (after the whole write). */
  onCommandChange?(oldCmd: number, newCmd: number): void;
  /** A BAR's address as a user reads it changed; bar 6 is the ROM. mem64 BARs report the lower index. */
  onBarChange?(bar: number, address: bigint): void;
  /** A PMCSR write moved the function to another power state (vfio_pm_config_write). */
  onPowerStateChange?(oldState: number, newState: number): void;
  /** Initiate FLR was written and the device advertises FLR (vfio_exp_config_write). */
  onFunctionLevelReset?(): void;
}

export interface MsiState {
  /** MSI Enable as the user reads it. vfio lets a config write set it only while MSI is on (SET_IRQS). */
  readonly enabled: boolean;
  /** MSI is on through SET_IRQS (vdev->irq_type == VFIO_PCI_MSI_IRQ_INDEX). */
  readonly active: boolean;
  readonly addr: bigint;
  readonly data: number;
  /** Multiple Message Capable as the user reads it (log2): vfio shows msi_qmax, not the device's. */
  readonly multipleMessageCapable: number;
  /** Multiple Message Enable (log2). */
  readonly multipleMessageEnable: number;
  readonly addr64: boolean;
  readonly perVectorMask: boolean;
  /** Mask bits (the device's register; 0 without per-vector masking). */
  readonly maskBits: number;
  readonly pendingBits: number;
}

export interface MsixState {
  readonly enabled: boolean;
  readonly functionMask: boolean;
  readonly tableSize: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
}

/** fls(nvec * 2 - 1) - 1: log2 of nvec rounded up (vfio_pci_intrs.c: vfio_msi_enable). */
function qmaxFor(nvec: number): number {
  return 31 - Math.clz32(nvec * 2 - 1);
}

interface PendingEvents {
  power?: [number, number];
  flr?: boolean;
}

export class ConfigSpace {
  /** 256, or 4096 for a PCI Express device. */
  readonly size: number;
  readonly layout: DeviceConfigLayout;
  private readonly hooks: ConfigHooks;
  private hw: Uint8Array;
  private vconfig: Uint8Array;
  private readonly areaOf: Area[];
  private readonly capStart = new Map<number, number>();
  private power = P.PCI_D0;
  /** vdev->irq_type is MSI */
  private msiActive = false;
  /**
   * vdev->msi_qmax: set by SET_IRQS(MSI) and never reset, not even by close; it starts at 0, so
   * Multiple Message Capable reads 0 (one vector) until MSI has been enabled once.
   */
  private msiQmax = 0;
  private events: PendingEvents = {};

  /** Throws VfioError(EINVAL, 'config space') for a description it cannot build. */
  constructor(
    readonly desc: DeviceDescription,
    hooks: ConfigHooks = {},
  ) {
    this.layout = buildDeviceConfig(desc);
    this.size = this.layout.size;
    this.hooks = hooks;
    this.hw = new Uint8Array(this.size);
    this.vconfig = new Uint8Array(this.size);
    this.areaOf = new Array<Area>(this.size).fill(UNASSIGNED);
    const basic: Area = { kind: 'basic', start: 0, length: P.PCI_STD_HEADER_SIZEOF, perm: basicPerms() };
    this.areaOf.fill(basic, 0, P.PCI_STD_HEADER_SIZEOF);
    for (const cap of this.layout.caps) {
      const area = capArea(this.layout.bytes, cap.id, cap.offset);
      this.capStart.set(cap.id, cap.offset);
      this.areaOf.fill(area, area.start, area.start + area.length);
    }
    this.initState();
  }

  /** vfio_pci_core_enable + vfio_config_init: the device as opened, vconfig copied from it. */
  private initState(): void {
    this.hw = this.layout.bytes.slice();
    this.power = P.PCI_D0;
    this.msiActive = false;
    this.events = {};
    const v = new Uint8Array(this.size);
    // vfio_fill_vconfig_bytes for the header and each capability the map covers.
    v.set(this.hw.subarray(0, P.PCI_STD_HEADER_SIZEOF));
    for (const cap of this.layout.caps) {
      const area = this.areaOf[cap.offset]!;
      v.set(this.hw.subarray(area.start, area.start + area.length), area.start);
    }
    const pm = this.capStart.get(P.PCI_CAP_ID_PM);
    if (pm !== undefined) {
      // vfio_update_pm_vconfig_bytes: clear PME_Support, PME_Status, PME_En.
      setLE(v, pm + P.PCI_PM_PMC, 2, getLE(v, pm + P.PCI_PM_PMC, 2) & ~P.PCI_PM_CAP_PME_MASK);
      const ctrl = getLE(v, pm + P.PCI_PM_CTRL, 2) & ~(P.PCI_PM_CTRL_PME_ENABLE | P.PCI_PM_CTRL_PME_STATUS);
      setLE(v, pm + P.PCI_PM_CTRL, 2, ctrl);
    }
    this.vconfig = v;
    // vfio_config_init sets bardirty; the next BAR read runs vfio_bar_fixup.
    this.barFixup();
  }

  /**
   * Back to the state of a fresh open of the device (vfio_pci_core_enable, vfio_config_init).
   * What vfio keeps in the vfio_pci_core_device across opens is kept: msi_qmax.
   * VFIO_DEVICE_RESET is not this: the kernel's pci_try_reset_function saves and restores the
   * device's config around the reset and leaves vconfig alone.
   */
  reset(): void {
    this.initState();
  }

  /** Migration (src/core/migration): the device's registers, vfio's copy, the power state. */
  saveState(): { hw: Uint8Array; vconfig: Uint8Array; power: number } {
    return { hw: this.hw.slice(), vconfig: this.vconfig.slice(), power: this.power };
  }

  /** Puts back what saveState gave on a device of this description (same sizes: checked before). */
  loadState(s: { readonly hw: Uint8Array; readonly vconfig: Uint8Array; readonly power: number }): void {
    this.hw.set(s.hw);
    this.vconfig.set(s.vconfig);
    this.power = s.power;
    this.events = {};
  }

  // ---------------------------------------------------------------------------------------------
  // Accesses (vfio_pci_config_rw / vfio_config_do_rw)
  // ---------------------------------------------------------------------------------------------

  /**
   * Reads `length` bytes at `offset`, as pread on the config region does.
   * @throws VfioError(EINVAL) for a negative or non-integer offset/length;
   *   VfioError(CONFIG_RANGE_ERRNO = EFAULT) when the access leaves the config space.
   */
  read(offset: number, length: number): Uint8Array {
    this.check('config read', offset, length);
    const out = new Uint8Array(length);
    this.readChunks(offset, out);
    return out;
  }

  /** As `read`, into all of `dst`: nothing allocated (the vfio-user server's hot path). */
  readInto(offset: number, dst: Uint8Array): void {
    this.check('config read', offset, dst.length);
    this.readChunks(offset, dst);
  }

  private readChunks(offset: number, out: Uint8Array): void {
    const end = offset + out.length;
    for (let pos = offset; pos < end; ) {
      const count = this.chunk(pos, end - pos);
      setLE(out, pos - offset, count, this.readChunk(pos, count));
      pos += count;
    }
  }

  /**
   * Writes `data` at `offset`, as pwrite on the config region does. Bits a user may not write
   * are dropped silently, like the kernel. Hooks run once the whole write is applied.
   * @throws as `read`, with op 'config write'.
   */
  write(offset: number, data: Uint8Array): void {
    this.check('config write', offset, data.length);
    if (data.length === 0) return;
    const touchesBars = offset < P.PCI_ROM_ADDRESS + 4 && offset + data.length > P.PCI_BASE_ADDRESS_0;
    const oldCmd = this.command;
    const oldBars = touchesBars ? this.allBarAddresses() : undefined;
    this.events = {};
    let pos = offset;
    while (pos < offset + data.length) {
      const count = this.chunk(pos, offset + data.length - pos);
      this.writeChunk(pos, count, getLE(data, pos - offset, count));
      pos += count;
    }
    const ev = this.events;
    this.events = {};
    const newCmd = this.command;
    if (newCmd !== oldCmd) this.hooks.onCommandChange?.(oldCmd, newCmd);
    if (oldBars !== undefined) {
      const now = this.allBarAddresses();
      now.forEach((addr, i) => {
        if (addr !== undefined && addr !== oldBars[i]) this.hooks.onBarChange?.(i, addr);
      });
    }
    if (ev.power) this.hooks.onPowerStateChange?.(ev.power[0], ev.power[1]);
    if (ev.flr) this.hooks.onFunctionLevelReset?.();
  }

  private check(op: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new VfioError(Errno.EINVAL, op, `offset ${offset} length ${length}`);
    }
    // vfio_pci_config_rw loops `while (count)`: a zero-length access succeeds anywhere.
    if (length === 0) return;
    if (offset >= this.size || offset + length > this.size) {
      throw new VfioError(CONFIG_RANGE_ERRNO, op, `${length} bytes at ${offset} outside ${this.size}`);
    }
  }

  /**
   * vfio_config_do_rw: no more than the rest of this dword owned by the same capability
   * (vfio_pci_cap_remaining_dword), then the largest naturally aligned 4/2/1 that fits.
   */
  private chunk(pos: number, remaining: number): number {
    const area = this.areaOf[pos];
    let same = 1;
    while ((pos + same) % 4 !== 0 && this.areaOf[pos + same] === area) same++;
    const count = Math.min(remaining, same);
    if (count >= 4 && pos % 4 === 0) return 4;
    if (count >= 2 && pos % 2 === 0) return 2;
    return 1;
  }

  private readChunk(pos: number, count: number): number {
    const area = this.areaOf[pos]!;
    const offset = pos - area.start;
    switch (area.kind) {
      case 'unassigned':
        return this.hwRead(pos, count); // vfio_raw_config_read
      case 'msix':
        return this.directRead(pos, count, offset);
      case 'msi':
        this.msiReadFixup(area, offset, count);
        return this.defaultRead(area, pos, count, offset);
      default:
        // basic (vfio_basic_config_read: BARs are already fixed up, see barFixup), pm, exp.
        return this.defaultRead(area, pos, count, offset);
    }
  }

  private writeChunk(pos: number, count: number, val: number): void {
    const area = this.areaOf[pos]!;
    const offset = pos - area.start;
    switch (area.kind) {
      case 'unassigned':
        this.hwWrite(pos, count, val); // vfio_raw_config_write
        break;
      case 'msix':
        break; // no writefn: "if (!perm->writefn) return ret;" drops the write
      case 'basic':
        this.basicWrite(area, pos, count, offset, val);
        break;
      case 'pm':
        this.pmWrite(area, pos, count, offset, val);
        break;
      case 'msi':
        this.msiWrite(area, pos, count, offset, val);
        break;
      case 'exp':
        this.expWrite(area, pos, count, offset, val);
        break;
    }
  }

  // --- the device ------------------------------------------------------------------------------

  private hwRead(pos: number, count: number): number {
    return getLE(this.hw, pos, count);
  }

  /** A config write as the device takes it: write mask, then write-1-to-clear. */
  private hwWrite(pos: number, count: number, val: number): void {
    const { wmask, w1cmask } = this.layout;
    for (let i = 0; i < count; i++) {
      const b = (val >>> (8 * i)) & 0xff;
      const wm = wmask[pos + i]!;
      let cur = (this.hw[pos + i]! & ~wm) | (b & wm);
      cur &= ~(b & w1cmask[pos + i]!);
      this.hw[pos + i] = cur;
    }
  }

  // --- default, direct ---------------------------------------------------------------------------

  /** vfio_default_config_read */
  private defaultRead(area: Area, pos: number, count: number, offset: number): number {
    const val = getLE(this.vconfig, pos, count);
    const virt = getLE(area.perm!.virt, offset, count);
    if (virt === mask(count)) return val;
    const phys = this.hwRead(pos, count);
    return ((phys & ~virt) | (val & virt)) >>> 0;
  }

  /** vfio_default_config_write */
  private defaultWrite(area: Area, pos: number, count: number, offset: number, val: number): void {
    const perm = area.perm!;
    const write = getLE(perm.write, offset, count);
    if (!write) return;
    const virt = getLE(perm.virt, offset, count);
    const toVirt = write & virt;
    if (toVirt) {
      const cur = getLE(this.vconfig, pos, count);
      setLE(this.vconfig, pos, count, (cur & ~toVirt) | (val & toVirt));
    }
    const toHw = write & ~virt;
    if (toHw) {
      // Read-modify-write of the device register, as the kernel does: RW1C bits that read as 1
      // in the same chunk are written back as 1 and so cleared.
      const phys = this.hwRead(pos, count);
      this.hwWrite(pos, count, (phys & ~toHw) | (val & toHw));
    }
  }

  /** vfio_direct_config_read: the device's bytes, except the ID/next header comes from vconfig. */
  private directRead(pos: number, count: number, offset: number): number {
    let val = this.hwRead(pos, count);
    if (pos >= P.PCI_CFG_SPACE_SIZE) {
      if (offset < 4) val = getLE(this.vconfig, pos, count);
    } else if (pos >= P.PCI_STD_HEADER_SIZEOF) {
      if (offset === P.PCI_CAP_LIST_ID && count > 1) {
        const n = Math.min(P.PCI_CAP_FLAGS, count);
        val = ((val & ~mask(n)) | getLE(this.vconfig, pos, n)) >>> 0;
      } else if (offset === P.PCI_CAP_LIST_NEXT) {
        val = ((val & ~0xff) | this.vconfig[pos]!) >>> 0;
      }
    }
    return val;
  }

  // --- standard header -----------------------------------------------------------------------------

  /** vfio_basic_config_write */
  private basicWrite(area: Area, pos: number, count: number, offset: number, val: number): void {
    // The kernel restores the device's BARs here when it finds them lost (vfio_bar_restore after a
    // backdoor reset); the emulated device never loses its BARs.
    const newCmd = val & 0xffff;
    this.defaultWrite(area, pos, count, offset, val);
    if (offset === P.PCI_COMMAND) {
      // Save the memory/I/O enable bits in vconfig (__vfio_pci_memory_enabled reads them there).
      const m = P.PCI_COMMAND_MEMORY | P.PCI_COMMAND_IO;
      const cmd = getLE(this.vconfig, P.PCI_COMMAND, 2);
      setLE(this.vconfig, P.PCI_COMMAND, 2, (cmd & ~m) | (newCmd & m));
    }
    // "Emulate INTx disable": the virtual bit is what masks INTx (vfio_pci_intx_mask/unmask);
    // the core learns of it through onCommandChange / intxDisabled.
    if (offset >= P.PCI_BASE_ADDRESS_0 && offset < P.PCI_BASE_ADDRESS_5 + 4) this.barFixup();
    else if (offset >= P.PCI_ROM_ADDRESS && offset < P.PCI_ROM_ADDRESS + 4) this.barFixup();
  }

  /**
   * vfio_bar_fixup: keep only the address bits a BAR of this size decodes and put the type bits
   * back, so writing all-ones reads back the size mask. The kernel runs it lazily before a BAR
   * read (bardirty); it is idempotent and per-BAR, so running it after each BAR write is the same.
   */
  private barFixup(): void {
    const v = this.vconfig;
    const byIndex = new Map(this.layout.bars.map((b) => [b.index, b]));
    for (let i = 0; i < P.PCI_STD_NUM_BARS; i++) {
      const pos = P.PCI_BASE_ADDRESS_0 + 4 * i;
      const bar = byIndex.get(i);
      if (bar === undefined) {
        setLE(v, pos, 4, 0); // "Unmapped by host = unimplemented to user"
        continue;
      }
      const m = ~(bar.size - 1n) & 0xffff_ffff_ffff_ffffn;
      setLE(v, pos, 4, ((getLE(v, pos, 4) & Number(m & 0xffff_ffffn)) | bar.flags) >>> 0);
      if (bar.kind === 'mem64') {
        setLE(v, pos + 4, 4, (getLE(v, pos + 4, 4) & Number(m >> 32n)) >>> 0);
        i++;
      }
    }
    const rom = this.layout.rom;
    if (rom !== undefined) {
      const m = (Number(~(rom.size - 1n) & 0xffff_ffffn) | P.PCI_ROM_ADDRESS_ENABLE) >>> 0;
      setLE(v, P.PCI_ROM_ADDRESS, 4, (getLE(v, P.PCI_ROM_ADDRESS, 4) & m) >>> 0);
    } else {
      setLE(v, P.PCI_ROM_ADDRESS, 4, 0);
    }
  }

  // --- power management --------------------------------------------------------------------------

  /** vfio_pm_config_write */
  private pmWrite(area: Area, pos: number, count: number, offset: number, val: number): void {
    this.defaultWrite(area, pos, count, offset, val);
    if (offset === P.PCI_PM_CTRL) this.setPowerState(val & P.PCI_PM_CTRL_STATE_MASK);
  }

  /**
   * vfio_lock_and_set_power_state -> pci_set_power_state: D0 from anywhere; D1/D2 only if
   * supported and not from a deeper state; D3hot from D0..D2. Refused transitions leave the
   * state as it was (vfio_pm_config_write ignores the error).
   */
  private setPowerState(state: number): void {
    const old = this.power;
    if (state === old) return;
    if (state !== P.PCI_D0) {
      const pmc = getLE(this.hw, this.capStart.get(P.PCI_CAP_ID_PM)! + P.PCI_PM_PMC, 2);
      if (old > state) return; // pci_set_low_power_state: "can only go deeper"
      if (state === P.PCI_D1 && !(pmc & P.PCI_PM_CAP_D1)) return;
      if (state === P.PCI_D2 && !(pmc & P.PCI_PM_CAP_D2)) return;
    }
    const ctrl = this.capStart.get(P.PCI_CAP_ID_PM)! + P.PCI_PM_CTRL;
    const pmcsr = getLE(this.hw, ctrl, 2);
    setLE(this.hw, ctrl, 2, (pmcsr & ~P.PCI_PM_CTRL_STATE_MASK) | state);
    this.power = state;
    this.events.power = [this.events.power?.[0] ?? old, state];
  }

  // --- MSI -----------------------------------------------------------------------------------

  /** vfio_msi_config_read: Multiple Message Capable always shows msi_qmax. */
  private msiReadFixup(area: Area, offset: number, count: number): void {
    if (offset <= P.PCI_MSI_FLAGS && offset + count >= P.PCI_MSI_FLAGS) {
      const at = area.start + P.PCI_MSI_FLAGS;
      const flags = getLE(this.vconfig, at, 2);
      setLE(this.vconfig, at, 2, (flags & ~P.PCI_MSI_FLAGS_QMASK) | (this.msiQmax << 1));
    }
  }

  /** vfio_msi_config_write */
  private msiWrite(area: Area, pos: number, count: number, offset: number, val: number): void {
    this.defaultWrite(area, pos, count, offset, val);
    if (offset <= P.PCI_MSI_FLAGS && offset + count >= P.PCI_MSI_FLAGS) {
      const at = area.start + P.PCI_MSI_FLAGS;
      let flags = getLE(this.vconfig, at, 2);
      // "MSI is enabled via ioctl"
      if (!this.msiActive) flags &= ~P.PCI_MSI_FLAGS_ENABLE;
      // "Check queue size": Multiple Message Enable is clamped to msi_qmax.
      if ((flags & P.PCI_MSI_FLAGS_QSIZE) >> 4 > this.msiQmax) {
        flags = (flags & ~P.PCI_MSI_FLAGS_QSIZE) | (this.msiQmax << 4);
      }
      setLE(this.vconfig, at, 2, flags);
      this.hwWrite(at, 2, flags); // "Write back to virt and to hardware"
    }
  }

  // --- PCI Express ------------------------------------------------------------------------------

  /** vfio_exp_config_write */
  private expWrite(area: Area, pos: number, count: number, offset: number, val: number): void {
    this.defaultWrite(area, pos, count, offset, val);
    const at = area.start + P.PCI_EXP_DEVCTL;
    const ctrl = getLE(this.vconfig, at, 2);
    if (ctrl & P.PCI_EXP_DEVCTL_BCR_FLR) {
      // The bit always reads 0; the reset happens only if the device has FLR.
      setLE(this.vconfig, at, 2, ctrl & ~P.PCI_EXP_DEVCTL_BCR_FLR);
      const devcap = getLE(this.hw, area.start + P.PCI_EXP_DEVCAP, 4);
      if (devcap & P.PCI_EXP_DEVCAP_FLR) this.events.flr = true;
    }
    // A changed Max_Read_Request_Size goes to the device through pcie_set_readrq, floored at
    // the device's MPS; the user keeps reading the virtual value, so nothing of it is visible.
  }

  // ---------------------------------------------------------------------------------------------
  // State the device core reads
  // ---------------------------------------------------------------------------------------------

  /** The command register as a user reads it. */
  get command(): number {
    return this.readChunk(P.PCI_COMMAND, 2);
  }

  /**
   * __vfio_pci_memory_enabled: the memory enable bit vfio last saw written (kept in vconfig)
   * and the function not in D3hot. When false, BAR pread/pwrite fail with EIO (rdwr.ts: RegionAccess)
   * and the ROM with ENOMEM; the kernel's mmaps fault, the model's keep their memory.
   */
  get memoryEnabled(): boolean {
    return this.power < P.PCI_D3hot && (getLE(this.vconfig, P.PCI_COMMAND, 2) & P.PCI_COMMAND_MEMORY) !== 0;
  }

  /** I/O enable as the user reads it. (vfio_pci_core_do_io_rw gates only memory BARs on the command register.) */
  get ioEnabled(): boolean {
    return (this.command & P.PCI_COMMAND_IO) !== 0;
  }

  get busMasterEnabled(): boolean {
    return (this.command & P.PCI_COMMAND_MASTER) !== 0;
  }

  /** The virtual INTx disable bit: vfio masks INTx while it is set. */
  get intxDisabled(): boolean {
    return (getLE(this.vconfig, P.PCI_COMMAND, 2) & P.PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** Current power state, PCI_D0..PCI_D3hot. */
  get powerState(): number {
    return this.power;
  }

  /**
   * Address a BAR holds as the user reads it (type bits removed); `ROM_BAR_INDEX` (6) for the
   * expansion ROM (enable bit removed). `undefined` for an unimplemented BAR or the upper half of
   * a 64-bit one.
   * @throws VfioError(EINVAL) for an index outside 0..6.
   */
  barAddress(bar: number): bigint | undefined {
    if (!Number.isInteger(bar) || bar < 0 || bar > ROM_BAR_INDEX) {
      throw new VfioError(Errno.EINVAL, 'barAddress', `BAR index ${bar}`);
    }
    const v = this.vconfig;
    if (bar === ROM_BAR_INDEX) {
      if (this.layout.rom === undefined) return undefined;
      return BigInt((getLE(v, P.PCI_ROM_ADDRESS, 4) & P.PCI_ROM_ADDRESS_MASK) >>> 0);
    }
    const layout = this.layout.bars.find((b) => b.index === bar);
    if (layout === undefined) return undefined;
    const pos = P.PCI_BASE_ADDRESS_0 + 4 * bar;
    const lo = getLE(v, pos, 4);
    if (layout.kind === 'io') return BigInt((lo & P.PCI_BASE_ADDRESS_IO_MASK) >>> 0);
    let addr = BigInt((lo & P.PCI_BASE_ADDRESS_MEM_MASK) >>> 0);
    if (layout.kind === 'mem64') addr |= BigInt(getLE(v, pos + 4, 4)) << 32n;
    return addr;
  }

  /** Is the expansion ROM's enable bit set in the user's view? */
  get romEnabled(): boolean {
    return (getLE(this.vconfig, P.PCI_ROM_ADDRESS, 4) & P.PCI_ROM_ADDRESS_ENABLE) !== 0;
  }

  private allBarAddresses(): (bigint | undefined)[] {
    const out: (bigint | undefined)[] = [];
    for (let i = 0; i <= ROM_BAR_INDEX; i++) out.push(this.barAddress(i));
    return out;
  }

  /**
   * Walks the capability chain as a user would (status CAP_LIST, pointer at 0x34, next
   * pointers with the low two bits ignored), bounded by MAX_CAP_WALK.
   */
  capabilities(): { id: number; offset: number }[] {
    const out: { id: number; offset: number }[] = [];
    if (!(getLE(this.read(P.PCI_STATUS, 2), 0, 2) & P.PCI_STATUS_CAP_LIST)) return out;
    let pos = this.read(P.PCI_CAPABILITY_LIST, 1)[0]! & ~3;
    for (let n = 0; pos >= P.PCI_STD_HEADER_SIZEOF && n < MAX_CAP_WALK; n++) {
      const [id, next] = this.read(pos, 2);
      out.push({ id: id!, offset: pos });
      pos = next! & ~3;
    }
    return out;
  }

  /** Offset of the first capability with this ID in the user's chain, or undefined. */
  capabilityOffset(capId: number): number | undefined {
    return this.capabilities().find((c) => c.id === capId)?.offset;
  }

  /** MSI registers; undefined when the device has no MSI capability. */
  msiState(): MsiState | undefined {
    const at = this.capStart.get(P.PCI_CAP_ID_MSI);
    if (at === undefined) return undefined;
    const msi = this.desc.msi!;
    const v = this.vconfig;
    const flags = getLE(v, at + P.PCI_MSI_FLAGS, 2);
    let addr = BigInt(getLE(v, at + P.PCI_MSI_ADDRESS_LO, 4));
    if (msi.addr64) addr |= BigInt(getLE(v, at + P.PCI_MSI_ADDRESS_HI, 4)) << 32n;
    const data = getLE(v, at + (msi.addr64 ? P.PCI_MSI_DATA_64 : P.PCI_MSI_DATA_32), 2);
    const maskAt = at + (msi.addr64 ? P.PCI_MSI_MASK_64 : P.PCI_MSI_MASK_32);
    return {
      enabled: (flags & P.PCI_MSI_FLAGS_ENABLE) !== 0,
      active: this.msiActive,
      addr,
      data,
      multipleMessageCapable: this.msiQmax,
      multipleMessageEnable: (flags & P.PCI_MSI_FLAGS_QSIZE) >> 4,
      addr64: msi.addr64,
      perVectorMask: msi.perVectorMask,
      maskBits: msi.perVectorMask ? getLE(this.hw, maskAt, 4) : 0,
      pendingBits: msi.perVectorMask ? getLE(this.hw, maskAt + 4, 4) : 0,
    };
  }

  /** MSI-X Message Control and table/PBA location; undefined without an MSI-X capability. */
  msixState(): MsixState | undefined {
    const at = this.capStart.get(P.PCI_CAP_ID_MSIX);
    if (at === undefined) return undefined;
    const flags = getLE(this.hw, at + P.PCI_MSIX_FLAGS, 2);
    const table = getLE(this.hw, at + P.PCI_MSIX_TABLE, 4);
    const pba = getLE(this.hw, at + P.PCI_MSIX_PBA, 4);
    return {
      enabled: (flags & P.PCI_MSIX_FLAGS_ENABLE) !== 0,
      functionMask: (flags & P.PCI_MSIX_FLAGS_MASKALL) !== 0,
      tableSize: (flags & P.PCI_MSIX_FLAGS_QSIZE) + 1,
      tableBar: table & P.PCI_MSIX_TABLE_BIR,
      tableOffset: (table & P.PCI_MSIX_TABLE_OFFSET) >>> 0,
      pbaBar: pba & P.PCI_MSIX_PBA_BIR,
      pbaOffset: (pba & P.PCI_MSIX_PBA_OFFSET) >>> 0,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // State the device core sets (the paths the kernel takes outside config writes)
  // ---------------------------------------------------------------------------------------------

  /**
   * SET_IRQS turned MSI on with `vectors` vectors, or off (vfio_pci_intrs.c: vfio_msi_enable /
   * vfio_msi_disable). On: irq_type becomes MSI (so a config write may now set MSI Enable),
   * msi_qmax = log2(vectors) rounded up, and pci_alloc_irq_vectors programs the device's own
   * MSI Enable and Multiple Message Enable. The user's view of MSI Enable is not changed: vconfig
   * is only written by config writes. Off: irq_type leaves MSI; msi_qmax and vconfig stay.
   * @throws VfioError(EINVAL) without an MSI capability or for vectors outside 1..capable.
   */
  setMsiEnabled(enabled: boolean, vectors = 1): void {
    const at = this.capStart.get(P.PCI_CAP_ID_MSI);
    if (at === undefined) throw new VfioError(Errno.EINVAL, 'setMsiEnabled', 'no MSI capability');
    const flagsAt = at + P.PCI_MSI_FLAGS;
    const flags = getLE(this.hw, flagsAt, 2) & ~(P.PCI_MSI_FLAGS_ENABLE | P.PCI_MSI_FLAGS_QSIZE);
    if (!enabled) {
      this.msiActive = false;
      setLE(this.hw, flagsAt, 2, flags);
      return;
    }
    const capable = this.desc.msi!.vectors;
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > capable) {
      throw new VfioError(Errno.EINVAL, 'setMsiEnabled', `${vectors} vectors; device has ${capable}`);
    }
    this.msiActive = true;
    this.msiQmax = qmaxFor(vectors);
    setLE(this.hw, flagsAt, 2, flags | (this.msiQmax << 4) | P.PCI_MSI_FLAGS_ENABLE);
  }

  /**
   * SET_IRQS turned MSI-X on or off. The capability is read straight from the device
   * (vfio_direct_config_read), so the user sees MSI-X Enable as the kernel's
   * pci_alloc_irq_vectors / pci_free_irq_vectors leave it: enabled with Function Mask clear,
   * or disabled.
   * @throws VfioError(EINVAL) without an MSI-X capability.
   */
  setMsixEnabled(enabled: boolean): void {
    const at = this.capStart.get(P.PCI_CAP_ID_MSIX);
    if (at === undefined) throw new VfioError(Errno.EINVAL, 'setMsixEnabled', 'no MSI-X capability');
    const flagsAt = at + P.PCI_MSIX_FLAGS;
    let flags = getLE(this.hw, flagsAt, 2) & ~(P.PCI_MSIX_FLAGS_ENABLE | P.PCI_MSIX_FLAGS_MASKALL);
    if (enabled) flags |= P.PCI_MSIX_FLAGS_ENABLE;
    setLE(this.hw, flagsAt, 2, flags);
  }

  /** The device's MSI Pending Bits (read-only to the user); ignored without per-vector masking. */
  setMsiPendingBits(bits: number): void {
    const at = this.capStart.get(P.PCI_CAP_ID_MSI);
    const msi = this.desc.msi;
    if (at === undefined || !msi?.perVectorMask) return;
    const usable = msi.vectors === 32 ? 0xffffffff : (1 << msi.vectors) - 1;
    setLE(this.hw, at + (msi.addr64 ? P.PCI_MSI_PENDING_64 : P.PCI_MSI_PENDING_32), 4, (bits & usable) >>> 0);
  }

  /** The device's Interrupt Status bit (PCI_STATUS_INTERRUPT): set while it asserts INTx. */
  setInterruptStatus(asserted: boolean): void {
    const s = getLE(this.hw, P.PCI_STATUS, 2);
    setLE(this.hw, P.PCI_STATUS, 2, asserted ? s | P.PCI_STATUS_INTERRUPT : s & ~P.PCI_STATUS_INTERRUPT);
  }
}
