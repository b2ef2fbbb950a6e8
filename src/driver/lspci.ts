/**
 * Decoded config space (src/driver/pci-config.ts) as the text `lspci -nn -vv` prints for it
 * (pciutils 3.9: lspci.c show_verbose, show_bases, show_rom; ls-caps.c; ls-ecaps.c). Every line
 * written here is the line lspci writes for the same bytes, except that BAR and ROM sizes come
 * from VFIO's region info rather than sysfs; test/cli/lspci-compare.test.ts holds us to that
 * against the installed lspci. Decoded: PM, MSI, MSI-X, vendor-specific (virtio's too), and PCI
 * Express up to its link registers (not the version 2 ones lspci adds, nor slot and root
 * registers); other capabilities are named with lspci's `<?>`; extended capabilities print the
 * line lspci starts them with (name, DSN's serial, vendor-specific IDs), not their details.
 */
import * as P from '../abi/pci.js';
import { flag, hex, sizeTag } from './format.js';
import { field, type PciCapability, type PciConfig, type PciExtCapability } from './pci-config.js';
import { identityText, type PciIdDatabase } from './pci-ids.js';

/** What config space cannot say: the sizes of the BARs and the ROM (VFIO region sizes). */
export interface RegionSizes {
  readonly bars: readonly bigint[];
  readonly rom: bigint;
}

/**
 * What lspci -vv adds from sysfs for a device the kernel knows (a PCI address, not a vfio-user
 * socket): the IRQ the kernel routed its pin to, its IOMMU group, the driver bound to it.
 */
export interface KernelFacts {
  readonly irq?: number;
  readonly iommuGroup?: string;
  readonly driver?: string;
}

/** The `lspci -nn -vv` lines for one function; `slot` stands where lspci prints the address. */
export function lspciLines(
  c: PciConfig,
  slot: string,
  sizes: RegionSizes,
  db: PciIdDatabase | undefined,
  kernel: KernelFacts = {},
): string[] {
  const id = identityText(c, db);
  const out = [
    `${slot} ${id.class}: ${id.device}${c.revision ? ` (rev ${hex(c.revision, 2)})` : ''}${id.progIf}`,
  ];
  if (c.headerType === P.PCI_HEADER_TYPE_NORMAL && c.subsystemVendorId && c.subsystemVendorId !== 0xffff)
    out.push(`\tSubsystem: ${id.subsystem}`);
  out.push(controlLine(c.command), statusLine(c.status));
  if (c.command & P.PCI_COMMAND_MASTER) {
    const timing = [c.minGnt ? `${c.minGnt * 250}ns min` : '', c.maxLat ? `${c.maxLat * 250}ns max` : '']
      .filter(Boolean)
      .join(', ');
    out.push(
      `\tLatency: ${c.latencyTimer}${timing ? ` (${timing})` : ''}${c.cacheLineSize ? `, Cache Line Size: ${c.cacheLineSize * 4} bytes` : ''}`,
    );
  }
  // lspci prints the kernel's IRQ; without a kernel, the Interrupt Line register (as lspci -F).
  const irq = kernel.irq ?? c.interruptLine;
  if (c.interruptPin || irq)
    out.push(
      `\tInterrupt: pin ${c.interruptPin ? String.fromCharCode(64 + c.interruptPin) : '?'} routed to IRQ ${irq}`,
    );
  if (kernel.iommuGroup !== undefined) out.push(`\tIOMMU group: ${kernel.iommuGroup}`);
  if (c.bist & P.PCI_BIST_CAPABLE)
    out.push(
      c.bist & P.PCI_BIST_START
        ? '\tBIST is running'
        : `\tBIST result: ${hex(c.bist & P.PCI_BIST_CODE_MASK, 2)}`,
    );
  if (c.headerType !== P.PCI_HEADER_TYPE_NORMAL) {
    out.push(`\t!!! header type ${hex(c.headerType, 2)}: only type 0 (an endpoint) is decoded`);
    return out;
  }
  for (const b of c.bars) {
    const size = sizes.bars[b.index] ?? 0n;
    if (!b.address && !size && !b.io && b.memoryType === '32-bit' && !b.prefetchable) continue;
    if (b.io) {
      // lspci.c show_bases: I/O ports as PCIADDR_PORT_FMT (%04x), memory as PCIADDR_T_FMT (%08x).
      const at = b.address || c.command & P.PCI_COMMAND_IO ? hex(b.address, 4) : '<unassigned>';
      const off = c.command & P.PCI_COMMAND_IO ? '' : ' [disabled]';
      out.push(`\tRegion ${b.index}: I/O ports at ${at}${off}${sizeTag(size)}`);
    } else {
      const at = b.address ? hex(b.address, 8) : '<unassigned>';
      const off = c.command & P.PCI_COMMAND_MEMORY ? '' : ' [disabled]';
      out.push(
        `\tRegion ${b.index}: Memory at ${at} (${b.memoryType}, ${b.prefetchable ? '' : 'non-'}prefetchable)${off}${sizeTag(size)}`,
      );
    }
  }
  if (c.rom && (c.rom.address || c.rom.enabled || sizes.rom)) {
    const at = c.rom.address ? hex(c.rom.address, 8) : '<unassigned>'; // show_rom: PCIADDR_T_FMT
    const off = !c.rom.enabled ? ' [disabled]' : c.command & P.PCI_COMMAND_MEMORY ? '' : ' [disabled by cmd]';
    out.push(`\tExpansion ROM at ${at}${off}${sizeTag(sizes.rom)}`);
  }
  for (const cap of c.capabilities) out.push(...capabilityLines(c, cap));
  for (const cap of c.extendedCapabilities) out.push(...extCapabilityLines(cap));
  if (kernel.driver !== undefined) out.push(`\tKernel driver in use: ${kernel.driver}`);
  return out;
}

