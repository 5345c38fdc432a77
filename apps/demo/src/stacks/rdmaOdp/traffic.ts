/**
 * The rdma-odp stack's workload: the client RDMA-writes and reads the server's ODP MR while the
 * server process munmaps, remaps and writes its buffer, races an invalidation into a fault and
 * prefetches; a shadow copy says what every byte must hold, and the steps record what was checked.
 */
import { bytesEqual, errnoName, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE } from '@dmakit/dma-core';
import type { Machine, Process, Rng } from '@dmakit/dma-core';
import { IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, IB_WR_RDMA_READ, IB_WR_RDMA_WRITE, ibUmemOdpNumPages, IbWcStatus } from '@dmakit/rdma-umem-odp';
import type { Mlx5IbMr, RcConnection } from '@dmakit/rdma-umem-odp';
import type { RdmaOdpStep } from './report.js';

const RW = PROT_READ | PROT_WRITE;
const ANON = MAP_PRIVATE | MAP_ANONYMOUS;

export interface OdpTrafficSetup {
  readonly m: Machine;
  readonly rng: Rng;
  readonly conn: RcConnection;
  readonly client: Process;
  readonly server: Process;
  /** The client's source buffer (registered as `mrC`) and its size. */
  readonly src: number;
  readonly srcBytes: number;
  /** The server's buffer, covered by `mrS`. */
  readonly buf: number;
  readonly mrBytes: number;
  readonly mrC: Mlx5IbMr;
  readonly mrS: Mlx5IbMr;
}

/**
 * A work request completed in error (or could not be posted): the run stops there. A failed RDMA
 * WRITE leaves its target range undefined (IB spec: responder memory after a failed WRITE), so
 * the traffic forgets what it held.
 */
export class OdpTrafficStop extends Error {
  override readonly name = 'OdpTrafficStop';
  constructor(
    readonly step: string,
    readonly error: string,
  ) {
    super(`rdma-odp: ${step}: ${error}`);
  }
}

function wcStatusName(status: number): string {
  return Object.entries(IbWcStatus).find(([, v]) => v === status)?.[0] ?? `status ${status}`;
}

export class OdpTraffic {
  readonly steps: RdmaOdpStep[] = [];
  /** What every byte of the server buffer must hold. */
  readonly shadow: Uint8Array;
  /** Peak mapping metadata of the server's umems, and the pages it covered then (implicit: the children). */
  peakMeta = 0;
  metaPages = 1;
  readonly #s: OdpTrafficSetup;
  readonly #data: Uint8Array;
  readonly #pages: number;
  /** 1 = the page's contents are undefined (a failed RDMA WRITE targeted it). */
  readonly #unknown: Uint8Array;

  constructor(s: OdpTrafficSetup) {
    this.#s = s;
    this.shadow = new Uint8Array(s.mrBytes);
    this.#unknown = new Uint8Array(s.mrBytes / PAGE_SIZE);
    this.#data = new Uint8Array(s.srcBytes);
    this.#pages = s.mrBytes / PAGE_SIZE;
  }

