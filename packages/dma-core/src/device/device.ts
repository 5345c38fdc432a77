// kernel: include/linux/device.h, include/linux/dma-mapping.h (dma_parms), drivers/pci/probe.c
import { dmaBitMask } from '../units/dmaAddr.js';
import { PAGE_SIZE, SZ_64K } from '../units/page.js';
import type { DeviceHost } from './host.js';
import { DmaFaultError, DmaFaultReason } from './dmaFault.js';
import type { DmaAccessKind, DmaFaultRecord } from './dmaFault.js';

declare module './host.js' {
  interface DeviceHost {
    /**
     * PCIe peer routing: if `dmaAddr` from `dev` is the bus address of a peer BAR reachable without
     * the root complex (BUS_ADDR), the physical address behind it; otherwise -1.
     */
    p2pRoute(dev: Device, dmaAddr: number): number;
  }
}

// Module-local copies for the device port's hot path: V8 folds a module's own constants, but
// re-reads and TDZ-checks an imported binding at every use.
const PAGE = PAGE_SIZE;
const PAGE_MASK = PAGE_SIZE - 1;
const OUT_OF_RANGE: number = DmaFaultReason.OUT_OF_RANGE;

/**
 * What an IOMMU implementation provides to the DMA API (`struct dma_map_ops`, the `dma_iommu`
 * backend). dma-core's free functions validate, trace and feed dma-debug, then dispatch here when
 * a device has ops attached; with no ops they use dma-direct. Return conventions are the kernel's.
 *
 * Like include/linux/device.h, which only forward-declares the ops a device points to, this file
 * declares the part the device-side DMA port calls (`name`, `translate`); contracts/dmaMapOps.ts
 * declares the DMA API's part (declaration merging), so device/ does not import the contracts or
 * the DMA layer.
 */
export interface DmaMapOps {
  readonly name: string;
  /**
   * Device-side translation of one access that stays inside one granule: the physical address,
   * or a negative `DmaFaultReason`. The implementation records its own fault (stats, trace).
   */
  translate(dev: Device, dmaAddr: number, write: boolean): number;
}

/** `struct device_dma_parameters`. */
export interface DmaParms {
  maxSegmentSize: number;
  segmentBoundaryMask: number;
  minAlignMask: number;
}

/** Options of a simulated device: name, DMA masks, coherence, untrusted, DMA parameters and bus limit. */
export interface DeviceOptions {
  name: string;
  /** Streaming DMA mask width in bits. Default 32, as the PCI core sets before a driver raises it. */
  dmaMaskBits?: number;
  /** Coherent DMA mask width in bits. Default: same as dmaMaskBits. */
  coherentMaskBits?: number;
  /** Cache-coherent with the CPU (no cache maintenance needed). Default true (x86-like). */
  coherent?: boolean;
  /** External-facing (Thunderbolt) device: the IOMMU gives it strict domains and bounces partial granules. */
  untrusted?: boolean;
  maxSegmentSize?: number;
  segmentBoundaryMask?: number;
  minAlignMask?: number;
  /** Bus/interconnect addressing limit in bits (`bus_dma_limit`), 0 for none. */
  busDmaLimitBits?: number;
  /** dma-direct offset: dma address = phys + dmaRangeOffset (`dma_range_map`). Default 0. */
  dmaRangeOffset?: number;
  /** Force every dma-direct mapping through swiotlb (CoCo guests, `swiotlb=force`). */
  forceSwiotlb?: boolean;
  /** Device has no `dma_parms` (the setters then WARN and do nothing). */
  noDmaParms?: boolean;
}

/**
 * A device that does DMA. Holds the kernel's per-device DMA state (masks, dma_parms, coherence,
 * untrusted, the DMA ops in use) and the device-side DMA port through which the simulated
 * hardware reads and writes memory: `dmaRead` / `dmaWrite` translate every access (dma-direct
 * offset or the attached IOMMU), check permissions, then copy bytes. A refused access moves no
 * byte and throws `DmaFaultError`.
 */
