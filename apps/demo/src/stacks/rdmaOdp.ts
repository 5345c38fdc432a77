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
 *      (advise_mr) ranges it is about to receive (rdmaOdp/traffic.ts);
 *   4. the client RDMA-reads ranges back, and at the end every byte of the buffer is compared with
 *      the model; the HCAs never touch a page after its MTT entry was zapped (rdma-umem-odp's
 *      `watchOdpAccesses` on every DMA, with the IOMMU's page-table walk as the translation);
 *   5. teardown: MRs deregistered, processes exit, devices unbound: no DMA mapping, IOVA or mkey
 *      is left.
 *
 * `--legacy` runs the pre-6.16 ODP path (page list + dma_addr_t list, one dma_map_page per page)
 * for comparison: same bytes, different IOVA / IOTLB / metadata counters.
 */
import { createMachine, errnoName, SegvError, MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1G, SZ_1M } from '@dmakit/dma-core';
import type { Machine, Process } from '@dmakit/dma-core';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu, iommuIovaToPhys } from '@dmakit/iommu-dma';
import type { Iommu } from '@dmakit/iommu-dma';
import { IB_ACCESS_LOCAL_WRITE, IB_ACCESS_ON_DEMAND, IB_ACCESS_REMOTE_READ, IB_ACCESS_REMOTE_WRITE, IB_IMPLICIT_MR_LENGTH, Mlx5IbDev, RcConnection, RcEndpoint, watchOdpAccesses } from '@dmakit/rdma-umem-odp';
import { formatRdmaOdp, iovaCounts, odpCounts } from './rdmaOdp/report.js';
import type { RdmaOdpIommuMode, RdmaOdpResult } from './rdmaOdp/report.js';
import { OdpTraffic, OdpTrafficStop } from './rdmaOdp/traffic.js';
import { checkRequest, extraBool, extraInt, progressReporter } from './types.js';
import type { StackDef, StackFailure } from './types.js';

export { formatRdmaOdp } from './rdmaOdp/report.js';
export type { RdmaOdpIommuMode, RdmaOdpResult, RdmaOdpStep } from './rdmaOdp/report.js';

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

const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;
const SRC_BYTES = 4 * SZ_1M;

