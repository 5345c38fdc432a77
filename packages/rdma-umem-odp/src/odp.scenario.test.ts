/**
 * ODP scenarios after rdma-core's tests/test_odp.py: RC traffic (RDMA WRITE, RDMA READ, SEND)
 * between two HCAs over ODP MRs, with the pages dropped before every iteration, prefetch variants,
 * implicit ODP and huge-page ODP; plus the bad-input cases.
 */
import { describe, expect, it } from 'vitest';
import { Errno, HPAGE_PMD_SIZE, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, PROT_READ, PROT_WRITE, SZ_1G } from '@dmakit/dma-core';
import {
  IB_ACCESS_HUGETLB,
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_IMPLICIT_MR_LENGTH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IB_UVERBS_ADVISE_MR_FLAG_FLUSH,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IB_WR_SEND,
  IbWcStatus,
  Mlx5IbDev,
} from '@dmakit/rdma-umem-odp';
import type { Mlx5IbMr } from '@dmakit/rdma-umem-odp';
import { mmapAnon, pattern, sameBytes } from '@dmakit/testkit';
import { createRig, debugReports, drain, dropPages } from './testing/rig.js';
import type { OdpRig } from './testing/rig.js';

const RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;
const MSG = 64 * 1024;

function reg(rig: OdpRig, side: 'a' | 'b', addr: number, len: number, access = RW): Mlx5IbMr {
  const s = rig[side];
  const mr = s.ib.regUserMr(s.pd, addr, len, addr, access);
  if (typeof mr === 'number') throw new Error(`reg_mr failed: ${mr}`);
  return mr;
}

function ok(rig: OdpRig, side: 'a' | 'b', n = 1): void {
  const wcs = rig[side].cq.poll();
  expect(wcs.map((w) => w.status)).toEqual(new Array<number>(n).fill(IbWcStatus.IB_WC_SUCCESS));
}