function controlLine(cmd: number): string {
  const bits: [string, number][] = [
    ['I/O', P.PCI_COMMAND_IO],
    ['Mem', P.PCI_COMMAND_MEMORY],
    ['BusMaster', P.PCI_COMMAND_MASTER],
    ['SpecCycle', P.PCI_COMMAND_SPECIAL],
    ['MemWINV', P.PCI_COMMAND_INVALIDATE],
    ['VGASnoop', P.PCI_COMMAND_VGA_PALETTE],
    ['ParErr', P.PCI_COMMAND_PARITY],
    ['Stepping', P.PCI_COMMAND_WAIT],
    ['SERR', P.PCI_COMMAND_SERR],
    ['FastB2B', P.PCI_COMMAND_FAST_BACK],
    ['DisINTx', P.PCI_COMMAND_INTX_DISABLE],
  ];
  return `\tControl: ${bits.map(([n, b]) => flag(n, cmd & b)).join(' ')}`;
}

const DEVSEL: Record<number, string> = {
  [P.PCI_STATUS_DEVSEL_FAST]: 'fast',
  [P.PCI_STATUS_DEVSEL_MEDIUM]: 'medium',
  [P.PCI_STATUS_DEVSEL_SLOW]: 'slow',
};

function statusLine(s: number): string {
  const f = (n: string, b: number) => flag(n, s & b);
  return `\tStatus: ${[
    f('Cap', P.PCI_STATUS_CAP_LIST),
    f('66MHz', P.PCI_STATUS_66MHZ),
    f('UDF', P.PCI_STATUS_UDF),
    f('FastB2B', P.PCI_STATUS_FAST_BACK),
    f('ParErr', P.PCI_STATUS_PARITY),
    `DEVSEL=${DEVSEL[s & P.PCI_STATUS_DEVSEL_MASK] ?? '??'}`,
    f('>TAbort', P.PCI_STATUS_SIG_TARGET_ABORT),
    f('<TAbort', P.PCI_STATUS_REC_TARGET_ABORT),
    f('<MAbort', P.PCI_STATUS_REC_MASTER_ABORT),
    f('>SERR', P.PCI_STATUS_SIG_SYSTEM_ERROR),
    f('<PERR', P.PCI_STATUS_DETECTED_PARITY),
    f('INTx', P.PCI_STATUS_INTERRUPT),
  ].join(' ')}`;
}

