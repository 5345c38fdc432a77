// kernel: include/uapi/linux/vfio.h (enum vfio_device_mig_state, VFIO_MIGRATION_*),
// drivers/vfio/vfio_main.c (vfio_mig_get_next_state)
import { Errno } from '@dmakit/dma-core';

/** `enum vfio_device_mig_state` (VFIO migration uAPI v2). */
export const VfioDeviceMigState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;
export type VfioDeviceMigState = (typeof VfioDeviceMigState)[keyof typeof VfioDeviceMigState];

export const VFIO_DEVICE_NUM_STATES = 8;

/** `VFIO_DEVICE_FEATURE_MIGRATION` flags. */
export const VFIO_MIGRATION_STOP_COPY = 1 << 0;
export const VFIO_MIGRATION_P2P = 1 << 1;
export const VFIO_MIGRATION_PRE_COPY = 1 << 2;

/** `VFIO_DEVICE_FEATURE_*` numbers used here. */
export const VFIO_DEVICE_FEATURE_MIGRATION = 1;
export const VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
export const VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
export const VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;

const NAMES = ['ERROR', 'STOP', 'RUNNING', 'STOP_COPY', 'RESUMING', 'RUNNING_P2P', 'PRE_COPY', 'PRE_COPY_P2P'] as const;

export function vfioMigStateName(s: number): string {
  return NAMES[s] ?? `INVALID(${s})`;
}

export function isVfioDeviceMigState(s: unknown): s is VfioDeviceMigState {
  return typeof s === 'number' && Number.isInteger(s) && s >= 0 && s < VFIO_DEVICE_NUM_STATES;
}

const { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } = VfioDeviceMigState;

/**
 * `vfio_from_fsm_table[cur][new]`: the next state on the way from cur to new when every optional
 * state is supported. Row and column order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING,
 * RUNNING_P2P, PRE_COPY, PRE_COPY_P2P.
 */
// prettier-ignore
const FSM: readonly (readonly VfioDeviceMigState[])[] = [
  /* ERROR        */ [ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR],
  /* STOP         */ [ERROR, STOP, RUNNING_P2P, STOP_COPY, RESUMING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P],
  /* RUNNING      */ [ERROR, RUNNING_P2P, RUNNING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P, PRE_COPY, RUNNING_P2P],
  /* STOP_COPY    */ [ERROR, STOP, STOP, STOP_COPY, STOP, STOP, ERROR, ERROR],
  /* RESUMING     */ [ERROR, STOP, STOP, STOP, RESUMING, STOP, STOP, STOP],
  /* RUNNING_P2P  */ [ERROR, STOP, RUNNING, STOP, STOP, RUNNING_P2P, RUNNING, PRE_COPY_P2P],
  /* PRE_COPY     */ [ERROR, RUNNING, RUNNING, PRE_COPY_P2P, RUNNING, RUNNING, PRE_COPY, PRE_COPY_P2P],
  /* PRE_COPY_P2P */ [ERROR, RUNNING_P2P, RUNNING_P2P, STOP_COPY, RUNNING_P2P, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P],
];

/** `state_flags_table`: the migration flags a state needs. ERROR needs every bit (~0U): never requestable. */
const STATE_FLAGS: readonly number[] = [
  /* ERROR */ 0xffff_ffff,
  /* STOP */ VFIO_MIGRATION_STOP_COPY,
  /* RUNNING */ VFIO_MIGRATION_STOP_COPY,
  /* STOP_COPY */ VFIO_MIGRATION_STOP_COPY,
  /* RESUMING */ VFIO_MIGRATION_STOP_COPY,
  /* RUNNING_P2P */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
  /* PRE_COPY */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
  /* PRE_COPY_P2P */ VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
];

/** Does a device with `migrationFlags` support state `s`? */
export function vfioMigStateSupported(migrationFlags: number, s: number): boolean {
  const need = STATE_FLAGS[s];
  return need !== undefined && ((need & migrationFlags) >>> 0) === need >>> 0;
}

