/**
 * The migration v2 state machine of <linux/vfio.h> ("enum vfio_device_mig_state" and the comment
 * above it), resolved as drivers/vfio/vfio_main.c: vfio_mig_get_next_state resolves it: a
 * request from `cur` to `target` is walked one direct arc at a time, each step the table's
 * next state, states the device does not support skipped over. The rules behind the table:
 * the shortest path, and no saving-group state (PRE_COPY, PRE_COPY_P2P, STOP_COPY) inside a path.
 *
 * Pure: no device here. The engine (engine.ts) takes the arcs this returns, one at a time.
 */
import { Errno } from '../../abi/errno.js';
import {
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VfioMigState,
} from '../../abi/vfio.js';
import { fail } from '../../errors.js';

export type MigState = (typeof VfioMigState)[keyof typeof VfioMigState];

const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = VfioMigState;

/** Every flag combination vfio.h defines: STOP_COPY, with or without P2P and PRE_COPY. */
export const ALL_MIGRATION_FLAGS = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;

const NAMES = [
  'ERROR',
  'STOP',
  'RUNNING',
  'STOP_COPY',
  'RESUMING',
  'RUNNING_P2P',
  'PRE_COPY',
  'PRE_COPY_P2P',
] as const;

/** `STOP_COPY` for 3; `state 9` for a number outside the enum. */
export function migStateName(s: number): string {
  return NAMES[s] ?? `state ${s}`;
}

/** Is `s` one of enum vfio_device_mig_state's values? */
export function isMigState(s: number): s is MigState {
  return Number.isInteger(s) && s >= 0 && s < NAMES.length;
}

/**
 * vfio_mig_get_next_state's vfio_from_fsm_table: [cur][target] = the next state on the way.
 * Rows and columns in enum order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P,
 * PRE_COPY, PRE_COPY_P2P.
 */
const NEXT: readonly (readonly MigState[])[] = [
  /* ERROR        */ [ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR],
  /* STOP         */ [ERROR, STOP, RUNNING_P2P, STOP_COPY, RESUMING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P],
  /* RUNNING      */ [
    ERROR,
    RUNNING_P2P,
    RUNNING,
    RUNNING_P2P,
    RUNNING_P2P,
    RUNNING_P2P,
    PRE_COPY,
    RUNNING_P2P,
  ],
  /* STOP_COPY    */ [ERROR, STOP, STOP, STOP_COPY, STOP, STOP, ERROR, ERROR],
  /* RESUMING     */ [ERROR, STOP, STOP, STOP, RESUMING, STOP, STOP, STOP],
  /* RUNNING_P2P  */ [ERROR, STOP, RUNNING, STOP, STOP, RUNNING_P2P, RUNNING, PRE_COPY_P2P],
  /* PRE_COPY     */ [ERROR, RUNNING, RUNNING, PRE_COPY_P2P, RUNNING, RUNNING, PRE_COPY, PRE_COPY_P2P],
  /* PRE_COPY_P2P */ [
    ERROR,
    RUNNING_P2P,
    RUNNING_P2P,
    STOP_COPY,
    RUNNING_P2P,
    RUNNING_P2P,
    PRE_COPY,
    PRE_COPY_P2P,
  ],
];

/** vfio_mig_get_next_state's state_flags_table: the flags a state needs. ERROR needs them all. */
const NEEDS: readonly number[] = [
  /* ERROR        */ 0xffff_ffff,
  /* STOP         */ VFIO_MIGRATION_STOP_COPY,
  /* RUNNING      */ VFIO_MIGRATION_STOP_COPY,
  /* STOP_COPY    */ VFIO_MIGRATION_STOP_COPY,
  /* RESUMING     */ VFIO_MIGRATION_STOP_COPY,
  /* RUNNING_P2P  */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
  /* PRE_COPY     */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
  /* PRE_COPY_P2P */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
];

/** Whether a device with migration `flags` has state `s` (ERROR: never requestable). */
export function supports(flags: number, s: number): boolean {
  return isMigState(s) && (NEEDS[s]! & flags) >>> 0 === NEEDS[s];
}

/**
 * vfio_mig_get_next_state: the next state on the way from `cur` to `target`, arcs through
 * states the device lacks skipped over. `target === cur` returns `cur`.
 * @throws VfioError(EINVAL): `target` outside the enum or not supported by `flags`, or no way
 *   there (the table says ERROR: STOP_COPY -> PRE_COPY*, anything from ERROR, ERROR itself).
 */
export function nextState(flags: number, cur: MigState, target: number): MigState {
  const op = 'VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE';
  if (!supports(flags, cur)) fail(Errno.EINVAL, op, `current state ${migStateName(cur)} unsupported`);
  if (!supports(flags, target))
    fail(Errno.EINVAL, op, `${migStateName(target)} is not a state this device has`);
  let next = NEXT[cur]![target]!;
  // vfio_main.c's loop skips states the device lacks with `while (flags of next unsupported)`.
  // ERROR's flags (~0U) are never supported, and its row leads only to ERROR, so as written since
  // 4db52602a607 ("vfio: Extend the device migration protocol with PRE_COPY") the loop never
  // ends for the arcs the table blocks (STOP_COPY -> PRE_COPY / PRE_COPY_P2P). The stable fix
  // posted in 2026 ("Terminate the skip loop on the ERROR sentinel so a blocked transition falls
  // through to the existing return and reports -EINVAL") does what vfio.h says those arcs do,
  // "return error": we stop at ERROR, EINVAL.
  while (next !== ERROR && !supports(flags, next)) next = NEXT[next]![target]!;
  if (next === ERROR) fail(Errno.EINVAL, op, `no arc from ${migStateName(cur)} to ${migStateName(target)}`);
  return next;
}

/** Every state from `cur` to `target` (excluding `cur`): the arcs a SET_STATE takes. */
export function path(flags: number, cur: MigState, target: number): MigState[] {
  const out: MigState[] = [];
  for (let s = cur; s !== target; ) {
    s = nextState(flags, s, target);
    out.push(s);
  }
  return out;
}

/** The saving group (vfio.h: "PRE_COPY, PRE_COPY_P2P and STOP_COPY form the saving group"). */
export function isSaving(s: number): boolean {
  return s === PRE_COPY || s === PRE_COPY_P2P || s === STOP_COPY;
}

/** States in which the device operates (issues DMA, raises interrupts, advances its state). */
export function isRunning(s: number): boolean {
  return s === RUNNING || s === RUNNING_P2P || s === PRE_COPY || s === PRE_COPY_P2P;
}