export function runRdmaOdpStack(opts: RdmaOdpOptions = {}): RdmaOdpResult {
  const m = opts.machine ?? createMachine({ ramBytes: SZ_1G, seed: opts.seed ?? 1, dmaDebug: 'warn' });
  const mode = opts.iommu ?? 'strict';
  const implicit = opts.implicit ?? false;
  const legacy = opts.legacy ?? false;
  const mrBytes = Math.max(SRC_BYTES, Math.ceil((opts.mrBytes ?? 32 * SZ_1M) / PAGE_SIZE) * PAGE_SIZE);
  const rounds = opts.rounds ?? 8;
  const progress = progressReporter(opts.onProgress, rounds + 2);
  const rng = m.rng.fork();

  // ---- topology: two HCAs behind the IOMMU, a process on each side, connected RC QPs ----
  const iommu: Iommu | null = mode === 'off' ? null : createIommu(m, { mode });
  const hmm = createHmmPort();
  const side = (name: string): { proc: Process; ep: RcEndpoint } => {
    const dev = m.pci.addDevice({ name, dmaMaskBits: 64 });
    iommu?.attachDevice(dev);
    const ib = new Mlx5IbDev({ dev, hmm, scheduler: m.scheduler, odpLegacy: legacy });
    const proc = m.createProcess();
    return { proc, ep: new RcEndpoint(ib, proc.mm) };
  };
  const client = side('mlx5_0');
  const server = side('mlx5_1');
  const conn = new RcConnection(client.ep, server.ep);
  const clientIb = client.ep.ib;
  const serverIb = server.ep.ib;

  const rw = PROT_READ | PROT_WRITE;
  const anon = MAP_PRIVATE | MAP_ANONYMOUS;
  const buf = server.proc.mm.mmap({ length: mrBytes, prot: rw, flags: anon });
  const src = client.proc.mm.mmap({ length: SRC_BYTES, prot: rw, flags: anon });
  if (buf < 0 || src < 0) throw new Error('rdma-odp: mmap failed'); // address space only: no allocation behind it

  // Every DMA the server HCA issues must reach the page the CPU maps at that address right now.
  const serverDomain = iommu?.domainOf(serverIb.dmaDevice) ?? null;
  const watch = watchOdpAccesses(serverIb.hca, server.proc.mm, serverDomain === null ? undefined : (dma) => iommuIovaToPhys(serverDomain, dma));

  // A verbs call that fails (reg_mr's errno, a work completion in error) or a signal the CPU
  // gets (SIGBUS on VM_FAULT_OOM) stops the traffic: the stack reports it, checks every byte it
  // still knows, and tears down as usual.
  let failure: StackFailure | undefined;
  let traffic: OdpTraffic | null = null;
  const steps: RdmaOdpResult['steps'] = [];
  try {
    // 1. registration
    const mrC = clientIb.regUserMr(client.ep.pd, src, SRC_BYTES, src, ACCESS);
    const mrS = implicit ? serverIb.regUserMr(server.ep.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, ACCESS) : serverIb.regUserMr(server.ep.pd, buf, mrBytes, buf, ACCESS);
    if (typeof mrC === 'number' || typeof mrS === 'number') {
      throw new OdpTrafficStop('ibv_reg_mr', `-${errnoName(typeof mrC === 'number' ? mrC : typeof mrS === 'number' ? mrS : 0)}`);
    }
    traffic = new OdpTraffic({ m, rng, conn, client: client.proc, server: server.proc, src, srcBytes: SRC_BYTES, buf, mrBytes, mrC, mrS });
    traffic.steps.push({ step: implicit ? 'register implicit ODP MR (whole address space)' : `register ODP MR (${mrBytes / SZ_1M} MiB)`, bytes: 0, verified: true, detail: `rkey 0x${mrS.rkey.toString(16)}, nothing mapped` });

    // 2. a first sequential pass: every page faults in; 3. rounds of traffic while the process
    // changes its mappings; 4. every byte
    traffic.firstTouch();
    progress(1);
    for (let r = 0; r < rounds; r++) {
      traffic.round(r);
      progress(r + 2);
    }
    traffic.verifyAll();
    progress(rounds + 2);
  } catch (err) {
    if (err instanceof OdpTrafficStop) failure = { step: err.step, error: err.error, dataIntact: true };
    else if (err instanceof SegvError) failure = { step: 'CPU access to a registered buffer', error: err.message, dataIntact: true };
    else throw err;
    if (traffic !== null) {
      // What the traffic did before the failure must still read back right (a CPU read of the
      // whole buffer, pages of a failed WRITE left out).
      traffic.verifyAll();
      failure = { ...failure, dataIntact: traffic.steps.every((x) => x.verified) };
    }
  }
  if (traffic !== null) steps.push(...traffic.steps);
  const verifiedBytes = steps.reduce((s, x) => s + (x.verified ? x.bytes : 0), 0);

  const retries = serverIb.umems().reduce((acc, u) => ({ seq: acc.seq + u.stats.seqRetries, busy: acc.busy + u.stats.busyRetries }), { seq: 0, busy: 0 });
  const odp = odpCounts(serverIb.report(), clientIb.report(), retries);
  const metadata = traffic === null ? { pages: 0, bytes: 0, bytesPerPage: 0 } : { pages: traffic.metaPages, bytes: traffic.peakMeta, bytesPerPage: traffic.peakMeta / traffic.metaPages };
  const simulatedNs = m.clock.now();

  // 5. teardown
  for (const ib of [clientIb, serverIb]) for (const mr of ib.mrs) ib.deregMr(mr);
  m.scheduler.runUntilIdle();
  conn.disconnect();
  client.proc.exit();
  server.proc.exit();
  iommu?.flushQueues();
  m.scheduler.runUntilIdle();
  const st = iommu?.stats() ?? null;
  const mkeys = clientIb.hca.mkeyCount + serverIb.hca.mkeyCount;
  const mapped = clientIb.report().mappedPages + serverIb.report().mappedPages;
  m.unbindDevice(clientIb.dmaDevice);
  m.unbindDevice(serverIb.dmaDevice);
  const reports = m.dmaDebug.reports;
  const leakReports = reports.filter((x) => !x.rule.startsWith('cacheline-overlap')).length;
  const staleAccesses = watch.stale;
  const leaks = { mkeys, mappedPages: mapped, iovaOutstanding: st === null ? 0 : st.iovaAllocs - st.iovaFrees, debugReports: leakReports };
  const clean = mkeys === 0 && mapped === 0 && leaks.iovaOutstanding === 0 && leakReports === 0 && staleAccesses === 0 && (st?.faults ?? 0) === 0;
  return {
    stack: 'rdma-odp',
    ...(failure !== undefined ? { failure } : {}),
    path: legacy ? 'legacy' : 'two-step',
    implicit,
    iommuMode: mode,
    verified: failure === undefined && clean && steps.every((s) => s.verified),
    verifiedBytes,
    steps,
    odp,
    iova: st === null ? null : iovaCounts(st),
    metadata,
    staleAccesses,
    leaks,
    dmaDebugReports: reports.length,
    simulatedNs,
  };
}

// ---- registry entry -----------------------------------------------------------------------------

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
