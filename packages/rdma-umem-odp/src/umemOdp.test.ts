/** ib_umem_odp: creation rules, the fault/lock protocol, races, timeouts, unmap, release. */
import { describe, expect, it } from 'vitest';
import {
  Errno,
  HMM_PFN_DMA_MAPPED,
  HMM_PFN_FLAGS,
  HMM_PFN_WRITE,
  HMM_RANGE_DEFAULT_TIMEOUT,
  MMU_NOTIFY_CLEAR,
  PageFlag,
  hmmPfnFlags,
  hmmPfnHi,
  hmmPfnToPhys,
} from '@dmakit/dma-core';
import type { MmuIntervalNotifierOps } from '@dmakit/dma-core';
import {
  IB_ACCESS_HUGETLB,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
  UmemOdpError,
  ibUmemOdpAllocChild,
  ibUmemOdpAllocImplicit,
  ibUmemOdpGet,
  ibUmemOdpMapDmaAndLock,
  ibUmemOdpMetadataBytes,
  ibUmemOdpNumPages,
  ibUmemOdpRelease,
  ibUmemOdpUnmapDmaPages,
} from '@dmakit/rdma-umem-odp';
import type { IbUmemOdp } from '@dmakit/rdma-umem-odp';
import { mmapAnon, pattern, sameBytes } from '@dmakit/testkit';
import { createRig, debugReports, drain } from './testing/rig.js';

const ACC = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_ON_DEMAND;
const LEN = 16 * 4096;

/** Notifier ops that follow the driver rule: set the seq and unmap under the mutex. */
function ops(): MmuIntervalNotifierOps & { calls: number } {
  const o = {
    calls: 0,
    invalidate(sub: Parameters<MmuIntervalNotifierOps['invalidate']>[0], range: Parameters<MmuIntervalNotifierOps['invalidate']>[1], seq: number): boolean {
      o.calls++;
      const umem = (sub as unknown as { umem: IbUmemOdp }).umem;
      umem.umemMutex.lock();
      sub.invalidateSeq = seq;
      ibUmemOdpUnmapDmaPages(umem, range.start, range.end);
      umem.umemMutex.unlock();
      return true;
    },
  };
  return o;
}

function get(rig: ReturnType<typeof createRig>, addr: number, len = LEN, access = ACC): IbUmemOdp {
  const u = ibUmemOdpGet(rig.b.ib, rig.b.proc.mm, addr, len, access, ops());
  if (typeof u === 'number') throw new Error(`ib_umem_odp_get: ${u}`);
  return u;
}

describe('ib_umem_odp_get / alloc_implicit / alloc_child', () => {
  it('rejects what the kernel rejects', () => {
    const rig = createRig();
    const mm = rig.b.proc.mm;
    const buf = mmapAnon(rig.b.proc, LEN);
    expect(ibUmemOdpGet(rig.b.ib, mm, buf, LEN, IB_ACCESS_LOCAL_WRITE, ops())).toBe(-Errno.EINVAL);
    expect(ibUmemOdpGet(rig.b.ib, mm, buf, 0, ACC, ops())).toBe(-Errno.EINVAL);
    expect(ibUmemOdpGet(rig.b.ib, mm, Number.MAX_SAFE_INTEGER - 10, LEN, ACC, ops())).toBe(-Errno.EOVERFLOW);
    expect(ibUmemOdpGet(rig.b.ib, mm, -1, LEN, ACC, ops())).toBe(-Errno.EINVAL);
    expect(ibUmemOdpAllocImplicit(rig.b.ib, mm, ACC | IB_ACCESS_HUGETLB)).toBe(-Errno.EINVAL);
    const nonImplicit = get(rig, buf);
    expect(ibUmemOdpAllocChild(nonImplicit, 0, 1 << 30, ops())).toBe(-Errno.EINVAL);
    const root = ibUmemOdpAllocImplicit(rig.b.ib, mm, ACC);
    if (typeof root === 'number') throw new Error();
    rig.b.proc.exit();
    expect(ibUmemOdpAllocChild(root, 0, 1 << 30, ops())).toBe(-Errno.EFAULT);
  });

  it('aligns the range to the page size, one PFN word per page and one IOVA slot per entry', () => {
    const rig = createRig({ dmaDebug: 'off' });
    const buf = mmapAnon(rig.b.proc, LEN + 4096);
    const u = get(rig, buf + 100, LEN);
    expect(u.start).toBe(buf);
    expect(u.end).toBe(buf + LEN + 4096);
    expect(ibUmemOdpNumPages(u)).toBe(17);
    // Without an IOMMU and with nothing to unmap (coherent, dma-debug off): 8 bytes per page.
    expect(ibUmemOdpMetadataBytes(u)).toBe(17 * 8);
    ibUmemOdpRelease(u);
  });

  it('the legacy layout costs 16 bytes per page (pfn list + dma_addr_t list)', () => {
    const rig = createRig({ dmaDebug: 'off', legacy: true });
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    expect(ibUmemOdpMetadataBytes(u)).toBe(16 * 16);
    ibUmemOdpRelease(u);
  });
});

