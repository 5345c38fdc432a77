// kernel: drivers/iommu/dma-iommu.c (iommu_dma_* ops, the cookie, the two-step IOVA API)
// Over 600 lines on purpose: this file mirrors one kernel file, drivers/iommu/dma-iommu.c (~2,000 lines).
import {
  DMA_ATTR_MMIO,
  DMA_ATTR_PRIVILEGED,
  DMA_ATTR_REQUIRE_COHERENT,
  DMA_ATTR_SKIP_CPU_SYNC,
  DMA_BIDIRECTIONAL,
  DMA_MAPPING_ERROR,
  Errno,
  PciP2pdmaMapType,
  SG_DMA_BUS_ADDRESS,
  SG_DMA_SWIOTLB,
  SIZE_MAX,
  alignDown,
  alignUp,
  dmaBitMask,
  getOrder,
  isSwiotlbBuffer,
  minNotZero,
  offsetIn,
  pciP2pdmaBusAddrMap,
  pciP2pdmaMapStateInit,
  pciP2pdmaState,
  swiotlbMaxMappingSize,
  swiotlbSyncSingleForCpu,
  swiotlbSyncSingleForDevice,
  swiotlbTblMapSingle,
  swiotlbTblUnmapSingle,
} from '@dmakit/dma-core';
import type { DmaCoherentBuffer, DmaDataDirection, DmaIovaState, DmaMapOps, Device, Machine, SgTable } from '@dmakit/dma-core';
import { FlushQueue } from './flushQueue.js';
import type { FlushQueueKind } from './flushQueue.js';
import { iommuIotlbGatherInit } from './iommuDomain.js';
import type { IommuDomain, IommuIotlbGather } from './iommuDomain.js';
import { IovaDomain } from './iova/index.js';
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_PRIV, IOMMU_READ, IOMMU_WRITE } from './pageTable.js';

/** dma_info_to_prot's access bits, indexed by DmaDataDirection (BIDIRECTIONAL, TO, FROM, NONE). */
const DIR_PROT: readonly number[] = [IOMMU_READ | IOMMU_WRITE, IOMMU_READ, IOMMU_WRITE, 0];
/** dma_info_to_prot(dir, coherent, 0) by direction, for a non-coherent and a coherent device. */
const PROT_NO_ATTRS: readonly number[] = DIR_PROT.map((_, dir) => dmaInfoToProt(dir as DmaDataDirection, false, 0));
const PROT_NO_ATTRS_COHERENT: readonly number[] = DIR_PROT.map((_, dir) => dmaInfoToProt(dir as DmaDataDirection, true, 0));

/**
 * `dma_info_to_prot(dir, coherent, attrs)`. A table lookup rather than the kernel's switch: it is
 * on every map and link, and the switch over imported constants did not optimise as well.
 */
export function dmaInfoToProt(dir: DmaDataDirection, coherent: boolean, attrs: number): number {
  const access = DIR_PROT[dir] ?? 0;
  if (access === 0) return 0; // DMA_NONE or anything else: no access
  let prot = (attrs & DMA_ATTR_MMIO) !== 0 ? IOMMU_MMIO : coherent ? IOMMU_CACHE : 0;
  if ((attrs & DMA_ATTR_PRIVILEGED) !== 0) prot |= IOMMU_PRIV;
  return prot | access;
}

/** `dev_is_untrusted`. */
function devIsUntrusted(dev: Device): boolean {
  return dev.untrusted;
}

/**
 * `dev_use_swiotlb(dev, size, dir)`: untrusted devices. The arm64 `dma_kmalloc_needs_bounce` rule
 * (small unaligned kmalloc buffers on non-coherent devices) is not modelled: the model's
 * ARCH_DMA_MINALIGN equals the cache line and kmalloc buffers are not tracked.
 */
function devUseSwiotlb(dev: Device, _size: number, _dir: DmaDataDirection): boolean {
  return devIsUntrusted(dev);
}

/** `dev_use_sg_swiotlb`. */
function devUseSgSwiotlb(dev: Device): boolean {
  return devIsUntrusted(dev);
}

/** `iova_unaligned(iovad, phys, size)`. */
function iovaUnaligned(granule: number, phys: number, size: number): boolean {
  return offsetIn(phys, granule) !== 0 || offsetIn(size, granule) !== 0;
}

/** Per-device state the IOMMU core keeps (`dev->iommu`). */
export interface IommuDevState {
  /** `dev->iommu->pci_32bit_workaround`: try below 4 GiB first; cleared for good on first failure. */
  pci32bitWorkaround: boolean;
}

