/**
 * rdma-odp end to end: rdma-umem-odp on the real @dmakit/hmm and the @dmakit/iommu-dma IOMMU.
 * Every byte verified, no stale HCA access, nothing left after teardown, and the two-step path
 * against the legacy per-page path side by side.
 */
import { describe, expect, it } from 'vitest';
import { createMachine, Errno, HPAGE_PMD_SIZE, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, PROT_READ, PROT_WRITE, SZ_1G } from '@dmakit/dma-core';
import { createHmmPort } from '@dmakit/hmm';
import { createIommu, iommuIovaToPhys } from '@dmakit/iommu-dma';
import { Hca, IB_ACCESS_HUGETLB, IB_ACCESS_LOCAL_WRITE, IB_ACCESS_ON_DEMAND, IB_ACCESS_REMOTE_READ, IB_ACCESS_REMOTE_WRITE, IB_WR_RDMA_WRITE, IbWcStatus, Mlx5IbDev } from '@dmakit/rdma-umem-odp';
import { runRdmaOdpStack } from './rdmaOdp.js';
import type { RdmaOdpResult } from './rdmaOdp.js';

function run(o: Parameters<typeof runRdmaOdpStack>[0] = {}): RdmaOdpResult {
  return runRdmaOdpStack({ machine: createMachine({ ramBytes: SZ_1G, seed: 5, dmaDebug: 'warn' }), mrBytes: 8 << 20, rounds: 4, ...o });
}

function expectClean(r: RdmaOdpResult): void {
  for (const s of r.steps) expect(s.verified, s.step).toBe(true);
  expect(r.staleAccesses).toBe(0);
  expect(r.leaks).toEqual({ mkeys: 0, mappedPages: 0, iovaOutstanding: 0, debugReports: 0 });
  expect(r.verified).toBe(true);
}

describe('demo stack "rdma-odp" (end to end, real hmm + IOMMU)', () => {
  it('two-step ODP under a strict IOMMU: faults, prefetch, invalidations, one IOVA window per MR', () => {
    const r = run();
    expectClean(r);
    expect(r.odp.pageFaults).toBeGreaterThan(0);
    expect(r.odp.invalidations).toBeGreaterThan(0);
    expect(r.odp.prefetchPages).toBeGreaterThan(0);
    expect(r.odp.seqRetries).toBeGreaterThan(0); // the raced invalidations forced retries
    expect(r.iova?.faults).toBe(0);
    // One IOVA window per umem (client MR + server MR), not one allocation per page.
    expect(r.iova?.iovaAllocs).toBe(2);
    expect(r.metadata.bytesPerPage).toBe(8);
  });

  it('the legacy path moves the same bytes with one IOVA per page and 16 bytes of metadata per page', () => {
    const a = run();
    const b = run({ legacy: true });
    expectClean(b);
    expect(b.verifiedBytes).toBe(a.verifiedBytes);
    expect(b.iova?.iovaAllocs ?? 0).toBeGreaterThan(1000 * (a.iova?.iovaAllocs ?? 0));
    expect(b.metadata.bytesPerPage).toBe(16);
  });

  it('implicit ODP over the whole address space', () => {
    const r = run({ implicit: true });
    expectClean(r);
    expect(r.odp.implicitChildrenCreated).toBeGreaterThan(0);
  });

  it('lazy IOMMU and no IOMMU', () => {
    const lazy = run({ iommu: 'lazy' });
    expectClean(lazy);
    // The MTT is zapped before the pages are unlinked, so the HCA never reaches a stale IOTLB entry.
    expect(lazy.iova?.staleIotlbAccesses).toBe(0);
    const off = run({ iommu: 'off' });
    expectClean(off);
    expect(off.iova).toBeNull();
  });

  it('is reproducible from its seed', () => {
    expect(JSON.stringify(run())).toBe(JSON.stringify(run()));
  });
});

