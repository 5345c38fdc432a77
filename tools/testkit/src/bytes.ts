/**
 * Byte helpers for tests that move data: a deterministic fill pattern and a fast equality check.
 */

/**
 * `len` deterministic pseudo-random bytes from `seed` (xorshift32): the same (len, seed) always
 * gives the same bytes, different seeds give different bytes, and no run of zeros hides a
 * transfer that did not happen. Seed 0 is allowed (it is mapped to a non-zero state).
 */
export function pattern(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let x = Math.imul(seed, 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Byte equality of two views (their offsets respected), without vitest's element-by-element deep
 * compare, which is slow on megabyte arrays. `a` may be undefined (a read that found nothing),
 * which is never equal.
 */
export function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && Buffer.compare(a, b) === 0;
}
