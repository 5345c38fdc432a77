// kernel: drivers/infiniband/hw/mlx5/odp.c, mr.c (ODP registration, implicit ODP, page-fault
// handling, prefetch, invalidation), drivers/infiniband/core/verbs.c (the verbs surface); the
// definitions of mlx5_ib.h (constants, counters, options) are in mlx5Ib.ts. One class, because
// odp.c and mr.c share struct mlx5_ib_dev's state (the odp_mkeys table, the XLT buffer).
// The mlx5-like driver on top of the simulated HCA and ib_umem_odp: it is the `IbDevice` the umems
// belong to, registers ODP MRs (explicit, implicit, huge-page), handles the HCA's page-fault
// events (pagefault_mr: map, populate MTT through UMR, resume), prefetches (advise_mr) and
// implements the mmu interval notifier callback (zap the hardware entries first, then unmap).
import {
  DMA_MAPPING_ERROR,
  Errno,
  HMM_PFN_VALID,
  HMM_PFN_WRITE,
  PAGE_SIZE,
  hmmPfnHi,
  mmuIntervalSetSeq,
  pciP2pdmaMapStateInit,
} from '@dmakit/dma-core';
import type { Device, EventScheduler, HmmPort, MmStruct, MmuIntervalNotifier, MmuIntervalNotifierOps, MmuNotifierRange } from '@dmakit/dma-core';
import {
  IB_ACCESS_HUGETLB,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_SUPPORTED,
  IB_IMPLICIT_MR_LENGTH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT,
  IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE,
  IB_UVERBS_ADVISE_MR_FLAG_FLUSH,
  MAX_PREFETCH_LEN,
  MLX5_IB_MTT_READ,
  MLX5_IB_MTT_WRITE,
  MLX5_IMR_MTT_ENTRIES,
  MLX5_IMR_MTT_SHIFT,
  MLX5_IMR_MTT_SIZE,
  MLX5_PF_FLAGS_DOWNGRADE,
  MLX5_PF_FLAGS_ENABLE,
  MLX5_PF_FLAGS_SNAPSHOT,
  MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT,
  ODP_WRITE_ALLOWED_BIT,
} from './constants.js';
import { Hca } from './hca.js';
import type { HcaMkey, HcaPageFault, HcaQp } from './hca.js';
import type { HcaCq, IbRecvWr, IbSendWr, IbSge, IbWc } from './ibVerbs.js';
import {
  ibUmemOdpAllocChild,
  ibUmemOdpAllocImplicit,
  ibUmemOdpDmaAddr,
  ibUmemOdpGet,
  ibUmemOdpLegacyBits,
  ibUmemOdpMapDmaAndLock,
  ibUmemOdpMetadataBytes,
  ibUmemOdpNumPages,
  ibUmemOdpRelease,
  ibUmemOdpUnmapDmaPages,
} from './umemOdp.js';
import { MLX5_IMR_KSM_ENTRIES, MLX5_XLT_CHUNK_ENTRIES } from './mlx5Ib.js';
import type { Mlx5DevReport, Mlx5IbDevOptions, Mlx5OdpStats } from './mlx5Ib.js';
import { UmemOdpNotifier } from './umemOdp.js';
import type { IbDevice, IbUmemOdp } from './umemOdp.js';