/**
 * Capabilities we name without decoding (pci_regs.h PCI_CAP_ID_*), in the line lspci prints for
 * them (ls-caps.c show_caps): lspci's own mark `<?>` where it decodes no more either, or where it
 * decodes more and we do not; Null and Hot-plug carry nothing more, and lspci prints no mark.
 * Rare on a device VFIO hands out.
 */
const UNDECODED_CAPABILITIES: Record<number, string> = {
  0: 'Null',
  [P.PCI_CAP_ID_AGP]: 'AGP <?>',
  [P.PCI_CAP_ID_VPD]: 'Vital Product Data <?>',
  [P.PCI_CAP_ID_SLOTID]: 'Slot ID <?>',
  [P.PCI_CAP_ID_CHSWP]: 'CompactPCI hot-swap <?>',
  [P.PCI_CAP_ID_PCIX]: 'PCI-X <?>',
  [P.PCI_CAP_ID_HT]: 'HyperTransport <?>',
  [P.PCI_CAP_ID_DBG]: 'Debug port <?>',
  [P.PCI_CAP_ID_CCRC]: 'CompactPCI central resource control <?>',
  [P.PCI_CAP_ID_SHPC]: 'Hot-plug capable',
  [P.PCI_CAP_ID_SSVID]: 'Subsystem <?>',
  [P.PCI_CAP_ID_AGP3]: 'AGP3 <?>',
  [P.PCI_CAP_ID_SECDEV]: 'Secure device <?>',
  [P.PCI_CAP_ID_SATA]: 'SATA HBA <?>',
  [P.PCI_CAP_ID_AF]: 'PCI Advanced Features <?>',
  [P.PCI_CAP_ID_EA]: 'Enhanced Allocation (EA) <?>',
};

/** PM 1.2 §3.2.3: Aux_Current, mA per encoding. */
const PM_AUX_CURRENT_MA = [0, 55, 100, 160, 220, 270, 320, 375];