/** What the ops need from the IOMMU instance. */
export interface IommuDmaContext {
  readonly machine: Machine;
  /** The simulated CPU the caller runs on (per-CPU rcaches and flush queues). */
  readonly cpu: number;
  /** Per-device IOMMU state (the kernel's dev->iommu), created on first use. */
  devState(dev: Device): IommuDevState;
  /** A kernel WARN / dev_warn / dev_notice line. */
  warn(dev: Device, message: string): void;
  /** Called after the ops are detached from dev. */
  onDetach(dev: Device): void;
}

/**
 * `struct iommu_dma_cookie`: the IOVA allocator of the domain and, for DMA_FQ (lazy) domains, the
 * flush queue. IOVA 0 is never handed out (start_pfn = max(1, aperture_start >> shift)).
 */
export class IommuDmaCookie {
  readonly iovad: IovaDomain;
  /** `fq_domain`: non-null ⇔ lazy. */
  readonly fq: FlushQueue | null;
  readonly granule: number;
  iovaAllocs = 0;
  iovaAllocFailures = 0;
  iovaFrees = 0;
  readonly #machine: Machine;
  #depotTimer = false;

  constructor(machine: Machine, domain: IommuDomain, fqKind: FlushQueueKind, cpus: number) {
    this.#machine = machine;
    this.granule = domain.granule;
    this.iovad = new IovaDomain({ granule: domain.granule, startPfn: 1, cpus });
    this.fq =
      domain.type === 'lazy'
        ? new FlushQueue(fqKind, cpus, {
            flushIotlbAll: () => {
              domain.flushIotlbAll();
            },
            reclaim: (pfn, pages, freelist, cpu) => {
              if (freelist !== null) domain.pgtable.releaseTables(freelist);
              this.freeIovaFast(pfn, pages, cpu);
            },
            schedule: (ns, fn) => machine.schedule(ns, fn),
          })
        : null;
  }

  /** `free_iova_fast`, plus the depot trim worker (every IOVA_DEPOT_DELAY while it has work). */
  freeIovaFast(pfn: number, pages: number, cpu: number): void {
    this.iovad.freeIovaFast(pfn, pages, cpu % this.iovad.cpus);
    this.iovaFrees++;
    if (!this.#depotTimer && this.iovad.depotWorkPending) this.#armDepotTrim();
  }

  #armDepotTrim(): void {
    this.#depotTimer = true;
    this.#machine.schedule(100e6, () => {
      this.#depotTimer = false;
      this.iovad.depotTrim();
      if (this.iovad.depotWorkPending) this.#armDepotTrim();
    });
  }
}

// Scratch for the scatterlist layout pass (grown on demand, never per segment).
let sgOff = new Float64Array(64);
let sgLen = new Float64Array(64);
let sgIovaLen = new Float64Array(64);
let sgBus = new Uint8Array(64);
function sgScratch(n: number): void {
  if (sgOff.length >= n) return;
  let cap = sgOff.length;
  while (cap < n) cap *= 2;
  sgOff = new Float64Array(cap);
  sgLen = new Float64Array(cap);
  sgIovaLen = new Float64Array(cap);
  sgBus = new Uint8Array(cap);
}

/**
 * The dma-iommu DMA ops for the devices attached to one domain: implements dma-core's `DmaMapOps`
 * (`iommu_dma_ops` plus the two-step IOVA API), and the device-side translation.
 */
export class IommuDmaOps implements DmaMapOps {
  readonly name = 'iommu-dma';
  readonly domain: IommuDomain;
  readonly cookie: IommuDmaCookie;
  readonly #ctx: IommuDmaContext;
  readonly #gather: IommuIotlbGather = iommuIotlbGatherInit();

  constructor(ctx: IommuDmaContext, domain: IommuDomain, cookie: IommuDmaCookie) {
    this.#ctx = ctx;
    this.domain = domain;
    this.cookie = cookie;
  }

  // ---- IOVA allocation (iommu_dma_alloc_iova / iommu_dma_free_iova) ----

  /** `iommu_dma_alloc_iova(domain, size, dma_limit, dev)`: IOVA or 0. `size` is granule-aligned. */
  allocIova(dev: Device, size: number, dmaLimit: number): number {
    const c = this.cookie;
    const g = c.granule;
    const ctx = this.#ctx;
    if (ctx.machine.faultInjection.shouldFail('iova')) {
      c.iovaAllocFailures++;
      return 0;
    }
    const len = size / g;
    let limit = minNotZero(dmaLimit, dev.busDmaLimit);
    limit = Math.min(limit, this.domain.pgtable.iovaLimit - 1);
    const st = ctx.devState(dev);
    let pfn = 0;
    // kernel: dma-iommu.c — try a 32-bit IOVA first for PCI devices until that fails once.
    if (limit > dmaBitMask(32) && st.pci32bitWorkaround) {
      pfn = c.iovad.allocIovaFast(len, Math.floor(dmaBitMask(32) / g), false, ctx.cpu);
      if (pfn === 0) {
        st.pci32bitWorkaround = false;
        ctx.warn(dev, `Using ${Math.ceil(Math.log2(limit + 1))}-bit DMA addresses`);
      }
    }
    if (pfn === 0) pfn = c.iovad.allocIovaFast(len, Math.floor(limit / g), true, ctx.cpu);
    if (pfn === 0) {
      c.iovaAllocFailures++;
      return 0;
    }
    c.iovaAllocs++;
    return pfn * g;
  }

