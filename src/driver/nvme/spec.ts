/**
 * NVM Express over PCIe as the driver needs it: controller registers, the submission and
 * completion queue entry layouts, opcodes and status codes. Numbers only, each cited to the NVM
 * Express Base Specification 1.4 (June 2019); the behaviour lives in the other files here.
 */

// ---------------------------------------------------------------------------------------------
// Controller registers (§3.1, Figure 78), offsets in BAR0
// ---------------------------------------------------------------------------------------------
/** The register map is the device's too: src/abi/nvme.ts. */
import { NVME_REG as REG } from '../../abi/nvme.js';

export { NVME_REGISTER_PAGE as REGISTER_PAGE } from '../../abi/nvme.js';
export { REG };

/** §3.1.1 CAP fields. */
export const cap = {
  /** Maximum Queue Entries Supported, 0's based. */
  mqes: (v: bigint) => Number(v & 0xffffn) + 1,
  /** Contiguous Queues Required. */
  cqr: (v: bigint) => (v >> 16n) & 1n,
  /** Timeout: worst-case time for CSTS.RDY to change after CC.EN changes, in 500 ms units. */
  toMs: (v: bigint) => Number((v >> 24n) & 0xffn) * 500,
  /** Doorbell Stride: doorbells are (4 << DSTRD) bytes apart. */
  dstrd: (v: bigint) => Number((v >> 32n) & 0xfn),
  /** Command Sets Supported: bit 0 = NVM command set. */
  css: (v: bigint) => Number((v >> 37n) & 0xffn),
  /** Memory Page Size Minimum / Maximum: 2 ^ (12 + MPS) bytes. */
  mpsmin: (v: bigint) => Number((v >> 48n) & 0xfn),
  mpsmax: (v: bigint) => Number((v >> 52n) & 0xfn),
  /** Controller Memory Buffer Supported: CMBLOC/CMBSZ are enabled through CMBMSC (NVMe 1.4). */
  cmbs: (v: bigint) => ((v >> 57n) & 1n) === 1n,
};
export const CAP_CSS_NVM = 0x1;

/** §3.1.5 CC fields. */
export const CC_EN = 1 << 0;
export const CC_CSS_NVM = 0 << 4;
export const CC_MPS_SHIFT = 7;
export const CC_AMS_RR = 0 << 11;
export const CC_SHN_MASK = 3 << 14;
export const CC_SHN_NORMAL = 1 << 14;
/** I/O SQ and CQ entry sizes as log2: 64-byte SQEs (6), 16-byte CQEs (4). */
export const CC_IOSQES = 6 << 16;
export const CC_IOCQES = 4 << 20;

/** §3.1.6 CSTS fields. */
export const CSTS_RDY = 1 << 0;
export const CSTS_CFS = 1 << 1;
export const CSTS_SHST_MASK = 3 << 2;
export const CSTS_SHST_COMPLETE = 2 << 2;
/** What a read of a register returns from a device that is gone (a PCIe master abort). */
export const REG_ALL_ONES = 0xffffffff;

/** §3.1.11 CMBLOC and §3.1.12 CMBSZ. */
export const cmbloc = {
  bir: (v: number) => v & 0x7,
  /** Offset in CMBSZ size units. */
  ofst: (v: number) => v >>> 12,
};
export const cmbsz = {
  /** Submission Queue Support: I/O (and admin) SQs may live in the CMB. */
  sqs: (v: number) => (v & 1) === 1,
  cqs: (v: number) => ((v >> 1) & 1) === 1,
  lists: (v: number) => ((v >> 2) & 1) === 1,
  rds: (v: number) => ((v >> 3) & 1) === 1,
  wds: (v: number) => ((v >> 4) & 1) === 1,
  /** Size Unit: 4 KiB * 16 ^ SZU. */
  unit: (v: number) => 4096n << BigInt(4 * ((v >> 8) & 0xf)),
  sz: (v: number) => BigInt(v >>> 12),
};
/** §3.1.16 CMBMSC: Capabilities Registers Enabled, Controller Memory Space Enable, CBA 63:12. */
export const CMBMSC_CRE = 1n << 0n;
export const CMBMSC_CMSE = 1n << 1n;
export const CMBMSC_CBA_MASK = ~0xfffn & 0xffff_ffff_ffff_ffffn;
/** §3.1.17 CMBSTS: Controller Base Address Invalid. */
export const CMBSTS_CBAI = 1 << 0;

/** §3.1.24 / §3.1.25: SQ y tail doorbell and CQ y head doorbell. */
export function sqTailDoorbell(qid: number, dstrd: number): number {
  return REG.DOORBELLS + 2 * qid * (4 << dstrd);
}
export function cqHeadDoorbell(qid: number, dstrd: number): number {
  return REG.DOORBELLS + (2 * qid + 1) * (4 << dstrd);
}