describe('ODP RC traffic (rdma-core test_odp_rc_traffic)', () => {
  for (const legacy of [false, true]) {
    it(`RDMA WRITE, READ and SEND with the pages dropped before every iteration${legacy ? ' (legacy path)' : ''}`, () => {
      const rig = createRig({ legacy });
      const src = mmapAnon(rig.a.proc, MSG);
      const dst = mmapAnon(rig.b.proc, MSG);
      const mrA = reg(rig, 'a', src, MSG);
      const mrB = reg(rig, 'b', dst, MSG);
      for (let it = 0; it < 20; it++) {
        dropPages(rig.a.proc, src, MSG);
        dropPages(rig.b.proc, dst, MSG);
        const data = pattern(MSG, it);
        rig.a.proc.mm.write(src, data);
        // RDMA WRITE a -> b
        rig.a.ib.postSend(rig.a.qp, { wrId: it, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
        drain(rig);
        ok(rig, 'a');
        expect(sameBytes(rig.b.proc.mm.read(dst, MSG), data)).toBe(true);
        // RDMA READ back into a after dropping a's pages again
        dropPages(rig.a.proc, src, MSG);
        rig.a.ib.postSend(rig.a.qp, { wrId: 100 + it, opcode: IB_WR_RDMA_READ, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
        drain(rig);
        ok(rig, 'a');
        expect(sameBytes(rig.a.proc.mm.read(src, MSG), data)).toBe(true);
        // SEND b <- a into a posted receive
        dropPages(rig.b.proc, dst, MSG);
        rig.b.ib.postRecv(rig.b.qp, { wrId: 200 + it, sgList: [{ addr: dst, length: MSG, lkey: mrB.lkey }] });
        rig.a.ib.postSend(rig.a.qp, { wrId: 300 + it, opcode: IB_WR_SEND, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }] });
        drain(rig);
        ok(rig, 'a');
        const recv = rig.b.cq.poll();
        expect(recv.map((w) => [w.status, w.byteLen])).toEqual([[IbWcStatus.IB_WC_SUCCESS, MSG]]);
        expect(sameBytes(rig.b.proc.mm.read(dst, MSG), data)).toBe(true);
      }
      expect(rig.a.ib.stats.pageFaults).toBeGreaterThan(0);
      expect(rig.b.ib.stats.invalidations).toBeGreaterThan(0);
      expect(rig.a.ib.hca.stats.dmaPortFaults + rig.b.ib.hca.stats.dmaPortFaults).toBe(0);
      expect(rig.a.ib.deregMr(mrA)).toBe(0);
      expect(rig.b.ib.deregMr(mrB)).toBe(0);
      rig.machine.unbindDevice(rig.a.ib.dmaDevice);
      rig.machine.unbindDevice(rig.b.ib.dmaDevice);
      expect(debugReports(rig)).toEqual([]);
    });
  }
});

describe('prefetch (test_odp_prefetch_rc_traffic, sync / async / no-fault)', () => {
  it('PREFETCH maps read-only (DOWNGRADE); a later write fault reuses the slot and adds the write bit', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    rig.b.proc.mm.write(buf, pattern(MSG, 1));
    const mr = reg(rig, 'b', buf, MSG);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: MSG, lkey: mr.lkey }])).toBe(0);
    const e0 = mr.mkey.mtt[0] ?? 0;
    expect(e0 % 4).toBe(1); // READ only
    const src = mmapAnon(rig.a.proc, MSG);
    rig.a.proc.mm.write(src, pattern(MSG, 2));
    const mrA = reg(rig, 'a', src, MSG);
    const faults = rig.b.ib.stats.pageFaults;
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: buf, rkey: mr.rkey });
    drain(rig);
    ok(rig, 'a');
    expect(rig.b.ib.stats.pageFaults).toBe(faults + 1);
    const e1 = mr.mkey.mtt[0] ?? 0;
    expect(e1 - (e1 % 4)).toBe(e0 - (e0 % 4)); // same DMA address (HMM_PFN_DMA_MAPPED fast path)
    expect(e1 % 4).toBe(3);
    expect(sameBytes(rig.b.proc.mm.read(buf, MSG), pattern(MSG, 2))).toBe(true);
  });

  it('PREFETCH_WRITE (async) runs on the workqueue; no page fault afterwards', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    const mr = reg(rig, 'b', buf, MSG);
    expect(mr.mkey.mtt.every((e) => e === 0)).toBe(true);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, [{ addr: buf, length: MSG, lkey: mr.lkey }])).toBe(0);
    expect(mr.mkey.mtt.every((e) => e === 0)).toBe(true); // queued, not run yet
    drain(rig);
    expect(mr.mkey.mtt.every((e) => e % 4 === 3)).toBe(true);
    const src = mmapAnon(rig.a.proc, MSG);
    const mrA = reg(rig, 'a', src, MSG);
    rig.a.ib.adviseMr(rig.a.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: src, length: MSG, lkey: mrA.lkey }]);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: buf, rkey: mr.rkey });
    drain(rig);
    ok(rig, 'a');
    expect(rig.b.ib.stats.pageFaults).toBe(0);
    expect(rig.a.ib.stats.pageFaults).toBe(0);
  });

  it('PREFETCH_NO_FAULT maps only pages already present (SNAPSHOT)', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    const mr = reg(rig, 'b', buf, MSG);
    rig.b.proc.mm.write(buf + 4096, new Uint8Array([1])); // page 1 present
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: MSG, lkey: mr.lkey }])).toBe(0);
    const present = [...mr.mkey.mtt].map((e) => e !== 0);
    expect(present.filter(Boolean).length).toBe(1);
    expect(present[1]).toBe(true);
  });

  it('bad prefetches: unknown key -ENOENT, other PD -EPERM, PREFETCH_WRITE on read-only MR -EPERM, bad advice -EOPNOTSUPP', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    const ro = reg(rig, 'b', buf, MSG, IB_ACCESS_ON_DEMAND | IB_ACCESS_REMOTE_READ);
    const other = rig.b.ib.allocPd(rig.b.proc.mm);
    const sge = [{ addr: buf, length: MSG, lkey: ro.lkey }];
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, [{ addr: buf, length: 1, lkey: 0x7777 }])).toBe(-Errno.ENOENT);
    expect(rig.b.ib.adviseMr(other, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, sge)).toBe(-Errno.EPERM);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, sge)).toBe(-Errno.EPERM);
    expect(rig.b.ib.adviseMr(rig.b.pd, 9, 0, sge)).toBe(-Errno.EOPNOTSUPP);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf + MSG, length: 1, lkey: ro.lkey }])).toBe(-Errno.EFAULT);
  });
});

