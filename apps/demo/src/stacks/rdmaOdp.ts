/**
 * The "rdma-odp" stack: two mlx5-like HCAs behind the IOMMU, RC queue pairs between them, and an
 * on-demand-paging memory region over a large process buffer (rdma-umem-odp on @dmakit/hmm).
 *
 *   1. the server registers an ODP MR over its buffer (or, with --implicit, an implicit MR over
 *      its whole address space); nothing is mapped yet;
 *   2. the client RDMA-writes chunks into it: every first touch is a page fault, handled by
 *      hmm_range_fault + one IOVA slot link per page + an MTT update, then the access retries;
 *   3. while traffic keeps going the server process munmaps and remaps parts of the buffer,
 *      writes some of it with the CPU, races an invalidation into a fault, and prefetches
 *      (advise_mr) ranges it is about to receive;
 *   4. the client RDMA-reads ranges back, and at the end every byte of the buffer is compared with
 *      the model; the HCAs never touch a page after its MTT entry was zapped (checked on every
 *      DMA: the IOMMU translation of the address the HCA used must be the page the CPU maps now);
 *   5. teardown: MRs deregistered, processes exit, devices unbound: no DMA mapping, IOVA or mkey
 *      is left.
 *
 * `--legacy` runs the pre-6.16 ODP path (page list + dma_addr_t list, one dma_map_page per page)
 * for comparison: same bytes, different IOVA / IOTLB / metadata counters.
 */
import { createMachine, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, PTE_PRESENT, PTE_WRITE, SZ_1G, SZ_1M } from '@dmakit/dma-core';
import type { Machine, Process } from '@dmakit/dma-core';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu, iommuIovaToPhys } from '@dmakit/iommu-dma';
import type { Iommu, IommuStats } from '@dmakit/iommu-dma';
import {
  Hca,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_IMPLICIT_MR_LENGTH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
  ibUmemOdpNumPages,
  Mlx5IbDev,
} from '@dmakit/rdma-umem-odp';
import type { HcaCq, HcaQp, IbPd } from '@dmakit/rdma-umem-odp';
import { checkRequest, extraBool, extraInt, progressReporter } from './types.js';
import type { StackDef } from './types.js';

export type RdmaOdpIommuMode = 'strict' | 'lazy' | 'off';