  /** `iommu_dma_free_iova`: queue it (lazy unmap) or give it back now. */
  freeIova(iova: number, size: number, gather: IommuIotlbGather | null): void {
    const c = this.cookie;
    const pfn = iova / c.granule;
    const pages = size / c.granule;
    if (gather?.queued === true && c.fq !== null) {
      const trace = this.#ctx.machine.trace;
      // Model tracepoint named after dma-iommu.c queue_iova(): the IOVA waits for the flush queue.
      if (trace.enabled) trace.emit('iommu:queue_iova', this.domain.name, { iova, size });
      c.fq.queueIova(pfn, pages, gather.freelist, this.#ctx.cpu);
    } else {
      c.freeIovaFast(pfn, pages, this.#ctx.cpu);
    }
  }

  // ---- single mappings ----

  /** `__iommu_dma_map`: IOVA + intra-granule offset, or DMA_MAPPING_ERROR. */
  #map(dev: Device, phys: number, size: number, prot: number, dmaMask: number): number {
    const g = this.cookie.granule;
    const minAlign = dev.dmaParms?.minAlignMask ?? 0;
    if (minAlign > g - 1) {
      this.#ctx.warn(dev, 'Unsupported alignment constraint');
      return DMA_MAPPING_ERROR;
    }
    const off = offsetIn(phys, g);
    const len = alignUp(size + off, g);
    const iova = this.allocIova(dev, len, dmaMask);
    if (iova === 0) return DMA_MAPPING_ERROR;
    if (this.domain.map(iova, phys - off, len, prot) !== 0) {
      this.freeIova(iova, len, null);
      return DMA_MAPPING_ERROR;
    }
    return iova + off;
  }

  /** `__iommu_dma_unmap`: strict domains sync then free; lazy ones queue the IOVA. */
  #unmap(dev: Device, dmaAddr: number, size: number, forceStrict = false): void {
    const g = this.cookie.granule;
    const off = offsetIn(dmaAddr, g);
    const iova = dmaAddr - off;
    const len = alignUp(size + off, g);
    const gather = iommuIotlbGatherInit(this.#gather);
    gather.queued = !forceStrict && this.cookie.fq !== null;
    const unmapped = this.domain.unmapFast(iova, len, gather);
    if (unmapped !== len) this.#ctx.warn(dev, `WARN: unmapped ${unmapped} of ${len} bytes at IOVA 0x${iova.toString(16)}`);
    if (!gather.queued) this.domain.iotlbSync(gather);
    this.freeIova(iova, len, gather);
  }

  /** `iommu_dma_map_swiotlb`: bounce into a granule-aligned slot, zero the padding for untrusted devices. */
  #mapSwiotlb(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): number {
    const g = this.cookie.granule;
    if (!dev.host.swiotlb.active) {
      this.#ctx.warn(dev, 'DMA bounce buffers are inactive, unable to map unaligned transaction.');
      return DMA_MAPPING_ERROR;
    }
    const tlb = swiotlbTblMapSingle(dev, phys, size, g - 1, dir, attrs);
    if (tlb !== DMA_MAPPING_ERROR && devIsUntrusted(dev)) {
      // Untrusted devices must not see leftover data in the padding of the bounce granule.
      const mem = dev.host.memory;
      const pre = alignDown(tlb, g);
      if (tlb > pre) mem.fill(pre, tlb - pre, 0);
      const post = tlb + size;
      const postEnd = alignUp(post, g);
      if (postEnd > post) mem.fill(post, postEnd - post, 0);
    }
    return tlb;
  }

