// kernel: drivers/vfio/pci/vfio_pci_dmabuf.c (~6.19), drivers/vfio/pci/vfio_pci_core.c
// (memory decode, reset), include/uapi/linux/vfio.h (VFIO_DEVICE_FEATURE_DMA_BUF)
// A VFIO-owned PCI function exports page-aligned ranges of one of its BARs. Importers must accept
// P2P addresses. Turning memory decode off, resetting or closing the device revokes every buffer:
// move_notify, then maps fail with -ENODEV until decode is back (close revokes for good).
// Private MMIO (a BAR of a TDI, bus/tdisp.ts in dma-core): exported only while the TDI is in RUN
// and accepted, and revoked the same way the moment it leaves (the role the TSM plays for
// vfio-pci's dma-bufs in the proposed private-MMIO series; not in the ~6.19 sources read).
import {
  Errno,
  PAGE_SIZE,
  isAligned,
  pciP2pdmaAddResource,
  pcimP2pdmaInit,
  pcimP2pdmaProvider,
  tdispBarIsPrivate,
  tdispNotifierRegister,
  tdispPrivateMmioAllowed,
  toPciDev,
} from '@dmakit/dma-core';
import type { Device, DmaBuf, Machine, P2pdmaProvider, PciDev, PhysVec } from '@dmakit/dma-core';
import { dmaBufExport, dmaBufMoveNotify, toDmaBufObject } from './dmaBuf.js';
import type { DmaBufObject, DmaBufOps } from './dmaBuf.js';
import { dmaBufFreeSgt, dmaBufPhysVecToSgt } from './physVec.js';
import { dmaResvLock, dmaResvUnlock } from './resv.js';

/** `VFIO_PCI_ROM_REGION_INDEX`: region indices below it are the six BARs. */
export const VFIO_PCI_ROM_REGION_INDEX = 6;

/** `struct vfio_region_dma_range`. */
export interface VfioRegionDmaRange {
  offset: number;
  length: number;
}

/** `struct vfio_device_feature_dma_buf`. */
export interface VfioDeviceFeatureDmaBuf {
  regionIndex: number;
  openFlags?: number;
  flags?: number;
  dmaRanges: readonly VfioRegionDmaRange[];
}

/** `struct vfio_pci_dma_buf`. */
interface VfioPciDmaBuf {
  readonly provider: P2pdmaProvider;
  readonly physVec: PhysVec[];
  readonly size: number;
  /** The BAR is a TDI's private (TEE) MMIO: usable only while the TDI is in RUN and accepted. */
  readonly private: boolean;
  revoked: boolean;
  /** null after cleanup (device closed). */
  vdev: VfioPciCoreDevice | null;
  dmabuf: DmaBufObject | null;
}

/** `struct vfio_pci_core_device` with what the dma-buf exporter needs. */
export class VfioPciCoreDevice {
  readonly machine: Machine;
  readonly dev: Device;
  readonly pdev: PciDev;
  /** `__vfio_pci_memory_enabled`: PCI_COMMAND_MEMORY. */
  memoryEnabled = true;
  /** The device file is open (registration alive). */
  open = true;
  readonly #dmabufs: VfioPciDmaBuf[] = [];
  revokes = 0;
  /** Revocations caused by the TDI leaving RUN (a subset of `revokes`). */
  tdispRevokes = 0;
  readonly #unnotify: () => void;

