/**
 * The nvme stack's workload: a small fio-like generator. QD slots, each with its own I/O buffer
 * (physical pages interleaved across slots, so requests are multi-segment), keep requests in
 * flight against the host driver; writes copy from a random pattern and record per-block
 * checksums, reads are checked against them (BlockChecksums). The generator never overlaps two
 * in-flight I/Os on the same 4 KiB of the namespace.
 */
import { bioFromRanges, blkRqFromBio } from '@dmakit/block-rq-dma';
import { BlkStatus, ReqOp, SZ_1M } from '@dmakit/dma-core';
import type { BlkRequest, Machine, QueueLimits } from '@dmakit/dma-core';
import type { NvmeDev } from '@dmakit/nvme-pci';
import { BlockChecksums } from './checksums.js';
import { MIXED_BSSPLIT } from './options.js';
import type { FioRw } from './options.js';
import { allocSlots, freeSlots, readSlot, slotRanges } from './slots.js';
import type { Slot } from './slots.js';

export interface FioWorkloadOptions {
  /** I/Os to complete. */
  readonly total: number;
  readonly qd: number;
  readonly bs: number | 'mixed';
  readonly rw: FioRw;
  readonly lbaSize: number;
  /** Bytes of the namespace the workload touches. */
  readonly spanBytes: number;
  /** Record write checksums and check every read. */
  readonly verify: boolean;
  /** Reset the controller after this many completions (0: never). */
  readonly resetAfter: number;
  readonly onProgress?: (done: number, total: number) => void;
}

/** What the workload counted. */
export interface FioCounts {
  readonly issued: number;
  readonly completed: number;
  readonly reads: number;
  readonly writes: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Bytes of reads checked against the checksums. */
  readonly verifiedBytes: number;
  readonly ioErrors: number;
  /** Blocks a read returned that differ from what was written. */
  readonly mismatched: number;
  /** Bytes of every completed I/O, failed ones included. */
  readonly bytesTotal: number;
  /** The block status of the first failed I/O (BlkStatus), 0 when none failed. */
  readonly firstError: number;
}

const PATTERN_BYTES = 2 * SZ_1M;

export class FioWorkload {
  /** Per-block checksums of what the namespace should hold. */
  readonly sums: BlockChecksums;
  readonly #m: Machine;
  readonly #host: NvmeDev;
  readonly #limits: QueueLimits;
  readonly #o: FioWorkloadOptions;
  readonly #slots: Slot[];
  readonly #pattern: Uint8Array;
  readonly #patternWords: Int32Array;
  readonly #scratch: Uint8Array;
  readonly #scratchWords: Int32Array;
  readonly #busy4k: Uint8Array;
  readonly #ranges: Float64Array;
  readonly #bsWeights: number;
  readonly #waiting: Slot[] = [];
  readonly #progressStep: number;
  #seqPos = 0;
  #c = { issued: 0, completed: 0, reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, verifiedBytes: 0, ioErrors: 0, mismatched: 0, bytesTotal: 0, firstError: 0 };

  /** Allocate the slot buffers (QD x the largest block size) and the write pattern. */
  constructor(m: Machine, host: NvmeDev, o: FioWorkloadOptions) {
    this.#m = m;
    this.#host = host;
    this.#limits = host.queueLimits();
    this.#o = o;
    const maxBs = o.bs === 'mixed' ? Math.max(...MIXED_BSSPLIT.map((x) => x[0])) : o.bs;
    // Enough pages for the largest I/O at its largest in-page offset (sub-page I/Os never cross a page).
    const pagesPerSlot = Math.floor(maxBs / 4096) + 1;
    this.#slots = allocSlots(m, o.qd, pagesPerSlot);
    // A random pattern the writes copy from (at an offset per I/O), and a scratch for read-back.
    this.#pattern = m.rng.fill(new Uint8Array(PATTERN_BYTES + maxBs));
    this.#patternWords = new Int32Array(this.#pattern.buffer, 0, this.#pattern.length >> 2);
    this.#scratch = new Uint8Array(maxBs + 4096);
    this.#scratchWords = new Int32Array(this.#scratch.buffer);
    this.sums = new BlockChecksums(o.spanBytes);
    this.#busy4k = new Uint8Array(o.spanBytes / 4096);
    this.#ranges = new Float64Array(2 * pagesPerSlot);
    this.#bsWeights = MIXED_BSSPLIT.reduce((t, x) => t + x[1], 0);
    this.#progressStep = Math.max(1, Math.ceil(o.total / 100));
  }

  /** True for read-only workloads (nothing written, nothing to check on the namespace). */
  get readOnly(): boolean {
    return this.#o.rw === 'read' || this.#o.rw === 'randread';
  }