describe('implicit ODP (test_odp_implicit_rc_traffic)', () => {
  it('faults 1 GiB children in on demand, points the KSM at them, and destroys unused children after invalidation', () => {
    const rig = createRig();
    const imr = rig.b.ib.regUserMr(rig.b.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, RW);
    if (typeof imr === 'number') throw new Error(String(imr));
    expect(imr.implicit).toBe(true);
    // A buffer straddling a 1 GiB boundary.
    const base = 0x7e00_0000_0000 - MSG / 2;
    mmapAnon(rig.b.proc, MSG, { addr: base });
    const src = mmapAnon(rig.a.proc, MSG);
    const mrA = reg(rig, 'a', src, MSG);
    for (let it = 0; it < 5; it++) {
      dropPages(rig.b.proc, base, MSG);
      const data = pattern(MSG, 10 + it);
      rig.a.proc.mm.write(src, data);
      rig.a.ib.postSend(rig.a.qp, { wrId: it, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: base, rkey: imr.rkey });
      drain(rig);
      ok(rig, 'a');
      expect(sameBytes(rig.b.proc.mm.read(base, MSG), data)).toBe(true);
    }
    expect(rig.b.ib.stats.implicitChildrenCreated).toBeGreaterThanOrEqual(2);
    const idx = Math.floor(base / SZ_1G);
    expect(imr.mkey.ksm[idx]).not.toBe(0);
    expect(imr.mkey.ksm[idx + 1]).not.toBe(0);
    // Unmapping every page leaves the children empty: they are destroyed and the KSM reset.
    expect(rig.b.proc.mm.munmap(base, MSG)).toBe(0);
    drain(rig);
    expect(imr.children.size).toBe(0);
    expect(imr.mkey.ksm[idx]).toBe(0);
    expect(rig.b.ib.stats.implicitChildrenDestroyed).toBe(rig.b.ib.stats.implicitChildrenCreated);
    // Access to an unmapped address through the implicit MR: the fault fails, nothing written.
    rig.a.ib.postSend(rig.a.qp, { wrId: 9, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 8, lkey: mrA.lkey }], remoteAddr: base, rkey: imr.rkey });
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    expect(rig.b.ib.deregMr(imr)).toBe(0);
    expect(rig.b.ib.deregMr(imr)).toBe(-Errno.EINVAL);
  });
});

describe('huge-page ODP (test_odp_rc_huge_traffic)', () => {
  it('2 MiB entries over MAP_HUGETLB memory, one MTT per huge page', () => {
    const rig = createRig();
    const len = 2 * HPAGE_PMD_SIZE;
    const buf = rig.b.proc.mm.mmap({ length: len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB });
    const mr = reg(rig, 'b', buf, len, RW | IB_ACCESS_HUGETLB);
    expect(mr.umem.pageShift).toBe(21);
    expect(mr.mkey.mtt.length).toBe(2);
    const src = mmapAnon(rig.a.proc, len);
    const data = pattern(len, 5);
    rig.a.proc.mm.write(src, data);
    const mrA = reg(rig, 'a', src, len);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: len, lkey: mrA.lkey }], remoteAddr: buf, rkey: mr.rkey });
    drain(rig);
    ok(rig, 'a');
    expect(sameBytes(rig.b.proc.mm.read(buf, len), data)).toBe(true);
    expect(mr.umem.npages).toBe(2);
  });

  it('huge-page ODP over small pages fails the fault with -EINVAL (order check)', () => {
    const rig = createRig();
    const len = HPAGE_PMD_SIZE;
    const buf = rig.b.proc.mm.mmap({ length: 2 * len, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
    const aligned = Math.ceil(buf / len) * len;
    const mr = reg(rig, 'b', aligned, len, RW | IB_ACCESS_HUGETLB);
    expect(rig.b.ib.pagefaultMr(mr, aligned, 4096, 0, false)).toBe(-Errno.EINVAL);
  });
});