export interface RdmaOdpOptions {
  readonly machine?: Machine;
  readonly seed?: number;
  readonly iommu?: RdmaOdpIommuMode;
  readonly implicit?: boolean;
  readonly legacy?: boolean;
  /** Size of the server's ODP buffer (bytes, page multiple). Default 32 MiB. */
  readonly mrBytes?: number;
  /** Traffic rounds. Default 8. */
  readonly rounds?: number;
  /** Progress in phases: the first-touch pass, each round, the final check (rounds + 2). */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface RdmaOdpStep {
  readonly step: string;
  readonly bytes: number;
  readonly verified: boolean;
  readonly detail: string;
}

export interface RdmaOdpResult {
  readonly stack: 'rdma-odp';
  readonly path: 'two-step' | 'legacy';
  readonly implicit: boolean;
  readonly iommuMode: RdmaOdpIommuMode;
  readonly verified: boolean;
  readonly verifiedBytes: number;
  readonly steps: RdmaOdpStep[];
  readonly odp: {
    readonly pageFaults: number;
    readonly pageFaultErrors: number;
    readonly faultPages: number;
    readonly prefetches: number;
    readonly prefetchPages: number;
    readonly invalidations: number;
    readonly invalidatedMtts: number;
    readonly umrPosts: number;
    readonly implicitChildrenCreated: number;
    readonly implicitChildrenDestroyed: number;
    readonly seqRetries: number;
    readonly busyRetries: number;
    readonly completionErrors: number;
    readonly bytesMoved: number;
  };
  /** IOMMU counters for the two HCAs' traffic, or null with --iommu off. */
  readonly iova: Pick<IommuStats, 'iovaAllocs' | 'iovaFrees' | 'iotlbSyncs' | 'iotlbSyncMaps' | 'iotlbInvalidationsRange' | 'iotlbInvalidationsFull' | 'pteWrites' | 'staleIotlbAccesses' | 'faults' | 'simulatedNs'> | null;
  /** Mapping metadata of the server's umems at their peak (PFN words + dma_addr_t lists) and the pages they cover. */
  readonly metadata: { readonly pages: number; readonly bytes: number; readonly bytesPerPage: number };
  /** HCA DMA that went to a page the CPU no longer mapped there (must be 0). */
  readonly staleAccesses: number;
  readonly leaks: { readonly mkeys: number; readonly mappedPages: number; readonly iovaOutstanding: number; readonly debugReports: number };
  readonly dmaDebugReports: number;
  /** Simulated time of the traffic (registration to the final verification). */
  readonly simulatedNs: number;
}

const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;
const SRC_BYTES = 4 * SZ_1M;

interface Side {
  readonly proc: Process;
  readonly ib: Mlx5IbDev;
  readonly pd: IbPd;
  readonly cq: HcaCq;
  qp: HcaQp;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function runRdmaOdpStack(opts: RdmaOdpOptions = {}): RdmaOdpResult {
  const m = opts.machine ?? createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const mode = opts.iommu ?? 'strict';
  const implicit = opts.implicit ?? false;
  const legacy = opts.legacy ?? false;
  const mrBytes = Math.max(SRC_BYTES, Math.ceil((opts.mrBytes ?? 32 * SZ_1M) / PAGE_SIZE) * PAGE_SIZE);
  const rounds = opts.rounds ?? 8;
  const progress = progressReporter(opts.onProgress, rounds + 2);
  const rng = m.rng.fork();
  const iommu: Iommu | null = mode === 'off' ? null : createIommu(m, { mode });
  const hmm = createHmmPort();
  const steps: RdmaOdpStep[] = [];

  const side = (name: string): Side => {
    const dev = m.pci.addDevice({ name, dmaMaskBits: 64 });
    iommu?.attachDevice(dev);
    const ib = new Mlx5IbDev({ dev, hmm, scheduler: m.scheduler, odpLegacy: legacy });
    const proc = m.createProcess();
    const pd = ib.allocPd(proc.mm);
    const cq = ib.createCq();
    return { proc, ib, pd, cq, qp: ib.createQp(pd, cq, cq) };
  };
  const client = side('mlx5_0');
  const server = side('mlx5_1');
  Hca.connect(client.qp, server.qp);
  const reconnect = (): void => {
    client.ib.hca.destroyQp(client.qp);
    server.ib.hca.destroyQp(server.qp);
    client.qp = client.ib.createQp(client.pd, client.cq, client.cq);
    server.qp = server.ib.createQp(server.pd, server.cq, server.cq);
    Hca.connect(client.qp, server.qp);
  };

  const rw = PROT_READ | PROT_WRITE;
  const anon = MAP_PRIVATE | MAP_ANONYMOUS;
  const buf = server.proc.mm.mmap({ length: mrBytes, prot: rw, flags: anon });
  const src = client.proc.mm.mmap({ length: SRC_BYTES, prot: rw, flags: anon });
  if (buf < 0 || src < 0) throw new Error('rdma-odp: mmap failed');
  const shadow = new Uint8Array(mrBytes);

  // Every DMA the server HCA issues must reach the page the CPU maps at that address right now.
  let staleAccesses = 0;
  const serverDomain = iommu?.domainOf(server.ib.dmaDevice) ?? null;
  server.ib.hca.onAccess = (_mk, va, dma, _len, write) => {
    const mm = server.proc.mm;
    const f = mm.pteFlags(va);
    const phys = serverDomain === null ? dma : iommuIovaToPhys(serverDomain, dma);
    if ((f & PTE_PRESENT) === 0 || phys !== mm.walkPte(va) * PAGE_SIZE + (va % PAGE_SIZE) || (write && (f & PTE_WRITE) === 0)) staleAccesses++;
  };

  // 1. registration
  const mrC = client.ib.regUserMr(client.pd, src, SRC_BYTES, src, ACCESS);
  const mrS = implicit ? server.ib.regUserMr(server.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, ACCESS) : server.ib.regUserMr(server.pd, buf, mrBytes, buf, ACCESS);
  if (typeof mrC === 'number' || typeof mrS === 'number') throw new Error(`rdma-odp: reg_mr failed (${typeof mrC === 'number' ? mrC : 0}, ${typeof mrS === 'number' ? mrS : 0})`);
  steps.push({ step: implicit ? 'register implicit ODP MR (whole address space)' : `register ODP MR (${mrBytes / SZ_1M} MiB)`, bytes: 0, verified: true, detail: `rkey 0x${mrS.rkey.toString(16)}, nothing mapped` });

  const post = (opcode: typeof IB_WR_RDMA_WRITE | typeof IB_WR_RDMA_READ, off: number, len: number): IbWcStatus => {
    client.ib.postSend(client.qp, { wrId: off, opcode, sgList: [{ addr: src, length: len, lkey: mrC.lkey }], remoteAddr: buf + off, rkey: mrS.rkey });
    // Step the simulation until the completion arrives (not to idle: the IOMMU keeps timers).
    for (let guard = 0; client.cq.depth === 0 && guard < 1_000_000; guard++) m.advance(1000);
    const wc = client.cq.poll();
    const st = wc[0]?.status ?? IbWcStatus.IB_WC_RETRY_EXC_ERR;
    if (st !== IbWcStatus.IB_WC_SUCCESS) reconnect();
    return st;
  };
  const pages = mrBytes / PAGE_SIZE;
  const range = (maxPages: number): { off: number; len: number } => {
    const n = rng.between(1, Math.min(maxPages, pages));
    const p = rng.nextInt(pages - n + 1);
    return { off: p * PAGE_SIZE, len: n * PAGE_SIZE };
  };
  const data = new Uint8Array(SRC_BYTES);
  // Peak mapping metadata of the server's umems, per page they cover (implicit: the children).
  let peakMeta = 0;
  let metaPages = 1;
  const metaNow = (): number => {
    const bytes = server.ib.report().metadataBytes;
    if (bytes > peakMeta) {
      peakMeta = bytes;
      metaPages = server.ib.umems().reduce((n, u) => n + ibUmemOdpNumPages(u), 0);
    }
    return bytes;
  };

  // 2. a first sequential pass: every page faults in
  {
    let ok = true;
    for (let off = 0; off < mrBytes; off += SRC_BYTES) {
      const len = Math.min(SRC_BYTES, mrBytes - off);
      rng.fill(data);
      client.proc.mm.write(src, data.subarray(0, len));
      ok = post(IB_WR_RDMA_WRITE, off, len) === IbWcStatus.IB_WC_SUCCESS && ok;
      shadow.set(data.subarray(0, len), off);
    }
    metaNow();
    steps.push({ step: 'RDMA WRITE the whole buffer (first touch: page faults)', bytes: mrBytes, verified: ok, detail: `${server.ib.stats.pageFaults} faults, ${server.ib.stats.faultPages} pages mapped` });
    progress(1);
  }

  // 3. rounds of traffic while the process changes its mappings
  for (let r = 0; r < rounds; r++) {
    let ok = true;
    let bytes = 0;
    const inv0 = server.ib.stats.invalidations;
    const pf0 = server.ib.stats.pageFaults;
    // munmap + remap a part (its contents become zero)
    const drop = range(512);
    server.proc.mm.munmap(buf + drop.off, drop.len);
    const again = server.proc.mm.mmap({ length: drop.len, prot: rw, flags: anon | MAP_FIXED, addr: buf + drop.off });
    if (again !== buf + drop.off) ok = false;
    shadow.fill(0, drop.off, drop.off + drop.len);
    // the CPU writes a part
    const cpu = range(64);
    const cpuData = rng.fill(new Uint8Array(cpu.len));
    server.proc.mm.write(buf + cpu.off, cpuData);
    shadow.set(cpuData, cpu.off);
    // an invalidation races into the next fault (between hmm_range_fault and umem_mutex)
    const race = range(16);
    let fired = false;
    server.ib.raceWindow = () => {
      if (fired) return;
      fired = true;
      server.proc.mm.munmap(buf + race.off, race.len);
      server.proc.mm.mmap({ length: race.len, prot: rw, flags: anon | MAP_FIXED, addr: buf + race.off });
      shadow.fill(0, race.off, race.off + race.len);
    };
    // prefetch (advise_mr PREFETCH_WRITE, queued) what is about to be written
    const w = range(SRC_BYTES / PAGE_SIZE);
    server.ib.adviseMr(server.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, [{ addr: buf + w.off, length: w.len, lkey: mrS.lkey }]);
    m.advance(0); // the queued prefetch work runs
    // RDMA WRITE into the prefetched range and into random ranges, RDMA READ back
    for (let k = 0; k < 6; k++) {
      const t = k === 0 ? w : range(SRC_BYTES / PAGE_SIZE);
      rng.fill(data);
      client.proc.mm.write(src, data.subarray(0, t.len));
      if (post(IB_WR_RDMA_WRITE, t.off, t.len) === IbWcStatus.IB_WC_SUCCESS) shadow.set(data.subarray(0, t.len), t.off);
      else ok = false;
      bytes += t.len;
      metaNow();
      const rd = range(SRC_BYTES / PAGE_SIZE);
      if (post(IB_WR_RDMA_READ, rd.off, rd.len) !== IbWcStatus.IB_WC_SUCCESS) ok = false;
      else if (!bytesEqual(client.proc.mm.read(src, rd.len), shadow.subarray(rd.off, rd.off + rd.len))) ok = false;
      bytes += rd.len;
    }
    server.ib.raceWindow = undefined;
    steps.push({
      step: `round ${r + 1}: munmap/remap ${drop.len / PAGE_SIZE} pages, CPU write, raced invalidation, prefetch, 6 WRITE + 6 READ`,
      bytes,
      verified: ok,
      detail: `${server.ib.stats.invalidations - inv0} invalidations, ${server.ib.stats.pageFaults - pf0} faults`,
    });
    progress(r + 2);
  }

  // 4. every byte
  const finalOk = bytesEqual(server.proc.mm.read(buf, mrBytes), shadow);
  steps.push({ step: 'verify every byte of the server buffer', bytes: mrBytes, verified: finalOk, detail: finalOk ? 'matches the model' : 'MISMATCH' });
  progress(rounds + 2);
  const verifiedBytes = steps.reduce((s, x) => s + (x.verified ? x.bytes : 0), 0);

  const umemStats = server.ib.umems().reduce((acc, u) => ({ seq: acc.seq + u.stats.seqRetries, busy: acc.busy + u.stats.busyRetries }), { seq: 0, busy: 0 });
  const rep = server.ib.report();
  const cRep = client.ib.report();
  const odp = {
    pageFaults: rep.odp.pageFaults + cRep.odp.pageFaults,
    pageFaultErrors: rep.odp.pageFaultErrors + cRep.odp.pageFaultErrors,
    faultPages: rep.odp.faultPages + cRep.odp.faultPages,
    prefetches: rep.odp.prefetches,
    prefetchPages: rep.odp.prefetchPages,
    invalidations: rep.odp.invalidations + cRep.odp.invalidations,
    invalidatedMtts: rep.odp.invalidatedMtts + cRep.odp.invalidatedMtts,
    umrPosts: rep.hca.umrPosts + cRep.hca.umrPosts,
    implicitChildrenCreated: rep.odp.implicitChildrenCreated,
    implicitChildrenDestroyed: rep.odp.implicitChildrenDestroyed,
    seqRetries: umemStats.seq,
    busyRetries: umemStats.busy,
    completionErrors: rep.hca.completionErrors + cRep.hca.completionErrors,
    bytesMoved: rep.hca.bytesMoved + cRep.hca.bytesMoved,
  };
  const metadata = { pages: metaPages, bytes: peakMeta, bytesPerPage: peakMeta / metaPages };
  const simulatedNs = m.clock.now();

  // 5. teardown
  for (const s of [client, server]) for (const mr of s.ib.mrs) s.ib.deregMr(mr);
  m.scheduler.runUntilIdle();
  client.ib.hca.destroyQp(client.qp);
  server.ib.hca.destroyQp(server.qp);
  client.proc.exit();
  server.proc.exit();
  iommu?.flushQueues();
  m.scheduler.runUntilIdle();
  const st = iommu?.stats() ?? null;
  const mkeys = client.ib.hca.mkeyCount + server.ib.hca.mkeyCount;
  const mapped = client.ib.report().mappedPages + server.ib.report().mappedPages;
  m.unbindDevice(client.ib.dmaDevice);
  m.unbindDevice(server.ib.dmaDevice);
  const reports = m.dmaDebug.reports;
  const leakReports = reports.filter((x) => !x.rule.startsWith('cacheline-overlap')).length;
  const iova =
    st === null
      ? null
      : {
          iovaAllocs: st.iovaAllocs,
          iovaFrees: st.iovaFrees,
          iotlbSyncs: st.iotlbSyncs,
          iotlbSyncMaps: st.iotlbSyncMaps,
          iotlbInvalidationsRange: st.iotlbInvalidationsRange,
          iotlbInvalidationsFull: st.iotlbInvalidationsFull,
          pteWrites: st.pteWrites,
          staleIotlbAccesses: st.staleIotlbAccesses,
          faults: st.faults,
          simulatedNs: st.simulatedNs,
        };
  const leaks = { mkeys, mappedPages: mapped, iovaOutstanding: st === null ? 0 : st.iovaAllocs - st.iovaFrees, debugReports: leakReports };
  const clean = mkeys === 0 && mapped === 0 && leaks.iovaOutstanding === 0 && leakReports === 0 && staleAccesses === 0 && (st?.faults ?? 0) === 0;
  return {
    stack: 'rdma-odp',
    path: legacy ? 'legacy' : 'two-step',
    implicit,
    iommuMode: mode,
    verified: clean && steps.every((s) => s.verified),
    verifiedBytes,
    steps,
    odp,
    iova,
    metadata,
    staleAccesses,
    leaks,
    dmaDebugReports: reports.length,
    simulatedNs,
  };
}

// ---- registry entry -----------------------------------------------------------------------------

export function formatRdmaOdp(r: RdmaOdpResult): string {
  const lines: string[] = [];
  lines.push(`rdma-odp: ${r.path} ODP${r.implicit ? ' (implicit MR)' : ''}, IOMMU ${r.iommuMode}`);
  lines.push('');
  for (const s of r.steps) lines.push(`  [${s.verified ? ' ok ' : 'FAIL'}] ${s.step}${s.detail !== '' ? ` — ${s.detail}` : ''}`);
  lines.push('');
  const o = r.odp;
  lines.push(`  page faults ${o.pageFaults} (${o.faultPages} pages, ${o.pageFaultErrors} failed), prefetches ${o.prefetches} (${o.prefetchPages} pages)`);
  lines.push(`  invalidations ${o.invalidations} (${o.invalidatedMtts} MTTs zapped), UMR posts ${o.umrPosts}, retries: seq ${o.seqRetries} busy ${o.busyRetries}`);
  if (r.implicit) lines.push(`  implicit children created ${o.implicitChildrenCreated}, destroyed ${o.implicitChildrenDestroyed}`);
  lines.push(`  completion errors ${o.completionErrors}, bytes moved ${o.bytesMoved}`);
  if (r.iova !== null) {
    const i = r.iova;
    lines.push(`  IOVA allocs ${i.iovaAllocs} (frees ${i.iovaFrees}), PTE writes ${i.pteWrites}, IOTLB syncs ${i.iotlbSyncs} (map ${i.iotlbSyncMaps}), invalidations range ${i.iotlbInvalidationsRange} full ${i.iotlbInvalidationsFull}, stale IOTLB ${i.staleIotlbAccesses}, faults ${i.faults}`);
    lines.push(`  IOMMU cost model: ${(i.simulatedNs / 1e6).toFixed(3)} ms of CPU time for the mapping work`);
  }
  lines.push(`  mapping metadata: ${r.metadata.bytes} bytes for ${r.metadata.pages} pages (${r.metadata.bytesPerPage.toFixed(2)} B/page)`);
  lines.push(`  stale HCA accesses ${r.staleAccesses}; after teardown: mkeys ${r.leaks.mkeys}, mapped pages ${r.leaks.mappedPages}, IOVA outstanding ${r.leaks.iovaOutstanding}, dma-debug ${r.leaks.debugReports}`);
  lines.push(`  verified ${r.verifiedBytes} bytes in ${(r.simulatedNs / 1e6).toFixed(3)} ms simulated: ${r.verified ? 'OK' : 'FAILED'}`);
  return `${lines.join('\n')}\n`;
}

export const rdmaOdpStack: StackDef<RdmaOdpResult> = {
  name: 'rdma-odp',
  summary: 'RDMA on-demand paging: an ODP memory region faulted in on demand and invalidated while the process remaps its buffer.',
  help: `  rdma-odp      RDMA on-demand paging: two mlx5-like HCAs behind the IOMMU (strict unless
                --iommu), a large ODP MR over a process buffer written by the peer while the
                process munmaps, remaps and writes it; page faults, prefetch, invalidation,
                IOVA and metadata counters; every byte verified.
                Options: --implicit (implicit ODP over the whole address space)
                --mapping legacy, or --legacy (pre-6.16 path: dma_addr_t list, dma_map_page
                per page)  --mr-mib N (buffer size, 4..1024, default 32)  --rounds N (default 8)
`,
  defaultIommu: 'strict',
  iommuModes: ['strict', 'lazy', 'off'],
  mappings: ['iova', 'legacy'],
  comparesMappings: false,
  verifyOption: false,
  size: { label: 'ODP buffer', unit: 'MiB', default: 32, min: 4, max: 1024, option: 'mr-mib' },
  options: [
    { key: 'implicit', flag: 'implicit', type: 'boolean', description: 'an implicit ODP MR over the whole address space' },
    { key: 'rounds', flag: 'rounds', type: 'value', valueName: 'N', description: 'traffic rounds while the process remaps its buffer (0..10000, default 8)' },
  ],
  validate(req) {
    checkRequest(rdmaOdpStack, req);
    extraInt(rdmaOdpStack, req, 'rounds', 8, 0, 10_000);
  },
  run(req) {
    const c = checkRequest(rdmaOdpStack, req);
    const rounds = extraInt(rdmaOdpStack, req, 'rounds', 8, 0, 10_000);
    const machine = createMachine({ ramBytes: Math.max(SZ_1G, 2 * c.size * SZ_1M + 256 * SZ_1M), seed: c.seed, dmaDebug: 'warn' });
    req.onMachine?.(machine, 'host');
    return runRdmaOdpStack({
      machine,
      iommu: c.iommu,
      implicit: extraBool(req, 'implicit'),
      legacy: c.mapping === 'legacy',
      mrBytes: c.size * SZ_1M,
      rounds,
      ...(req.onProgress !== undefined ? { onProgress: req.onProgress } : {}),
    });
  },
  format: formatRdmaOdp,
};