describe('rdma-odp details on the real hmm + IOMMU', () => {
  const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;

  function pair(legacy = false) {
    const m = createMachine({ ramBytes: SZ_1G, seed: 9, dmaDebug: 'warn' });
    const iommu = createIommu(m, { mode: 'strict' });
    const hmm = createHmmPort();
    const mk = (name: string) => {
      const dev = m.pci.addDevice({ name, dmaMaskBits: 64 });
      iommu.attachDevice(dev);
      const ib = new Mlx5IbDev({ dev, hmm, scheduler: m.scheduler, odpLegacy: legacy });
      const proc = m.createProcess();
      const pd = ib.allocPd(proc.mm);
      const cq = ib.createCq();
      return { ib, proc, pd, cq, qp: ib.createQp(pd, cq, cq) };
    };
    const a = mk('mlx5_0');
    const b = mk('mlx5_1');
    Hca.connect(a.qp, b.qp);
    return { m, iommu, a, b };
  }

  it('huge-page ODP (IB_ACCESS_HUGETLB): 2 MiB IOVA slots over MAP_HUGETLB memory, bytes verified', () => {
    const { m, iommu, a, b } = pair();
    const len = 2 * HPAGE_PMD_SIZE;
    const buf = b.proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB });
    const src = a.proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    const mrB = b.ib.regUserMr(b.pd, buf, len, buf, ACCESS | IB_ACCESS_HUGETLB);
    const mrA = a.ib.regUserMr(a.pd, src, len, src, ACCESS);
    if (typeof mrA === 'number' || typeof mrB === 'number') throw new Error('reg_mr');
    const data = m.rng.fill(new Uint8Array(len));
    a.proc.mm.write(src, data);
    a.ib.postSend(a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: len, lkey: mrA.lkey }], remoteAddr: buf, rkey: mrB.rkey });
    m.scheduler.runUntilIdle();
    expect(a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_SUCCESS]);
    const got = b.proc.mm.read(buf, len);
    expect(got.every((x, i) => x === data[i])).toBe(true);
    expect(mrB.umem.npages).toBe(2);
    const e1 = mrB.mkey.mtt[1] ?? 0;
    const e0 = mrB.mkey.mtt[0] ?? 0;
    expect(e1 - (e1 % 4) - (e0 - (e0 % 4))).toBe(HPAGE_PMD_SIZE); // fixed slots, 2 MiB apart
    const domain = iommu.domainOf(b.ib.dmaDevice);
    if (domain === null) throw new Error('no domain');
    expect(iommuIovaToPhys(domain, e1 - (e1 % 4) + 4096)).toBe(b.proc.mm.walkPte(buf + HPAGE_PMD_SIZE + 4096) * 4096);
    // Huge-page ODP over 4 KiB pages: the order check refuses it.
    const small = b.proc.mm.mmap({ length: 2 * HPAGE_PMD_SIZE, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    const aligned = Math.ceil(small / HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE;
    const bad = b.ib.regUserMr(b.pd, aligned, HPAGE_PMD_SIZE, aligned, ACCESS | IB_ACCESS_HUGETLB);
    if (typeof bad === 'number') throw new Error('reg_mr');
    expect(b.ib.pagefaultMr(bad, aligned, 4096, 0, false)).toBe(-Errno.EINVAL);
  });

  it('MR creation fails with -EOPNOTSUPP on a device that could bounce through swiotlb or needs syncs', () => {
    const m = createMachine({ ramBytes: 8 * SZ_1G, seed: 1, dmaDebug: 'warn' });
    const proc = m.createProcess();
    const buf = proc.mm.mmap({ length: 1 << 20, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    // A 32-bit device on a machine with RAM above 4 GiB (dma_addressing_limited), no IOMMU.
    const narrow = new Mlx5IbDev({ dev: m.pci.addDevice({ name: 'mlx5_32', dmaMaskBits: 32 }), hmm: createHmmPort(), scheduler: m.scheduler });
    expect(narrow.regUserMr(narrow.allocPd(proc.mm), buf, 1 << 20, buf, ACCESS)).toBe(-Errno.EOPNOTSUPP);
    // A device that is not cache-coherent (needs dma_sync: HMM shares memory with the CPU live).
    const nc = new Mlx5IbDev({ dev: m.pci.addDevice({ name: 'mlx5_nc', dmaMaskBits: 64, coherent: false }), hmm: createHmmPort(), scheduler: m.scheduler });
    expect(nc.regUserMr(nc.allocPd(proc.mm), buf, 1 << 20, buf, ACCESS)).toBe(-Errno.EOPNOTSUPP);
    // The same 32-bit device behind an IOMMU can register (the IOVA window is below 4 GiB).
    const iommu = createIommu(m, { mode: 'strict' });
    const dev = m.pci.addDevice({ name: 'mlx5_32_iommu', dmaMaskBits: 32 });
    iommu.attachDevice(dev);
    const ok = new Mlx5IbDev({ dev, hmm: createHmmPort(), scheduler: m.scheduler });
    expect(typeof ok.regUserMr(ok.allocPd(proc.mm), buf, 1 << 20, buf, ACCESS)).toBe('object');
  });

  it('two-step vs legacy: same bytes, MTT entries reaching the same pages, different IOVA counters', () => {
    const once = (legacy: boolean) => {
      const { m, iommu, a, b } = pair(legacy);
      const len = 256 * 4096;
      const buf = b.proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
      const src = a.proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
      const mrB = b.ib.regUserMr(b.pd, buf, len, buf, ACCESS);
      const mrA = a.ib.regUserMr(a.pd, src, len, src, ACCESS);
      if (typeof mrA === 'number' || typeof mrB === 'number') throw new Error('reg_mr');
      a.proc.mm.write(src, m.rng.fill(new Uint8Array(len)));
      const s0 = iommu.stats();
      a.ib.postSend(a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: len, lkey: mrA.lkey }], remoteAddr: buf, rkey: mrB.rkey });
      m.scheduler.runUntilIdle();
      const s1 = iommu.stats();
      const domain = iommu.domainOf(b.ib.dmaDevice);
      if (domain === null) throw new Error('no domain');
      // Each MTT entry, translated by the IOMMU, against the page the CPU maps there.
      const mttPages = [...mrB.mkey.mtt].map((e) => iommuIovaToPhys(domain, e - (e % 4)));
      const cpuPages = Array.from({ length: 256 }, (_, i) => b.proc.mm.walkPte(buf + i * 4096) * 4096);
      return { bytes: b.proc.mm.read(buf, len), mttPages, cpuPages, bits: [...mrB.mkey.mtt].map((e) => e % 4), iovaAllocs: s1.iovaAllocs - s0.iovaAllocs };
    };
    const x = once(false);
    const y = once(true);
    expect(x.bytes.every((v, i) => v === y.bytes[i])).toBe(true);
    expect(x.mttPages).toEqual(x.cpuPages);
    expect(y.mttPages).toEqual(y.cpuPages);
    expect(x.bits).toEqual(y.bits);
    expect(x.iovaAllocs).toBe(0); // the window was reserved at registration
    expect(y.iovaAllocs).toBe(2 * 256); // one per page on each HCA
  });
});