describe('bad input: the kernel error and the HCA completion error, nothing written', () => {
  function setup(): { rig: OdpRig; src: number; dst: number; mrA: Mlx5IbMr; mrB: Mlx5IbMr } {
    const rig = createRig();
    const src = mmapAnon(rig.a.proc, MSG);
    const dst = mmapAnon(rig.b.proc, MSG);
    rig.a.proc.mm.write(src, pattern(MSG, 3));
    rig.b.proc.mm.write(dst, new Uint8Array(MSG).fill(0xee));
    return { rig, src, dst, mrA: reg(rig, 'a', src, MSG), mrB: reg(rig, 'b', dst, MSG) };
  }

  it('an access outside the MR', () => {
    const { rig, src, dst, mrA, mrB } = setup();
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 8192, lkey: mrA.lkey }], remoteAddr: dst + MSG - 4096, rkey: mrB.rkey });
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    expect(rig.b.proc.mm.read(dst, MSG).every((x) => x === 0xee)).toBe(true);
    expect(rig.b.ib.pagefaultMr(mrB, dst + MSG, 1, 0, false)).toBe(-Errno.EFAULT);
  });

  it('a write to a read-only MR, and a write to an MR whose VMA became read-only', () => {
    const { rig, src, dst, mrA } = setup();
    const ro = reg(rig, 'b', dst, MSG, IB_ACCESS_ON_DEMAND | IB_ACCESS_REMOTE_READ);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 64, lkey: mrA.lkey }], remoteAddr: dst, rkey: ro.rkey });
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    expect(rig.b.proc.mm.read(dst, MSG).every((x) => x === 0xee)).toBe(true);
  });

  it('a VMA made read-only by mprotect: the page fault fails with -EPERM, the WQE with an error', () => {
    const rig = createRig();
    const src = mmapAnon(rig.a.proc, MSG);
    const dst = mmapAnon(rig.b.proc, MSG);
    rig.b.proc.mm.write(dst, new Uint8Array(MSG).fill(0xee));
    const mrA = reg(rig, 'a', src, MSG);
    const mrB = reg(rig, 'b', dst, MSG);
    expect(rig.b.proc.mm.mprotect(dst, MSG, PROT_READ)).toBe(0);
    expect(rig.b.ib.pagefaultMr(mrB, dst, 4096, 0, false)).toBe(-Errno.EPERM);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 64, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    expect(rig.b.proc.mm.read(dst, MSG).every((x) => x === 0xee)).toBe(true);
  });

  it('an rkey of another PD, and an unknown rkey', () => {
    const { rig, src, dst, mrA } = setup();
    const otherPd = rig.b.ib.allocPd(rig.b.proc.mm);
    const foreign = rig.b.ib.regUserMr(otherPd, dst, MSG, dst, RW);
    if (typeof foreign === 'number') throw new Error(String(foreign));
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 64, lkey: mrA.lkey }], remoteAddr: dst, rkey: foreign.rkey });
    drain(rig);
    expect(rig.a.cq.poll()[0]?.status).toBe(IbWcStatus.IB_WC_REM_ACCESS_ERR);
    expect(rig.b.proc.mm.read(dst, MSG).every((x) => x === 0xee)).toBe(true);
    // The QP is in the error state now: further posts are refused.
    expect(rig.a.ib.postSend(rig.a.qp, { wrId: 2, opcode: IB_WR_RDMA_WRITE, sgList: [], remoteAddr: dst, rkey: 0x1234 })).toBe(-Errno.EINVAL);
  });

  it('registration errors: no ON_DEMAND -EOPNOTSUPP, bad flags -EINVAL, zero length -EINVAL, implicit with iova -EINVAL', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    expect(rig.b.ib.regUserMr(rig.b.pd, buf, MSG, buf, IB_ACCESS_LOCAL_WRITE)).toBe(-Errno.EOPNOTSUPP);
    expect(rig.b.ib.regUserMr(rig.b.pd, buf, MSG, buf, RW | (1 << 29))).toBe(-Errno.EINVAL);
    expect(rig.b.ib.regUserMr(rig.b.pd, buf, 0, buf, RW)).toBe(-Errno.EINVAL);
    expect(rig.b.ib.regUserMr(rig.b.pd, 0, IB_IMPLICIT_MR_LENGTH, 4096, RW)).toBe(-Errno.EINVAL);
    expect(rig.b.ib.regUserMr(rig.b.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, RW | IB_ACCESS_HUGETLB)).toBe(-Errno.EINVAL);
  });

  it('MR creation fails with -EOPNOTSUPP on a device that would need swiotlb', () => {
    const rig = createRig();
    const dev = rig.machine.pci.addDevice({ name: 'mlx5_bounce', dmaMaskBits: 64, forceSwiotlb: true });
    const ib = new Mlx5IbDev({ dev, hmm: rig.hmm, scheduler: rig.machine.scheduler });
    const pd = ib.allocPd(rig.b.proc.mm);
    const buf = mmapAnon(rig.b.proc, MSG);
    expect(ib.regUserMr(pd, buf, MSG, buf, RW)).toBe(-Errno.EOPNOTSUPP);
  });
});

