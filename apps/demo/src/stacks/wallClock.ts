/**
 * The one place a stack reads wall time: the `wallMs` figure a report prints beside the simulated
 * time, to show what a run cost on this host. Nothing a stack computes or traces may depend on it
 * (DESIGN.md, "Determinism"); eslint's determinism rule forbids wall time everywhere in the stacks
 * and in package code but here.
 */
export function wallNowMs(): number {
  return performance.now();
}