function capabilityLines(c: PciConfig, cap: PciCapability): string[] {
  const head = `\tCapabilities: [${hex(cap.offset, 2)}] `;
  switch (cap.kind) {
    case 'broken':
      return [`${head}<chain ${cap.why === 'unreadable' ? 'outside the config space read' : cap.why}>`];
    case 'pm': {
      const p = cap.pmc;
      const t = cap.pmcsr;
      const lines = [
        `${head}Power Management version ${p & P.PCI_PM_CAP_VER_MASK}`,
        `\t\tFlags: ${flag('PMEClk', p & P.PCI_PM_CAP_PME_CLOCK)} ${flag('DSI', p & P.PCI_PM_CAP_DSI)} ${flag('D1', p & P.PCI_PM_CAP_D1)} ${flag('D2', p & P.PCI_PM_CAP_D2)} AuxCurrent=${PM_AUX_CURRENT_MA[field(p, P.PCI_PM_CAP_AUX_POWER)]}mA PME(${flag('D0', p & P.PCI_PM_CAP_PME_D0)},${flag('D1', p & P.PCI_PM_CAP_PME_D1)},${flag('D2', p & P.PCI_PM_CAP_PME_D2)},${flag('D3hot', p & P.PCI_PM_CAP_PME_D3hot)},${flag('D3cold', p & P.PCI_PM_CAP_PME_D3cold)})`,
        `\t\tStatus: D${t & P.PCI_PM_CTRL_STATE_MASK} ${flag('NoSoftRst', t & P.PCI_PM_CTRL_NO_SOFT_RESET)} ${flag('PME-Enable', t & P.PCI_PM_CTRL_PME_ENABLE)} DSel=${field(t, P.PCI_PM_CTRL_DATA_SEL_MASK)} DScale=${field(t, P.PCI_PM_CTRL_DATA_SCALE_MASK)} ${flag('PME', t & P.PCI_PM_CTRL_PME_STATUS)}`,
      ];
      if (cap.bridge)
        lines.push(
          `\t\tBridge: ${flag('PM', cap.bridge & P.PCI_PM_BPCC_ENABLE)} ${flag('B3', ~cap.bridge & P.PCI_PM_PPB_B2_B3)}`,
        );
      return lines;
    }
    case 'msi': {
      const f = cap.control;
      const is64 = !!(f & P.PCI_MSI_FLAGS_64BIT);
      const lines = [
        `${head}MSI: ${flag('Enable', f & P.PCI_MSI_FLAGS_ENABLE)} Count=${1 << field(f, P.PCI_MSI_FLAGS_QSIZE)}/${1 << field(f, P.PCI_MSI_FLAGS_QMASK)} ${flag('Maskable', f & P.PCI_MSI_FLAGS_MASKBIT)} ${flag('64bit', is64)}`,
        `\t\tAddress: ${is64 ? hex(cap.address, 16) : hex(cap.address, 8)}  Data: ${hex(cap.data, 4)}`,
      ];
      if (cap.mask !== undefined)
        lines.push(`\t\tMasking: ${hex(cap.mask, 8)}  Pending: ${hex(cap.pending ?? 0, 8)}`);
      return lines;
    }
    case 'msix':
      return [
        `${head}MSI-X: ${flag('Enable', cap.control & P.PCI_MSIX_FLAGS_ENABLE)} Count=${(cap.control & P.PCI_MSIX_FLAGS_QSIZE) + 1} ${flag('Masked', cap.control & P.PCI_MSIX_FLAGS_MASKALL)}`,
        `\t\tVector table: BAR=${cap.tableBar} offset=${hex(cap.tableOffset, 8)}`,
        `\t\tPBA: BAR=${cap.pbaBar} offset=${hex(cap.pbaOffset, 8)}`,
      ];
    case 'express':
      return expressLines(head, cap);
    case 'vendor':
      return vendorLines(head, c, cap.bytes);
    case 'other':
      return [
        `${head}${UNDECODED_CAPABILITIES[cap.id] ?? `Capability ID 0x${hex(cap.id)} [${hex(cap.flags, 4)}]`}`,
      ];
  }
}

/** virtio 1.x's vendor capability (virtio spec §4.1.4), which lspci decodes for 1af4:1000-107f. */
function vendorLines(head: string, c: PciConfig, b: Uint8Array): string[] {
  const length = b[2] ?? 0;
  const virtio = c.vendorId === 0x1af4 && c.deviceId >= 0x1000 && c.deviceId <= 0x107f;
  if (!virtio || length < 16 || b.length < 16)
    return [`${head}Vendor Specific Information: Len=${hex(length, 2)} <?>`];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = ['', 'CommonCfg', 'Notify', 'ISR', 'DeviceCfg'][b[3]!] || '<unknown>';
  const mult =
    b[3] === 2 && length >= 20 && b.length >= 20 ? ` multiplier=${hex(v.getUint32(16, true), 8)}` : '';
  return [
    `${head}Vendor Specific Information: VirtIO: ${type}`,
    `\t\tBAR=${b[4]} offset=${hex(v.getUint32(8, true), 8)} size=${hex(v.getUint32(12, true), 8)}${mult}`,
  ];
}

const EXPRESS_TYPES: Record<number, string> = {
  [P.PCI_EXP_TYPE_ENDPOINT]: 'Endpoint',
  [P.PCI_EXP_TYPE_LEG_END]: 'Legacy Endpoint',
  [P.PCI_EXP_TYPE_ROOT_PORT]: 'Root Port',
  [P.PCI_EXP_TYPE_UPSTREAM]: 'Upstream Port',
  [P.PCI_EXP_TYPE_DOWNSTREAM]: 'Downstream Port',
  [P.PCI_EXP_TYPE_PCI_BRIDGE]: 'PCI-Express to PCI/PCI-X Bridge',
  [P.PCI_EXP_TYPE_PCIE_BRIDGE]: 'PCI/PCI-X to PCI-Express Bridge',
  [P.PCI_EXP_TYPE_RC_END]: 'Root Complex Integrated Endpoint',
  [P.PCI_EXP_TYPE_RC_EC]: 'Root Complex Event Collector',
};
const L0S_LATENCY = ['<64ns', '<128ns', '<256ns', '<512ns', '<1us', '<2us', '<4us', 'unlimited'];
const L1_LATENCY = ['<1us', '<2us', '<4us', '<8us', '<16us', '<32us', '<64us', 'unlimited'];
const LINK_SPEEDS = ['unknown', '2.5GT/s', '5GT/s', '8GT/s', '16GT/s', '32GT/s', '64GT/s'];
const ASPM_SUPPORT = ['not supported', 'L0s', 'L1', 'L0s L1'];
const ASPM_ENABLED = ['Disabled', 'L0s Enabled', 'L1 Enabled', 'L0s L1 Enabled'];