describe('concurrent teardown', () => {
  function setup(): { rig: OdpRig; src: number; dst: number; mrA: Mlx5IbMr; mrB: Mlx5IbMr; writes: number[] } {
    const rig = createRig();
    const src = mmapAnon(rig.a.proc, MSG);
    const dst = mmapAnon(rig.b.proc, MSG);
    rig.a.proc.mm.write(src, pattern(MSG, 8));
    const writes: number[] = [];
    rig.b.ib.hca.onAccess = (_mk, va, _dma, _len, write) => {
      if (write) writes.push(va);
    };
    return { rig, src, dst, writes, mrA: reg(rig, 'a', src, MSG), mrB: reg(rig, 'b', dst, MSG) };
  }

  it('deregistering the MR while its page fault is queued: the fault fails, the WQE errors, nothing is written or leaked', () => {
    const { rig, src, dst, mrA, mrB, writes } = setup();
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
    // Run until the responder HCA raised its page fault, not until the driver handled it.
    while (rig.b.ib.hca.stats.pageFaults === 0) rig.machine.advance(500);
    expect(rig.b.ib.stats.pageFaults).toBe(0);
    expect(rig.b.ib.deregMr(mrB)).toBe(0);
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_REM_ACCESS_ERR]);
    expect(rig.b.ib.stats.pageFaultErrors).toBe(1);
    expect(writes).toEqual([]);
    expect(rig.b.ib.hca.mkeyCount).toBe(0);
    rig.machine.unbindDevice(rig.b.ib.dmaDevice);
    expect(debugReports(rig)).toEqual([]);
  });

  it('the process exits with traffic in flight: RELEASE zaps everything, later faults fail, no write after exit', () => {
    const { rig, src, dst, mrA, mrB, writes } = setup();
    for (let i = 0; i < 4; i++) {
      rig.a.ib.postSend(rig.a.qp, { wrId: i, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG / 4, lkey: mrA.lkey }], remoteAddr: dst + (i * MSG) / 4, rkey: mrB.rkey });
    }
    while (rig.a.cq.depth === 0) rig.machine.advance(500);
    const before = writes.length;
    expect(before).toBeGreaterThan(0);
    rig.b.proc.exit();
    expect(mrB.umem.npages).toBe(0);
    expect([...mrB.mkey.mtt].every((e) => e === 0)).toBe(true);
    drain(rig);
    const wcs = rig.a.cq.poll();
    expect(wcs[0]?.status).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(wcs.slice(1).some((w) => w.status === IbWcStatus.IB_WC_REM_ACCESS_ERR)).toBe(true);
    expect(writes.length).toBe(before);
    expect(rig.b.ib.deregMr(mrB)).toBe(0);
    rig.machine.unbindDevice(rig.b.ib.dmaDevice);
    expect(debugReports(rig)).toEqual([]);
  });

  it('munmap before a queued prefetch runs: the prefetch fails silently and maps nothing', () => {
    const { rig, dst, mrB } = setup();
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, 0, [{ addr: dst, length: MSG, lkey: mrB.lkey }])).toBe(0);
    expect(rig.b.proc.mm.munmap(dst, MSG)).toBe(0);
    drain(rig);
    expect(mrB.umem.npages).toBe(0);
    expect([...mrB.mkey.mtt].every((e) => e === 0)).toBe(true);
  });

  it('destroying a QP flushes its queued work requests', () => {
    const { rig, src, dst, mrA, mrB } = setup();
    for (let i = 0; i < 3; i++) rig.a.ib.postSend(rig.a.qp, { wrId: i, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: 64, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
    rig.a.ib.hca.destroyQp(rig.a.qp);
    drain(rig);
    expect(rig.a.cq.poll().map((w) => w.status)).toEqual([IbWcStatus.IB_WC_WR_FLUSH_ERR, IbWcStatus.IB_WC_WR_FLUSH_ERR, IbWcStatus.IB_WC_WR_FLUSH_ERR]);
  });
});

