/**
 * The Controller Memory Buffer (NVMe 1.4 §4.7) as a home for submission queues: found through
 * CMBLOC/CMBSZ (§3.1.11, §3.1.12), switched on through CMBMSC (§3.1.16) on a controller that
 * reports CAP.CMBS, and mapped write-combining through the best path the backend offers
 * (VfioDevice.map with attribute 'wc': a cookie, a dma-buf, an alias region or the RFC's flag
 * over vfio-user and in-process; sysfs resourceN_wc on the kernel, or the BAR premapped with
 * wcBars on Linux 7.3 booted iomem=relaxed).
 *
 * Addresses: the controller recognizes a queue or PRP address as CMB memory by comparing it with
 * the CMB's controller address. Under the NVMe 1.4 scheme (CAP.CMBS) the host chooses it and
 * writes it to CMBMSC.CBA; like Linux (drivers/nvme/host/pci.c: nvme_map_cmb) we give the
 * PCI address of the CMB, read here from the BAR in config space, so peer devices would agree.
 * Before 1.4 (no CMBS) the controller decodes its BAR address itself; the same value applies.
 */
import { Errno } from '../../abi/errno.js';
import { PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_MEM_TYPE_MASK } from '../../abi/pci.js';
import { fail, VfioError } from '../../errors.js';
import type { VfioDevice, WcPath } from '../device.js';
import type { Mapping } from '../file.js';
import { ControllerRegisters } from './regs.js';
import { CMBMSC_CBA_MASK, CMBMSC_CMSE, CMBMSC_CRE, CMBSTS_CBAI, cap, cmbloc, cmbsz, REG } from './spec.js';

/** Most of the CMB the driver maps (a real CMB may be gigabytes; queues need a few pages). */
export const MAX_CMB_MAP_BYTES = 64 << 20;
/** CBA used when the BAR has no address (a vfio-user device whose BARs nobody assigned). */
export const UNASSIGNED_BAR_CBA = 0x7f00_0000_0000n;
const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;

export interface CmbInfo {
  /** BAR holding the CMB (CMBLOC.BIR) and the CMB's offset and size in it. */
  readonly bar: number;
  readonly offset: bigint;
  readonly size: bigint;
  /** Where the controller sees the CMB's first byte (CBA, or the BAR's address). */
  readonly controllerAddress: bigint;
  /** Raw CMBLOC and CMBSZ, for identify output. */
  readonly cmbloc: number;
  readonly cmbsz: number;
}

export interface MappedCmb extends CmbInfo {
  readonly mapping: Mapping;
  /** Bytes of the CMB mapped (from its start). */
  readonly mappedBytes: number;
}

/** CMBLOC and CMBSZ, enabling them first on a 1.4 controller (CMBMSC.CRE). Undefined: no CMB. */
export async function findCmb(
  dev: VfioDevice,
  regs: ControllerRegisters,
  capReg: bigint,
): Promise<CmbInfo | undefined> {
  if (cap.cmbs(capReg)) await regs.write64(REG.CMBMSC, CMBMSC_CRE, 'hi-lo');
  const loc = await regs.read32(REG.CMBLOC);
  const sz = await regs.read32(REG.CMBSZ);
  if (sz === 0) return undefined;
  const bar = cmbloc.bir(loc);
  if (bar === 1 || bar > 5) fail(Errno.EPROTO, 'nvme CMB', `CMBLOC.BIR ${bar} is reserved (§3.1.11)`);
  const unit = cmbsz.unit(sz);
  const offset = BigInt(cmbloc.ofst(loc)) * unit;
  const size = cmbsz.sz(sz) * unit;
  const region = await dev.regionInfo(bar);
  if (offset + size > region.size)
    fail(
      Errno.EPROTO,
      'nvme CMB',
      `CMB [0x${offset.toString(16)}, +0x${size.toString(16)}) lies outside BAR${bar} (0x${region.size.toString(16)} bytes)`,
    );
  const base = await barAddress(dev, bar);
  if (base === 0n && !cap.cmbs(capReg))
    fail(
      Errno.EOPNOTSUPP,
      'nvme CMB',
      `a controller without CMBMSC decodes CMB addresses at its BAR${bar} address, and BAR${bar} has none`,
    );
  return {
    bar,
    offset,
    size,
    controllerAddress: (base === 0n ? UNASSIGNED_BAR_CBA : base) + offset,
    cmbloc: loc,
    cmbsz: sz,
  };
}

