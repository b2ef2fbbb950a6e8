/**
 * The migration state machine (src/core/migration/fsm.ts) against vfio.h's rules, for every
 * pair of states and every flag combination vfio.h defines:
 *   - each step is a direct arc vfio_main.c requires of a driver with those flags (the list at
 *     the top of vfio_mig_get_next_state);
 *   - the path is a shortest one, found here independently by breadth-first search over those
 *     arcs, with no saving-group state inside it ("The path cannot have saving group states as
 *     interior arcs") unless the whole path stays in the saving group (the kernel's own
 *     PRE_COPY -> PRE_COPY_P2P -> STOP_COPY: one session throughout);
 *   - where several shortest paths exist (P2P and PRE_COPY together), it is the one vfio_main.c's
 *     comment lists;
 *   - everything else is EINVAL: a state the flags lack, ERROR, STOP_COPY -> PRE_COPY(_P2P),
 *     anything from ERROR, numbers outside the enum; the current state itself takes no arc.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Errno } from '../../../src/abi/errno.js';
import {
  VFIO_MIGRATION_P2P as P2P,
  VFIO_MIGRATION_PRE_COPY as PRE,
  VfioMigState as S,
  VFIO_MIGRATION_STOP_COPY as SC,
} from '../../../src/abi/vfio.js';
import { isSaving, type MigState, migStateName, path, supports } from '../../../src/core/migration/fsm.js';
import { errnoOf } from '../../helpers/errno.js';

const FLAG_SETS = [SC, SC | P2P, SC | PRE, SC | P2P | PRE];
const STATES = Object.values(S) as MigState[];

/** vfio_mig_get_next_state's comment: the arcs a driver implements, by the features it has. */
function arcs(flags: number): [MigState, MigState][] {
  const out: [MigState, MigState][] = [
    [S.RESUMING, S.STOP],
    [S.STOP, S.RESUMING],
    [S.STOP, S.STOP_COPY],
    [S.STOP_COPY, S.STOP],
  ];
  if (flags & P2P)
    out.push(
      [S.RUNNING, S.RUNNING_P2P],
      [S.RUNNING_P2P, S.RUNNING],
      [S.RUNNING_P2P, S.STOP],
      [S.STOP, S.RUNNING_P2P],
    );
  else out.push([S.RUNNING, S.STOP], [S.STOP, S.RUNNING]);
  if (flags & PRE && !(flags & P2P))
    out.push([S.RUNNING, S.PRE_COPY], [S.PRE_COPY, S.RUNNING], [S.PRE_COPY, S.STOP_COPY]);
  if (flags & PRE && flags & P2P)
    out.push(
      [S.PRE_COPY, S.RUNNING],
      [S.PRE_COPY, S.PRE_COPY_P2P],
      [S.PRE_COPY_P2P, S.PRE_COPY],
      [S.PRE_COPY_P2P, S.RUNNING_P2P],
      [S.PRE_COPY_P2P, S.STOP_COPY],
      [S.RUNNING, S.PRE_COPY],
      [S.RUNNING_P2P, S.PRE_COPY_P2P],
    );
  return out;
}

/** Every shortest path from `from` to `to` over `arcs`, no saving-group state inside. */
function shortest(flags: number, from: MigState, to: MigState): MigState[][] {
  // vfio.h: "STOP_COPY -> PRE_COPY, STOP_COPY -> PRE_COPY_P2P: These arcs are not permitted and
  // return error if requested" (no combination through STOP and RUNNING either).
  if (from === S.STOP_COPY && (to === S.PRE_COPY || to === S.PRE_COPY_P2P)) return [];
  const edges = arcs(flags);
  let frontier: MigState[][] = [[from]];
  for (let len = 0; len < STATES.length; len++) {
    const done = frontier.filter((p) => p[p.length - 1] === to);
    if (done.length) return done.map((p) => p.slice(1));
    frontier = frontier.flatMap((p) => {
      const last = p[p.length - 1]!;
      // No saving state inside a path, unless the whole path stays in the saving group (one
      // session throughout: the kernel's PRE_COPY -> PRE_COPY_P2P -> STOP_COPY).
      if (p.length > 1 && isSaving(last) && !(p.every(isSaving) && isSaving(to))) return [];
      return edges
        .filter(([a]) => a === last)
        .map(([, b]) => [...p, b])
        .filter((q) => !p.includes(q[q.length - 1]!));
    });
  }
  return [];
}

