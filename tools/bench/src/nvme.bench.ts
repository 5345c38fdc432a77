/**
 * nvme-pci benchmarks (issue: block-rq-dma + nvme-pci).
 * - End-to-end 4 KiB random read of stored data (the span is written first), QD 32 and QD 1, one
 *   thread, verify off: wall IOPS with no IOMMU (target
 *   >= 250,000) and a strict IOMMU (target >= 150,000), with the split of wall time per layer.
 * - Metadata per request on the legacy sgtable path vs the two-step path for 4 KiB, 128 KiB and
 *   1 MiB I/Os, plus IOVA allocations and IOTLB syncs per I/O for both.
 * - Simulated IOPS for strict : lazy : off (the demo's documented cost model) next to the
 *   published 570K : 1.93M : 5.01M (4 KiB reads on Optane, fio t/io_uring).
 */
import { bioAddPhys, bioAlloc, bioReset, blkRqAlloc, blkRqInitFromBio, createBlkRqDmaMapper } from '@dmakit/block-rq-dma';
import { BlkStatus, createMachine, ReqOp, SZ_1G } from '@dmakit/dma-core';
import type { BlkRequest } from '@dmakit/dma-core';
import { createIommu } from '@dmakit/iommu-dma';
import { NVME_PUBLISHED_IOPS, NvmeController, NvmeDev, nvmeBarSize } from '@dmakit/nvme-pci';
import { runNvmeStack } from '@dmakit/demo/stacks';
import { check, sideBySide } from './harness.js';
import type { Check, SuiteResult } from './harness.js';

const PAGE = 4096;
const QD = 32;
/** Namespace span the random reads cover (4 KiB blocks: 16 MiB, all written before the reads). */
const SPAN_BLOCKS = 1 << 12;

interface E2e {
  readonly run: (ops: number) => void;
  /** Wall ns spent building bios and requests, in queueRq, and in the simulation (device + completion). */
  readonly split: { block: number; submit: number; sim: number; ios: number };
  readonly completed: () => number;
}

function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/**
 * A whole stack (machine, optional IOMMU, block layer mapper, host driver, controller) and a
 * closed-loop QD-deep 4 KiB random-read generator: every completion submits the next read.
 */
