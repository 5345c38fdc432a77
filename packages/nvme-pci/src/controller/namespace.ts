// A sparse NVMe namespace: logical blocks with real bytes, stored by chunk.
// QEMU keeps namespace data in a block backend (hw/nvme/ns.c); here the backend is a Map of chunks.

/**
 * Options of a simulated namespace: id, logical block size, capacity. dmakit's model (QEMU hw/nvme/ns.c
 * keeps the data in a block backend).
 */
export interface NvmeNamespaceOptions {
  /** Namespace id, 1 .. 0xfffffffe. */
  nsid: number;
  /** Logical block size in bytes. */
  lbaSize: 512 | 4096;
  /** Namespace size (NSZE) in logical blocks. */
  capacityLbas: number;
}

/** Bytes per storage chunk: touched chunks cost memory, the rest reads as zeros. */
const CHUNK_SHIFT = 16;
const CHUNK_BYTES = 1 << CHUNK_SHIFT;

/**
 * One namespace's logical blocks. Never-written and deallocated blocks read as zeros (Identify
 * Namespace DLFEAT = 001b), so Write Zeroes and deallocate both drop bytes instead of storing them.
 */
export class NvmeNamespace {
  readonly nsid: number;
  readonly lbaSize: number;
  /** log2(lbaSize): the LBADS field of LBA format 0. */
  readonly lbaShift: number;
  /** NSZE in logical blocks. */
  readonly capacityLbas: number;
  readonly #chunks = new Map<number, Uint8Array>();

  constructor(opts: NvmeNamespaceOptions) {
    const { nsid, capacityLbas } = opts;
    // Checked at run time too: options may come from untyped input (a CLI, JSON).
    const lbaSize: number = opts.lbaSize;
    if (!Number.isInteger(nsid) || nsid < 1 || nsid >= 0xffffffff) throw new RangeError(`namespace: nsid must be 1..0xfffffffe, got ${nsid}`);
    if (lbaSize !== 512 && lbaSize !== 4096) throw new RangeError(`namespace ${nsid}: lbaSize must be 512 or 4096, got ${lbaSize}`);
    if (!Number.isSafeInteger(capacityLbas) || capacityLbas < 1 || capacityLbas * lbaSize > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`namespace ${nsid}: capacityLbas must be a positive integer, got ${capacityLbas}`);
    }
    this.nsid = nsid;
    this.lbaSize = lbaSize;
    this.lbaShift = lbaSize === 512 ? 9 : 12;
    this.capacityLbas = capacityLbas;
  }

  /** Bytes held in memory (touched chunks). */
  get residentBytes(): number {
    return this.#chunks.size * CHUNK_BYTES;
  }

  /** `nvme_check_bounds`: true if [slba, slba + nlb) lies inside the namespace. */
  inBounds(slba: number, nlb: number): boolean {
    return slba >= 0 && nlb >= 0 && slba + nlb <= this.capacityLbas;
  }

  /** Offset in the array the last successful `storedView` returned where its range starts. */
  viewOffset = 0;

  /**
   * The stored chunk that holds all of `[pos, pos + len)`, to copy from without staging (its
   * start is `viewOffset`); null when the range crosses a chunk boundary or was never written
   * (then `readBytes` is the way: it reads zeros there). Valid until the next write or zeroing.
   */
  storedView(pos: number, len: number): Uint8Array | null {
    const ci = Math.floor(pos / CHUNK_BYTES);
    const off = pos - ci * CHUNK_BYTES;
    if (!(len > 0 && off + len <= CHUNK_BYTES)) return null;
    const c = this.#chunks.get(ci);
    if (c === undefined) return null;
    this.viewOffset = off;
    return c;
  }

  /** Copy `len` bytes from byte offset `pos` of the namespace into `out` at `outOff`. */
  readBytes(pos: number, out: Uint8Array, outOff: number, len: number): void {
    let done = 0;
    while (done < len) {
      const p = pos + done;
      const ci = Math.floor(p / CHUNK_BYTES);
      const off = p - ci * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - off, len - done);
      const c = this.#chunks.get(ci);
      if (c === undefined) out.fill(0, outOff + done, outOff + done + n);
      else out.set(c.subarray(off, off + n), outOff + done);
      done += n;
    }
  }

  /** Store `len` bytes of `src` (from `srcOff`) at byte offset `pos`. */
  writeBytes(pos: number, src: Uint8Array, srcOff: number, len: number): void {
    let done = 0;
    while (done < len) {
      const p = pos + done;
      const ci = Math.floor(p / CHUNK_BYTES);
      const off = p - ci * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - off, len - done);
      let c = this.#chunks.get(ci);
      if (c === undefined) {
        c = new Uint8Array(CHUNK_BYTES);
        this.#chunks.set(ci, c);
      }
      c.set(src.subarray(srcOff + done, srcOff + done + n), off);
      done += n;
    }
  }

  /** Make [pos, pos + len) read as zeros, dropping whole chunks (Write Zeroes, deallocate). */
  zeroBytes(pos: number, len: number): void {
    let done = 0;
    while (done < len) {
      const p = pos + done;
      const ci = Math.floor(p / CHUNK_BYTES);
      const off = p - ci * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - off, len - done);
      if (off === 0 && n === CHUNK_BYTES) this.#chunks.delete(ci);
      else this.#chunks.get(ci)?.fill(0, off, off + n);
      done += n;
    }
  }

  /** Read `nlb` blocks from `slba` into `out` (a test and tooling convenience; bounds-checked). */
  readLbas(slba: number, nlb: number, out: Uint8Array = new Uint8Array(nlb * this.lbaSize)): Uint8Array {
    if (!this.inBounds(slba, nlb)) throw new RangeError(`namespace ${this.nsid}: LBA range [${slba}, +${nlb}) out of range`);
    this.readBytes(slba * this.lbaSize, out, 0, nlb * this.lbaSize);
    return out;
  }

  /** Write whole blocks from `data` at `slba` (test and tooling convenience; bounds-checked). */
  writeLbas(slba: number, data: Uint8Array): void {
    const nlb = Math.ceil(data.length / this.lbaSize);
    if (data.length % this.lbaSize !== 0 || !this.inBounds(slba, nlb)) throw new RangeError(`namespace ${this.nsid}: bad write of ${data.length} bytes at LBA ${slba}`);
    this.writeBytes(slba * this.lbaSize, data, 0, data.length);
  }
}