// ---------------------------------------------------------------------------------------------
// Queue entries (§4.2 Figure 104 common command format, §4.6 Figure 123 completion entry)
// ---------------------------------------------------------------------------------------------
export const SQE_BYTES = 64;
export const CQE_BYTES = 16;
export const SQE_WORDS = SQE_BYTES / 4;
/** Dword indexes of the SQE fields. */
export const SQE = {
  CDW0: 0, // OPC 7:0, FUSE 9:8, PSDT 15:14 (0 = PRPs), CID 31:16
  NSID: 1,
  MPTR: 4,
  PRP1: 6,
  PRP2: 8,
  CDW10: 10,
  CDW11: 11,
  CDW12: 12,
  CDW13: 13,
  CDW14: 14,
  CDW15: 15,
} as const;
/** Dword 3 of a CQE: CID 15:0, Phase Tag 16, Status Field 31:17; dword 2: SQHD 15:0, SQID 31:16. */
export const cqe = {
  cid: (dw3: number) => dw3 & 0xffff,
  phase: (dw3: number) => (dw3 >>> 16) & 1,
  /** Status Code (§4.6.1.2). */
  sc: (dw3: number) => (dw3 >>> 17) & 0xff,
  /** Status Code Type. */
  sct: (dw3: number) => (dw3 >>> 25) & 0x7,
  /** Do Not Retry. */
  dnr: (dw3: number) => (dw3 >>> 31) & 1,
  sqhd: (dw2: number) => dw2 & 0xffff,
};

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------
/** §5 Admin Command Set, Figure 139. */
export const ADMIN = {
  DELETE_IO_SQ: 0x00,
  CREATE_IO_SQ: 0x01,
  DELETE_IO_CQ: 0x04,
  CREATE_IO_CQ: 0x05,
  IDENTIFY: 0x06,
  SET_FEATURES: 0x09,
} as const;
/** §6 NVM Command Set, Figure 346. */
export const NVM = { FLUSH: 0x00, WRITE: 0x01, READ: 0x02 } as const;

/** §5.15 Identify, CDW10.CNS. */
export const CNS = { NAMESPACE: 0x00, CONTROLLER: 0x01, ACTIVE_NSIDS: 0x02 } as const;
/**
 * The smallest LBADS, a namespace's logical block as a power of two (Identify Namespace, LBA
 * Format Data Structure: "A value smaller than 9 (i.e., 512 bytes) is not supported"): every
 * transfer is a multiple of 2^9 bytes on any controller.
 */
export const LBADS_MIN = 9;
/** §5.21.1.7 Number of Queues. */
export const FEATURE_NUMBER_OF_QUEUES = 0x07;
/** §5.3 Create I/O Completion Queue CDW11: PC (bit 0), IEN (bit 1), IV (31:16). */
export const CQ_PC = 1 << 0;
export const CQ_IEN = 1 << 1;
/** §5.4 Create I/O Submission Queue CDW11: PC (bit 0), QPRIO (2:1), CQID (31:16). */
export const SQ_PC = 1 << 0;

/** §4.3: a PRP entry addresses one memory page; a PRP List page holds page / 8 entries. */
export const PRP_ENTRY_BYTES = 8;

// ---------------------------------------------------------------------------------------------
// Status codes (§4.6.1.2)
// ---------------------------------------------------------------------------------------------
export const SCT_GENERIC = 0;
export const SCT_COMMAND_SPECIFIC = 1;
export const SCT_MEDIA = 2;
/** Generic Command Status (Figure 128) and NVM command set specific generic codes (80h+). */
export const GENERIC_STATUS: Readonly<Record<number, string>> = {
  0: 'Successful Completion',
  1: 'Invalid Command Opcode',
  2: 'Invalid Field in Command',
  3: 'Command ID Conflict',
  4: 'Data Transfer Error',
  5: 'Commands Aborted due to Power Loss Notification',
  6: 'Internal Error',
  7: 'Command Abort Requested',
  8: 'Command Aborted due to SQ Deletion',
  11: 'Invalid Namespace or Format',
  12: 'Command Sequence Error',
  18: 'Invalid Use of Controller Memory Buffer',
  19: 'PRP Offset Invalid',
  128: 'LBA Out of Range',
  129: 'Capacity Exceeded',
  130: 'Namespace Not Ready',
};
/** Command Specific Status (Figure 129), the codes queue creation returns. */
export const COMMAND_SPECIFIC_STATUS: Readonly<Record<number, string>> = {
  0: 'Completion Queue Invalid',
  1: 'Invalid Queue Identifier',
  2: 'Invalid Queue Size',
  8: 'Invalid Interrupt Vector',
  12: 'Invalid Queue Deletion',
};

export function statusName(sct: number, sc: number): string {
  const table =
    sct === SCT_GENERIC ? GENERIC_STATUS : sct === SCT_COMMAND_SPECIFIC ? COMMAND_SPECIFIC_STATUS : {};
  const name = table[sc] ?? (sct === SCT_MEDIA ? 'Media and Data Integrity Error' : 'status');
  return `${name} (SCT ${sct}h SC ${sc.toString(16).padStart(2, '0')}h)`;
}