function e2eStack(iommu: 'strict' | 'lazy' | 'off', timed: boolean, qd = QD): E2e {
  const m = createMachine({ ramBytes: 2 * SZ_1G, seed: 7, dmaDebug: 'off', swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: nvmeBarSize(4), is64: true }] });
  if (iommu !== 'off') createIommu(m, { mode: iommu }).attachDevice(dev);
  // Zero latencies except ordering: wall time is what is measured here, not simulated time.
  const ctrl = new NvmeController(m, dev, {
    namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: SPAN_BLOCKS * 8 }],
    maxQueues: 4,
    latencyNs: { fetch: 100, admin: 1000, read: 1000, write: 1000, perByte: 0, interrupt: 100, ready: 10_000, reset: 1000, shutdown: 1000 },
  });
  const host = new NvmeDev(m, dev, ctrl, createBlkRqDmaMapper(), { ioQueueDepth: 256 });
  if (host.probe() !== 0) throw new Error(`probe: ${host.lastError}`);
  // Reads return stored data: the whole span is written first (an unwritten block reads as a fill(0)).
  const ns = ctrl.namespace(1);
  if (ns === undefined) throw new Error('no namespace');
  const chunk = m.rng.fill(new Uint8Array(1 << 20));
  for (let pos = 0; pos < SPAN_BLOCKS * PAGE; pos += chunk.length) ns.writeBytes(pos, chunk, 0, chunk.length);
  const limits = host.queueLimits();
  const bufs = Array.from({ length: qd }, () => m.memory.allocPages(0));
  const rng = m.rng;
  let remaining = 0;
  let completed = 0;
  const split = { block: 0, submit: 0, sim: 0, ios: 0 };
  const ready: number[] = [];
  // One bio and one request per slot, reused for every I/O of that slot, as blk-mq hands out a
  // tag's preallocated request and a submitter reuses bios from its own bio_set: the request's
  // tag is the slot.
  const bios = Array.from({ length: qd }, () => bioAlloc(ReqOp.READ, 0, 1));
  const rqs = Array.from({ length: qd }, (_, slot) => blkRqAlloc(limits, ReqOp.READ, 0, slot));
  const endIo = (rq: BlkRequest, st: BlkStatus): void => {
    if (st !== BlkStatus.OK) throw new Error(`I/O error ${st}`);
    completed++;
    if (timed) ready.push(rq.tag);
    else if (remaining > 0) submit(rq.tag);
  };
  const submit = (slot: number): void => {
    remaining--;
    const t0 = timed ? nowNs() : 0;
    const bio = bios[slot] ?? null;
    const rq = rqs[slot];
    if (bio === null || rq === undefined || !bioReset(bio, ReqOp.READ, rng.nextInt(SPAN_BLOCKS) * 8) || bioAddPhys(bio, bufs[slot] ?? 0, PAGE) !== PAGE || !blkRqInitFromBio(rq, bio)) {
      throw new Error('request');
    }
    rq.endIo = endIo;
    const t1 = timed ? nowNs() : 0;
    const st = host.queueRq(rq, 1);
    if (st !== BlkStatus.OK) throw new Error(`queueRq ${st}`);
    if (timed) {
      const t2 = nowNs();
      split.block += t1 - t0;
      split.submit += t2 - t1;
    }
  };
  const run = (ops: number): void => {
    remaining = ops;
    const start = completed;
    if (!timed) {
      for (let s = 0; s < qd && remaining > 0; s++) submit(s);
      m.scheduler.runUntilIdle();
    } else {
      for (let s = 0; s < qd; s++) ready.push(s);
      while (completed - start < ops) {
        while (ready.length > 0 && remaining > 0) submit(ready.pop() ?? 0);
        const t0 = nowNs();
        m.scheduler.runUntilIdle();
        split.sim += nowNs() - t0;
      }
      ready.length = 0;
      split.ios += ops;
    }
    if (completed - start !== ops) throw new Error(`completed ${completed - start} of ${ops}`);
  };
  return { run, split, completed: () => completed };
}

