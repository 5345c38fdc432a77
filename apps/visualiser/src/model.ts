/**
 * Page-side state of one run and the pure derivations the views draw from. No DOM here: the unit
 * tests drive it with events shaped like the worker's.
 */
import type { Snapshot, WireEvent } from './protocol.js';

export interface RunDone {
  readonly result: unknown;
  readonly table: string;
  readonly runMs: number;
  readonly eventCount: number;
  readonly dropped: number;
}

/** Events that start an I/O for "step to next I/O". */
const IO_START = new Set(['nvme:nvme_setup_cmd', 'mlx5:odp_page_fault', 'dma:dma_map_phys', 'dma:dma_map_sg', 'mlx5_vfio:save_vhca_state']);

export class RunModel {
  readonly events: WireEvent[] = [];
  readonly snapshots: Snapshot[] = [];
  /** null: the views follow the live stream; a number: they are frozen at that many events. */
  cursor: number | null = null;
  done: RunDone | null = null;
  compare: { readonly mapping: string; readonly events: WireEvent[]; readonly snapshots: Snapshot[] } | null = null;
  readonly startedAt: number;
  /** The stack's workload unit (StackInfo.size.unit), for per-unit counters. */
  stackUnit: string | undefined;

  constructor(
    readonly stack: string,
    readonly label: string,
    startedAt = 0,
  ) {
    this.startedAt = startedAt;
  }

  addBatch(events: readonly WireEvent[], snapshot: Snapshot): void {
    for (const e of events) this.events.push(e);
    this.snapshots.push(snapshot);
  }

  /** How many events the views show. */
  get visible(): number {
    return this.cursor === null ? this.events.length : Math.min(this.cursor, this.events.length);
  }

  get paused(): boolean {
    return this.cursor !== null;
  }

  pause(): void {
    if (this.cursor === null) this.cursor = this.events.length;
  }

  resume(): void {
    this.cursor = null;
  }

  /** Advance the frozen cursor by one event, or to just past the next I/O start. Returns the new cursor. */
  step(unit: 'event' | 'io'): number {
    const from = this.visible;
    let to = Math.min(from + 1, this.events.length);
    if (unit === 'io') {
      // Just past the next event that starts an I/O (the cursor already sits after the current one).
      to = this.events.length;
      for (let i = from; i < this.events.length; i++) {
        const e = this.events[i];
        if (e !== undefined && IO_START.has(e.n)) {
          to = i + 1;
          break;
        }
      }
    }
    this.cursor = to;
    return to;
  }

