/**
 * The NVMe controller's register map (NVM Express Base Specification 1.4, June 2019, §3.1,
 * Figure 78): offsets into BAR0, the same for the device that serves them
 * (src/devices/nvme) and the driver that uses them (src/driver/nvme). Field layouts, opcodes and
 * status codes stay beside the side that reads them.
 */
export const NVME_REG = {
  /** §3.1.1 Controller Capabilities, 64 bits. */
  CAP: 0x00,
  /** §3.1.2 Version. */
  VS: 0x08,
  /** §3.1.3 / §3.1.4 Interrupt Mask Set / Clear (pin-based and MSI only). */
  INTMS: 0x0c,
  INTMC: 0x10,
  /** §3.1.5 Controller Configuration. */
  CC: 0x14,
  /** §3.1.6 Controller Status. */
  CSTS: 0x1c,
  /** §3.1.7 NVM Subsystem Reset (optional). */
  NSSR: 0x20,
  /** §3.1.8 Admin Queue Attributes. */
  AQA: 0x24,
  /** §3.1.9 / §3.1.10 Admin Submission / Completion Queue Base Address, 64 bits. */
  ASQ: 0x28,
  ACQ: 0x30,
  /** §3.1.11 Controller Memory Buffer Location. */
  CMBLOC: 0x38,
  /** §3.1.12 Controller Memory Buffer Size. */
  CMBSZ: 0x3c,
  /** §3.1.16 Controller Memory Buffer Memory Space Control, 64 bits. */
  CMBMSC: 0x50,
  /** §3.1.17 Controller Memory Buffer Status. */
  CMBSTS: 0x58,
  /**
   * §3.1.24 the first doorbell (Submission Queue 0 Tail): SQyTDBL at 0x1000 + (2y) * (4 <<
   * CAP.DSTRD), CQyHDBL right after it.
   */
  DOORBELLS: 0x1000,
} as const;

/** The registers below the doorbells: 4 KiB (Figure 78). */
export const NVME_REGISTER_PAGE = 0x1000;