/** The memory BAR's address from config space (vfio-pci shows the assigned one). */
async function barAddress(dev: VfioDevice, bar: number): Promise<bigint> {
  const b = await dev.readConfig(PCI_BASE_ADDRESS_0 + 4 * bar, 8);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const lo = dv.getUint32(0, true);
  const is64 = (lo & PCI_BASE_ADDRESS_MEM_TYPE_MASK) === PCI_BASE_ADDRESS_MEM_TYPE_64;
  const hi = is64 && bar < 5 ? dv.getUint32(4, true) : 0;
  return (BigInt(hi) << 32n) | BigInt((lo & ~0xf) >>> 0);
}

/**
 * Turns on CMB decoding at `cmb.controllerAddress` (CMBMSC.CMSE, 1.4 controllers), checks the
 * controller took it (CMBSTS.CBAI), and maps up to `maxBytes` of the CMB write-combining. The
 * mapping comes first: on Linux 6.1 a sysfs WC mapping works only before vfio-pci claims the BAR,
 * and the driver never touches the CMB BAR through the device fd.
 */
export async function mapCmb(
  dev: VfioDevice,
  regs: ControllerRegisters,
  capReg: bigint,
  cmb: CmbInfo,
  opts: { readonly maxBytes?: number; readonly path?: WcPath } = {},
): Promise<MappedCmb> {
  const maxBytes = BigInt(opts.maxBytes ?? MAX_CMB_MAP_BYTES);
  const mappedBytes = Number(cmb.size < maxBytes ? cmb.size : maxBytes);
  let mapping: Mapping;
  try {
    mapping = await dev.map(cmb.bar, {
      attribute: 'wc',
      offset: cmb.offset,
      length: mappedBytes,
      ...(opts.path && { path: opts.path }),
    });
  } catch (e) {
    if (e instanceof VfioError)
      fail(
        e.errno,
        'nvme CMB',
        `submission queues in the CMB need a write-combining mapping of BAR${cmb.bar}: ${e.message}`,
      );
    throw e;
  }
  if (mapping.attribute !== 'wc') {
    mapping.unmap();
    fail(Errno.EOPNOTSUPP, 'nvme CMB', `BAR${cmb.bar} was mapped ${mapping.attribute}, not write-combining`);
  }
  try {
    if (cap.cmbs(capReg)) {
      const cba = cmb.controllerAddress & CMBMSC_CBA_MASK;
      if (cba !== cmb.controllerAddress)
        fail(
          Errno.EINVAL,
          'nvme CMB',
          `CMB address 0x${cmb.controllerAddress.toString(16)} is not 4 KiB aligned`,
        );
      await regs.write64(REG.CMBMSC, cba | CMBMSC_CMSE | CMBMSC_CRE, 'hi-lo');
      if ((await regs.read32(REG.CMBSTS)) & CMBSTS_CBAI)
        fail(Errno.EINVAL, 'nvme CMB', `the controller refused CBA 0x${cba.toString(16)} (CMBSTS.CBAI)`);
    }
  } catch (e) {
    mapping.unmap();
    throw e;
  }
  return { ...cmb, mapping, mappedBytes };
}

/**
 * Turns CMB decoding off again (CMBMSC = 0), as a controller reset would, and unmaps the CMB. A
 * BAR switched to WC with the RFC's SET_REGION_FLAGS goes back to UC, so later mappings of it
 * get what they would have got before the driver came.
 */
export async function unmapCmb(
  dev: VfioDevice,
  regs: ControllerRegisters,
  capReg: bigint,
  cmb: MappedCmb,
): Promise<void> {
  try {
    if (cap.cmbs(capReg)) await regs.write64(REG.CMBMSC, 0n, 'hi-lo');
  } finally {
    cmb.mapping.unmap();
    if (cmb.mapping.via === 'rfc-region-flags') await dev.setRegionFlags(cmb.bar, false);
  }
}

/**
 * Which BAR holds the CMB, asked of a device opened only for this (the kernel backend must know
 * before it opens the device for real when the BAR is to be premapped WC: OpenKernelOptions
 * wcBars). Registers through pread/pwrite; the CMB BAR itself is not touched.
 */
export async function probeCmbBar(dev: VfioDevice): Promise<number | undefined> {
  const regs = await ControllerRegisters.open(dev, 'pwrite', () => {});
  const capReg = await regs.read64(REG.CAP);
  return (await findCmb(dev, regs, capReg))?.bar;
}