  mapPhys(dev: Device, phys: number, size: number, dir: DmaDataDirection, attrs: number): number {
    const g = this.cookie.granule;
    const prot = dmaInfoToProt(dir, dev.coherent, attrs);
    let p = phys;
    let bounced = false;
    if (devUseSwiotlb(dev, size, dir) && iovaUnaligned(g, phys, size)) {
      if ((attrs & (DMA_ATTR_MMIO | DMA_ATTR_REQUIRE_COHERENT)) !== 0) return DMA_MAPPING_ERROR;
      p = this.#mapSwiotlb(dev, phys, size, dir, attrs);
      if (p === DMA_MAPPING_ERROR) return DMA_MAPPING_ERROR;
      bounced = true;
    }
    const dma = this.#map(dev, p, size, prot, dev.dmaMask);
    if (dma === DMA_MAPPING_ERROR && bounced) swiotlbTblUnmapSingle(dev, p, size, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
    return dma;
  }

  /** kernel: iommu_dma_unmap_phys() in drivers/iommu/dma-iommu.c. */
  unmapPhys(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection, attrs: number): void {
    if ((attrs & (DMA_ATTR_MMIO | DMA_ATTR_REQUIRE_COHERENT)) !== 0) {
      this.#unmap(dev, dmaAddr, size);
      return;
    }
    const phys = this.domain.iovaToPhys(dmaAddr);
    if (phys === 0) {
      this.#ctx.warn(dev, `WARN: unmap of unmapped IOVA 0x${dmaAddr.toString(16)}`);
      return;
    }
    this.#unmap(dev, dmaAddr, size);
    if (isSwiotlbBuffer(dev, phys)) swiotlbTblUnmapSingle(dev, phys, size, dir, attrs);
  }

  /** kernel: iommu_dma_sync_single_for_cpu() in drivers/iommu/dma-iommu.c. */
  syncSingleForCpu(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
    if (dev.coherent && !devUseSwiotlb(dev, size, dir)) return;
    const phys = this.domain.iovaToPhys(dmaAddr);
    if (phys !== 0 && isSwiotlbBuffer(dev, phys)) swiotlbSyncSingleForCpu(dev, phys, size, dir);
  }

  /** kernel: iommu_dma_sync_single_for_device() in drivers/iommu/dma-iommu.c. */
  syncSingleForDevice(dev: Device, dmaAddr: number, size: number, dir: DmaDataDirection): void {
    if (dev.coherent && !devUseSwiotlb(dev, size, dir)) return;
    const phys = this.domain.iovaToPhys(dmaAddr);
    if (phys !== 0 && isSwiotlbBuffer(dev, phys)) swiotlbSyncSingleForDevice(dev, phys, size, dir);
  }

  // ---- scatterlists ----

  /** `iommu_dma_map_sg_swiotlb`: one mapping per segment, no merging; list marked swiotlb. */
  #mapSgSwiotlb(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): number {
    for (let i = 0; i < nents; i++) {
      const len = sgt.length[i] ?? 0;
      const a = this.mapPhys(dev, sgt.phys[i] ?? 0, len, dir, attrs);
      if (a === DMA_MAPPING_ERROR) {
        for (let j = 0; j < i; j++) this.unmapPhys(dev, sgt.dmaAddress[j] ?? 0, sgt.dmaLength[j] ?? 0, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
        for (let j = 0; j < nents; j++) sgt.dmaFlags[j] = 0;
        return -Errno.EIO;
      }
      sgt.dmaAddress[i] = a;
      sgt.dmaLength[i] = len;
      sgt.dmaFlags[i] = 0;
    }
    sgt.dmaFlags[0] = (sgt.dmaFlags[0] ?? 0) | SG_DMA_SWIOTLB;
    return nents;
  }

  mapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): number {
    if (devUseSgSwiotlb(dev)) return this.#mapSgSwiotlb(dev, sgt, nents, dir, attrs);
    const g = this.cookie.granule;
    let prot = dmaInfoToProt(dir, dev.coherent, attrs);
    const boundary = (dev.dmaParms?.segmentBoundaryMask ?? SIZE_MAX) + 1;
    sgScratch(nents);
    const p2p = pciP2pdmaMapStateInit();
    let iovaLen = 0;
    let prev = -1;
    for (let i = 0; i < nents; i++) {
      const phys = sgt.phys[i] ?? 0;
      const len = sgt.length[i] ?? 0;
      sgBus[i] = 0;
      const t = pciP2pdmaState(p2p, dev, phys);
      if (t === PciP2pdmaMapType.BUS_ADDR && p2p.mem !== null) {
        // Programmed with the PCI bus address: no IOVA, never unmapped.
        sgt.dmaAddress[i] = pciP2pdmaBusAddrMap(p2p.mem, phys);
        sgt.dmaLength[i] = len;
        sgBus[i] = 1;
        continue;
      } else if (t === PciP2pdmaMapType.THRU_HOST_BRIDGE) {
        prot |= IOMMU_MMIO; // through the root complex: mapped like memory, as MMIO
      } else if (t !== PciP2pdmaMapType.NONE) {
        return -Errno.EREMOTEIO;
      }
      const off = offsetIn(phys, g);
      const sLen = alignUp(len + off, g);
      sgOff[i] = off;
      sgLen[i] = len;
      sgIovaLen[i] = sLen;
      // Pad the previous segment so this one starts on a segment boundary if it would cross one
      // (the single IOVA allocation is size-aligned, so lengths alone decide).
      const r = iovaLen % boundary;
      const pad = r === 0 ? 0 : boundary - r;
      if (pad !== 0 && pad < sLen - 1 && prev >= 0) {
        sgIovaLen[prev] = (sgIovaLen[prev] ?? 0) + pad;
        iovaLen += pad;
      }
      iovaLen += sLen;
      prev = i;
    }
    if (iovaLen === 0) return this.#finaliseSg(dev, sgt, nents, 0);
    const iova = this.allocIova(dev, iovaLen, dev.dmaMask);
    if (iova === 0) return -Errno.ENOMEM;
    const ret = this.#mapSgRange(iova, sgt, nents, prot);
    if (ret < 0) {
      this.freeIova(iova, iovaLen, null);
      return ret === -Errno.ENOMEM ? -Errno.ENOMEM : -Errno.EINVAL;
    }
    return this.#finaliseSg(dev, sgt, nents, iova);
  }

