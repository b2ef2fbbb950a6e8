/**
 * vfio's pci_config_map (drivers/vfio/pci/vfio_pci_config.c: vfio_cap_init): which capability
 * owns each byte of config space, how long its area is, and the permission table its accesses
 * go through. Plus the little-endian byte helpers config space is read and written with.
 */
import * as P from '../../abi/pci.js';
import { expPerms, msiPerms, type PermBits, pmPerms } from './perms.js';

export type AreaKind = 'basic' | 'pm' | 'msi' | 'exp' | 'msix' | 'unassigned';

/** One entry of vfio's pci_config_map: the owner of a run of config bytes. */
export interface Area {
  readonly kind: AreaKind;
  readonly start: number;
  readonly length: number;
  readonly perm: PermBits | undefined;
}

export const UNASSIGNED: Area = { kind: 'unassigned', start: 0, length: 0, perm: undefined };

/** vfio_msi_cap_len: flags, address, data; +4 for a 64-bit address; +10 for mask and pending bits. */
const MSI_CAP_LEN = 10;
const MSI_CAP_LEN_64BIT = 4;
const MSI_CAP_LEN_MASKBIT = 10;

/**
 * The area of capability `id` at `start` in the device's config `bytes`, as vfio_cap_init maps it
 * (lengths from pci_cap_length / vfio_cap_len).
 */
export function capArea(bytes: Uint8Array, id: number, start: number): Area {
  const flags = getLE(bytes, start + P.PCI_CAP_FLAGS, 2);
  switch (id) {
    case P.PCI_CAP_ID_PM:
      return { kind: 'pm', start, length: P.PCI_PM_SIZEOF, perm: pmPerms() };
    case P.PCI_CAP_ID_MSI: {
      let len = MSI_CAP_LEN;
      if (flags & P.PCI_MSI_FLAGS_64BIT) len += MSI_CAP_LEN_64BIT;
      if (flags & P.PCI_MSI_FLAGS_MASKBIT) len += MSI_CAP_LEN_MASKBIT;
      return { kind: 'msi', start, length: len, perm: msiPerms(len, flags) };
    }
    case P.PCI_CAP_ID_EXP:
      // vfio_cap_len: a version 2 endpoint with a link ends at PCI_CAP_EXP_ENDPOINT_SIZEOF_V2;
      // the slot registers after it are left unassigned (raw access to the device).
      return { kind: 'exp', start, length: P.PCI_CAP_EXP_ENDPOINT_SIZEOF_V2, perm: expPerms() };
    default:
      // MSI-X: pci_cap_length[PCI_CAP_ID_MSIX]; its perms stay the default cap_perms entry,
      // which is vfio_direct_config_read and no write function at all.
      return { kind: 'msix', start, length: P.PCI_CAP_MSIX_SIZEOF, perm: undefined };
  }
}

/** All-ones of a 1, 2 or 4-byte access. */
export function mask(count: number): number {
  return count === 4 ? 0xffffffff : (1 << (count * 8)) - 1;
}

export function getLE(buf: Uint8Array, pos: number, count: number): number {
  let v = 0;
  for (let i = count - 1; i >= 0; i--) v = (v << 8) | buf[pos + i]!;
  return v >>> 0;
}

export function setLE(buf: Uint8Array, pos: number, count: number, val: number): void {
  for (let i = 0; i < count; i++) buf[pos + i] = (val >>> (8 * i)) & 0xff;
}