describe('two-step vs legacy equivalence', () => {
  it('same bytes and same MTT contents (dma-direct: DMA address = phys), different counters', () => {
    const runOne = (legacy: boolean) => {
      const rig = createRig({ legacy, seed: 3 });
      const src = mmapAnon(rig.a.proc, MSG);
      const dst = mmapAnon(rig.b.proc, MSG);
      const mrA = reg(rig, 'a', src, MSG);
      const mrB = reg(rig, 'b', dst, MSG);
      const data = pattern(MSG, 21);
      rig.a.proc.mm.write(src, data);
      rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
      drain(rig);
      return { bytes: rig.b.proc.mm.read(dst, MSG), mtt: [...mrB.mkey.mtt], umem: { ...mrB.umem.stats }, hmm: { ...rig.hmm.stats } };
    };
    const a = runOne(false);
    const b = runOne(true);
    expect(sameBytes(a.bytes, b.bytes)).toBe(true);
    expect(a.mtt).toEqual(b.mtt);
    expect(a.umem.legacyMaps).toBe(0);
    expect(b.umem.legacyMaps).toBe(MSG / 4096);
    expect(a.hmm.maps).toBe(2 * (MSG / 4096)); // hmm_dma_map_pfn on both HCAs
    expect(b.hmm.maps).toBe(0);
  });
});

describe('malformed work requests and tracing', () => {
  it('a malformed work request is -EINVAL, never a crash', () => {
    const rig = createRig();
    const qp = rig.a.qp;
    const bad: unknown[] = [
      null,
      { wrId: 1, opcode: 99, sgList: [] },
      { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: 'x' },
      { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: -1, length: 1, lkey: 1 }], remoteAddr: 0, rkey: 1 },
      { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: 0, length: 1.5, lkey: 1 }], remoteAddr: 0, rkey: 1 },
      { wrId: 1, opcode: IB_WR_RDMA_READ, sgList: [], remoteAddr: Number.NaN, rkey: 1 },
      { wrId: 1, opcode: IB_WR_SEND, sgList: new Array(64).fill({ addr: 0, length: 1, lkey: 1 }) },
    ];
    for (const wr of bad) expect(rig.a.ib.postSend(qp, wr as Parameters<typeof rig.a.ib.postSend>[1])).toBe(-Errno.EINVAL);
    expect(rig.b.ib.postRecv(rig.b.qp, { wrId: 1, sgList: [{ addr: 0, length: -4, lkey: 0 }] })).toBe(-Errno.EINVAL);
    drain(rig);
    expect(rig.a.cq.poll()).toEqual([]);
  });

  it('page faults, invalidations and prefetches are traced', () => {
    const rig = createRig();
    rig.machine.trace.record({ capacity: 4096 });
    const src = mmapAnon(rig.a.proc, MSG);
    const dst = mmapAnon(rig.b.proc, MSG);
    const mrA = reg(rig, 'a', src, MSG);
    const mrB = reg(rig, 'b', dst, MSG);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
    drain(rig);
    rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: dst, length: MSG, lkey: mrB.lkey }]);
    dropPages(rig.b.proc, dst, MSG);
    const names = new Set(rig.machine.trace.events().map((e) => e.name));
    expect(names.has('mlx5:odp_page_fault')).toBe(true);
    expect(names.has('mlx5:odp_invalidate')).toBe(true);
    expect(names.has('mlx5:odp_advise_mr')).toBe(true);
  });
});

describe('invalidation zaps the MTT in MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT blocks', () => {
  it('a block ends at a non-present entry on an 8-entry boundary, or at the end of the range', () => {
    const rig = createRig();
    const len = 16 * 4096;
    const buf = mmapAnon(rig.b.proc, len);
    const mr = reg(rig, 'b', buf, len);
    // Pages 0-2 and 9-10 present and mapped, the rest never touched.
    for (const p of [0, 1, 2, 9, 10]) rig.b.proc.mm.write(buf + p * 4096, new Uint8Array([p + 1]));
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: buf, length: len, lkey: mr.lkey }])).toBe(0);
    expect(mr.umem.npages).toBe(5);
    const umrs = rig.b.ib.stats.invalidationUmrs;
    expect(rig.b.proc.mm.munmap(buf, len)).toBe(0);
    // [0, 8) flushed at idx 8 (not present, aligned), then [9, 16) at the end.
    expect(rig.b.ib.stats.invalidationUmrs - umrs).toBe(2);
    expect(rig.b.ib.stats.invalidatedMtts).toBe(8 + 7);
    expect(mr.umem.npages).toBe(0);
    expect([...mr.mkey.mtt].every((e) => e === 0)).toBe(true);
  });
});