/** vfio_main.c's comment: the combination transitions with everything supported. */
const KERNEL_PATHS: readonly MigState[][] = [
  [S.PRE_COPY, S.PRE_COPY_P2P, S.STOP_COPY],
  [S.PRE_COPY, S.RUNNING, S.RUNNING_P2P],
  [S.PRE_COPY, S.RUNNING, S.RUNNING_P2P, S.STOP],
  [S.PRE_COPY, S.RUNNING, S.RUNNING_P2P, S.STOP, S.RESUMING],
  [S.PRE_COPY_P2P, S.RUNNING_P2P, S.RUNNING],
  [S.PRE_COPY_P2P, S.RUNNING_P2P, S.STOP],
  [S.PRE_COPY_P2P, S.RUNNING_P2P, S.STOP, S.RESUMING],
  [S.RESUMING, S.STOP, S.RUNNING_P2P],
  [S.RESUMING, S.STOP, S.RUNNING_P2P, S.PRE_COPY_P2P],
  [S.RESUMING, S.STOP, S.RUNNING_P2P, S.RUNNING],
  [S.RESUMING, S.STOP, S.RUNNING_P2P, S.RUNNING, S.PRE_COPY],
  [S.RESUMING, S.STOP, S.STOP_COPY],
  [S.RUNNING, S.RUNNING_P2P, S.PRE_COPY_P2P],
  [S.RUNNING, S.RUNNING_P2P, S.STOP],
  [S.RUNNING, S.RUNNING_P2P, S.STOP, S.RESUMING],
  [S.RUNNING, S.RUNNING_P2P, S.STOP, S.STOP_COPY],
  [S.RUNNING_P2P, S.RUNNING, S.PRE_COPY],
  [S.RUNNING_P2P, S.STOP, S.RESUMING],
  [S.RUNNING_P2P, S.STOP, S.STOP_COPY],
  [S.STOP, S.RUNNING_P2P, S.PRE_COPY_P2P],
  [S.STOP, S.RUNNING_P2P, S.RUNNING],
  [S.STOP, S.RUNNING_P2P, S.RUNNING, S.PRE_COPY],
  [S.STOP_COPY, S.STOP, S.RESUMING],
  [S.STOP_COPY, S.STOP, S.RUNNING_P2P],
  [S.STOP_COPY, S.STOP, S.RUNNING_P2P, S.RUNNING],
];

const flagName = (f: number) =>
  ['STOP_COPY', f & P2P ? 'P2P' : '', f & PRE ? 'PRE_COPY' : ''].filter(Boolean).join('|');

describe('vfio_mig_get_next_state', () => {
  for (const flags of FLAG_SETS) {
    test(`${flagName(flags)}: every pair of states`, () => {
      let checked = 0;
      for (const from of STATES) {
        for (const to of [...STATES, 8, 99, 0xffffffff]) {
          const what = `${migStateName(from)} -> ${migStateName(to)}`;
          const usable = supports(flags, from) && supports(flags, to);
          const ways = usable ? shortest(flags, from, to as MigState) : [];
          if (from === to) {
            // The driver's loop (mlx5vf_pci_set_device_state: `while (new_state != cur)`) takes
            // no arc: SET of the current state succeeds, ERROR included.
            assert.deepEqual(path(flags, from, to), [], what);
          } else if (ways.length === 0) {
            assert.equal(
              errnoOf(() => path(flags, from, to)),
              Errno.EINVAL,
              what,
            );
          } else {
            const got = path(flags, from, to);
            assert.ok(
              ways.some((w) => w.join() === got.join()),
              `${what}: ${got.map(migStateName).join(' -> ')} is not among the shortest ${JSON.stringify(ways.map((w) => w.map(migStateName)))}`,
            );
            if (ways.length > 1) {
              // Ties only exist with both P2P and PRE_COPY: the kernel's comment names its choice.
              assert.equal(flags, SC | P2P | PRE, what);
              const kernel = KERNEL_PATHS.find((k) => k[0] === from && k[k.length - 1] === to);
              assert.ok(kernel, `${what}: ambiguous and not in the kernel's list`);
              assert.deepEqual(got, kernel.slice(1), what);
            }
          }
          checked++;
        }
      }
      assert.equal(checked, STATES.length * (STATES.length + 3));
    });
  }

  test('every combination transition vfio_main.c lists, with all features', () => {
    for (const k of KERNEL_PATHS)
      assert.deepEqual(
        path(SC | P2P | PRE, k[0]!, k[k.length - 1]!),
        k.slice(1),
        k.map(migStateName).join(' -> '),
      );
  });

  test('the blocked arcs: STOP_COPY -> PRE_COPY, PRE_COPY_P2P; ERROR both ways', () => {
    const all = SC | P2P | PRE;
    for (const [from, to] of [
      [S.STOP_COPY, S.PRE_COPY],
      [S.STOP_COPY, S.PRE_COPY_P2P],
      [S.RUNNING, S.ERROR],
      [S.ERROR, S.RUNNING],
      [S.ERROR, S.STOP],
    ] as const)
      assert.equal(
        errnoOf(() => path(all, from, to)),
        Errno.EINVAL,
        `${migStateName(from)} -> ${migStateName(to)}`,
      );
  });
});