function e2eIops(): SuiteResult {
  const stacks = {
    off32: e2eStack('off', false),
    strict32: e2eStack('strict', false),
    lazy32: e2eStack('lazy', false),
    off1: e2eStack('off', false, 1),
    strict1: e2eStack('strict', false, 1),
  };
  const measured = sideBySide(
    [
      { name: 'e2e 4 KiB randread of stored data, QD32, no IOMMU', run: stacks.off32.run },
      { name: 'e2e 4 KiB randread of stored data, QD32, strict IOMMU', run: stacks.strict32.run },
      { name: 'e2e 4 KiB randread of stored data, QD32, lazy IOMMU', run: stacks.lazy32.run },
      { name: 'e2e 4 KiB randread of stored data, QD1, no IOMMU', run: stacks.off1.run },
      { name: 'e2e 4 KiB randread of stored data, QD1, strict IOMMU', run: stacks.strict1.run },
    ],
    20_000,
    7,
  );
  const [mOff, mStrict, mLazy] = measured;
  const figures: Record<string, number | string> = {};
  // Split of wall time per layer, from a separately instrumented run (batches of QD).
  for (const mode of ['off', 'strict'] as const) {
    const t = e2eStack(mode, true);
    t.run(30_000); // warm-up (JIT)
    const s = { block: 0, submit: 0, sim: 0, ios: 0 };
    // Median-free but noise-resistant: the fastest of three instrumented rounds per layer.
    for (let round = 0; round < 3; round++) {
      Object.assign(t.split, { block: 0, submit: 0, sim: 0, ios: 0 });
      t.run(30_000);
      const r = t.split;
      if (round === 0 || r.block + r.submit + r.sim < s.block + s.submit + s.sim) Object.assign(s, r);
    }
    const tot = s.block + s.submit + s.sim;
    figures[`${mode}: block layer (bio + request) ns/IO`] = s.block / s.ios;
    figures[`${mode}: driver submit (queueRq incl. DMA map) ns/IO`] = s.submit / s.ios;
    figures[`${mode}: controller + IOMMU walk + completion + unmap ns/IO`] = s.sim / s.ios;
    figures[`${mode}: split block/submit/sim %`] = `${((100 * s.block) / tot).toFixed(0)} / ${((100 * s.submit) / tot).toFixed(0)} / ${((100 * s.sim) / tot).toFixed(0)}`;
  }
  const offIops = mOff?.opsPerSec ?? 0;
  const strictIops = mStrict?.opsPerSec ?? 0;
  const off1Iops = measured[3]?.opsPerSec ?? 0;
  const strict1Iops = measured[4]?.opsPerSec ?? 0;
  figures['lazy wall IOPS (QD32)'] = mLazy?.opsPerSec ?? 0;
  return {
    suite: 'nvme-e2e-4k-randread',
    measured,
    figures,
    checks: [
      check('NVMe 4 KiB random read of stored data, one thread, QD32, no IOMMU: wall IOPS', '>= 250,000', offIops, offIops >= 250_000, () => { stacks.off32.run(100_000); }),
      check('NVMe 4 KiB random read of stored data, one thread, QD32, strict IOMMU: wall IOPS', '>= 150,000', strictIops, strictIops >= 150_000, () => { stacks.strict32.run(100_000); }),
      check('NVMe 4 KiB random read of stored data, one thread, QD1, no IOMMU: wall IOPS', '>= 250,000', off1Iops, off1Iops >= 250_000, () => { stacks.off1.run(100_000); }),
      check('NVMe 4 KiB random read of stored data, one thread, QD1, strict IOMMU: wall IOPS', '>= 150,000', strict1Iops, strict1Iops >= 150_000, () => { stacks.strict1.run(100_000); }),
    ],
  };
}

function metadata(): SuiteResult {
  const figures: Record<string, number | string> = {};
  const checks: Check[] = [];
  for (const iommu of ['strict', 'off'] as const) {
    for (const bs of [4096, 128 * 1024, 1024 * 1024]) {
      const label = `${iommu} ${bs >= 1 << 20 ? `${bs >> 20} MiB` : `${bs >> 10} KiB`}`;
      for (const mapping of ['sg', 'iova'] as const) {
        // dma-debug off, as in production: without an IOMMU dma_need_unmap() is then false.
        const machine = createMachine({ ramBytes: 2 * SZ_1G, seed: 3, dmaDebug: 'off' });
        const r = runNvmeStack({ machine, iommu, mapping, ios: bs >= 1 << 20 ? 200 : 1000, bs, rw: 'randread', qd: 8, verify: false, sglThreshold: 0 });
        const n = r.ios;
        const h = r.host;
        // Requests that went through the mapper (not the single-segment fast path).
        const mapped = Math.max(1, h.submitted - h.singleSegment);
        const viaMapper = h.submitted - h.singleSegment > 0;
        // Summed by the driver from the iod's arrays that held each mapping (NvmeIod.mappingMetadataBytes).
        const bytes = viaMapper ? h.mapMetadataBytes / mapped : 0;
        const key = `${label} ${mapping === 'sg' ? 'legacy sgtable' : 'two-step'}`;
        figures[`${key}: metadata bytes/request`] = bytes;
        figures[`${key}: physical segments/request`] = viaMapper ? h.physSegments / mapped : 1;
        figures[`${key}: DMA segments for the driver/request`] = viaMapper ? h.dmaSegments / mapped : 1;
        figures[`${key}: IOVA allocs/IO`] = r.perIo.iovaAllocs;
        figures[`${key}: IOTLB syncs/IO`] = r.perIo.iotlbSyncs;
        figures[`${key}: IOTLB invalidations/IO`] = r.perIo.iotlbInvalidations;
        figures[`${key}: single-segment fast path`] = `${h.singleSegment}/${n}`;
        if (r.ioErrors > 0) checks.push(check(`${key} I/O errors`, '== 0', r.ioErrors, false));
      }
    }
  }
  const two = figures['strict 1 MiB two-step: metadata bytes/request'];
  const leg = figures['strict 1 MiB legacy sgtable: metadata bytes/request'];
  if (typeof two === 'number' && typeof leg === 'number') checks.push(check('1 MiB: two-step metadata < legacy', 'two-step < legacy', two, two < leg));
  return { suite: 'nvme-metadata-per-request', measured: [], figures, checks };
}

