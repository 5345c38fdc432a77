/**
 * Byte verification of the nvme stack: one FNV-1a checksum per 512-byte block of the span the
 * workload touches, recorded when the CPU fills a write buffer and checked when a read comes back
 * and, at the end, against what the namespace holds (the controller's view).
 */
import type { NvmeNamespace } from '@dmakit/nvme-pci';

/** FNV-1a over the 32-bit words of one 512-byte block starting at word `at`. */
export function blockChecksum(words: Int32Array, at: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = at; i < at + 128; i++) h = Math.imul(h ^ (words[i] ?? 0), 16777619);
  return h >>> 0;
}

const ZERO_BLOCK_SUM = blockChecksum(new Int32Array(128), 0);

/** What every 512-byte block of the span should read back (zeros until written). */
export class BlockChecksums {
  readonly #sums: Uint32Array;
  /** 1 = the block's contents are unknown (a write to it failed: NVMe leaves them indeterminate). */
  readonly #unknown: Uint8Array;

  constructor(spanBytes: number) {
    this.#sums = new Uint32Array(spanBytes / 512).fill(ZERO_BLOCK_SUM);
    this.#unknown = new Uint8Array(spanBytes / 512);
  }

  /** Forget `n` blocks from `first`: a failed write may have left any contents there. */
  forget(first: number, n: number): void {
    this.#unknown.fill(1, first, first + n);
  }

  /** Blocks tracked. */
  get blocks(): number {
    return this.#sums.length;
  }

  /** Record `n` blocks starting at block `first` as the blocks of `words` from word `at`. */
  record(first: number, n: number, words: Int32Array, at: number): void {
    for (let b = 0; b < n; b++) this.#sums[first + b] = blockChecksum(words, at + b * 128);
    this.#unknown.fill(0, first, first + n);
  }

  /** Blocks among `n` from `first` that differ from `words` (from word 0). */
  mismatches(first: number, n: number, words: Int32Array): number {
    let bad = 0;
    for (let b = 0; b < n; b++) if (this.#unknown[first + b] === 0 && blockChecksum(words, b * 128) !== this.#sums[first + b]) bad++;
    return bad;
  }

  /** Blocks of the namespace (read through its storage, not by DMA) that differ from the record. */
  namespaceMismatches(ns: NvmeNamespace): number {
    const blockBuf = new Uint8Array(512);
    const blockWords = new Int32Array(blockBuf.buffer);
    let bad = 0;
    for (let b = 0; b < this.#sums.length; b++) {
      if (this.#unknown[b] !== 0) continue;
      ns.readBytes(b * 512, blockBuf, 0, 512);
      if (blockChecksum(blockWords, 0) !== this.#sums[b]) bad++;
    }
    return bad;
  }
}
