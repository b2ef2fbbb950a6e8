/**
 * Numbers of the NVM Express Base Specification 1.4 (June 2019) that the controller uses:
 * register offsets and fields, opcodes, status codes, feature and log identifiers. Names follow
 * the specification's (and Linux's include/linux/nvme.h, which spells the same fields).
 */

/** §3.1 Register Definition: the register map the driver reads too (src/abi/nvme.ts). */
export { NVME_REG as REG } from '../../abi/nvme.js';

/** §3.1.5 CC fields. */
export const CC = {
  EN: 1,
  /** I/O Command Set Selected, bits 6:4 (000b NVM). */
  CSS_SHIFT: 4,
  /** Memory Page Size, bits 10:7: 2 ^ (12 + MPS). */
  MPS_SHIFT: 7,
  /** Arbitration Mechanism Selected, bits 13:11 (000b round robin). */
  AMS_SHIFT: 11,
  /** Shutdown Notification, bits 15:14: 01b normal, 10b abrupt. */
  SHN_SHIFT: 14,
  /** I/O SQ / CQ entry sizes (2^n), bits 19:16 and 23:20. */
  IOSQES_SHIFT: 16,
  IOCQES_SHIFT: 20,
} as const;

/** §3.1.6 CSTS fields. */
export const CSTS = {
  RDY: 1,
  CFS: 2,
  /** Shutdown Status, bits 3:2: 00b normal, 01b occurring, 10b complete. */
  SHST_SHIFT: 2,
  SHST_OCCURRING: 1,
  SHST_COMPLETE: 2,
  NSSRO: 0x10,
  PP: 0x20,
} as const;

/** §3.1.16 CMBMSC fields: Capabilities Registers Enabled, Controller Memory Space Enable, base. */
export const CMBMSC = { CRE: 1n, CMSE: 2n, CBA_MASK: ~0xfffn & 0xffff_ffff_ffff_ffffn } as const;
/** §3.1.17 CMBSTS: Controller Base Address Invalid. */
export const CMBSTS_CBAI = 1;
/** §3.1.12 CMBSZ support bits. */
export const CMBSZ = { SQS: 1, CQS: 2, LISTS: 4, RDS: 8, WDS: 16, SZU_SHIFT: 8, SZ_SHIFT: 12 } as const;

/** §4.2 Submission Queue Entry (64 bytes) and §4.6 Completion Queue Entry (16 bytes). */
export const SQE_SIZE = 64;
export const CQE_SIZE = 16;
/** log2 of the entry sizes, as Identify Controller's SQES/CQES and CC.IOSQES/IOCQES carry them. */
export const SQES_LOG2 = 6;
export const CQES_LOG2 = 4;

/** §5 Admin Command Set: the opcodes this controller knows. */
export const ADMIN = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT_REQUEST: 0x0c,
} as const;

/** §6 NVM Command Set: the opcodes this controller knows. */
export const NVM = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_ZEROES: 0x08,
  DATASET_MANAGEMENT: 0x09,
} as const;

/**
 * §4.6.1.2 status codes as (SCT << 8) | SC: generic (SCT 0, §4.6.1.2.1), command specific
 * (SCT 1, §4.6.1.2.2), media and data integrity errors (SCT 2, §4.6.1.2.3).
 */
export const SC = {
  SUCCESS: 0x000,
  INVALID_OPCODE: 0x001,
  INVALID_FIELD: 0x002,
  DATA_TRANSFER_ERROR: 0x004,
  INTERNAL_ERROR: 0x006,
  ABORTED_SQ_DELETION: 0x008,
  INVALID_NAMESPACE: 0x00b,
  COMMAND_SEQUENCE_ERROR: 0x00c,
  INVALID_CMB_USE: 0x012,
  PRP_OFFSET_INVALID: 0x013,
  LBA_OUT_OF_RANGE: 0x080,
  CQ_INVALID: 0x100,
  INVALID_QID: 0x101,
  INVALID_QSIZE: 0x102,
  AER_LIMIT_EXCEEDED: 0x105,
  INVALID_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109,
  INVALID_QUEUE_DELETION: 0x10c,
  FEATURE_NOT_SAVEABLE: 0x10d,
  WRITE_FAULT: 0x280,
  UNRECOVERED_READ_ERROR: 0x281,
} as const;

/** Status Field bit 15 (CQE DW3 bit 31): Do Not Retry. */
export const STATUS_DNR = 0x4000;

/** Set Features, §5.21.1: feature identifiers. */
export const FEATURE = {
  ARBITRATION: 0x01,
  POWER_MANAGEMENT: 0x02,
  TEMPERATURE_THRESHOLD: 0x04,
  ERROR_RECOVERY: 0x05,
  VOLATILE_WRITE_CACHE: 0x06,
  NUMBER_OF_QUEUES: 0x07,
  INTERRUPT_COALESCING: 0x08,
  INTERRUPT_VECTOR_CONFIG: 0x09,
  WRITE_ATOMICITY: 0x0a,
  ASYNC_EVENT_CONFIG: 0x0b,
} as const;

/** Get Log Page, §5.14.1: log page identifiers. */
export const LOG = { ERROR: 0x01, SMART: 0x02, FIRMWARE_SLOT: 0x03 } as const;

/** Identify, §5.15: the Controller or Namespace Structure (CNS) values answered. */
export const CNS = { NAMESPACE: 0x00, CONTROLLER: 0x01, ACTIVE_NS_LIST: 0x02, NS_DESCRIPTORS: 0x03 } as const;

/** Asynchronous Event Request, §5.2: event types and the Error type's information codes. */
export const AER_TYPE = { ERROR: 0, SMART: 1, NOTICE: 2 } as const;
export const AER_ERROR = { INVALID_DOORBELL_REGISTER: 0x00, INVALID_DOORBELL_VALUE: 0x01 } as const;

/** The broadcast namespace id: "all namespaces" (Flush with it when Identify Controller VWC says so). */
export const NSID_ALL = 0xffff_ffff;