  /** The latest snapshot taken at or before `n` events (the state the views show at the cursor). */
  snapshotAt(n = this.visible): Snapshot | undefined {
    const s = this.snapshots;
    let lo = 0;
    let hi = s.length - 1;
    let best: Snapshot | undefined;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const x = s[mid];
      if (x === undefined) break;
      if (x.at <= n) {
        best = x;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return best ?? (n >= this.events.length ? s[s.length - 1] : undefined);
  }

  /** The snapshots up to the cursor (for time series). */
  snapshotsUpTo(n = this.visible): Snapshot[] {
    return this.snapshots.filter((s) => s.at <= n);
  }
}

// ---- derivations -------------------------------------------------------------------------------

function num(v: unknown): number {
  return typeof v === 'number' ? v : Number.NaN;
}

/** One IOMMU mapping (iommu:map) and when it went away (iommu:unmap), per domain. */
export interface MappingInterval {
  readonly domain: string;
  readonly iova: number;
  readonly size: number;
  readonly paddr: number;
  readonly tMap: number;
  tUnmap: number | null;
  readonly mapIndex: number;
}

export interface MappingState {
  readonly intervals: MappingInterval[];
  readonly live: Map<string, MappingInterval[]>;
}

/** Replay iommu:map / iommu:unmap over the first `upTo` events. */
export function mappings(events: readonly WireEvent[], upTo = events.length): MappingState {
  const intervals: MappingInterval[] = [];
  const live = new Map<string, MappingInterval[]>();
  for (let i = 0; i < upTo; i++) {
    const e = events[i];
    if (e === undefined) break;
    if (e.n === 'iommu:map') {
      const m: MappingInterval = { domain: e.d, iova: num(e.f.iova), size: num(e.f.size), paddr: num(e.f.paddr), tMap: e.t, tUnmap: null, mapIndex: i };
      intervals.push(m);
      let l = live.get(e.d);
      if (l === undefined) live.set(e.d, (l = []));
      l.push(m);
    } else if (e.n === 'iommu:unmap') {
      const l = live.get(e.d);
      if (l === undefined) continue;
      const a = num(e.f.iova);
      const b = a + Math.max(num(e.f.size), num(e.f.unmapped_size));
      let w = 0;
      for (const m of l) {
        if (m.iova < b && m.iova + m.size > a) m.tUnmap = e.t;
        else l[w++] = m;
      }
      l.length = w;
    }
  }
  return { intervals, live };
}

/** A lazy-mode window: PTEs cleared and IOVAs queued, IOTLB not yet flushed. */
export interface LazyWindow {
  readonly domain: string;
  readonly tOpen: number;
  tClose: number | null;
  readonly openIndex: number;
  closeIndex: number | null;
  /** Queued [iova, size] pairs. */
  readonly queued: number[];
  readonly stale: StaleAccess[];
}

export interface StaleAccess {
  readonly t: number;
  readonly index: number;
  readonly device: string;
  readonly iova: number;
  readonly phys: number;
  readonly write: boolean;
}

/**
 * Windows from iommu:queue_iova (opens, per domain) to iommu:flush_iotlb_all (closes); each
 * iommu:stale_iotlb_access is attached to the open window whose queued ranges contain its IOVA
 * (else to any open window). Strict domains never queue, so they never have a window.
 */
export function lazyWindows(events: readonly WireEvent[], upTo = events.length): { windows: LazyWindow[]; orphans: StaleAccess[] } {
  const windows: LazyWindow[] = [];
  const open = new Map<string, LazyWindow>();
  const orphans: StaleAccess[] = [];
  for (let i = 0; i < upTo; i++) {
    const e = events[i];
    if (e === undefined) break;
    if (e.n === 'iommu:queue_iova') {
      let w = open.get(e.d);
      if (w === undefined) {
        w = { domain: e.d, tOpen: e.t, tClose: null, openIndex: i, closeIndex: null, queued: [], stale: [] };
        open.set(e.d, w);
        windows.push(w);
      }
      w.queued.push(num(e.f.iova), num(e.f.size));
    } else if (e.n === 'iommu:flush_iotlb_all') {
      const w = open.get(e.d);
      if (w !== undefined) {
        w.tClose = e.t;
        w.closeIndex = i;
        open.delete(e.d);
      }
    } else if (e.n === 'iommu:stale_iotlb_access') {
      const a: StaleAccess = { t: e.t, index: i, device: e.d, iova: num(e.f.iova), phys: num(e.f.phys), write: e.f.write === true };
      let target: LazyWindow | undefined;
      for (const w of open.values()) {
        for (let q = 0; q < w.queued.length; q += 2) {
          const lo = w.queued[q] ?? 0;
          if (a.iova >= lo && a.iova < lo + (w.queued[q + 1] ?? 0)) target = w;
        }
      }
      target ??= open.values().next().value;
      if (target !== undefined) target.stale.push(a);
      else orphans.push(a);
    }
  }
  return { windows, orphans };
}

/** One NVMe command with the mappings made for it. */
export interface NvmeRequest {
  readonly index: number;
  readonly t: number;
  readonly device: string;
  readonly qid: number;
  readonly cid: number;
  readonly opcode: number;
  readonly prp1: number;
  readonly prp2: number;
  readonly flags: number;
  /** The mappings made since the previous command: DMA segments with their IOVA/DMA address and physical address. */
  readonly segments: { readonly kind: string; readonly dma: number; readonly phys: number; readonly size: number }[];
  /**
   * The request's block segments (bio_vecs as blk-mq-dma iterates them) from block:blk_rq_dma_map,
   * empty when none was traced (the single-segment fast path maps the bvec directly).
   */
  readonly blockSegments: { readonly phys: number; readonly len: number }[];
  /** The block request's tag from block:blk_rq_dma_map, or null. */
  readonly rqTag: number | null;
  tComplete: number | null;
  status: number | null;
}

/** NVMe I/O commands (qid > 0) with the DMA mappings traced just before each was submitted. */
export function nvmeRequests(events: readonly WireEvent[], upTo = events.length, limit = 5000): NvmeRequest[] {
  const out: NvmeRequest[] = [];
  const open = new Map<string, NvmeRequest>();
  let segs: NvmeRequest['segments'][number][] = [];
  // block:blk_rq_dma_map fires in nvme_queue_rq before the command is set up, on the same device:
  // the latest one per device belongs to that device's next I/O command.
  const blocks = new Map<string, { tag: number; segs: NvmeRequest['blockSegments'] }>();
  for (let i = 0; i < upTo; i++) {
    const e = events[i];
    if (e === undefined) break;
    switch (e.n) {
      case 'block:blk_rq_dma_map': {
        const p = e.f.phys_addrs;
        const l = e.f.lengths;
        const b: NvmeRequest['blockSegments'][number][] = [];
        if (Array.isArray(p) && Array.isArray(l)) for (let k = 0; k < p.length; k++) b.push({ phys: (p as number[])[k] ?? 0, len: (l as number[])[k] ?? 0 });
        blocks.set(e.d, { tag: num(e.f.tag), segs: b });
        break;
      }
      case 'iommu:map':
        segs.push({ kind: 'iommu_map', dma: num(e.f.iova), phys: num(e.f.paddr), size: num(e.f.size) });
        break;
      case 'dma:dma_map_phys':
        segs.push({ kind: 'map_phys', dma: num(e.f.dma_addr), phys: num(e.f.phys_addr), size: num(e.f.size) });
        break;
      case 'dma:dma_map_sg': {
        const d = e.f.dma_addrs;
        const p = e.f.phys_addrs;
        const l = e.f.lengths;
        if (Array.isArray(d) && Array.isArray(p) && Array.isArray(l)) {
          for (let k = 0; k < d.length; k++) segs.push({ kind: 'map_sg', dma: (d as number[])[k] ?? 0, phys: (p as number[])[k] ?? 0, size: (l as number[])[k] ?? 0 });
        }
        break;
      }
      case 'nvme:nvme_setup_cmd': {
        const qid = num(e.f.qid);
        if (qid === 0) {
          segs = [];
          break;
        }
        const r: NvmeRequest = {
          index: i,
          t: e.t,
          device: e.d,
          qid,
          cid: num(e.f.cid),
          opcode: num(e.f.opcode),
          prp1: num(e.f.prp1),
          prp2: num(e.f.prp2),
          flags: num(e.f.flags),
          segments: segs,
          blockSegments: blocks.get(e.d)?.segs ?? [],
          rqTag: blocks.get(e.d)?.tag ?? null,
          tComplete: null,
          status: null,
        };
        segs = [];
        blocks.delete(e.d);
        if (out.length < limit) out.push(r);
        open.set(`${e.d}/${qid}/${r.cid}`, r);
        break;
      }
      case 'nvme:nvme_complete_rq': {
        const key = `${e.d}/${num(e.f.qid)}/${num(e.f.cid)}`;
        const r = open.get(key);
        if (r !== undefined) {
          r.tComplete = e.t;
          r.status = num(e.f.status);
          open.delete(key);
        }
        break;
      }
      default:
        break;
    }
  }
  return out;
}

/** NVMe opcode names (nvme_opcode). */
export function nvmeOpcodeName(op: number): string {
  return op === 0x01 ? 'Write' : op === 0x02 ? 'Read' : op === 0x00 ? 'Flush' : `opcode 0x${op.toString(16)}`;
}

/**
 * How the command's data pointer reads (NVMe base spec 4.1.1 PRP, 4.1.2 SGL): PSDT (CDW0 bits
 * 7:6 of the FLAGS byte) selects PRPs or an SGL; an SGL descriptor's second 8 bytes hold the
 * length (bytes 8..11) and the SGL identifier (byte 15, type in bits 7:4).
 */
export function dataPointer(req: Pick<NvmeRequest, 'prp1' | 'prp2' | 'flags'>, bytes: number, pageSize = 4096): { kind: 'PRP' | 'SGL'; entry1: string; entry2: string } {
  const h = (n: number): string => `0x${n.toString(16)}`;
  if (((req.flags >> 6) & 3) !== 0) {
    const len = req.prp2 % 2 ** 32;
    const type = Math.floor(req.prp2 / 2 ** 56) >> 4;
    const names = ['data block', 'bit bucket', 'segment', 'last segment', 'keyed data block', 'transport data block'];
    const what = names[type] ?? `type ${type}`;
    return {
      kind: 'SGL',
      entry1: `${what} @ ${h(req.prp1)}`,
      entry2: type === 0 ? `length ${len} B: one descriptor covers the request` : `length ${len} B (descriptor list in memory)`,
    };
  }
  const first = pageSize - (req.prp1 % pageSize);
  const second = bytes <= first ? 'unused (data fits in the first page)' : bytes <= first + pageSize ? `second data page ${h(req.prp2)}` : `PRP list @ ${h(req.prp2)}`;
  return { kind: 'PRP', entry1: `PRP1 ${h(req.prp1)}`, entry2: `PRP2: ${second}` };
}

/** ODP activity: page faults (pages brought in) and invalidations (pages zapped). */
export interface OdpActivity {
  readonly faults: { t: number; index: number; mkey: number; va: number; bcnt: number; write: boolean; ret: number }[];
  readonly invalidations: { t: number; index: number; mkey: number; start: number; end: number; zapped: number }[];
}

export function odpActivity(events: readonly WireEvent[], upTo = events.length): OdpActivity {
  const faults: OdpActivity['faults'] = [];
  const invalidations: OdpActivity['invalidations'] = [];
  for (let i = 0; i < upTo; i++) {
    const e = events[i];
    if (e === undefined) break;
    if (e.n === 'mlx5:odp_page_fault') faults.push({ t: e.t, index: i, mkey: num(e.f.mkey), va: num(e.f.va), bcnt: num(e.f.bcnt), write: e.f.write === true, ret: num(e.f.ret) });
    else if (e.n === 'mlx5:odp_invalidate') invalidations.push({ t: e.t, index: i, mkey: num(e.f.mkey), start: num(e.f.start), end: num(e.f.end), zapped: num(e.f.zapped) });
  }
  return { faults, invalidations };
}

/** Events per tracepoint name over the first `upTo` events. */
export function countEvents(events: readonly WireEvent[], upTo = events.length): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < upTo; i++) {
    const e = events[i];
    if (e === undefined) break;
    m.set(e.n, (m.get(e.n) ?? 0) + 1);
  }
  return m;
}

