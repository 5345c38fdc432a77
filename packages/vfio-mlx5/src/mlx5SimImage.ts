// The simulated mlx5 function's state image (dmakit's firmware model; the real format is the
// firmware's own and opaque to the kernel): what SAVE_VHCA_STATE writes into the migration buffer
// and LOAD_VHCA_STATE parses. A 32-byte header (magic, version, kind, vhca_id, sequence, payload
// length, FNV-1a checksum, state size), then either the whole state (FULL) or the state blocks
// changed since the last save (INC: le32 count, then per block le32 index + the block's bytes).
import { MLX5_SIM_IMAGE_FULL, MLX5_SIM_IMAGE_HEADER_BYTES, MLX5_SIM_IMAGE_INC, MLX5_SIM_IMAGE_MAGIC, MLX5_SIM_IMAGE_VERSION, fnv1a } from './stream.js';

/** Bytes of one state block (the granularity of incremental saves). */
export const MLX5_SIM_STATE_BLOCK = 64;

/** Number of changed blocks (`dirty[b] === 1`). */
export function mlx5SimDirtyCount(dirty: Uint8Array): number {
  let n = 0;
  for (const d of dirty) n += d;
  return n;
}

/** Bytes of an incremental image holding `dirtyBlocks` blocks. */
export function mlx5SimIncImageBytes(dirtyBlocks: number): number {
  return MLX5_SIM_IMAGE_HEADER_BYTES + 4 + dirtyBlocks * (4 + MLX5_SIM_STATE_BLOCK);
}

/**
 * Encode an image of `state`: incremental over the blocks marked in `dirty` when given, else full.
 * @internal
 */
export function mlx5SimEncodeImage(state: Uint8Array, dirty: Uint8Array | null, vhcaId: number, seq: number): Uint8Array {
  let img: Uint8Array;
  if (dirty !== null) {
    const n = mlx5SimDirtyCount(dirty);
    img = new Uint8Array(mlx5SimIncImageBytes(n));
    const dv = new DataView(img.buffer);
    dv.setUint32(MLX5_SIM_IMAGE_HEADER_BYTES, n, true);
    let off = MLX5_SIM_IMAGE_HEADER_BYTES + 4;
    for (let b = 0; b < dirty.length; b++) {
      if (dirty[b] === 0) continue;
      dv.setUint32(off, b, true);
      img.set(state.subarray(b * MLX5_SIM_STATE_BLOCK, (b + 1) * MLX5_SIM_STATE_BLOCK), off + 4);
      off += 4 + MLX5_SIM_STATE_BLOCK;
    }
  } else {
    img = new Uint8Array(MLX5_SIM_IMAGE_HEADER_BYTES + state.length);
    img.set(state, MLX5_SIM_IMAGE_HEADER_BYTES);
  }
  const dv = new DataView(img.buffer);
  dv.setUint32(0, MLX5_SIM_IMAGE_MAGIC, true);
  dv.setUint16(4, MLX5_SIM_IMAGE_VERSION, true);
  dv.setUint16(6, dirty !== null ? MLX5_SIM_IMAGE_INC : MLX5_SIM_IMAGE_FULL, true);
  dv.setUint32(8, vhcaId, true);
  dv.setUint32(12, seq, true);
  dv.setUint32(16, img.length - MLX5_SIM_IMAGE_HEADER_BYTES, true);
  dv.setUint32(20, fnv1a(img, MLX5_SIM_IMAGE_HEADER_BYTES), true);
  dv.setUint32(24, state.length, true);
  return img;
}

/**
 * The load side: bytes LOAD_VHCA_STATE DMAed in, accumulated until whole images can be checked and
 * applied (an image may arrive in several chunks). An increment must follow the previous image
 * exactly: none lost, none applied twice.
 * @internal
 */
export class Mlx5SimImageLoader {
  #buf = new Uint8Array(0);
  #len = 0;
  #loadedFull = false;
  #expectSeq = 0;

  /** Room for `size` more bytes: the buffer and the offset to DMA them to. */
  reserve(size: number): { buf: Uint8Array; off: number } {
    if (this.#len + size > this.#buf.length) {
      const nb = new Uint8Array(Math.max(this.#len + size, this.#buf.length * 2));
      nb.set(this.#buf.subarray(0, this.#len));
      this.#buf = nb;
    }
    return { buf: this.#buf, off: this.#len };
  }

  /** The `size` bytes after the last reservation arrived. */
  commit(size: number): void {
    this.#len += size;
  }

  /** True when every byte loaded formed whole images and at least one full image arrived. */
  get complete(): boolean {
    return this.#loadedFull && this.#len === 0;
  }

  /** Drop what was loaded (a failed load or a function reset). */
  reset(): void {
    this.#len = 0;
    this.#loadedFull = false;
  }

  /**
   * Apply every whole image loaded so far to `state` (calling `onImage` per image); keep a partial
   * one for later. False when an image is malformed (the caller scrubs the state).
   */
  apply(state: Uint8Array, onImage: () => void): boolean {
    let pos = 0;
    const buf = this.#buf;
    const blocks = state.length / MLX5_SIM_STATE_BLOCK;
    while (this.#len - pos >= MLX5_SIM_IMAGE_HEADER_BYTES) {
      const dv = new DataView(buf.buffer, buf.byteOffset + pos, MLX5_SIM_IMAGE_HEADER_BYTES);
      if (dv.getUint32(0, true) !== MLX5_SIM_IMAGE_MAGIC || dv.getUint16(4, true) !== MLX5_SIM_IMAGE_VERSION) return false;
      const kind = dv.getUint16(6, true);
      const seq = dv.getUint32(12, true);
      const payload = dv.getUint32(16, true);
      const crc = dv.getUint32(20, true);
      const stateBytes = dv.getUint32(24, true);
      if (stateBytes !== state.length || (kind !== MLX5_SIM_IMAGE_FULL && kind !== MLX5_SIM_IMAGE_INC)) return false;
      if (kind === MLX5_SIM_IMAGE_FULL && payload !== stateBytes) return false;
      if (payload > 1 << 30) return false;
      if (this.#len - pos < MLX5_SIM_IMAGE_HEADER_BYTES + payload) break; // more chunks to come
      const p0 = pos + MLX5_SIM_IMAGE_HEADER_BYTES;
      if (fnv1a(buf, p0, payload) !== crc) return false;
      if (kind === MLX5_SIM_IMAGE_FULL) {
        state.set(buf.subarray(p0, p0 + payload));
        this.#loadedFull = true;
      } else {
        if (!this.#loadedFull || seq !== this.#expectSeq) return false;
        const pv = new DataView(buf.buffer, buf.byteOffset + p0, payload);
        const n = payload >= 4 ? pv.getUint32(0, true) : -1;
        if (n < 0 || 4 + n * (4 + MLX5_SIM_STATE_BLOCK) !== payload) return false;
        for (let i = 0; i < n; i++) {
          const o = 4 + i * (4 + MLX5_SIM_STATE_BLOCK);
          const b = pv.getUint32(o, true);
          if (b >= blocks) return false;
          state.set(buf.subarray(p0 + o + 4, p0 + o + 4 + MLX5_SIM_STATE_BLOCK), b * MLX5_SIM_STATE_BLOCK);
        }
      }
      this.#expectSeq = seq + 1;
      onImage();
      pos = p0 + payload;
    }
    if (pos > 0) {
      buf.copyWithin(0, pos, this.#len);
      this.#len -= pos;
    }
    return true;
  }
}