describe('ib_umem_odp_map_dma_and_lock', () => {
  it('returns the page count with umem_mutex held; -EFAULT outside the umem with it not held', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    expect(ibUmemOdpMapDmaAndLock(u, buf + 4096, 3 * 4096, HMM_PFN_WRITE, true)).toBe(3);
    expect(u.umemMutex.held).toBe(true);
    u.umemMutex.unlock();
    // Faulted for write: private anonymous pages, writable.
    expect(hmmPfnHi(u.map.pfnList, 1) & HMM_PFN_WRITE).toBe(HMM_PFN_WRITE);
    expect(ibUmemOdpMapDmaAndLock(u, buf - 4096, 4096, 0, true)).toBe(-Errno.EFAULT);
    expect(ibUmemOdpMapDmaAndLock(u, buf, LEN + 1, 0, true)).toBe(-Errno.EFAULT);
    expect(u.umemMutex.held).toBe(false);
  });

  it('snapshot mode (fault=false) reports only present pages', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    rig.b.proc.mm.write(buf + 2 * 4096, new Uint8Array([1]));
    const u = get(rig, buf);
    expect(ibUmemOdpMapDmaAndLock(u, buf, LEN, 0, false)).toBe(16);
    u.umemMutex.unlock();
    const valid = Array.from({ length: 16 }, (_, i) => hmmPfnFlags(u.map.pfnList, i) !== 0);
    expect(valid.filter(Boolean).length).toBe(1);
    expect(valid[2]).toBe(true);
  });

  it('-EPERM for a write fault on a read-only VMA, -EFAULT on a hole', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    expect(rig.b.proc.mm.mprotect(buf, 4096, 1)).toBe(0);
    expect(ibUmemOdpMapDmaAndLock(u, buf, 4096, HMM_PFN_WRITE, true)).toBe(-Errno.EPERM);
    expect(rig.b.proc.mm.munmap(buf + 4096, 4096)).toBe(0);
    expect(ibUmemOdpMapDmaAndLock(u, buf + 4096, 4096, 0, true)).toBe(-Errno.EFAULT);
  });

  it('an invalidation between hmm_range_fault and the driver lock forces a retry', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    rig.b.proc.mm.write(buf, pattern(LEN, 1));
    const u = get(rig, buf);
    let raced = false;
    rig.b.ib.raceWindow = () => {
      if (raced) return;
      raced = true;
      // The CPU side replaces page 0 (munmap + fresh mapping) while the driver holds no lock.
      mmapAnon(rig.b.proc, 4096, { addr: buf });
    };
    expect(ibUmemOdpMapDmaAndLock(u, buf, 4096, HMM_PFN_WRITE, true)).toBe(1);
    u.umemMutex.unlock();
    expect(u.stats.seqRetries).toBe(1);
    // The PFN word holds the page mapped now (the retry walked the new page table).
    expect(hmmPfnToPhys(u.map.pfnList, 0)).toBe(rig.b.proc.mm.walkPte(buf) * 4096);
    expect(sameBytes(rig.b.proc.mm.read(buf, 4096), new Uint8Array(4096))).toBe(true);
  });

  it('an invalidation held open keeps returning -EBUSY until the 1000 ms budget runs out', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    const mm = rig.b.proc.mm;
    rig.b.proc.mm.write(buf, new Uint8Array([1]));
    const range = mm.notifierRange(MMU_NOTIFY_CLEAR, buf, buf + 4096);
    mm.invalidateRangeStart(range);
    const t0 = rig.machine.clock.now();
    expect(ibUmemOdpMapDmaAndLock(u, buf, 4096, 0, true)).toBe(-Errno.EBUSY);
    expect(rig.machine.clock.now() - t0).toBeGreaterThanOrEqual(HMM_RANGE_DEFAULT_TIMEOUT * 1e6);
    expect(u.umemMutex.held).toBe(false);
    mm.invalidateRangeEnd(range);
    expect(ibUmemOdpMapDmaAndLock(u, buf, 4096, 0, true)).toBe(1);
    u.umemMutex.unlock();
  });

  it('huge-page umem over 4 KiB pages fails with -EINVAL', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, 4 << 20);
    const aligned = Math.ceil(buf / (2 << 20)) * (2 << 20);
    const u = get(rig, aligned, 2 << 20, ACC | IB_ACCESS_HUGETLB);
    expect(ibUmemOdpMapDmaAndLock(u, aligned, 4096, 0, true)).toBe(-Errno.EINVAL);
    expect(u.umemMutex.held).toBe(false);
  });

  it('-EINVAL once the mm is gone', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    rig.b.proc.exit();
    expect(ibUmemOdpMapDmaAndLock(u, buf, 4096, 0, true)).toBe(-Errno.EINVAL);
  });
});