  /** Keep QD I/Os in flight until `total` completed; returns the counts. */
  run(): FioCounts {
    const m = this.#m;
    const total = this.#o.total;
    const c = this.#c;
    for (const s of this.#slots) this.#next(s);
    for (let guard = 0; c.completed < c.issued || (c.issued < total && this.#waiting.length > 0); guard++) {
      m.scheduler.runUntilIdle();
      if (c.completed >= c.issued && this.#waiting.length > 0) {
        const w = this.#waiting.shift();
        if (w !== undefined) this.#next(w);
      }
      if (guard > total * 4 + 1000) throw new Error('nvme stack: the workload stopped making progress');
    }
    return { ...c };
  }

  /** Give the slot buffers back. */
  freeBuffers(): void {
    freeSlots(this.#m, this.#slots);
  }

  #pickBs(): number {
    const { bs, lbaSize } = this.#o;
    if (bs !== 'mixed') return bs;
    let r = this.#m.rng.nextInt(this.#bsWeights);
    for (const [size, w] of MIXED_BSSPLIT) {
      if (r < w) return Math.max(size, lbaSize);
      r -= w;
    }
    return 4096;
  }

  #rangeFree(pos: number, len: number): boolean {
    for (let b = Math.floor(pos / 4096); b < Math.ceil((pos + len) / 4096); b++) if (this.#busy4k[b] !== 0) return false;
    return true;
  }

  #setBusy(pos: number, len: number, v: number): void {
    for (let b = Math.floor(pos / 4096); b < Math.ceil((pos + len) / 4096); b++) this.#busy4k[b] = v;
  }

  #prepare(s: Slot): boolean {
    const { rw, spanBytes: span, lbaSize } = this.#o;
    const rng = this.#m.rng;
    const isRand = rw.startsWith('rand');
    const bytes = this.#pickBs();
    let pos = -1;
    for (let attempt = 0; attempt < 16 && pos < 0; attempt++) {
      let p: number;
      if (isRand) {
        const align = Math.min(bytes, 65536);
        p = rng.nextInt((span - bytes) / align + 1) * align;
      } else {
        if (this.#seqPos + bytes > span) this.#seqPos = 0;
        p = this.#seqPos;
      }
      if (this.#rangeFree(p, bytes)) pos = p;
      else if (!isRand) return false; // sequential: wait for the range to drain
    }
    if (pos < 0) return false;
    if (!isRand) this.#seqPos = pos + bytes;
    const mix = rw === 'rw' || rw === 'randrw';
    s.op = this.readOnly ? ReqOp.READ : mix ? (rng.nextInt(2) === 0 ? ReqOp.READ : ReqOp.WRITE) : ReqOp.WRITE;
    s.lba = pos / lbaSize;
    s.bytes = bytes;
    // Small I/Os sometimes start inside a page (PRP1 unaligned) but never cross into the next
    // one (3 KiB: offset 0 only); the rest start on a page.
    s.offset = bytes < 4096 ? rng.nextInt(Math.floor(4096 / bytes)) * bytes : 0;
    this.#setBusy(pos, bytes, 1);
    return true;
  }

  #submit(s: Slot): void {
    const m = this.#m;
    const ranges = this.#ranges;
    const { lbaSize } = this.#o;
    const len = s.bytes;
    const n = slotRanges(s, ranges);
    if (s.op === ReqOp.WRITE) {
      // The CPU fills the buffer from the pattern and records what each block should read back.
      const pOff = (m.rng.nextInt(PATTERN_BYTES / 512) * 512) | 0;
      let done = 0;
      for (let i = 0; i < n; i++) {
        const l = ranges[2 * i + 1] ?? 0;
        m.memory.write(ranges[2 * i] ?? 0, this.#pattern, pOff + done, l);
        done += l;
      }
      if (this.#o.verify) this.sums.record((s.lba * lbaSize) / 512, len / 512, this.#patternWords, pOff >> 2);
    }
    const bio = bioFromRanges(s.op, (s.lba * lbaSize) / 512, ranges.subarray(0, 2 * n));
    const rq = bio === null ? null : blkRqFromBio(this.#limits, bio, s.idx);
    if (rq === null) throw new Error(`nvme stack: cannot build a request of ${len} bytes`);
    rq.endIo = (r, st) => {
      this.#onDone(s, r, st);
    };
    s.busy = true;
    s.submittedAt = m.clock.now();
    this.#c.issued++;
    const st = this.#host.queueRq(rq);
    if (st === BlkStatus.RESOURCE) {
      // blk-mq requeues the same request (blk_mq_requeue_request): same op, LBA and length. The
      // range stays busy and the checksums keep what this write will put there.
      this.#c.issued--;
      s.busy = false;
      s.requeued = true;
      this.#waiting.push(s);
      return;
    }
    if (st !== BlkStatus.OK) this.#onDone(s, rq, st);
  }

  #next(s: Slot): void {
    if (this.#c.issued >= this.#o.total) return;
    if (s.requeued) s.requeued = false;
    else if (!this.#prepare(s)) {
      this.#waiting.push(s);
      return;
    }
    this.#submit(s);
  }

  #onDone(s: Slot, _rq: BlkRequest, st: BlkStatus): void {
    const c = this.#c;
    const { lbaSize, total, resetAfter, onProgress } = this.#o;
    s.busy = false;
    c.completed++;
    const len = s.bytes;
    c.bytesTotal += len;
    if (st !== BlkStatus.OK) {
      c.ioErrors++;
      if (c.firstError === 0) c.firstError = st;
      // A failed write leaves its blocks indeterminate: they are no longer "reported written".
      if (s.op === ReqOp.WRITE && this.#o.verify) this.sums.forget((s.lba * lbaSize) / 512, len / 512);
    } else if (s.op === ReqOp.READ) {
      c.reads++;
      c.bytesRead += len;
      if (this.#o.verify) {
        readSlot(this.#m, s, this.#scratch);
        c.mismatched += this.sums.mismatches((s.lba * lbaSize) / 512, len / 512, this.#scratchWords);
        c.verifiedBytes += len;
      }
    } else {
      c.writes++;
      c.bytesWritten += len;
    }
    this.#setBusy(s.lba * lbaSize, len, 0);
    if (onProgress !== undefined && (c.completed % this.#progressStep === 0 || c.completed === total)) onProgress(c.completed, total);
    if (resetAfter > 0 && c.completed === resetAfter) this.#host.resetCtrl();
    // Slots that could not start (range busy, queue full) get another try first.
    if (this.#waiting.length > 0) for (const w of this.#waiting.splice(0)) this.#next(w);
    this.#next(s);
  }
}