/** PCIe §7.5.3.3 Captured Slot Power Limit: value × scale (1, 0.1, 0.01, 0.001 W); C's %g. */
function powerLimit(value: number, scale: number): string {
  if (scale === 0 && value === 0xff) return '>600W';
  const v = scale === 0 && value >= 0xf0 && value <= 0xfe ? 250 + 25 * (value - 0xf0) : value;
  return `${Number((v * [1, 0.1, 0.01, 0.001][scale]!).toPrecision(6))}W`;
}

/** The device/port type's name as lspci prints it. */
export function expressTypeName(flags: number): string {
  const type = field(flags, P.PCI_EXP_FLAGS_TYPE);
  return EXPRESS_TYPES[type] ?? `Unknown type ${type}`;
}

/** A Link Speed field's rate ("2.5GT/s"). */
export function linkSpeed(code: number): string {
  return LINK_SPEEDS[code] ?? 'unknown';
}

function expressLines(head: string, cap: Extract<PciCapability, { kind: 'express' }>): string[] {
  const f = cap.flags;
  const type = field(f, P.PCI_EXP_FLAGS_TYPE);
  const slot = f & P.PCI_EXP_FLAGS_SLOT;
  const slotted = [P.PCI_EXP_TYPE_ROOT_PORT, P.PCI_EXP_TYPE_DOWNSTREAM, P.PCI_EXP_TYPE_PCIE_BRIDGE].includes(
    type,
  );
  const name = expressTypeName(f);
  const endpoint = type === P.PCI_EXP_TYPE_ENDPOINT || type === P.PCI_EXP_TYPE_LEG_END;
  const t = cap.devcap;
  const w = cap.devctl;
  const s = cap.devsta;
  const flr = endpoint || type === P.PCI_EXP_TYPE_RC_END;
  const lines = [
    `${head}Express (v${f & P.PCI_EXP_FLAGS_VERS}) ${name}${slotted ? ` (${flag('Slot', slot)})` : ''}, MSI ${hex(field(f, P.PCI_EXP_FLAGS_IRQ), 2)}`,
    `\t\tDevCap:\tMaxPayload ${128 << (t & P.PCI_EXP_DEVCAP_PAYLOAD)} bytes, PhantFunc ${(1 << field(t, P.PCI_EXP_DEVCAP_PHANTOM)) - 1}${endpoint ? `, Latency L0s ${L0S_LATENCY[field(t, P.PCI_EXP_DEVCAP_L0S)]}, L1 ${L1_LATENCY[field(t, P.PCI_EXP_DEVCAP_L1)]}` : ''}`,
    `\t\t\t${[
      flag('ExtTag', t & P.PCI_EXP_DEVCAP_EXT_TAG),
      ...(endpoint || type === P.PCI_EXP_TYPE_UPSTREAM || type === P.PCI_EXP_TYPE_PCI_BRIDGE
        ? [
            flag('AttnBtn', t & P.PCI_EXP_DEVCAP_ATN_BUT),
            flag('AttnInd', t & P.PCI_EXP_DEVCAP_ATN_IND),
            flag('PwrInd', t & P.PCI_EXP_DEVCAP_PWR_IND),
          ]
        : []),
      flag('RBE', t & P.PCI_EXP_DEVCAP_RBER),
      ...(flr ? [flag('FLReset', t & P.PCI_EXP_DEVCAP_FLR)] : []),
      ...(type === P.PCI_EXP_TYPE_ENDPOINT ||
      type === P.PCI_EXP_TYPE_UPSTREAM ||
      type === P.PCI_EXP_TYPE_PCI_BRIDGE
        ? [
            `SlotPowerLimit ${powerLimit(field(t, P.PCI_EXP_DEVCAP_PWR_VAL), field(t, P.PCI_EXP_DEVCAP_PWR_SCL))}`,
          ]
        : []),
    ].join(' ')}`,
    `\t\tDevCtl:\t${flag('CorrErr', w & P.PCI_EXP_DEVCTL_CERE)} ${flag('NonFatalErr', w & P.PCI_EXP_DEVCTL_NFERE)} ${flag('FatalErr', w & P.PCI_EXP_DEVCTL_FERE)} ${flag('UnsupReq', w & P.PCI_EXP_DEVCTL_URRE)}`,
    `\t\t\t${[
      flag('RlxdOrd', w & P.PCI_EXP_DEVCTL_RELAX_EN),
      flag('ExtTag', w & P.PCI_EXP_DEVCTL_EXT_TAG),
      flag('PhantFunc', w & P.PCI_EXP_DEVCTL_PHANTOM),
      flag('AuxPwr', w & P.PCI_EXP_DEVCTL_AUX_PME),
      flag('NoSnoop', w & P.PCI_EXP_DEVCTL_NOSNOOP_EN),
      ...(type === P.PCI_EXP_TYPE_PCI_BRIDGE ? [flag('BrConfRtry', w & P.PCI_EXP_DEVCTL_BCR_FLR)] : []),
      ...(flr && t & P.PCI_EXP_DEVCAP_FLR ? [flag('FLReset', w & P.PCI_EXP_DEVCTL_BCR_FLR)] : []),
    ].join(' ')}`,
    `\t\t\tMaxPayload ${128 << field(w, P.PCI_EXP_DEVCTL_PAYLOAD)} bytes, MaxReadReq ${128 << field(w, P.PCI_EXP_DEVCTL_READRQ)} bytes`,
    `\t\tDevSta:\t${flag('CorrErr', s & P.PCI_EXP_DEVSTA_CED)} ${flag('NonFatalErr', s & P.PCI_EXP_DEVSTA_NFED)} ${flag('FatalErr', s & P.PCI_EXP_DEVSTA_FED)} ${flag('UnsupReq', s & P.PCI_EXP_DEVSTA_URD)} ${flag('AuxPwr', s & P.PCI_EXP_DEVSTA_AUXPD)} ${flag('TransPend', s & P.PCI_EXP_DEVSTA_TRPND)}`,
  ];
  if (cap.link) lines.push(...linkLines(cap.link, type));
  return lines;
}

