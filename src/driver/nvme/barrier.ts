/**
 * The store fence the driver issues between writing submission queue entries into
 * write-combining memory (the CMB) and ringing the doorbell, as SPDK does (spdk_wmb() before
 * the doorbell in lib/nvme/nvme_pcie_common.c: nvme_pcie_qpair_ring_sq_doorbell) and DPDK
 * (rte_wmb()). JavaScript has no SFENCE; what it has is a locked instruction.
 *
 * Why a locked instruction is enough (Intel SDM Vol. 3A):
 * - "Buffering of Write Combining Memory Locations" (§11.3.1 in the 2016–2021 editions): writes
 *   to WC memory sit in the WC buffers, software "must deliberately empty the WC buffers when
 *   system memory coherency is required"; the WC memory type description (§11.3) names what
 *   empties them: a serializing event — SFENCE, MFENCE, a serializing instruction, a read or
 *   write of uncached memory, an interrupt, or the execution of a LOCK instruction.
 * - "Strengthening or Weakening the Memory-Ordering Model" (§8.2.5): locked operations "wait
 *   for all previous instructions to complete and for all buffered writes to drain to memory";
 *   and "Memory Ordering in P6 and More Recent Processor Families" (§8.2.2): reads and writes
 *   cannot be reordered with locked instructions.
 * - XCHG with a memory operand is locked whether or not it has a LOCK prefix (Vol. 2B, XCHG).
 * Linux itself takes a locked add as its write barrier where SFENCE is missing
 * (arch/x86/include/asm/barrier.h: wmb() is `lock; addl $0,-4(%esp)` without X86_FEATURE_XMM2).
 *
 * What V8 emits (Node 20.20, V8 11.3, x64; seen with `node --print-opt-code` and the builtin
 * disassembled with gdb, docs/nvme-driver.md): TurboFan does not inline Atomics.store; it calls
 * the AtomicsStore builtin, whose Int32 path is `xchg %r10d,(%rdx,%r8,1)`. Where TurboFan does
 * lower a seq_cst store itself it chooses XCHG too (src/compiler/backend/x64/
 * instruction-selector-x64.cc, VisitStoreCommon: "sequentially consistent stores emit XCHG").
 * The fence is therefore one Atomics.store to a SharedArrayBuffer: a locked XCHG.
 */

const FENCE_WORD = new Int32Array(new SharedArrayBuffer(4));

/** A full store fence on x86: one locked XCHG (Atomics.store, sequentially consistent). */
export function storeFence(): void {
  Atomics.store(FENCE_WORD, 0, 0);
}

/** What the driver calls to fence: storeFence, or a recorder in tests. */
export type Fence = () => void;