describe('implicit ODP with prefetch (test_odp_implicit_prefetch_rc_traffic)', () => {
  it('prefetching through the implicit key creates the child; traffic then takes no page fault', () => {
    const rig = createRig();
    const imr = rig.b.ib.regUserMr(rig.b.pd, 0, IB_IMPLICIT_MR_LENGTH, 0, RW);
    if (typeof imr === 'number') throw new Error(String(imr));
    const dst = mmapAnon(rig.b.proc, MSG);
    const src = mmapAnon(rig.a.proc, MSG);
    const mrA = reg(rig, 'a', src, MSG);
    for (let it = 0; it < 5; it++) {
      dropPages(rig.b.proc, dst, MSG);
      expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE, IB_UVERBS_ADVISE_MR_FLAG_FLUSH, [{ addr: dst, length: MSG, lkey: imr.lkey }])).toBe(0);
      // Through another PD: -EPERM, nothing queued.
      expect(rig.b.ib.adviseMr(rig.b.ib.allocPd(rig.b.proc.mm), IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, [{ addr: dst, length: MSG, lkey: imr.lkey }])).toBe(-Errno.EPERM);
      const faults = rig.b.ib.stats.pageFaults;
      const data = pattern(MSG, 40 + it);
      rig.a.proc.mm.write(src, data);
      rig.a.ib.postSend(rig.a.qp, { wrId: it, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: MSG, lkey: mrA.lkey }], remoteAddr: dst, rkey: imr.rkey });
      drain(rig);
      ok(rig, 'a');
      expect(rig.b.ib.stats.pageFaults).toBe(faults);
      expect(sameBytes(rig.b.proc.mm.read(dst, MSG), data)).toBe(true);
    }
    expect(rig.b.ib.stats.implicitChildrenCreated).toBeGreaterThanOrEqual(1);
  });
});

describe('objects of the wrong device', () => {
  it('a PD, QP or SGE list that does not belong to the device is -EINVAL', () => {
    const rig = createRig();
    const buf = mmapAnon(rig.b.proc, MSG);
    expect(rig.b.ib.regUserMr(rig.a.pd, buf, MSG, buf, RW)).toBe(-Errno.EINVAL);
    expect(rig.b.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_SEND, sgList: [] })).toBe(-Errno.EINVAL);
    expect(rig.b.ib.postRecv(rig.a.qp, { wrId: 1, sgList: [] })).toBe(-Errno.EINVAL);
    expect(rig.b.ib.adviseMr(rig.a.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, [])).toBe(-Errno.EINVAL);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, 'x' as unknown as [])).toBe(-Errno.EINVAL);
    expect(rig.b.ib.adviseMr(rig.b.pd, IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH, 0, [{ addr: -1, length: 1, lkey: 1 }])).toBe(-Errno.EINVAL);
    expect(() => rig.b.ib.createQp(rig.a.pd, rig.b.cq, rig.b.cq)).toThrow(RangeError);
    const mr = reg(rig, 'b', buf, MSG);
    expect(rig.a.ib.deregMr(mr)).toBe(-Errno.EINVAL);
    expect(rig.b.ib.deregMr(mr)).toBe(0);
  });
});

describe('responder RDMA faults map at most MAX_PREFETCH_LEN at a time', () => {
  it('an 8 MiB RDMA WRITE into an untouched ODP MR takes two 4 MiB responder faults', () => {
    const rig = createRig();
    const len = 8 << 20;
    const src = mmapAnon(rig.a.proc, len);
    const dst = mmapAnon(rig.b.proc, len);
    const mrA = reg(rig, 'a', src, len);
    const mrB = reg(rig, 'b', dst, len);
    const data = pattern(len, 77);
    rig.a.proc.mm.write(src, data);
    rig.a.ib.postSend(rig.a.qp, { wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: src, length: len, lkey: mrA.lkey }], remoteAddr: dst, rkey: mrB.rkey });
    drain(rig);
    ok(rig, 'a');
    expect(rig.a.ib.stats.pageFaults).toBe(1); // the requester's data segment, whole
    expect(rig.b.ib.stats.pageFaults).toBe(2);
    expect(rig.b.ib.stats.faultPages).toBe(len / 4096);
    expect(sameBytes(rig.b.proc.mm.read(dst, len), data)).toBe(true);
  });
});