function linkLines(l: { lnkcap: number; lnkctl: number; lnksta: number }, type: number): string[] {
  const t = l.lnkcap;
  const aspm = field(t, P.PCI_EXP_LNKCAP_ASPMS);
  const capSpeed = t & P.PCI_EXP_LNKCAP_SLS;
  const capWidth = field(t, P.PCI_EXP_LNKCAP_MLW);
  const exit = [
    aspm & 1 ? `L0s ${L0S_LATENCY[field(t, P.PCI_EXP_LNKCAP_L0SEL)]}` : '',
    aspm & 2 ? `L1 ${L1_LATENCY[field(t, P.PCI_EXP_LNKCAP_L1EL)]}` : '',
  ]
    .filter(Boolean)
    .join(', ');
  const w = l.lnkctl;
  const rcb =
    type === P.PCI_EXP_TYPE_ROOT_PORT ||
    type === P.PCI_EXP_TYPE_ENDPOINT ||
    type === P.PCI_EXP_TYPE_LEG_END ||
    type === P.PCI_EXP_TYPE_PCI_BRIDGE;
  const s = l.lnksta;
  const staSpeed = s & P.PCI_EXP_LNKSTA_CLS;
  const staWidth = field(s, P.PCI_EXP_LNKSTA_NLW);
  const downstream =
    type === P.PCI_EXP_TYPE_ROOT_PORT ||
    type === P.PCI_EXP_TYPE_DOWNSTREAM ||
    type === P.PCI_EXP_TYPE_PCIE_BRIDGE;
  const compare = (sta: number, cap: number) =>
    sta > cap ? ' (overdriven)' : sta === cap || downstream ? '' : ' (downgraded)';
  return [
    `\t\tLnkCap:\tPort #${t >>> 24}, Speed ${linkSpeed(capSpeed)}, Width x${capWidth}, ASPM ${ASPM_SUPPORT[aspm]}${exit ? `, Exit Latency ${exit}` : ''}`,
    `\t\t\t${flag('ClockPM', t & P.PCI_EXP_LNKCAP_CLKPM)} ${flag('Surprise', t & P.PCI_EXP_LNKCAP_SDERC)} ${flag('LLActRep', t & P.PCI_EXP_LNKCAP_DLLLARC)} ${flag('BwNot', t & P.PCI_EXP_LNKCAP_LBNC)} ${flag('ASPMOptComp', t & P.SPEC_EXP_LNKCAP_ASPM_OPT_COMPLIANCE)}`,
    `\t\tLnkCtl:\tASPM ${ASPM_ENABLED[w & P.PCI_EXP_LNKCTL_ASPMC]};${rcb ? ` RCB ${w & P.PCI_EXP_LNKCTL_RCB ? 128 : 64} bytes,` : ''} ${flag('Disabled', w & P.PCI_EXP_LNKCTL_LD)} ${flag('CommClk', w & P.PCI_EXP_LNKCTL_CCC)}`,
    `\t\t\t${flag('ExtSynch', w & P.PCI_EXP_LNKCTL_ES)} ${flag('ClockPM', w & P.PCI_EXP_LNKCTL_CLKREQ_EN)} ${flag('AutWidDis', w & P.PCI_EXP_LNKCTL_HAWD)} ${flag('BWInt', w & P.PCI_EXP_LNKCTL_LBMIE)} ${flag('AutBWInt', w & P.PCI_EXP_LNKCTL_LABIE)}`,
    `\t\tLnkSta:\tSpeed ${linkSpeed(staSpeed)}${compare(staSpeed, capSpeed)}, Width x${staWidth}${compare(staWidth, capWidth)}`,
    `\t\t\t${flag('TrErr', s & P.SPEC_EXP_LNKSTA_TRAINING_ERROR)} ${flag('Train', s & P.PCI_EXP_LNKSTA_LT)} ${flag('SlotClk', s & P.PCI_EXP_LNKSTA_SLC)} ${flag('DLActive', s & P.PCI_EXP_LNKSTA_DLLLA)} ${flag('BWMgmt', s & P.PCI_EXP_LNKSTA_LBMS)} ${flag('ABWMgmt', s & P.PCI_EXP_LNKSTA_LABS)}`,
  ];
}