describe('ib_umem_odp_unmap_dma_pages and release', () => {
  it('unmaps DMA-mapped entries, dirties written pages, clears every flag; reports a missing lock', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const src = mmapAnon(rig.a.proc, LEN);
    rig.a.proc.mm.write(src, pattern(LEN, 4));
    const mrA = rig.a.ib.regUserMr(rig.a.pd, src, LEN, src, ACC);
    const mrB = rig.b.ib.regUserMr(rig.b.pd, buf, LEN, buf, ACC | 2);
    if (typeof mrA === 'number' || typeof mrB === 'number') throw new Error();
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: LEN, lkey: mrA.lkey }], remoteAddr: buf, rkey: mrB.rkey });
    drain(rig);
    expect(rig.a.cq.poll()[0]?.status).toBe(IbWcStatus.IB_WC_SUCCESS);
    const u = mrB.umem;
    expect(u.npages).toBe(16);
    expect(hmmPfnHi(u.map.pfnList, 0) & HMM_PFN_DMA_MAPPED).toBe(HMM_PFN_DMA_MAPPED);
    const phys = hmmPfnToPhys(u.map.pfnList, 0);
    rig.machine.memory.clearPageFlags(phys, PageFlag.DIRTY);
    u.umemMutex.lock();
    ibUmemOdpUnmapDmaPages(u, buf, buf + LEN);
    u.umemMutex.unlock();
    expect(u.npages).toBe(0);
    expect(rig.machine.memory.pageFlags(phys) & PageFlag.DIRTY).toBe(PageFlag.DIRTY);
    for (let i = 0; i < 16; i++) expect(hmmPfnHi(u.map.pfnList, i) & HMM_PFN_FLAGS).toBe(0);
    // Without the lock: dma-debug reports the rule broken.
    ibUmemOdpUnmapDmaPages(u, buf, buf + LEN);
    expect(debugReports(rig).some((r) => r.includes('umem_mutex not held'))).toBe(true);
    expect(sameBytes(rig.b.proc.mm.read(buf, LEN), pattern(LEN, 4))).toBe(true);
  });

  it('release twice is reported, not a crash; a recursive lock is a typed error', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    const u = get(rig, buf);
    ibUmemOdpRelease(u);
    ibUmemOdpRelease(u);
    expect(debugReports(rig).some((r) => r.includes('released twice'))).toBe(true);
    const v = get(rig, buf);
    v.umemMutex.lock();
    expect(() => {
      v.umemMutex.lock();
    }).toThrow(UmemOdpError);
  });

  it('a read-only MR: pages map (MTT write bit follows the CPU pte, as populate_mtt), the mkey refuses writes', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, LEN);
    rig.b.proc.mm.write(buf, pattern(LEN, 2));
    const mr = rig.b.ib.regUserMr(rig.b.pd, buf, LEN, buf, IB_ACCESS_ON_DEMAND | IB_ACCESS_REMOTE_READ);
    if (typeof mr === 'number') throw new Error();
    expect(mr.umem.writable).toBe(false);
    expect(rig.b.ib.pagefaultMr(mr, buf, LEN, 0, false)).toBe(16);
    expect([...mr.mkey.mtt].every((e) => e % 4 !== 0)).toBe(true);
    const src = mmapAnon(rig.a.proc, LEN);
    const mrA = rig.a.ib.regUserMr(rig.a.pd, src, LEN, src, ACC);
    if (typeof mrA === 'number') throw new Error();
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 64, lkey: mrA.lkey }], remoteAddr: buf, rkey: mr.rkey });
    drain(rig);
    expect(rig.a.cq.poll()[0]?.status).toBe(IbWcStatus.IB_WC_REM_ACCESS_ERR);
    expect(sameBytes(rig.b.proc.mm.read(buf, LEN), pattern(LEN, 2))).toBe(true);
  });
});
