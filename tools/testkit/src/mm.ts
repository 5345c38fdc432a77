/**
 * Process address-space helpers: anonymous mappings that fail loudly instead of returning an errno.
 */
import { MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';

/** Options of {@link mmapAnon}. */
export interface MmapAnonOptions {
  /** Map at this address (MAP_FIXED: replaces, and so drops, whatever was mapped there). */
  readonly addr?: number;
  /** Protection (default PROT_READ | PROT_WRITE). */
  readonly prot?: number;
  /** Flags besides MAP_FIXED (default MAP_PRIVATE | MAP_ANONYMOUS). */
  readonly flags?: number;
}

/**
 * `mmap(addr, length, prot, flags, -1, 0)` of anonymous memory in `proc`; returns the address and
 * throws (naming the errno) when the mapping fails, so a test never carries on with a negative
 * address.
 */
export function mmapAnon(proc: Process, length: number, opts: MmapAnonOptions = {}): number {
  const flags = (opts.flags ?? MAP_PRIVATE | MAP_ANONYMOUS) | (opts.addr !== undefined ? MAP_FIXED : 0);
  const addr = proc.mm.mmap({ length, prot: opts.prot ?? PROT_READ | PROT_WRITE, flags, ...(opts.addr !== undefined ? { addr: opts.addr } : {}) });
  if (addr < 0) throw new Error(`mmap of ${length} bytes failed: ${addr}`);
  return addr;
}