/** Extended capability names (pci_regs.h PCI_EXT_CAP_ID_*), in lspci's words. */
const EXT_CAPABILITY_NAMES: Record<number, string> = {
  0: 'Null',
  1: 'Advanced Error Reporting',
  2: 'Virtual Channel',
  4: 'Power Budgeting <?>',
  5: 'Root Complex Link',
  6: 'Root Complex Internal Link <?>',
  7: 'Root Complex Event Collector Endpoint Association',
  8: 'Multi-Function Virtual Channel <?>',
  9: 'Virtual Channel',
  10: 'Root Complex Register Block <?>',
  13: 'Access Control Services',
  14: 'Alternative Routing-ID Interpretation (ARI)',
  15: 'Address Translation Service (ATS)',
  16: 'Single Root I/O Virtualization (SR-IOV)',
  17: 'Multi-Root I/O Virtualization <?>',
  18: 'Multicast',
  19: 'Page Request Interface (PRI)',
  21: 'Physical Resizable BAR',
  22: 'Dynamic Power Allocation <?>',
  23: 'Transaction Processing Hints',
  24: 'Latency Tolerance Reporting',
  25: 'Secondary PCI Express',
  26: 'Protocol Multiplexing <?>',
  27: 'Process Address Space ID (PASID)',
  29: 'Downstream Port Containment',
  30: 'L1 PM Substates',
  31: 'Precision Time Measurement',
  36: 'Virtual Resizable BAR',
  46: 'Data Object Exchange',
};

