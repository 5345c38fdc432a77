/** Validation of the control values (the page shows the message and keeps the previous run). */
export class ControlError extends Error {
  override readonly name = 'ControlError';
}

const INT = /^\s*\d+\s*$/;

/** The seed: a non-negative safe integer (like the CLI's --seed). */
export function parseSeed(text: string): number {
  if (!INT.test(text)) throw new ControlError(`Seed must be a non-negative integer, got "${text}".`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ControlError(`Seed must be at most ${Number.MAX_SAFE_INTEGER}, got "${text}".`);
  return n;
}

/** The workload size: an integer in the stack's [min, max]. */
export function parseSize(text: string, spec: { readonly label: string; readonly unit: string; readonly min: number; readonly max: number }): number {
  if (!INT.test(text)) throw new ControlError(`${spec.label} must be an integer (${spec.unit}) in ${spec.min}..${spec.max}, got "${text}".`);
  const n = Number(text);
  if (n < spec.min || n > spec.max) throw new ControlError(`${spec.label} must be in ${spec.min}..${spec.max} ${spec.unit}, got ${n}.`);
  return n;
}
