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
  readonly dmaDebugReports: number;
  readonly checks: readonly { readonly name: string; readonly ok: boolean }[];
  readonly verified: boolean;
  /** Where the run stopped and the errno it got (probe, buffers, a page for the rogue test). */
  readonly failure?: StackFailure;
  readonly verifiedBytes: number;
}