/** Distinct IOVA allocations (allocated, not rcache-held) seen across snapshots of one domain: sizes in granules. */
export function allocationSizes(snapshots: readonly Snapshot[], domain: string): number[] {
  const seen = new Set<string>();
  const sizes: number[] = [];
  for (const s of snapshots) {
    const d = s.domains.find((x) => x.name === domain);
    if (d === undefined) continue;
    const r = d.iova.ranges;
    for (let i = 0; i + 2 < r.length; i += 3) {
      if (r[i + 2] !== 0) continue;
      const key = `${r[i]}:${r[i + 1]}`;
      if (seen.has(key)) continue;
      seen.add(key);
      sizes.push((r[i + 1] ?? 0) - (r[i] ?? 0) + 1);
    }
  }
  return sizes;
}

/** Histogram buckets for allocation sizes in granules: 1, 2, 3-4, 5-8, ... */
export function sizeHistogram(sizes: readonly number[]): { label: string; count: number }[] {
  const labels = ['1', '2', '3–4', '5–8', '9–16', '17–32', '33–64', '65–128', '129+'];
  const counts = new Array<number>(labels.length).fill(0);
  for (const n of sizes) {
    const b = n <= 1 ? 0 : Math.min(labels.length - 1, Math.ceil(Math.log2(n)));
    counts[b] = (counts[b] ?? 0) + 1;
  }
  return labels.map((label, i) => ({ label, count: counts[i] ?? 0 }));
}

/** The domain most worth showing by default: the one with the most maps at the snapshot. */
export function busiestDomain(snapshot: Snapshot | undefined): string | undefined {
  let best: string | undefined;
  let max = -1;
  for (const d of snapshot?.domains ?? []) {
    if (d.maps > max) {
      max = d.maps;
      best = d.name;
    }
  }
  return best;
}
