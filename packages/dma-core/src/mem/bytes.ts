/**
 * True when two byte buffers have the same length and the same bytes: the check a test or a
 * scenario makes on what a device or a process read back (`memcmp(a, b, len) == 0` with the
 * lengths compared first).
 */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