  /** Throws `RangeError` when `dev` is not a PCI function (the model's probe failure). */
  constructor(machine: Machine, dev: Device) {
    const pdev = toPciDev(dev);
    if (pdev === null) throw new RangeError(`vfio-pci: ${dev.name} is not a PCI function`);
    this.machine = machine;
    this.dev = dev;
    this.pdev = pdev;
    // kernel: vfio_pci_core_enable → pcim_p2pdma_init (per-BAR providers, no struct pages).
    pcimP2pdmaInit(pdev);
    // Every TDISP change re-evaluates the buffers over private MMIO (revoke or restore).
    this.#unnotify = tdispNotifierRegister(dev, () => {
      this.#move(!this.memoryEnabled, true);
    });
  }

  /** Buffers currently exported from this device. */
  get dmabufCount(): number {
    return this.#dmabufs.length;
  }

  /**
   * `vfio_pci_core_feature_dma_buf` (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF): a new
   * buffer over the ranges, or -EINVAL (no ranges, flags, unaligned/empty/outside the BAR),
   * -ENODEV (not a BAR, device closed), -EOVERFLOW (ranges overflow), -EPERM (the BAR is a TDI's
   * private MMIO and the TDI is not in RUN or not accepted: no importer may reach it yet).
   */
  featureDmaBuf(req: VfioDeviceFeatureDmaBuf): DmaBufObject | number {
    if (!this.open) return -Errno.ENODEV;
    const ranges = req.dmaRanges as readonly VfioRegionDmaRange[] | undefined;
    if (ranges === undefined || ranges.length === 0 || (req.flags ?? 0) !== 0) return -Errno.EINVAL;
    if (!Number.isInteger(req.regionIndex) || req.regionIndex < 0 || req.regionIndex >= VFIO_PCI_ROM_REGION_INDEX) return -Errno.ENODEV;
    const bar = this.pdev.bar(req.regionIndex);
    if (bar === undefined) return -Errno.ENODEV;
    // validate_dmabuf_input: page aligned, non-zero, summed length must not overflow.
    let total = 0;
    for (const r of ranges) {
      if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length)) return -Errno.EOVERFLOW;
      if (r.offset < 0 || r.length <= 0 || !isAligned(r.offset, PAGE_SIZE) || !isAligned(r.length, PAGE_SIZE)) return -Errno.EINVAL;
      total += r.length;
      if (!Number.isSafeInteger(total)) return -Errno.EOVERFLOW;
    }
    // vfio_pci_dma_buf_get_phys / get_dmabuf_phys: paddr = BAR start + offset, inside the BAR.
    const physVec: PhysVec[] = [];
    for (const r of ranges) {
      const end = r.offset + r.length;
      if (!Number.isSafeInteger(end) || !Number.isSafeInteger(bar.start + end)) return -Errno.EOVERFLOW;
      if (end > bar.size) return -Errno.EINVAL;
      physVec.push({ paddr: bar.start + r.offset, len: r.length });
    }
    // Private MMIO is refused before anything is published or exported.
    const isPrivate = tdispBarIsPrivate(this.dev, bar.index);
    if (isPrivate && !tdispPrivateMmioAllowed(this.dev)) return -Errno.EPERM;
    // Model: peers reach the BAR through the switch only if its bus addresses are routed; publish
    // the BAR once (the kernel routes every BAR by address decode).
    if (bar.region.kind !== 'p2p-bar') {
      const rc = pciP2pdmaAddResource(this.pdev, bar.index, 0, 0);
      if (rc !== 0) return rc;
    }
    const provider = pcimP2pdmaProvider(this.pdev, bar.index);
    if (provider === null) return -Errno.EINVAL;
    const priv: VfioPciDmaBuf = { provider, physVec, size: total, private: isPrivate, revoked: !this.memoryEnabled, vdev: this, dmabuf: null };
    const dmabuf = dmaBufExport({ exporter: this.dev, expName: 'vfio_pci', ops: vfioOps(priv), size: total, flags: req.openFlags ?? 0, priv });
    if (typeof dmabuf === 'number') return dmabuf;
    priv.dmabuf = dmabuf;
    this.#dmabufs.push(priv);
    return dmabuf;
  }

  /** Is this buffer revoked now? */
  isRevoked(dmabuf: DmaBuf): boolean {
    const buf = toDmaBufObject(dmabuf);
    return buf === null || (buf.priv as VfioPciDmaBuf | null)?.revoked !== false;
  }

  /** Write PCI_COMMAND's memory-decode bit: off revokes every buffer, on restores them. */
  setMemoryDecode(enabled: boolean): void {
    if (!this.open) return;
    this.memoryEnabled = enabled;
    this.#move(!enabled);
  }

  /** `vfio_pci_core_reset` (FLR): revoke, reset, restore if decode is still on. */
  reset(): void {
    if (!this.open) return;
    this.#move(true);
    if (this.memoryEnabled) this.#move(false);
  }

  /** Is this buffer over a TDI's private MMIO? */
  isPrivate(dmabuf: DmaBuf): boolean {
    const buf = toDmaBufObject(dmabuf);
    return (buf?.priv as VfioPciDmaBuf | null)?.private === true;
  }

  /** `vfio_pci_core_close_device` → `vfio_pci_dma_buf_cleanup`: revoke for good. */
  close(): void {
    if (!this.open) return;
    this.#unnotify();
    this.#move(true);
    for (const p of this.#dmabufs) p.vdev = null;
    this.#dmabufs.length = 0;
    this.open = false;
  }

  /**
   * `vfio_pci_dma_buf_move(vdev, revoked)`: flip under the resv, then move_notify. A buffer over
   * private MMIO also stays revoked while its TDI is not in RUN and accepted.
   */
  #move(revoked: boolean, tdisp = false): void {
    const privateOk = tdispPrivateMmioAllowed(this.dev);
    for (const p of [...this.#dmabufs]) {
      const buf = p.dmabuf;
      const want = revoked || (p.private && !privateOk);
      if (buf === null || buf.released || p.revoked === want) continue;
      if (dmaResvLock(buf.resv, 'vfio-pci') !== 0) continue;
      try {
        p.revoked = want;
        if (want) {
          this.revokes++;
          if (tdisp) this.tdispRevokes++;
        }
        dmaBufMoveNotify(buf);
      } finally {
        dmaResvUnlock(buf.resv);
      }
    }
  }

  /** Unlink a released buffer (`vfio_pci_dma_buf_release`). */
  unlink(p: object): void {
    const i = this.#dmabufs.findIndex((x) => x === p);
    if (i >= 0) this.#dmabufs.splice(i, 1);
  }
}

function vfioOps(priv: VfioPciDmaBuf): DmaBufOps {
  return {
    attach(_dmabuf, attach) {
      if (!attach.peer2peer) return -Errno.EOPNOTSUPP;
      if (priv.revoked) return -Errno.ENODEV;
      return 0;
    },
    mapDmaBuf(attach, dir) {
      if (priv.revoked) return -Errno.ENODEV;
      return dmaBufPhysVecToSgt(attach, priv.provider, priv.physVec, priv.physVec.length, priv.size, dir);
    },
    unmapDmaBuf(attach, sgt, dir) {
      dmaBufFreeSgt(attach, sgt, dir);
    },
    release() {
      priv.vdev?.unlink(priv);
      priv.vdev = null;
    },
  };
}