  /** `iommu_map_sg`: map the laid-out segments back to back (physically contiguous runs merged), one sync. */
  #mapSgRange(iova: number, sgt: SgTable, nents: number, prot: number): number {
    const d = this.domain;
    let mapped = 0;
    let start = 0;
    let len = 0;
    for (let i = 0; i < nents; i++) {
      const sPhys = (sgt.phys[i] ?? 0) - (sgOff[i] ?? 0);
      if (len !== 0 && sPhys !== start + len) {
        const r = d.mapNosync(iova + mapped, start, len, prot);
        if (r !== 0) {
          if (mapped > 0) d.unmap(iova, mapped);
          return r;
        }
        mapped += len;
        len = 0;
      }
      if (sgBus[i] === 1) continue;
      if (len !== 0) len += sgIovaLen[i] ?? 0;
      else {
        len = sgIovaLen[i] ?? 0;
        start = sPhys;
      }
    }
    if (len !== 0) {
      const r = d.mapNosync(iova + mapped, start, len, prot);
      if (r !== 0) {
        if (mapped > 0) d.unmap(iova, mapped);
        return r;
      }
      mapped += len;
    }
    d.syncMap(iova, mapped);
    return mapped;
  }

  /** `__finalise_sg`: build the output DMA segments, concatenating where the rules allow. */
  #finaliseSg(dev: Device, sgt: SgTable, nents: number, dmaAddrIn: number): number {
    const boundary = (dev.dmaParms?.segmentBoundaryMask ?? SIZE_MAX) + 1;
    const maxLen = dev.dmaParms?.maxSegmentSize ?? 65536;
    let dmaAddr = dmaAddrIn;
    let cur = 0;
    let curLen = 0;
    let count = 0;
    for (let i = 0; i < nents; i++) {
      const busAddr = sgt.dmaAddress[i] ?? 0;
      const busLen = sgt.dmaLength[i] ?? 0;
      sgt.dmaAddress[i] = DMA_MAPPING_ERROR;
      sgt.dmaLength[i] = 0;
      sgt.dmaFlags[i] = 0;
      if (sgBus[i] === 1) {
        if (i > 0) cur++;
        sgt.dmaAddress[cur] = busAddr;
        sgt.dmaLength[cur] = busLen;
        sgt.dmaFlags[cur] = (sgt.dmaFlags[cur] ?? 0) | SG_DMA_BUS_ADDRESS;
        count++;
        curLen = 0;
        continue;
      }
      const sOff = sgOff[i] ?? 0;
      const sLength = sgLen[i] ?? 0;
      const sIovaLen = sgIovaLen[i] ?? 0;
      if (curLen !== 0 && sOff === 0 && dmaAddr % boundary !== 0 && maxLen - curLen >= sLength) {
        curLen += sLength; // concatenate with the open output segment
      } else {
        if (i > 0) cur++;
        curLen = sLength;
        count++;
        sgt.dmaAddress[cur] = dmaAddr + sOff;
      }
      sgt.dmaLength[cur] = curLen;
      dmaAddr += sIovaLen;
      // A segment that does not end on a granule boundary closes the output segment.
      if (sLength + sOff < sIovaLen) curLen = 0;
    }
    return count;
  }

  /** kernel: iommu_dma_unmap_sg() in drivers/iommu/dma-iommu.c. */
  unmapSg(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection, attrs: number): void {
    if (((sgt.dmaFlags[0] ?? 0) & SG_DMA_SWIOTLB) !== 0) {
      for (let i = 0; i < nents; i++) this.unmapPhys(dev, sgt.dmaAddress[i] ?? 0, sgt.dmaLength[i] ?? 0, dir, attrs);
      sgt.dmaFlags[0] = (sgt.dmaFlags[0] ?? 0) & ~SG_DMA_SWIOTLB;
      return;
    }
    if ((attrs & DMA_ATTR_SKIP_CPU_SYNC) === 0) this.syncSgForCpu(dev, sgt, nents, dir);
    // One contiguous IOVA range: from the first to the last non-bus segment with a length.
    let start = -1;
    let end = 0;
    for (let i = 0; i < nents; i++) {
      const f = sgt.dmaFlags[i] ?? 0;
      if ((f & SG_DMA_BUS_ADDRESS) !== 0) {
        sgt.dmaFlags[i] = f & ~SG_DMA_BUS_ADDRESS;
        continue;
      }
      const len = sgt.dmaLength[i] ?? 0;
      if (len === 0) break;
      const a = sgt.dmaAddress[i] ?? 0;
      if (start < 0) start = a;
      end = a + len;
    }
    if (start >= 0 && end !== 0) this.#unmap(dev, start, end - start);
  }

  /** kernel: iommu_dma_sync_sg_for_cpu() in drivers/iommu/dma-iommu.c. */
  syncSgForCpu(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void {
    // No CPU cache model: only swiotlb-mapped lists have work to do.
    if (((sgt.dmaFlags[0] ?? 0) & SG_DMA_SWIOTLB) === 0) return;
    for (let i = 0; i < nents; i++) this.syncSingleForCpu(dev, sgt.dmaAddress[i] ?? 0, sgt.length[i] ?? 0, dir);
  }

  /** kernel: iommu_dma_sync_sg_for_device() in drivers/iommu/dma-iommu.c. */
  syncSgForDevice(dev: Device, sgt: SgTable, nents: number, dir: DmaDataDirection): void {
    if (((sgt.dmaFlags[0] ?? 0) & SG_DMA_SWIOTLB) === 0) return;
    for (let i = 0; i < nents; i++) this.syncSingleForDevice(dev, sgt.dmaAddress[i] ?? 0, sgt.length[i] ?? 0, dir);
  }

  // ---- coherent allocations ----

  /** `iommu_dma_alloc` (contiguous path): zeroed pages mapped bidirectionally under the coherent mask. */
  alloc(dev: Device, size: number, attrs: number): DmaCoherentBuffer | null {
    const g = this.cookie.granule;
    const len = alignUp(size, Math.max(g, 4096));
    const order = getOrder(len);
    const mem = this.#ctx.machine.memory;
    const phys = mem.allocPages(order);
    if (phys === 0) return null;
    mem.fill(phys, len, 0);
    const prot = dmaInfoToProt(DMA_BIDIRECTIONAL, dev.coherent, attrs);
    const dma = this.#map(dev, phys, len, prot, dev.coherentDmaMask);
    if (dma === DMA_MAPPING_ERROR) {
      mem.freePages(phys, order);
      return null;
    }
    return { cpuAddr: phys, phys, dmaAddr: dma, size };
  }

  /**
   * Frees a coherent allocation: unmap, then free the pages. kernel: iommu_dma_free() in
   * drivers/iommu/dma-iommu.c.
   */
  free(dev: Device, buf: DmaCoherentBuffer, _attrs: number): void {
    const len = alignUp(buf.size, Math.max(this.cookie.granule, 4096));
    this.#unmap(dev, buf.dmaAddr, len);
    this.#ctx.machine.memory.freePages(buf.phys, getOrder(len));
  }

  // ---- the two-step IOVA API ----

  /** `dma_iova_try_alloc`: one IOVA range for `size` bytes, keeping the granule offset of `phys`. */
  iovaTryAlloc(dev: Device, state: DmaIovaState, phys: number, size: number): boolean {
    const g = this.cookie.granule;
    if (!Number.isSafeInteger(size) || size <= 0) return false;
    const off = offsetIn(phys, g);
    const iova = this.allocIova(dev, alignUp(size + off, g), dev.dmaMask);
    if (iova === 0) return false;
    state.addr = iova + off;
    state.size = size;
    return true;
  }

  /** `__dma_iova_link`: map without an IOTLB sync. */
  #linkRange(dev: Device, addr: number, phys: number, size: number, dir: DmaDataDirection, attrs: number): number {
    const prot = dmaInfoToProt(dir, dev.coherent, attrs);
    return this.domain.mapNosync(addr, phys, size, prot);
  }

  /** `iommu_dma_iova_bounce_and_link`. */
  #bounceAndLink(dev: Device, addr: number, phys: number, bounceLen: number, dir: DmaDataDirection, attrs: number, startPad: number): number {
    const g = this.cookie.granule;
    const bounce = this.#mapSwiotlb(dev, phys, bounceLen, dir, attrs);
    if (bounce === DMA_MAPPING_ERROR) return -Errno.ENOMEM;
    const err = this.#linkRange(dev, addr - startPad, bounce - startPad, alignUp(bounceLen, g), dir, attrs);
    if (err !== 0) swiotlbTblUnmapSingle(dev, bounce, bounceLen, dir, attrs);
    return err;
  }

  /** `iommu_dma_iova_link_swiotlb`: bounce the partial head and tail granules, link the middle. */
  #linkSwiotlb(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number): number {
    const g = this.cookie.granule;
    const startPad = offsetIn(phys, g);
    const endPad = offsetIn(phys + size, g);
    const addr = state.addr + offset;
    let mapped = 0;
    let rest = size;
    if (startPad !== 0) {
      const bounceLen = Math.min(rest, g - startPad);
      const err = this.#bounceAndLink(dev, addr, phys, bounceLen, dir, attrs, startPad);
      if (err !== 0) return err;
      state.useSwiotlb = true;
      mapped += bounceLen;
      rest -= bounceLen;
      if (rest === 0) return 0;
    }
    rest -= endPad;
    let err = this.#linkRange(dev, addr + mapped, phys + mapped, rest, dir, attrs);
    if (err === 0) {
      mapped += rest;
      if (endPad !== 0) {
        err = this.#bounceAndLink(dev, addr + mapped, phys + mapped, endPad, dir, attrs, 0);
        if (err === 0) state.useSwiotlb = true;
      }
    }
    if (err !== 0) {
      // The kernel unlinks [0, mapped) here (dma_iova_unlink(dev, state, 0, mapped, ...)); the model
      // unlinks from this link's own offset, which is what the rollback means (kernel-core.md §12).
      if (mapped > 0) this.iovaUnlink(dev, state, offset, mapped, dir, attrs);
      return err;
    }
    return 0;
  }

  /**
   * Links a physically contiguous range into an IOVA allocation (bouncing partial granules for untrusted
   * devices). kernel: dma_iova_link() in drivers/iommu/dma-iommu.c.
   */
  iovaLink(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number): number {
    // The hot case, one 4 KiB page of a trusted device with a 4 KiB granule, no attrs: nothing in
    // #iovaLinkSlow can apply. Kept small so V8 inlines it (and the PTE store) into the caller.
    if (size === 4096 && attrs === 0 && (phys & 4095) === 0 && this.cookie.granule === 4096 && !dev.untrusted) {
      return this.domain.mapNosyncPage(state.addr + offset, phys, (dev.coherent ? PROT_NO_ATTRS_COHERENT : PROT_NO_ATTRS)[dir] ?? 0);
    }
    return this.#iovaLinkSlow(dev, state, phys, offset, size, dir, attrs);
  }

  #iovaLinkSlow(dev: Device, state: DmaIovaState, phys: number, offset: number, size: number, dir: DmaDataDirection, attrs: number): number {
    const g = this.cookie.granule;
    const startPad = offsetIn(phys, g);
    // The common case (trusted device, granule-aligned phys, no attrs): nothing below can apply.
    if (startPad === 0 && attrs === 0 && !devIsUntrusted(dev)) {
      const prot = dmaInfoToProt(dir, dev.coherent, 0);
      if (size === 4096 && g === 4096) return this.domain.mapNosyncPage(state.addr + offset, phys, prot);
      return this.domain.mapNosync(state.addr + offset, phys, size === g ? g : alignUp(size, g), prot);
    }
    if (startPad !== 0 && offset > 0) {
      this.#ctx.warn(dev, 'WARN_ON_ONCE: dma_iova_link of an unaligned phys at offset > 0');
      return -Errno.EIO;
    }
    if (state.useSwiotlb && (attrs & DMA_ATTR_REQUIRE_COHERENT) !== 0) return -Errno.EOPNOTSUPP;
    if (!dev.coherent && (attrs & DMA_ATTR_REQUIRE_COHERENT) !== 0) return -Errno.EOPNOTSUPP;
    if (devUseSwiotlb(dev, size, dir) && iovaUnaligned(g, phys, size)) {
      if ((attrs & (DMA_ATTR_MMIO | DMA_ATTR_REQUIRE_COHERENT)) !== 0) return -Errno.EPERM;
      return this.#linkSwiotlb(dev, state, phys, offset, size, dir, attrs);
    }
    return this.#linkRange(dev, state.addr + offset - startPad, phys - startPad, alignUp(size + startPad, g), dir, attrs);
  }

  /** Syncs the IOTLB for a linked range. kernel: dma_iova_sync() in drivers/iommu/dma-iommu.c. */
  iovaSync(_dev: Device, state: DmaIovaState, offset: number, size: number): number {
    const g = this.cookie.granule;
    const addr = state.addr + offset;
    const pad = offsetIn(addr, g);
    return this.domain.syncMap(addr - pad, pad === 0 && size === g ? g : alignUp(size + pad, g));
  }

  /** `iommu_dma_iova_unlink_range_slow`: release swiotlb bounce slots granule by granule. */
  #unlinkRangeSlow(dev: Device, addrIn: number, size: number, dir: DmaDataDirection, attrs: number): void {
    const g = this.cookie.granule;
    let addr = addrIn;
    let pad = offsetIn(addr, g);
    const end = addr + size;
    do {
      const phys = this.domain.iovaToPhys(addr);
      if (phys === 0) {
        this.#ctx.warn(dev, `WARN: dma_iova_unlink of unlinked IOVA 0x${addr.toString(16)}`);
        return;
      }
      const len = Math.min(end - addr, g - pad);
      if (isSwiotlbBuffer(dev, phys)) swiotlbTblUnmapSingle(dev, phys, len, dir, attrs);
      addr += len;
      pad = 0;
    } while (addr < end);
  }

  /** `__iommu_dma_iova_unlink`. */
  #iovaUnlink(dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs: number, freeIova: boolean): void {
    const g = this.cookie.granule;
    let addr = state.addr + offset;
    const pad = offsetIn(addr, g);
    if (state.useSwiotlb) this.#unlinkRangeSlow(dev, addr, size, dir, attrs);
    const gather = iommuIotlbGatherInit(this.#gather);
    // Unlink is always strict; destroy follows the domain (untrusted devices have strict domains).
    gather.queued = freeIova && this.cookie.fq !== null;
    const len = alignUp(size + pad, g);
    addr -= pad;
    const unmapped = this.domain.unmapFast(addr, len, gather);
    if (unmapped !== len) this.#ctx.warn(dev, `WARN: dma_iova_unlink unmapped ${unmapped} of ${len} bytes`);
    if (!gather.queued) this.domain.iotlbSync(gather);
    if (freeIova) {
      // The kernel frees align(mapped_len + pad) here; when mapped_len is shorter than the
      // allocation that hands the allocator a wrong size (kernel-core.md §2.2.5). dma-debug reports
      // the caller bug; the model frees what was allocated so the IOVA tree stays consistent.
      const allocLen = alignUp(state.size + offsetIn(state.addr, g), g);
      this.freeIova(alignDown(state.addr, g), allocLen, gather);
    }
  }

  /**
   * Unlinks a range, always strictly (IOTLB invalidated before return). kernel: dma_iova_unlink() in
   * drivers/iommu/dma-iommu.c.
   */
  iovaUnlink(dev: Device, state: DmaIovaState, offset: number, size: number, dir: DmaDataDirection, attrs: number): void {
    this.#iovaUnlink(dev, state, offset, size, dir, attrs, false);
  }

  /**
   * Unlinks [0, mappedLen) and frees the IOVA range (lazily in a flush-queue domain). kernel:
   * dma_iova_destroy() in drivers/iommu/dma-iommu.c.
   */
  iovaDestroy(dev: Device, state: DmaIovaState, mappedLen: number, dir: DmaDataDirection, attrs: number): void {
    if (mappedLen > 0) this.#iovaUnlink(dev, state, 0, mappedLen, dir, attrs, true);
    else this.iovaFree(dev, state);
  }

  /** `dma_iova_free`: never through the flush queue. */
  iovaFree(_dev: Device, state: DmaIovaState): void {
    const g = this.cookie.granule;
    const pad = offsetIn(state.addr, g);
    this.freeIova(state.addr - pad, alignUp(state.size + pad, g), null);
  }

  // ---- device side and limits ----

  translate(dev: Device, dmaAddr: number, write: boolean): number {
    return this.domain.translate(dev, dmaAddr, write);
  }

  getMergeBoundary(_dev: Device): number {
    return this.cookie.granule - 1;
  }

  /**
   * Largest single mapping: the swiotlb limit for untrusted devices, else unlimited. kernel:
   * iommu_dma_max_mapping_size() in drivers/iommu/dma-iommu.c.
   */
  maxMappingSize(dev: Device): number {
    return devIsUntrusted(dev) ? swiotlbMaxMappingSize(dev) : SIZE_MAX;
  }

  /** `iova_rcache_range()` = granule << (IOVA_RANGE_CACHE_MAX_SIZE - 1) = 128 KiB with 4 KiB pages. */
  optMappingSize(dev: Device): number {
    return Math.min(this.cookie.granule * 32, this.maxMappingSize(dev));
  }

  getRequiredMask(_dev: Device): number {
    return dmaBitMask(32);
  }

  detach(dev: Device): void {
    this.#ctx.onDetach(dev);
  }
}