/**
 * Where NVME_PUBLISHED_IOPS come from, in the words of its doc comment in
 * packages/nvme-pci/src/costModel.ts (the project names no more precise citation).
 */
export const PUBLISHED_IOPS_SOURCE = 'NVME_PUBLISHED_IOPS in packages/nvme-pci/src/costModel.ts: "Published 4 KiB random read IOPS on one core under a strict IOMMU, a lazy one and none (fio t/io_uring, Intel Optane, Linux 5.x/6.x era)"';

/**
 * A simulated IOPS ratio against the published one: PASS when within 1.5x either way. The measured
 * value shown is simulated / published (1 = exact).
 */
function withinPublished(name: string, sim: number, pub: number): Check {
  const r = sim / pub;
  return check(`simulated ${name} IOPS within 1.5x of published (${pub.toFixed(3)})`, '1/1.5 .. 1.5 x published', r, r >= 1 / 1.5 && r <= 1.5);
}

function simulated(): SuiteResult {
  const figures: Record<string, number | string> = {};
  const pub = NVME_PUBLISHED_IOPS;
  const sim: Record<string, number> = {};
  for (const mode of ['strict', 'lazy', 'off'] as const) {
    const r = runNvmeStack({ iommu: mode, ios: 20_000, bs: 4096, rw: 'randread', qd: 32, verify: false, seed: 5 });
    sim[mode] = r.simulated.cpuBoundIops;
    figures[`${mode}: simulated IOPS (one CPU)`] = r.simulated.cpuBoundIops;
    figures[`${mode}: simulated ns/IO`] = r.simulated.nsPerIo.total;
    figures[`${mode}: iommu ns/IO`] = r.simulated.nsPerIo.iommu;
    figures[`${mode}: published IOPS`] = pub[mode];
    figures[`${mode}: IOTLB invalidations/IO`] = r.perIo.iotlbInvalidations;
    figures[`${mode}: I/Os`] = r.ios;
  }
  figures['published IOPS source'] = PUBLISHED_IOPS_SOURCE;
  const s = sim.strict ?? 0;
  const l = sim.lazy ?? 0;
  const o = sim.off ?? 1;
  figures['simulated strict : lazy : off'] = `${(s / o).toFixed(3)} : ${(l / o).toFixed(3)} : 1`;
  figures['published strict : lazy : off'] = `${(pub.strict / pub.off).toFixed(3)} : ${(pub.lazy / pub.off).toFixed(3)} : 1`;
  return {
    suite: 'nvme-simulated-iops',
    measured: [],
    figures,
    checks: [
      check('ordering strict < lazy < off', 'strict < lazy < off', s / o, s < l && l < o),
      withinPublished('lazy/off', l / o, pub.lazy / pub.off),
      withinPublished('strict/off', s / o, pub.strict / pub.off),
    ],
  };
}

export function runNvmeBenches(): SuiteResult[] {
  return [e2eIops(), metadata(), simulated()];
}