  /** One RDMA WRITE or READ of `len` bytes at offset `off` of the server buffer, waited for. */
  #post(opcode: typeof IB_WR_RDMA_WRITE | typeof IB_WR_RDMA_READ, off: number, len: number): boolean {
    const s = this.#s;
    const r = s.conn.postAndWait({ wrId: off, opcode, sgList: [{ addr: s.src, length: len, lkey: s.mrC.lkey }], remoteAddr: s.buf + off, rkey: s.mrS.rkey });
    if (typeof r !== 'number' && r.status === IbWcStatus.IB_WC_SUCCESS) return true;
    // ODP could not map the pages (an allocation failed under the fault): the verbs error is
    // what user space sees; the connection was reset by RcConnection.
    if (opcode === IB_WR_RDMA_WRITE) this.#unknown.fill(1, off / PAGE_SIZE, (off + len) / PAGE_SIZE);
    const what = opcode === IB_WR_RDMA_WRITE ? 'RDMA WRITE' : 'RDMA READ';
    throw new OdpTrafficStop(`${what} of ${len} bytes at offset ${off}`, typeof r === 'number' ? `ib_post_send -${errnoName(r)}` : wcStatusName(r.status));
  }

  #range(maxPages: number): { off: number; len: number } {
    const n = this.#s.rng.between(1, Math.min(maxPages, this.#pages));
    const p = this.#s.rng.nextInt(this.#pages - n + 1);
    return { off: p * PAGE_SIZE, len: n * PAGE_SIZE };
  }

  #metaNow(): void {
    const ib = this.#s.conn.responder.ib;
    const bytes = ib.report().metadataBytes;
    if (bytes > this.peakMeta) {
      this.peakMeta = bytes;
      this.metaPages = ib.umems().reduce((n, u) => n + ibUmemOdpNumPages(u), 0);
    }
  }

  /** A first sequential pass: every page of the server buffer faults in. */
  firstTouch(): void {
    const s = this.#s;
    const data = this.#data;
    const ib = s.conn.responder.ib;
    let ok = true;
    for (let off = 0; off < s.mrBytes; off += s.srcBytes) {
      const len = Math.min(s.srcBytes, s.mrBytes - off);
      s.rng.fill(data);
      s.client.mm.write(s.src, data.subarray(0, len));
      ok = this.#post(IB_WR_RDMA_WRITE, off, len) && ok;
      this.shadow.set(data.subarray(0, len), off);
    }
    this.#metaNow();
    this.steps.push({ step: 'RDMA WRITE the whole buffer (first touch: page faults)', bytes: s.mrBytes, verified: ok, detail: `${ib.stats.pageFaults} faults, ${ib.stats.faultPages} pages mapped` });
  }

  /** Round `r` (from 0): munmap/remap, a CPU write, a raced invalidation, a prefetch, 6 WRITEs and 6 READs. */
  round(r: number): void {
    const s = this.#s;
    const { m, rng, server, buf } = s;
    const ib = s.conn.responder.ib;
    const shadow = this.shadow;
    const data = this.#data;
    const pagesPerMsg = s.srcBytes / PAGE_SIZE;
    let ok = true;
    let bytes = 0;
    const inv0 = ib.stats.invalidations;
    const pf0 = ib.stats.pageFaults;
    // munmap + remap a part (its contents become zero)
    const drop = this.#range(512);
    server.mm.munmap(buf + drop.off, drop.len);
    const again = server.mm.mmap({ length: drop.len, prot: RW, flags: ANON | MAP_FIXED, addr: buf + drop.off });
    if (again !== buf + drop.off) ok = false;
    shadow.fill(0, drop.off, drop.off + drop.len);
    // the CPU writes a part
    const cpu = this.#range(64);
    const cpuData = rng.fill(new Uint8Array(cpu.len));
    server.mm.write(buf + cpu.off, cpuData);
    shadow.set(cpuData, cpu.off);
    // an invalidation races into the next fault (between hmm_range_fault and umem_mutex)
    const race = this.#range(16);
    let fired = false;
    ib.raceWindow = () => {
      if (fired) return;
      fired = true;
      server.mm.munmap(buf + race.off, race.len);
      server.mm.mmap({ length: race.len, prot: RW, flags: ANON | MAP_FIXED, addr: buf + race.off });
      shadow.fill(0, race.off, race.off + race.len);
    };
    // prefetch (advise_mr PREFETCH_WRITE, queued) what is about to be written
    const w = this.#range(pagesPerMsg);
    ib.adviseMr(s.conn.responder.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, [{ addr: buf + w.off, length: w.len, lkey: s.mrS.lkey }]);
    m.advance(0); // the queued prefetch work runs
    // RDMA WRITE into the prefetched range and into random ranges, RDMA READ back
    for (let k = 0; k < 6; k++) {
      const t = k === 0 ? w : this.#range(pagesPerMsg);
      rng.fill(data);
      s.client.mm.write(s.src, data.subarray(0, t.len));
      if (this.#post(IB_WR_RDMA_WRITE, t.off, t.len)) shadow.set(data.subarray(0, t.len), t.off);
      else ok = false;
      bytes += t.len;
      this.#metaNow();
      const rd = this.#range(pagesPerMsg);
      if (!this.#post(IB_WR_RDMA_READ, rd.off, rd.len)) ok = false;
      else if (!bytesEqual(s.client.mm.read(s.src, rd.len), shadow.subarray(rd.off, rd.off + rd.len))) ok = false;
      bytes += rd.len;
    }
    ib.raceWindow = undefined;
    this.steps.push({
      step: `round ${r + 1}: munmap/remap ${drop.len / PAGE_SIZE} pages, CPU write, raced invalidation, prefetch, 6 WRITE + 6 READ`,
      bytes,
      verified: ok,
      detail: `${ib.stats.invalidations - inv0} invalidations, ${ib.stats.pageFaults - pf0} faults`,
    });
  }

  /** Compare every byte of the server buffer with the shadow. */
  verifyAll(): void {
    const s = this.#s;
    const all = s.server.mm.read(s.buf, s.mrBytes);
    let ok = true;
    for (let p = 0; p < this.#pages && ok; p++) {
      if (this.#unknown[p] !== 0) continue;
      ok = bytesEqual(all.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE), this.shadow.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
    }
    this.steps.push({ step: 'verify every byte of the server buffer', bytes: s.mrBytes, verified: ok, detail: ok ? 'matches the model' : 'MISMATCH' });
  }
}