/**
 * `vfio_mig_get_next_state(device, cur_fsm, new_fsm, &next_fsm)`: the next single arc the driver
 * must perform on the way from `cur` to `target`, skipping over optional states the device does
 * not support. Returns the next state, or -EINVAL (unsupported/invalid state, or no path: e.g.
 * STOP_COPY -> PRE_COPY / PRE_COPY_P2P, anything from or to ERROR).
 */
export function vfioMigGetNextState(migrationFlags: number, cur: number, target: number): number {
  if (!isVfioDeviceMigState(cur) || !vfioMigStateSupported(migrationFlags, cur)) return -Errno.EINVAL;
  if (!isVfioDeviceMigState(target) || !vfioMigStateSupported(migrationFlags, target)) return -Errno.EINVAL;
  // Arcs touching optional and unsupported states are skipped over. The walk stops at ERROR (the
  // table's "no path" entry): the kernel's loop has no such exit and would spin on
  // STOP_COPY -> PRE_COPY (state_flags_table[ERROR] = ~0U is never satisfied); here it is -EINVAL.
  let next = FSM[cur]?.[target] ?? ERROR;
  while (next !== ERROR && !vfioMigStateSupported(migrationFlags, next)) next = FSM[next]?.[target] ?? ERROR;
  return next !== ERROR ? next : -Errno.EINVAL;
}

/**
 * The arcs a driver implements (vfio.h's list), given the supported optional states. Arcs to
 * ERROR are taken only by the driver on failure and are not listed.
 */
export function vfioMigLegalArcs(migrationFlags: number): readonly (readonly [VfioDeviceMigState, VfioDeviceMigState])[] {
  const p2p = (migrationFlags & VFIO_MIGRATION_P2P) !== 0;
  const pre = (migrationFlags & VFIO_MIGRATION_PRE_COPY) !== 0;
  const arcs: [VfioDeviceMigState, VfioDeviceMigState][] = [
    [STOP, STOP_COPY],
    [STOP, RESUMING],
    [STOP_COPY, STOP],
    [RESUMING, STOP],
  ];
  if (p2p) {
    arcs.push([RUNNING, RUNNING_P2P], [RUNNING_P2P, RUNNING], [RUNNING_P2P, STOP], [STOP, RUNNING_P2P]);
  } else {
    arcs.push([RUNNING, STOP], [STOP, RUNNING]);
  }
  if (pre) {
    arcs.push([RUNNING, PRE_COPY], [PRE_COPY, RUNNING]);
    if (p2p) {
      arcs.push([PRE_COPY, PRE_COPY_P2P], [PRE_COPY_P2P, PRE_COPY], [PRE_COPY_P2P, STOP_COPY], [RUNNING_P2P, PRE_COPY_P2P], [PRE_COPY_P2P, RUNNING_P2P]);
    } else {
      arcs.push([PRE_COPY, STOP_COPY]);
    }
  }
  return arcs;
}

/** Is `from -> to` a single arc a driver with `migrationFlags` must implement? */
export function vfioMigArcIsLegal(migrationFlags: number, from: number, to: number): boolean {
  return vfioMigLegalArcs(migrationFlags).some(([a, b]) => a === from && b === to);
}

/**
 * The whole decomposition of `cur -> target` (excluding cur), as the VFIO core drives a driver
 * through it; -EINVAL when the request is refused.
 */
export function vfioMigPath(migrationFlags: number, cur: number, target: number): VfioDeviceMigState[] | number {
  const path: VfioDeviceMigState[] = [];
  let s = cur;
  while (s !== target) {
    const next = vfioMigGetNextState(migrationFlags, s, target);
    if (next < 0) return -Errno.EINVAL;
    path.push(next as VfioDeviceMigState);
    s = next;
    if (path.length > VFIO_DEVICE_NUM_STATES) return -Errno.EINVAL;
  }
  if (!isVfioDeviceMigState(cur) || !vfioMigStateSupported(migrationFlags, cur)) return -Errno.EINVAL;
  return path;
}
