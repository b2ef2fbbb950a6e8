/**
 * vfio-pci's permission tables for configuration space: for every bit of a register, whether
 * reads and writes go to vfio's virtual copy (`virt`) or to the device, and whether a write may
 * change it at all (`write`). A read returns the device's bits where `virt` is 0 and the virtual
 * copy's bits where it is 1; a write drops every bit whose `write` bit is 0.
 *
 * Follows drivers/vfio/pci/vfio_pci_config.c: struct perm_bits, alloc_perm_bits, p_setb/w/d and
 * the init_pci_cap_*_perm functions. The tables are rebuilt here from those rules (values as
 * of Linux 6.1 .. 7.x, where they did not change for the capabilities vfio-ts implements).
 */
import * as P from '../../abi/pci.js';

export interface PermBits {
  /** 1 = the bit lives in vfio's virtual config (vconfig), 0 = in the device. */
  readonly virt: Uint8Array;
  /** 1 = a user write may change the bit. */
  readonly write: Uint8Array;
}

const ALL = 0xffffffff;
const NONE = 0;

/** alloc_perm_bits: rounded up to a dword; zero = readable, not writable, not virtualized. */
function alloc(size: number): PermBits {
  const n = (size + 3) & ~3;
  return { virt: new Uint8Array(n), write: new Uint8Array(n) };
}

function set(p: PermBits, off: number, count: 1 | 2 | 4, virt: number, write: number): void {
  for (let i = 0; i < count; i++) {
    p.virt[off + i] = (virt >>> (8 * i)) & 0xff;
    p.write[off + i] = (write >>> (8 * i)) & 0xff;
  }
}

/** init_pci_cap_basic_perm: the 64-byte standard header. */
export function basicPerms(): PermBits {
  const p = alloc(P.PCI_STD_HEADER_SIZEOF);
  // Virtualized for SR-IOV VFs (which read 0xffff); read-only.
  set(p, P.PCI_VENDOR_ID, 2, ALL, NONE);
  set(p, P.PCI_DEVICE_ID, 2, ALL, NONE);
  // Every command bit writable; only INTx disable virtualized (vfio uses the real bit itself).
  set(p, P.PCI_COMMAND, 2, P.PCI_COMMAND_INTX_DISABLE, ALL);
  // Status: the capability-list bit virtualized, nothing writable (so RW1C bits cannot be cleared).
  set(p, P.PCI_STATUS, 2, P.PCI_STATUS_CAP_LIST, NONE);
  // "No harm to write"
  set(p, P.PCI_CACHE_LINE_SIZE, 1, NONE, ALL);
  set(p, P.PCI_LATENCY_TIMER, 1, NONE, ALL);
  set(p, P.PCI_BIST, 1, NONE, ALL);
  // Every BAR and the ROM BAR virtualized and writable: the device's real BARs are never touched.
  for (let bar = P.PCI_BASE_ADDRESS_0; bar <= P.PCI_BASE_ADDRESS_5; bar += 4) set(p, bar, 4, ALL, ALL);
  set(p, P.PCI_ROM_ADDRESS, 4, ALL, ALL);
  set(p, P.PCI_CAPABILITY_LIST, 1, ALL, NONE);
  set(p, P.PCI_INTERRUPT_LINE, 1, ALL, ALL);
  set(p, P.PCI_INTERRUPT_PIN, 1, ALL, NONE);
  return p;
}

/** init_pci_cap_pm_perm */
export function pmPerms(): PermBits {
  const p = alloc(P.PCI_PM_SIZEOF);
  set(p, P.PCI_CAP_LIST_NEXT, 1, ALL, NONE);
  // PME_Support virtualized (and zeroed in vconfig): a user cannot receive PME.
  set(p, P.PCI_PM_PMC, 2, P.PCI_PM_CAP_PME_MASK, NONE);
  // PME_En and PME_Status virtualized; the power state is not writable directly, vfio_pm_config_write
  // changes it through vfio_pci_set_power_state.
  const pmeBits = P.PCI_PM_CTRL_PME_ENABLE | P.PCI_PM_CTRL_PME_STATUS;
  set(p, P.PCI_PM_CTRL, 4, pmeBits, ~(pmeBits | P.PCI_PM_CTRL_STATE_MASK) >>> 0);
  return p;
}

/** init_pci_cap_msi_perm: `len` from vfio_msi_cap_len, `flags` the device's Message Control. */
export function msiPerms(len: number, flags: number): PermBits {
  const p = alloc(len);
  set(p, P.PCI_CAP_LIST_NEXT, 1, ALL, NONE);
  // "The upper byte of the control register is reserved, just setup the lower byte."
  set(p, P.PCI_MSI_FLAGS, 1, ALL, ALL);
  set(p, P.PCI_MSI_ADDRESS_LO, 4, ALL, ALL);
  if (flags & P.PCI_MSI_FLAGS_64BIT) {
    set(p, P.PCI_MSI_ADDRESS_HI, 4, ALL, ALL);
    set(p, P.PCI_MSI_DATA_64, 2, ALL, ALL);
    if (flags & P.PCI_MSI_FLAGS_MASKBIT) {
      set(p, P.PCI_MSI_MASK_64, 4, NONE, ALL);
      set(p, P.PCI_MSI_PENDING_64, 4, NONE, ALL);
    }
  } else {
    set(p, P.PCI_MSI_DATA_32, 2, ALL, ALL);
    if (flags & P.PCI_MSI_FLAGS_MASKBIT) {
      set(p, P.PCI_MSI_MASK_32, 4, NONE, ALL);
      set(p, P.PCI_MSI_PENDING_32, 4, NONE, ALL);
    }
  }
  return p;
}

/** init_pci_cap_exp_perm: sized for the largest variant, a v2 endpoint with a link. */
export function expPerms(): PermBits {
  const p = alloc(P.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2);
  set(p, P.PCI_CAP_LIST_NEXT, 1, ALL, NONE);
  // Device Control writable except Phantom Functions Enable; FLR, Max_Payload_Size and
  // Max_Read_Request_Size virtualized (vfio_exp_config_write handles FLR and MRRS).
  set(
    p,
    P.PCI_EXP_DEVCTL,
    2,
    P.PCI_EXP_DEVCTL_BCR_FLR | P.PCI_EXP_DEVCTL_PAYLOAD | P.PCI_EXP_DEVCTL_READRQ,
    ~P.PCI_EXP_DEVCTL_PHANTOM & 0xffff,
  );
  // Device Control 2 writable except ARI Forwarding Enable (set at probe time).
  set(p, P.PCI_EXP_DEVCTL2, 2, NONE, ~P.PCI_EXP_DEVCTL2_ARI & 0xffff);
  return p;
}
