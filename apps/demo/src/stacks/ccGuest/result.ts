/** The cc-guest stack's result types (shared by the stack and its report). */
import type { StackFailure } from '../types.js';
import type { CcPhaseResult } from './workload.js';

export type CcVendorName = 'tdx' | 'sev';
/** What the second, never-accepted device tried and what happened. */
export interface CcRogueResult {
  readonly attempts: number;
  readonly refused: number;
  /** The private bytes it aimed at are unchanged. */
  readonly secretIntact: boolean;
  /** Its attestation failed (-EACCES) and its accept was refused (-EPERM). */
  readonly attestErrno: number;
  readonly acceptErrno: number;
}

/** The NVMe driver's mapping of BAR0 over the run. */
export interface CcDriverMmioResult {
  /** The worlds it was mapped in, in order ('shared' at probe, 'private' after acceptance, ...). */
  readonly worlds: readonly string[];
  /** Register and doorbell accesses the TDI refused (read all ones, or a write dropped). */
  readonly refused: number;
}

/** The dma-buf-over-private-MMIO step (see ccGuest/privateMmio.ts). */
export interface CcPrivateMmioResult {
  /** featureDmaBuf errnos in CONFIG_UNLOCKED, CONFIG_LOCKED and RUN before acceptance (-EPERM each). */
  readonly exportErrnos: readonly number[];
  /** The guest's private loads refused outside RUN/acceptance, and whether each read all ones. */
  readonly cpuRefused: number;
  readonly cpuAllOnes: boolean;
  /** Peer requests refused: a peer that is not a TDI, and the importer's stale address after the revoke. */
  readonly p2pRefused: number;
  /** How the importer's table was mapped ('bus-addr' through the switch). */
  readonly mode: string;
  /** Bytes moved peer-to-peer in RUN (each verified against the guest's private view). */
  readonly bytesMoved: number;
  readonly mismatches: number;
  /** move_notify calls the importer got (the revoke). */
  readonly moveNotifies: number;
  /** A new map after the revoke (-ENODEV). */
  readonly mapAfterRevokeErrno: number;
  /** dma-buf mappings still live after the revoke (0: the importer's mapping was torn down). */
  readonly liveMappingsAfterRevoke: number;
  /** The stale writes after the revoke changed no byte of the BAR. */
  readonly barIntact: boolean;
}

export interface CcGuestResult {
  readonly stack: 'cc-guest';
  readonly vendor: CcVendorName;
  /** The DMA-address bit of the guest (TDX shared GPA bit / SEV C-bit). */
  readonly sharedBit: number;
  readonly bs: number;
  readonly qd: number;
  readonly phases: readonly CcPhaseResult[];
  readonly rogue: CcRogueResult;
  /** The drive's TDISP states, in order. */
  readonly tdispHistory: readonly string[];
  readonly conversions: { readonly decrypt: number; readonly encrypt: number };
  readonly namespaceMismatches: number;
  /** The driver's BAR0 mapping worlds and refused register accesses (absent when the run stopped). */
  readonly driverMmio?: CcDriverMmioResult;
  /** Absent when the run stopped before the step. */
  readonly privateMmio?: CcPrivateMmioResult;
  readonly dmaDebugReports: number;
  readonly checks: readonly { readonly name: string; readonly ok: boolean }[];
  readonly verified: boolean;
  /** Where the run stopped and the errno it got (probe, buffers, a page for the rogue test). */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
}