const DECODED_CAPABILITIES: Record<number, string> = {
  [P.PCI_CAP_ID_PM]: 'Power Management',
  [P.PCI_CAP_ID_MSI]: 'MSI',
  [P.PCI_CAP_ID_MSIX]: 'MSI-X',
  [P.PCI_CAP_ID_EXP]: 'Express',
  [P.PCI_CAP_ID_VNDR]: 'Vendor Specific Information',
};

/** A capability's name, where it has one. */
export function capabilityName(id: number): string | undefined {
  return DECODED_CAPABILITIES[id] ?? UNDECODED_CAPABILITIES[id]?.replace(/ <\?>$/, '');
}

export function extCapabilityName(id: number): string | undefined {
  if (id === P.PCI_EXT_CAP_ID_DSN) return 'Device Serial Number';
  if (id === P.PCI_EXT_CAP_ID_VNDR) return 'Vendor Specific Information';
  if (id === P.PCI_EXT_CAP_ID_DVSEC) return 'Designated Vendor-Specific';
  return EXT_CAPABILITY_NAMES[id]?.replace(/ <\?>$/, '');
}

function extCapabilityLines(cap: PciExtCapability): string[] {
  if (cap.kind === 'broken') return [`\tCapabilities: [${hex(cap.offset, 3)}] <chain ${cap.why}>`];
  const head = `\tCapabilities: [${hex(cap.offset, 3)} v${cap.version}] `;
  const v = new DataView(cap.body.buffer, cap.body.byteOffset, cap.body.byteLength);
  const u32 = (o: number) => (o + 4 <= cap.body.length ? v.getUint32(o, true) : undefined);
  switch (cap.id) {
    case P.PCI_EXT_CAP_ID_DSN: {
      // Serial number: lower dword at +4, upper at +8; lspci prints the upper dword's bytes first.
      const lo = u32(0);
      const hi = u32(4);
      if (lo === undefined || hi === undefined) return [`${head}Device Serial Number <unreadable>`];
      const bytes = [
        hi >>> 24,
        (hi >>> 16) & 0xff,
        (hi >>> 8) & 0xff,
        hi & 0xff,
        lo >>> 24,
        (lo >>> 16) & 0xff,
        (lo >>> 8) & 0xff,
        lo & 0xff,
      ];
      return [`${head}Device Serial Number ${bytes.map((b) => hex(b, 2)).join('-')}`];
    }
    case P.PCI_EXT_CAP_ID_VNDR: {
      const h = u32(P.PCI_VNDR_HEADER - 4);
      if (h === undefined) return [`${head}Vendor Specific Information: <unreadable>`];
      return [
        `${head}Vendor Specific Information: ID=${hex(h & 0xffff, 4)} Rev=${(h >>> 16) & 0xf} Len=${hex(h >>> 20, 3)} <?>`,
      ];
    }
    case P.PCI_EXT_CAP_ID_DVSEC: {
      const h1 = u32(0);
      const h2 = u32(4);
      if (h1 === undefined || h2 === undefined) return [`${head}Designated Vendor-Specific: <unreadable>`];
      return [
        `${head}Designated Vendor-Specific: Vendor=${hex(h1 & 0xffff, 4)} ID=${hex(h2 & 0xffff, 4)} Rev=${(h1 >>> 16) & 0xf} Len=${h1 >>> 20} <?>`,
      ];
    }
    default:
      return [`${head}${EXT_CAPABILITY_NAMES[cap.id] ?? `Extended Capability ID 0x${hex(cap.id)}`}`];
  }
}