export class Device {
  readonly name: string;
  readonly host: DeviceHost;
  #dmaMaskBits = 32;
  /** `*dev->dma_mask` as a value, kept with the width (read on every map and device access). */
  #dmaMask = dmaBitMask(32);
  coherentDmaMaskBits: number;
  /** `dev->bus_dma_limit` (bytes, inclusive), 0 for none. */
  busDmaLimit: number;
  coherent: boolean;
  untrusted: boolean;
  dmaParms: DmaParms | null;
  dmaRangeOffset: number;
  forceSwiotlb: boolean;
  /** `dev->dma_skip_sync`: recomputed at dma_set_mask, cleared on the first swiotlb bounce. */
  dmaSkipSync: boolean;
  /** The IOMMU DMA ops in use (`dev->dma_iommu`), or null for dma-direct. */
  dmaOps: DmaMapOps | null = null;
  /** Free-form slot for the bus layer (PCI function position). */
  bus: unknown = null;
  /** False after `unbindDevice`. */
  driverBound = true;
  /** Counters for the device port. */
  readonly portStats = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, faults: 0 };

  // Scratch for translate-then-copy (no allocation per access once grown).
  #scratchPhys = new Float64Array(64);

  constructor(host: DeviceHost, opts: DeviceOptions) {
    this.name = opts.name;
    this.host = host;
    this.dmaMaskBits = opts.dmaMaskBits ?? 32;
    this.coherentDmaMaskBits = opts.coherentMaskBits ?? this.dmaMaskBits;
    this.busDmaLimit = opts.busDmaLimitBits ? dmaBitMask(opts.busDmaLimitBits) : 0;
    this.coherent = opts.coherent ?? true;
    this.untrusted = opts.untrusted ?? false;
    this.dmaRangeOffset = opts.dmaRangeOffset ?? 0;
    this.forceSwiotlb = opts.forceSwiotlb ?? false;
    this.dmaParms = opts.noDmaParms
      ? null
      : {
          maxSegmentSize: opts.maxSegmentSize ?? SZ_64K,
          segmentBoundaryMask: opts.segmentBoundaryMask ?? Number.MAX_SAFE_INTEGER,
          minAlignMask: opts.minAlignMask ?? 0,
        };
    this.dmaSkipSync = this.coherent;
  }

  /** `*dev->dma_mask` as a bit width (0 = no mask: map calls fail as in the kernel). */
  get dmaMaskBits(): number {
    return this.#dmaMaskBits;
  }

  /**
   * Set the width (dma_set_mask checks it first); the mask value is kept with it, so reading
   * `dmaMask` on every map and device access is one load. A width outside 0..64 throws a
   * RangeError and changes nothing.
   */
  set dmaMaskBits(bits: number) {
    this.#dmaMask = dmaBitMask(bits);
    this.#dmaMaskBits = bits;
  }

  /** `*dev->dma_mask` as an address (0 if unset). */
  get dmaMask(): number {
    return this.#dmaMask;
  }

  /** Coherent DMA mask as a value. kernel: dev->coherent_dma_mask. */
  get coherentDmaMask(): number {
    return dmaBitMask(this.coherentDmaMaskBits);
  }

  /** `use_dma_iommu(dev)`. */
  get dmaIommu(): boolean {
    return this.dmaOps !== null;
  }

  /** The device name. */
  toString(): string {
    return this.name;
  }

  /** Device reads `len` bytes of memory at `dmaAddr` (the device is the DMA master). */
  dmaRead(dmaAddr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.dmaReadInto(dmaAddr, out);
    return out;
  }

  /** Device reads into `out` (no allocation). */
  dmaReadInto(dmaAddr: number, out: Uint8Array, outOffset = 0, len = out.length - outOffset): void {
    if (len > 0 && Number.isSafeInteger(dmaAddr) && dmaAddr >= 0 && Number.isSafeInteger(len) && (dmaAddr & PAGE_MASK) + len <= PAGE) {
      // One page: the same translate and checks as below, without the chunk loop.
      this.host.memory.readInto(this.#translateChunk(dmaAddr, len, 'read', false), out, outOffset, len);
      const st = this.portStats;
      st.reads++;
      st.bytesRead += len;
      return;
    }
    this.#readChunks(dmaAddr, out, outOffset, len);
  }

  /** A read that crosses pages (or a malformed one): translate every chunk first, then copy. */
  #readChunks(dmaAddr: number, out: Uint8Array, outOffset: number, len: number): void {
    const n = this.#translateAll(dmaAddr, len, 'read');
    const mem = this.host.memory;
    let done = 0;
    for (let i = 0; i < n; i++) {
      const addr = dmaAddr + done;
      const chunk = Math.min(PAGE_SIZE - (addr % PAGE_SIZE), len - done);
      mem.readInto(this.#scratchPhys[i] ?? 0, out, outOffset + done, chunk);
      done += chunk;
    }
    this.portStats.reads++;
    this.portStats.bytesRead += len;
  }

  /** Device writes `bytes` to memory at `dmaAddr`. */
  dmaWrite(dmaAddr: number, bytes: Uint8Array, srcOffset = 0, len = bytes.length - srcOffset): void {
    if (len > 0 && Number.isSafeInteger(dmaAddr) && dmaAddr >= 0 && Number.isSafeInteger(len) && (dmaAddr & PAGE_MASK) + len <= PAGE) {
      this.host.memory.write(this.#translateChunk(dmaAddr, len, 'write', true), bytes, srcOffset, len);
      const st = this.portStats;
      st.writes++;
      st.bytesWritten += len;
      return;
    }
    this.#writeChunks(dmaAddr, bytes, srcOffset, len);
  }

  /** A write that crosses pages (or a malformed one): translate every chunk first, then copy. */
  #writeChunks(dmaAddr: number, bytes: Uint8Array, srcOffset: number, len: number): void {
    const n = this.#translateAll(dmaAddr, len, 'write');
    const mem = this.host.memory;
    let done = 0;
    for (let i = 0; i < n; i++) {
      const addr = dmaAddr + done;
      const chunk = Math.min(PAGE_SIZE - (addr % PAGE_SIZE), len - done);
      mem.write(this.#scratchPhys[i] ?? 0, bytes, srcOffset + done, chunk);
      done += chunk;
    }
    this.portStats.writes++;
    this.portStats.bytesWritten += len;
  }

  /** Translate every page-sized chunk first, so a refused access moves no byte. */
  #translateAll(dmaAddr: number, len: number, access: DmaAccessKind): number {
    if (!Number.isSafeInteger(dmaAddr) || dmaAddr < 0 || !Number.isSafeInteger(len) || len <= 0) {
      this.#fault(dmaAddr, len, access, DmaFaultReason.OUT_OF_RANGE, 'bad address or length');
    }
    const chunks = Math.ceil(((dmaAddr % PAGE_SIZE) + len) / PAGE_SIZE);
    if (chunks > this.#scratchPhys.length) this.#scratchPhys = new Float64Array(Math.max(chunks, this.#scratchPhys.length * 2));
    const write = access === 'write';
    let done = 0;
    for (let i = 0; i < chunks; i++) {
      const addr = dmaAddr + done;
      const chunk = Math.min(PAGE_SIZE - (addr % PAGE_SIZE), len - done);
      this.#scratchPhys[i] = this.#translateChunk(addr, chunk, access, write);
      done += chunk;
    }
    return chunks;
  }

  /**
   * Physical address of a chunk that stays within one page: P2P route, else IOMMU or dma-direct;
   * then the CC, TDISP and memory-region gates. Faults if refused. Hot path: translated, no CC
   * guest, no TDI gate, memory behind it; anything else goes through #gates, which applies the
   * same rules in the same order and reports.
   */
  #translateChunk(addr: number, chunk: number, access: DmaAccessKind, write: boolean): number {
    const host = this.host;
    let phys = host.p2pRoute(this, addr);
    if (phys < 0) {
      const ops = this.dmaOps;
      phys = ops !== null ? ops.translate(this, addr, write) : addr > this.dmaMask ? OUT_OF_RANGE : addr - this.dmaRangeOffset;
    }
    if (phys >= 0 && host.cc == null && host.tdispMmio == null && host.physAccessible(phys, chunk)) return phys;
    return this.#gates(addr, chunk, access, write, phys);
  }

  /** The checks after translation, each with its fault (the slow path of #translateChunk). */
  #gates(addr: number, chunk: number, access: DmaAccessKind, write: boolean, phys: number): number {
    const host = this.host;
    if (phys < 0) this.#fault(addr, chunk, access, phys as DmaFaultReason, 'translation refused');
    const cc = host.cc; // confidential guest (coco/cc.ts)
    if (cc != null && (phys = cc.deviceAccess(this, phys, chunk, write)) < 0) {
      this.#fault(addr, chunk, access, DmaFaultReason.PERMISSION, 'CC guest: memory of the other world (private memory needs an accepted TDI in RUN)');
    }
    const gate = host.tdispMmio; // TDIs' private MMIO (bus/tdisp.ts)
    if (gate != null && gate.deviceAccess(this, phys, chunk, write) < 0) {
      this.#fault(addr, chunk, access, DmaFaultReason.PERMISSION, 'TDISP: private MMIO of a TDI reached outside RUN/acceptance, or by a T=0 request once locked');
    }
    if (!host.physAccessible(phys, chunk)) {
      this.#fault(addr, chunk, access, DmaFaultReason.OUT_OF_RANGE, `no memory at phys 0x${phys.toString(16)}`);
    }
    return phys;
  }

  #fault(dmaAddr: number, len: number, access: DmaAccessKind, reason: DmaFaultReason, detail: string): never {
    const record: DmaFaultRecord = {
      device: this.name,
      dmaAddr,
      len,
      access,
      reason,
      reasonName: reasonName(reason),
      backend: this.dmaOps?.name ?? 'direct',
      time: this.host.clock.now(),
      detail,
    };
    this.portStats.faults++;
    this.host.recordFault(record);
    throw new DmaFaultError(record);
  }
}

function reasonName(r: DmaFaultReason): DmaFaultRecord['reasonName'] {
  switch (r) {
    case DmaFaultReason.NOT_PRESENT:
      return 'not-present';
    case DmaFaultReason.PERMISSION:
      return 'permission';
    case DmaFaultReason.OUT_OF_RANGE:
      return 'out-of-range';
  }
}
