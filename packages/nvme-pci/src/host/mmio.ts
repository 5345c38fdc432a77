// The driver's mapping of BAR0 (`dev->bar = ioremap(...)` in nvme_dev_map) and its register
// accessors (readl / writel / lo_hi_readq / lo_hi_writeq), checked against the TDISP private-MMIO
// gate of the machine when the function is a TDI.
// kernel: drivers/nvme/host/pci.c [6.17] (nvme_dev_map, nvme_remap_bar, nvme_write_sq_db,
// nvme_ring_cq_doorbell), include/linux/io-64-nonatomic-lo-hi.h (lo_hi_readq, lo_hi_writeq);
// the private/shared mapping of TEE MMIO: include/linux/pci-tsm.h, PCIe r6.1 sec 11.2.
import { toPciDev } from '@dmakit/dma-core';
import type { Device, DeviceHost, TdispMmioWorld } from '@dmakit/dma-core';

/** The controller's register file as the driver reaches it (BAR0 ioremapped) plus its MSI-X vectors. */
export interface NvmeBar {
  /** Reads a 32-bit register at BAR0 offset off (kernel: readl()). */
  mmioRead32(off: number): number;
  /** Writes a 32-bit register or doorbell at BAR0 offset off (kernel: writel()). */
  mmioWrite32(off: number, value: number): void;
  /** Reads a 64-bit register at BAR0 offset off (kernel: lo_hi_readq()). */
  mmioRead64(off: number): number;
  /** Writes a 64-bit register at BAR0 offset off (kernel: lo_hi_writeq()). */
  mmioWrite64(off: number, value: number): void;
  /** Register the driver's interrupt handler (`pci_request_irq`); returns the unregister function. */
  onInterrupt(fn: (vector: number) => void): () => void;
}

/** What a refused read returns: the root complex completes an Unsupported Request with all ones. */
export const NVME_MMIO_ALL_ONES = 0xffff_ffff;

/**
 * BAR0 as the driver mapped it: the register file plus the CPU physical address of the BAR and
 * the world of the mapping ('shared': an ordinary (decrypted) ioremap, the T=0 requests of a guest
 * that has not accepted the TDI; 'private': the guest's mapping of accepted TEE MMIO, T=1).
 *
 * Every access asks the machine's TDISP gate first, but only when one exists
 * (`host.tdispMmio`, set by the first TDI with private BARs): without a TDI an access costs one
 * branch and behaves exactly as a direct call. A refused read returns all ones, a refused write is
 * dropped; the gate records the fault and traces `tdisp:mmio_refused`.
 */
export class NvmeBarMapping {
  readonly bar: NvmeBar;
  readonly host: DeviceHost;
  /** CPU physical address of BAR0, or -1 when the device has no PCI BAR0 (nothing to check). */
  readonly phys: number;
  world: TdispMmioWorld;
  /** Register accesses the gate refused through this mapping. */
  refused = 0;

  constructor(bar: NvmeBar, device: Device, world: TdispMmioWorld) {
    this.bar = bar;
    this.host = device.host;
    this.phys = toPciDev(device)?.bar(0)?.start ?? -1;
    this.world = world;
  }

  /** 0 when the access may go to the device; -EIO (counted) when the TDI refused it. */
  #check(off: number, write: boolean): number {
    const gate = this.host.tdispMmio;
    if (gate == null || this.phys < 0) return 0;
    const rc = gate.check(null, this.phys + off, 4, write, this.world);
    if (rc !== 0) this.refused++;
    return rc;
  }

  /** `readl(dev->bar + off)`. */
  readl(off: number): number {
    if (this.host.tdispMmio != null && this.#check(off, false) !== 0) return NVME_MMIO_ALL_ONES;
    return this.bar.mmioRead32(off);
  }

  /** `writel(v, dev->bar + off)`: a refused posted write is dropped. */
  writel(off: number, value: number): void {
    if (this.host.tdispMmio != null && this.#check(off, true) !== 0) return;
    this.bar.mmioWrite32(off, value);
  }

  /**
   * `lo_hi_readq`: two 32-bit reads, low dword first. Without a TDI it is the register file's own
   * 64-bit read (unchanged behaviour); a refused half reads all ones.
   */
  readq(off: number): number {
    if (this.host.tdispMmio == null) return this.bar.mmioRead64(off);
    const lo = this.readl(off);
    const hi = this.readl(off + 4);
    return hi * 0x1_0000_0000 + lo;
  }

  /** `lo_hi_writeq`: two 32-bit writes, low dword first; each is checked on its own. */
  writeq(off: number, value: number): void {
    if (this.host.tdispMmio == null || !Number.isSafeInteger(value) || value < 0) {
      this.bar.mmioWrite64(off, value);
      return;
    }
    this.writel(off, value % 0x1_0000_0000);
    this.writel(off + 4, Math.floor(value / 0x1_0000_0000));
  }
}