function isUint(x: unknown): boolean {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** A protection domain of one process context (`ib_pd` + the ucontext's mm). */
export class IbPd {
  readonly pdn: number;
  readonly mm: MmStruct;
  readonly dev: Mlx5IbDev;
  deallocated = false;
  constructor(pdn: number, mm: MmStruct, dev: Mlx5IbDev) {
    this.pdn = pdn;
    this.mm = mm;
    this.dev = dev;
  }
}

/** `struct mlx5_ib_mr` of an ODP MR. */
export class Mlx5IbMr {
  readonly pd: IbPd;
  readonly mkey: HcaMkey;
  readonly umem: IbUmemOdp;
  readonly iova: number;
  readonly length: number;
  readonly access: number;
  readonly implicit: boolean;
  /** Implicit parent: children per 1 GiB index (`imr->implicit_children`). */
  readonly children = new Map<number, Mlx5IbMr>();
  readonly parent: Mlx5IbMr | null;
  /** Deregistered (or being destroyed): faults and prefetches fail. */
  dead = false;
  constructor(pd: IbPd, mkey: HcaMkey, umem: IbUmemOdp, iova: number, length: number, access: number, implicit: boolean, parent: Mlx5IbMr | null) {
    this.pd = pd;
    this.mkey = mkey;
    this.umem = umem;
    this.iova = iova;
    this.length = length;
    this.access = access;
    this.implicit = implicit;
    this.parent = parent;
  }
  /** Local key of the MR (kernel: ib_mr.lkey). */
  get lkey(): number {
    return this.mkey.key;
  }
  /** Remote key of the MR (kernel: ib_mr.rkey). */
  get rkey(): number {
    return this.mkey.key;
  }
}

/** The mlx5-like ODP driver: the `IbDevice` of its umems and the verbs surface of its HCA. kernel: drivers/infiniband/hw/mlx5/odp.c, mr.c (struct mlx5_ib_dev). */
export class Mlx5IbDev implements IbDevice {
  readonly name: string;
  readonly dmaDevice: Device;
  readonly hmm: HmmPort;
  readonly odpLegacy: boolean;
  raceWindow: ((umem: IbUmemOdp) => void) | undefined = undefined;
  readonly hca: Hca;
  readonly scheduler: EventScheduler;
  readonly stats: Mlx5OdpStats = {
    pageFaults: 0,
    pageFaultErrors: 0,
    faultPages: 0,
    prefetches: 0,
    prefetchPages: 0,
    invalidations: 0,
    invalidatedMtts: 0,
    invalidationUmrs: 0,
    implicitChildrenCreated: 0,
    implicitChildrenDestroyed: 0,
  };
  /** `dev->odp_mkeys`: mkey -> ODP MR (explicit and implicit parents). */
  readonly #odpMkeys = new Map<number, Mlx5IbMr>();
  readonly #mrs = new Set<Mlx5IbMr>();
  #nextPdn = 1;
  /** The XLT buffer populate_mtt fills before a UMR (reused). */
  readonly #xlt = new Float64Array(MLX5_XLT_CHUNK_ENTRIES);
  readonly #ops: MmuIntervalNotifierOps;

  constructor(opts: Mlx5IbDevOptions) {
    this.name = opts.name ?? `mlx5_${opts.dev.name}`;
    this.dmaDevice = opts.dev;
    this.hmm = opts.hmm;
    this.scheduler = opts.scheduler;
    this.odpLegacy = opts.odpLegacy ?? false;
    this.hca = new Hca(opts.dev, opts.scheduler, opts);
    this.hca.onPageFault = (pf) => {
      this.#pageFaultHandler(pf);
    };
    this.#ops = {
      invalidate: (sub, range, curSeq) => this.#invalidateRange(sub, range, curSeq),
    };
  }

  // ---- verbs -----------------------------------------------------------------------------------

  /** `ib_alloc_pd` in the context of the process that owns `mm`. */
  allocPd(mm: MmStruct): IbPd {
    return new IbPd(this.#nextPdn++, mm, this);
  }

  /** \`ib_create_cq\`. */
  createCq(): HcaCq {
    return this.hca.createCq();
  }

  /** `ib_create_qp` (RC). Throws on a PD of another device (a programming error, like the kernel's WARN). */
  createQp(pd: IbPd, sendCq: HcaCq, recvCq: HcaCq): HcaQp {
    if (pd.dev !== this) throw new RangeError(`${this.name}: create_qp with a PD of ${pd.dev.name}`);
    return this.hca.createQp(pd.pdn, sendCq, recvCq);
  }

  /** `ib_post_send`: 0 or -EINVAL (QP of another device or not in RTS, malformed request). */
  postSend(qp: HcaQp, wr: IbSendWr): number {
    if (qp.hca !== this.hca) return -Errno.EINVAL;
    return this.hca.postSend(qp, wr);
  }

  /** `ib_post_recv`: 0 or -EINVAL. */
  postRecv(qp: HcaQp, wr: IbRecvWr): number {
    if (qp.hca !== this.hca) return -Errno.EINVAL;
    return this.hca.postRecv(qp, wr);
  }

  /** \`ib_poll_cq\`: up to n completions, oldest first. */
  pollCq(cq: HcaCq, n?: number): IbWc[] {
    return cq.poll(n);
  }

  /** Every MR registered and not deregistered (children of implicit MRs excluded). */
  get mrs(): readonly Mlx5IbMr[] {
    return [...this.#mrs];
  }

  /**
   * `mlx5_ib_reg_user_mr` for ODP: an MR over [start, start + length) of the PD's process mapped at
   * `iova`; `start` 0 with `length` IB_IMPLICIT_MR_LENGTH registers an implicit MR over the whole
   * address space. Returns the MR or a negative errno: -EOPNOTSUPP (not ODP: pinned MRs are not
   * modelled; or the device would need swiotlb), -EINVAL (bad flags or range), -EFAULT, -ENOMEM.
   */
  regUserMr(pd: IbPd, start: number, length: number, iova: number, access: number): Mlx5IbMr | number {
    if (!(pd instanceof IbPd) || pd.dev !== this || pd.deallocated) return -Errno.EINVAL;
    if (!Number.isInteger(access) || (access & ~IB_ACCESS_SUPPORTED) !== 0) return -Errno.EINVAL;
    if ((access & IB_ACCESS_ON_DEMAND) === 0) return -Errno.EOPNOTSUPP;
    if (start === 0 && length === IB_IMPLICIT_MR_LENGTH) {
      if (iova !== 0 || (access & IB_ACCESS_HUGETLB) !== 0) return -Errno.EINVAL;
      return this.#regImplicit(pd, access);
    }
    if (!Number.isSafeInteger(iova) || iova < 0 || !Number.isSafeInteger(iova + length)) return -Errno.EINVAL;
    const umem = ibUmemOdpGet(this, pd.mm, start, length, access, this.#ops);
    if (typeof umem === 'number') return umem;
    const mk = this.hca.createMkey(pd.pdn, access, iova, length, 'mtt', umem.pageShift, ibUmemOdpNumPages(umem));
    mk.pageOffset = start - umem.start;
    const mr = new Mlx5IbMr(pd, mk, umem, iova, length, access, false, null);
    umem.private = mr;
    // mlx5_ib_init_odp_mr: map what is already present and enable the mkey.
    const ret = this.#pagefaultRealMr(mr, umem, umem.start, umem.end - umem.start, MLX5_PF_FLAGS_SNAPSHOT | MLX5_PF_FLAGS_ENABLE);
    if (ret < 0) {
      this.#destroyMr(mr);
      return ret;
    }
    this.#odpMkeys.set(mk.key, mr);
    this.#mrs.add(mr);
    return mr;
  }

  #regImplicit(pd: IbPd, access: number): Mlx5IbMr | number {
    const umem = ibUmemOdpAllocImplicit(this, pd.mm, access);
    if (typeof umem === 'number') return umem;
    const mk = this.hca.createMkey(pd.pdn, access, 0, MLX5_IMR_KSM_ENTRIES * MLX5_IMR_MTT_SIZE, 'ksm', MLX5_IMR_MTT_SHIFT, MLX5_IMR_KSM_ENTRIES);
    // Every KSM entry starts as the null mkey; the HCA faults on it.
    mk.enabled = true;
    const mr = new Mlx5IbMr(pd, mk, umem, 0, mk.length, access, true, null);
    umem.private = mr;
    this.#odpMkeys.set(mk.key, mr);
    this.#mrs.add(mr);
    return mr;
  }

  /**
   * `mlx5_ib_dereg_mr`: stop page faults on the key, revoke it, unmap and release the umem (and
   * every implicit child). 0, or -EINVAL for an MR already deregistered.
   */
  deregMr(mr: Mlx5IbMr): number {
    if (mr.dead || !this.#mrs.has(mr)) return -Errno.EINVAL;
    this.#odpMkeys.delete(mr.mkey.key);
    this.#mrs.delete(mr);
    if (mr.implicit) {
      for (const child of [...mr.children.values()]) this.#destroyMr(child);
      mr.children.clear();
    }
    this.#destroyMr(mr);
    return 0;
  }

  /** Revoke the mkey (HW stops first), then release the umem. */
  #destroyMr(mr: Mlx5IbMr): void {
    mr.dead = true;
    mr.mkey.enabled = false;
    ibUmemOdpRelease(mr.umem);
    this.hca.destroyMkey(mr.mkey);
  }

  // ---- page faults -------------------------------------------------------------------------

  /** The page-fault EQ handler (mlx5_ib_eqe_pf_action -> mlx5_ib_pfault): map, then resume. */
  #pageFaultHandler(pf: HcaPageFault): void {
    this.stats.pageFaults++;
    const mr = this.#odpMkeys.get(pf.mkey);
    let ret = -Errno.EFAULT;
    // mlx5_ib_mr_rdma_pfault_handler maps the faulting range plus a prefetch bounded by
    // MAX_PREFETCH_LEN; WQE (requester) faults map the whole remaining data segment.
    const bcnt = pf.responder ? Math.min(pf.bcnt, MAX_PREFETCH_LEN) : pf.bcnt;
    if (mr !== undefined && !mr.dead) ret = this.pagefaultMr(mr, pf.va, bcnt, 0, false);
    // pagefault_single_data_segment: fewer pages than the range covers is -EFAULT too.
    if (ret < 0) this.stats.pageFaultErrors++;
    else this.stats.faultPages += ret;
    const trace = this.dmaDevice.host.trace;
    if (trace.enabled) trace.emit('mlx5:odp_page_fault', this.dmaDevice.name, { mkey: pf.mkey, va: pf.va, bcnt: pf.bcnt, write: pf.write, responder: pf.responder, ret });
    this.hca.pageFaultResume(pf.token, ret < 0);
  }

  /**
   * `pagefault_mr(mr, io_virt, bcnt, bytes_mapped, flags, permissive)`: PAGE_SIZE pages mapped
   * (>= 0) or -EFAULT (outside the MR, unreachable pages, MR dead), -EPERM, -EAGAIN, -EBUSY.
   */
  pagefaultMr(mr: Mlx5IbMr, ioVirt: number, bcnt: number, flags: number, permissive: boolean): number {
    if (mr.dead) return -Errno.EFAULT;
    if (!Number.isSafeInteger(ioVirt) || !Number.isSafeInteger(bcnt) || bcnt < 0 || ioVirt < 0) return -Errno.EFAULT;
    if (mr.implicit) return this.#pagefaultImplicitMr(mr, ioVirt, bcnt, flags);
    const umem = mr.umem;
    if (ioVirt < mr.iova && !permissive) return -Errno.EFAULT;
    let userVa = ioVirt - mr.iova + umem.address;
    if (userVa < umem.start) {
      if (!permissive) return -Errno.EFAULT;
      bcnt = Math.max(0, bcnt - (umem.start - userVa));
      userVa = umem.start;
    }
    if (userVa + bcnt > umem.end) {
      if (!permissive) return -Errno.EFAULT;
      bcnt = Math.max(0, umem.end - userVa);
    }
    return this.#pagefaultRealMr(mr, umem, userVa, bcnt, flags);
  }

  /** `pagefault_real_mr`: map_dma_and_lock, update the MTT (populate_mtt + UMR), unlock. */
  #pagefaultRealMr(mr: Mlx5IbMr, umem: IbUmemOdp, userVa: number, bcnt: number, flags: number): number {
    const fault = (flags & MLX5_PF_FLAGS_SNAPSHOT) === 0;
    const downgrade = (flags & MLX5_PF_FLAGS_DOWNGRADE) !== 0;
    const accessMask = umem.writable && !downgrade ? HMM_PFN_WRITE : 0;
    const np = ibUmemOdpMapDmaAndLock(umem, userVa, bcnt, accessMask, fault);
    if (np < 0) return np;
    const startIdx = Math.floor((userVa - umem.start) / umem.pageSize);
    const ret = this.#updateXlt(mr, umem, startIdx, np, downgrade, (flags & MLX5_PF_FLAGS_ENABLE) !== 0);
    umem.umemMutex.unlock();
    if (ret < 0) return ret;
    return np * (umem.pageSize / PAGE_SIZE);
  }

  /**
   * `mlx5r_umr_update_xlt` with populate_mtt: fill the XLT buffer chunk by chunk (hmm_dma_map_pfn
   * gives each entry its fixed IOVA slot) and post a UMR per chunk. Under umem_mutex.
   */
  #updateXlt(mr: Mlx5IbMr, umem: IbUmemOdp, startIdx: number, n: number, downgrade: boolean, enable: boolean): number {
    const xlt = this.#xlt;
    const pfns = umem.map.pfnList;
    const legacy = umem.dmaList !== null;
    const p2p = pciP2pdmaMapStateInit();
    for (let done = 0; done < n; ) {
      const cnt = Math.min(MLX5_XLT_CHUNK_ENTRIES, n - done);
      for (let i = 0; i < cnt; i++) {
        const idx = startIdx + done + i;
        const hi = hmmPfnHi(pfns, idx);
        if ((hi & HMM_PFN_VALID) === 0) {
          xlt[i] = 0;
          continue;
        }
        const dma = ibUmemOdpDmaAddr(umem, idx, p2p);
        if (dma === DMA_MAPPING_ERROR) return -Errno.EFAULT;
        const writable = legacy ? (ibUmemOdpLegacyBits(umem, idx) & ODP_WRITE_ALLOWED_BIT) !== 0 : (hi & HMM_PFN_WRITE) !== 0;
        xlt[i] = dma + MLX5_IB_MTT_READ + (writable && !downgrade ? MLX5_IB_MTT_WRITE : 0);
      }
      this.hca.umrUpdateMtt(mr.mkey, startIdx + done, cnt, xlt, enable);
      done += cnt;
    }
    if (enable) mr.mkey.enabled = true;
    return 0;
  }

  /** `pagefault_implicit_mr`: per 1 GiB child, creating children on demand, then update the KSM. */
  #pagefaultImplicitMr(imr: Mlx5IbMr, ioVirt: number, bcnt: number, flags: number): number {
    if (ioVirt + bcnt > MLX5_IMR_KSM_ENTRIES * MLX5_IMR_MTT_SIZE) return -Errno.EFAULT;
    let idx = Math.floor(ioVirt / MLX5_IMR_MTT_SIZE);
    let va = ioVirt;
    let left = Math.max(bcnt, 1);
    let npages = 0;
    let updStart = -1;
    let updEnd = -1;
    let ret = 0;
    while (left > 0) {
      let child = imr.children.get(idx);
      if (child === undefined) {
        const c = this.#implicitGetChildMr(imr, idx);
        if (typeof c === 'number') {
          ret = c;
          break;
        }
        child = c;
        if (updStart < 0) updStart = idx;
        updEnd = idx + 1;
      }
      const childEnd = (idx + 1) * MLX5_IMR_MTT_SIZE;
      const len = Math.min(left, childEnd - va);
      const r = this.#pagefaultRealMr(child, child.umem, va, len, flags);
      if (r < 0) {
        ret = r;
        break;
      }
      npages += r;
      va += len;
      left -= len;
      idx++;
    }
    if (updStart >= 0) {
      // Under the parent's umem_mutex: point the KSM entries at the new children.
      imr.umem.umemMutex.lock();
      const keys: number[] = [];
      for (let i = updStart; i < updEnd; i++) keys.push(imr.children.get(i)?.mkey.key ?? 0);
      this.hca.umrUpdateKsm(imr.mkey, updStart, keys, false);
      imr.umem.umemMutex.unlock();
    }
    return ret < 0 ? ret : npages;
  }

  /** `implicit_get_child_mr`: a child umem + MTT mkey for 1 GiB index `idx`, zapped and enabled. */
  #implicitGetChildMr(imr: Mlx5IbMr, idx: number): Mlx5IbMr | number {
    const start = idx * MLX5_IMR_MTT_SIZE;
    const umem = ibUmemOdpAllocChild(imr.umem, start, MLX5_IMR_MTT_SIZE, this.#ops);
    if (typeof umem === 'number') return umem;
    const mk = this.hca.createMkey(imr.pd.pdn, imr.access, start, MLX5_IMR_MTT_SIZE, 'mtt', umem.pageShift, MLX5_IMR_MTT_ENTRIES);
    const child = new Mlx5IbMr(imr.pd, mk, umem, start, MLX5_IMR_MTT_SIZE, imr.access, false, imr);
    umem.private = child;
    this.hca.umrUpdateMtt(mk, 0, MLX5_IMR_MTT_ENTRIES, null, true); // ZAP | ENABLE of every MTT
    imr.children.set(idx, child);
    this.stats.implicitChildrenCreated++;
    return child;
  }

  /** `destroy_unused_implicit_child_mr` (queued work): only if still unused. */
  #destroyUnusedChild(child: Mlx5IbMr): void {
    const imr = child.parent;
    if (imr === null || child.dead || child.umem.npages !== 0) return;
    const idx = Math.floor(child.iova / MLX5_IMR_MTT_SIZE);
    if (imr.children.get(idx) !== child) return;
    imr.children.delete(idx);
    if (!imr.dead) {
      imr.umem.umemMutex.lock();
      this.hca.umrUpdateKsm(imr.mkey, idx, [0], false);
      imr.umem.umemMutex.unlock();
    }
    this.#destroyMr(child);
    this.stats.implicitChildrenDestroyed++;
  }

  // ---- invalidation ------------------------------------------------------------------------

  /**
   * `mlx5_ib_invalidate_range`: under umem_mutex set the sequence, zap the hardware MTT entries of
   * the overlap (in UMR-aligned blocks), then unmap the pages (dirtying written ones); a child of an
   * implicit MR left with no pages is queued for destruction.
   */
  #invalidateRange(sub: MmuIntervalNotifier, range: MmuNotifierRange, curSeq: number): boolean {
    if (!(sub instanceof UmemOdpNotifier)) return true;
    const umem = sub.umem;
    const mr = umem.private instanceof Mlx5IbMr ? umem.private : undefined;
    umem.umemMutex.lock();
    mmuIntervalSetSeq(sub, curSeq);
    if (umem.npages === 0 || mr === undefined) {
      umem.umemMutex.unlock();
      return true;
    }
    const start = Math.max(range.start, umem.start);
    const end = Math.min(range.end, umem.end);
    const ps = umem.pageSize;
    const pfns = umem.map.pfnList;
    const blockMask = MLX5_UMR_MTT_NUM_ENTRIES_ALIGNMENT - 1;
    let inBlock = false;
    let blkStart = 0;
    let idx = 0;
    for (let addr = Math.floor(start / ps) * ps; addr < end; addr += ps) {
      idx = (addr - umem.start) / ps;
      if ((hmmPfnHi(pfns, idx) & HMM_PFN_VALID) !== 0) {
        if (!inBlock) {
          blkStart = idx;
          inBlock = true;
        }
      } else if (inBlock && (idx & blockMask) === 0) {
        this.#zap(mr, blkStart, idx - blkStart);
        inBlock = false;
      }
    }
    if (inBlock) this.#zap(mr, blkStart, idx - blkStart + 1);
    this.stats.invalidations++;
    const zapped0 = this.stats.invalidatedMtts;
    ibUmemOdpUnmapDmaPages(umem, start, end);
    const trace = this.dmaDevice.host.trace;
    if (trace.enabled) trace.emit('mlx5:odp_invalidate', this.dmaDevice.name, { mkey: mr.mkey.key, start, end, event: range.event, npages: umem.npages, zapped: this.stats.invalidatedMtts - zapped0 });
    if (mr.parent !== null && umem.npages === 0 && !mr.dead) {
      this.scheduler.schedule(0, () => {
        this.#destroyUnusedChild(mr);
      });
    }
    umem.umemMutex.unlock();
    return true;
  }

  #zap(mr: Mlx5IbMr, start: number, n: number): void {
    this.hca.umrUpdateMtt(mr.mkey, start, n, null, false); // MLX5_IB_UPD_XLT_ZAP | ATOMIC
    this.stats.invalidationUmrs++;
    this.stats.invalidatedMtts += n;
  }

  // ---- prefetch ----------------------------------------------------------------------------

  /**
   * `mlx5_ib_advise_mr` (ibv_advise_mr): PREFETCH (map read-only: DOWNGRADE), PREFETCH_WRITE,
   * PREFETCH_NO_FAULT (SNAPSHOT). With IB_UVERBS_ADVISE_MR_FLAG_FLUSH it runs now and returns the
   * first error; otherwise every SGE is checked (-ENOENT unknown key, -EINVAL not an ODP MR,
   * -EPERM other PD or PREFETCH_WRITE on a read-only MR) and the work is queued, errors ignored.
   */
  adviseMr(pd: IbPd, advice: number, flags: number, sgl: readonly IbSge[]): number {
    if (advice !== IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH && advice !== IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE && advice !== IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT) {
      return -Errno.EOPNOTSUPP;
    }
    if (!Number.isInteger(flags) || (flags & ~IB_UVERBS_ADVISE_MR_FLAG_FLUSH) !== 0) return -Errno.EOPNOTSUPP;
    const list: unknown = sgl;
    if (!(pd instanceof IbPd) || pd.dev !== this || !Array.isArray(list)) return -Errno.EINVAL;
    for (const sge of list as unknown[]) {
      const x = sge as Partial<IbSge> | null;
      if (typeof x !== 'object' || x === null || !isUint(x.addr) || !isUint(x.length) || !isUint(x.lkey)) return -Errno.EINVAL;
    }
    let pfFlags = 0;
    if (advice === IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH) pfFlags = MLX5_PF_FLAGS_DOWNGRADE;
    else if (advice === IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_NO_FAULT) pfFlags = MLX5_PF_FLAGS_SNAPSHOT;
    const mrs: Mlx5IbMr[] = [];
    for (const sge of sgl) {
      const mr = this.#getPrefetchableMr(pd, advice, sge.lkey);
      if (typeof mr === 'number') return mr;
      mrs.push(mr);
    }
    this.stats.prefetches++;
    const trace = this.dmaDevice.host.trace;
    if (trace.enabled) trace.emit('mlx5:odp_advise_mr', this.dmaDevice.name, { advice, flags, sges: sgl.length });
    if ((flags & IB_UVERBS_ADVISE_MR_FLAG_FLUSH) !== 0) {
      for (let i = 0; i < sgl.length; i++) {
        const sge = sgl[i];
        const mr = mrs[i];
        if (sge === undefined || mr === undefined) continue;
        const r = this.pagefaultMr(mr, sge.addr, sge.length, pfFlags, false);
        if (r < 0) return r;
        this.stats.prefetchPages += r;
      }
      return 0;
    }
    const work = sgl.map((s) => ({ addr: s.addr, length: s.length }));
    this.scheduler.schedule(0, () => {
      work.forEach((w, i) => {
        const mr = mrs[i];
        if (mr === undefined || mr.dead) return;
        const r = this.pagefaultMr(mr, w.addr, w.length, pfFlags, false);
        if (r > 0) this.stats.prefetchPages += r;
      });
    });
    return 0;
  }

  /** `get_prefetchable_mr`. */
  #getPrefetchableMr(pd: IbPd, advice: number, lkey: number): Mlx5IbMr | number {
    const mr = this.#odpMkeys.get(lkey);
    if (mr === undefined) return this.hca.lookupMkey(lkey) === undefined ? -Errno.ENOENT : -Errno.EINVAL;
    if (mr.dead) return -Errno.EINVAL;
    if (mr.pd !== pd) return -Errno.EPERM;
    if (advice === IB_UVERBS_ADVISE_MR_ADVICE_PREFETCH_WRITE && !mr.umem.writable) return -Errno.EPERM;
    return mr;
  }

  // ---- reports -----------------------------------------------------------------------------

  /** Every umem of the device (explicit MRs and implicit children). */
  umems(): IbUmemOdp[] {
    const out: IbUmemOdp[] = [];
    for (const mr of this.#mrs) {
      if (!mr.implicit) out.push(mr.umem);
      for (const c of mr.children.values()) out.push(c.umem);
    }
    return out;
  }

  /** Snapshot of the device: ODP and HCA counters, MR count, mapped pages, metadata and IOVA window bytes. */
  report(): Mlx5DevReport {
    let mapped = 0;
    let meta = 0;
    let iova = 0;
    for (const u of this.umems()) {
      mapped += u.npages;
      meta += ibUmemOdpMetadataBytes(u);
      iova += u.map.state.size;
    }
    return { odp: { ...this.stats }, hca: { ...this.hca.stats }, mrs: this.#mrs.size, mappedPages: mapped, metadataBytes: meta, iovaWindowBytes: iova };
  }
}
