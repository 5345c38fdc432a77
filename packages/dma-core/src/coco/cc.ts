// kernel: include/linux/cc_platform.h (cc_platform_has), arch/x86/coco/core.c (cc_mkenc/cc_mkdec,
// cc_set_mask), arch/x86/coco/tdx/tdx.c (shared GPA bit = GPAW - 1, tdx_enc_status_changed),
// arch/x86/mm/pat/set_memory.c (set_memory_decrypted/encrypted), arch/x86/mm/mem_encrypt.c
// (force_dma_unencrypted)
/**
 * A confidential-computing guest (TDX or SEV): every RAM page is private (encrypted, reachable
 * only by the guest's CPUs and by an accepted TDI) until the guest converts it to shared with
 * `setMemoryDecrypted`, and back with `setMemoryEncrypted`.
 *
 * Decisions of the model (documented because the hardware differs per vendor):
 * - A device access to a page it may not reach is **refused** (IOMMU/DMA fault record, no byte
 *   moved), as TDX's Secure EPT and SEV-SNP's RMP checks block it. Devices never see ciphertext.
 * - A conversion does **not preserve contents**: each written page's bytes are replaced by a
 *   scramble ("ciphertext" seen through the other key, or the fresh page TDX hands back). A
 *   page the guest never wrote reads as zeros after conversion (sparse memory stays sparse).
 *   That is why dma_direct_alloc() memsets after set_memory_decrypted().
 * - The DMA address of a shared page carries the configured address bit on TDX (`cc_mkdec`
 *   sets the shared GPA bit); on SEV the C-bit marks private addresses (`cc_mkenc`, `__sme_set`),
 *   so shared addresses carry no bit. Linux TDX guests keep `sme_me_mask` 0, so their real DMA
 *   addresses have no bit; dmakit carries it so every dma_addr shows which world it belongs to.
 */
import type { Device } from '../device/device.js';
import type { SystemMemory } from '../mem/systemMemory.js';
import type { Trace } from '../trace/trace.js';
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';

declare module '../device/host.js' {
  interface DeviceHost {
    /** The confidential-computing state of a CC guest; absent or null on an ordinary machine. */
    readonly cc?: CcPlatform | null;
  }
}

declare module '../trace/events.js' {
  interface TraceEventMap {
    'coco:set_memory_decrypted': CocoConvertTraceFields;
    'coco:set_memory_encrypted': CocoConvertTraceFields;
    'coco:dma_refused': CocoDmaRefusedTraceFields;
  }
}

/** Fields of coco:set_memory_decrypted / coco:set_memory_encrypted (`ret` is 0 or a negative errno). */
export type CocoConvertTraceFields = { readonly addr: number; readonly numpages: number; readonly ret: number };
/** Fields of coco:dma_refused: a device access to memory its world may not reach. */
export type CocoDmaRefusedTraceFields = { readonly phys_addr: number; readonly size: number; readonly write: boolean; readonly private: boolean };

/** `enum cc_vendor` (arch/x86/include/asm/coco.h): Intel TDX or AMD SEV(-SNP). */
export type CcVendor = 'tdx' | 'sev';

/** Machine option `cc`: a confidential guest. */
export interface CcOptions {
  readonly type: CcVendor;
  /**
   * The address bit that marks the world of a DMA address (`cc_mask`): TDX's shared GPA bit
   * (GPAW - 1: 47 or 51) set on shared addresses; SEV's C-bit set on private addresses. Must lie
   * above the machine's physical address width and below 52. Default 51.
   */
  readonly sharedBit?: number;
}

/** Counters of a CC guest. */
export interface CcStats {
  /** Pages currently shared (decrypted). */
  readonly sharedPages: number;
  /** Successful set_memory_decrypted / set_memory_encrypted calls. */
  readonly decryptCalls: number;
  readonly encryptCalls: number;
  /** Calls that returned an errno (nothing converted). */
  readonly failedCalls: number;
  /** Device accesses refused because the page's world did not allow them. */
  readonly refusedAccesses: number;
  /** Device accesses to private memory let through (accepted TDIs in RUN). */
  readonly privateAccesses: number;
}

/** Thrown by createMachine for a bad `cc` option. */
export class CcOptionError extends RangeError {
  override readonly name = 'CcOptionError';
}

/**
 * The guest's view of its memory encryption: a shared/private bit per RAM page, the address bit,
 * and the set of devices the guest trusts with private memory (accepted TDIs in RUN, kept by the
 * TDISP model in bus/tdisp.ts).
 */
export class CcPlatform {
  readonly vendor: CcVendor;
  /** Bit number of `cc_mask`. */
  readonly bit: number;
  /** `cc_mask` as a number (2^bit). */
  readonly mask: number;
  readonly #memory: SystemMemory;
  readonly #trace: Trace;
  /** 1 per shared RAM page, indexed by pfn (`[0, ramTop)`). */
  readonly #shared: Uint8Array;
  readonly #trusted = new Set<Device>();
  #generation = 0;
  #sharedPages = 0;
  #decryptCalls = 0;
  #encryptCalls = 0;
  #failedCalls = 0;
  #refused = 0;
  #privateAccesses = 0;
  /** Callback that lists live streaming/coherent mappings overlapping a range (set by the machine: dma-debug). */
  liveMappingCheck: ((phys: number, len: number, enc: boolean) => void) | null = null;

  constructor(memory: SystemMemory, trace: Trace, optsIn: CcOptions | CcVendor, physBits: number) {
    const raw: unknown = optsIn;
    if (typeof raw !== 'string' && (typeof raw !== 'object' || raw === null)) {
      throw new CcOptionError(`createMachine: cc must be 'tdx', 'sev' or { type, sharedBit }, got ${typeof raw}`);
    }
    const opts: CcOptions = typeof optsIn === 'string' ? { type: optsIn } : optsIn;
    const type: unknown = opts.type;
    if (type !== 'tdx' && type !== 'sev') throw new CcOptionError(`createMachine: cc.type must be 'tdx' or 'sev', got ${String(type)}`);
    const bit: unknown = opts.sharedBit ?? 51;
    if (typeof bit !== 'number' || !Number.isInteger(bit) || bit < physBits || bit > 51) {
      throw new CcOptionError(`createMachine: cc.sharedBit must be an integer in [physBits=${physBits}, 51], got ${String(bit)}`);
    }
    this.vendor = type;
    this.bit = bit;
    this.mask = 2 ** bit;
    this.#memory = memory;
    this.#trace = trace;
    this.#shared = new Uint8Array(Math.ceil(memory.ramTop() / PAGE_SIZE));
  }

  /** `cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT)`: always true for a CC guest. */
  get guestMemEncrypt(): boolean {
    return true;
  }

  /** Counters. */
  get stats(): CcStats {
    return {
      sharedPages: this.#sharedPages,
      decryptCalls: this.#decryptCalls,
      encryptCalls: this.#encryptCalls,
      failedCalls: this.#failedCalls,
      refusedAccesses: this.#refused,
      privateAccesses: this.#privateAccesses,
    };
  }

  /** Is the RAM page holding `phys` shared (decrypted)? Non-RAM addresses are never private. */
  isShared(phys: number): boolean {
    const pfn = Math.floor(phys / PAGE_SIZE);
    return pfn >= this.#shared.length ? true : this.#shared[pfn] === 1;
  }

  /** `cc_mkdec(addr)`: the address in the shared world (TDX sets the shared bit; SEV clears the C-bit). */
  ccMkdec(addr: number): number {
    const base = this.stripBit(addr);
    return this.vendor === 'tdx' ? base + this.mask : base;
  }

  /** `cc_mkenc(addr)`: the address in the private world (TDX clears the shared bit; SEV sets the C-bit). */
  ccMkenc(addr: number): number {
    const base = this.stripBit(addr);
    return this.vendor === 'sev' ? base + this.mask : base;
  }

  /** The address without `cc_mask`. */
  stripBit(addr: number): number {
    return addr >= this.mask && addr < this.mask * 2 ? addr - this.mask : addr;
  }

  /** Does `addr` name the private world (TDX: shared bit clear; SEV: C-bit set)? */
  isPrivateAddr(addr: number): boolean {
    const hi = addr >= this.mask && addr < this.mask * 2;
    return this.vendor === 'tdx' ? !hi : hi;
  }

  /**
   * `force_dma_unencrypted(dev)` (arch/x86/mm/mem_encrypt.c): true in a CC guest, so dma-direct
   * bounces streaming DMA through the shared swiotlb pool and decrypts coherent buffers. False for
   * an accepted TDI in RUN: the TDISP guest series (proposed, not merged in the ~7.0 sources read)
   * lets such a device reach private memory without bouncing.
   */
  forceDmaUnencrypted(dev: Device): boolean {
    return !this.#trusted.has(dev);
  }

  /** Is `dev` an accepted TDI in RUN (its DMA may reach private memory)? */
  isTrusted(dev: Device): boolean {
    return this.#trusted.has(dev);
  }

  /** Called by the TDISP model on accept (true) and on every exit from RUN or un-accept (false). */
  setTrusted(dev: Device, trusted: boolean): void {
    if (trusted) this.#trusted.add(dev);
    else this.#trusted.delete(dev);
  }

  /**
   * Device-side check of one access that stays inside one page (called by the device port after
   * translation). `phys` may carry `cc_mask` (dma-direct addresses). Returns the physical address
   * without the bit, or -2 (DmaFaultReason.PERMISSION) when the platform blocks the access:
   * - a shared-world access (dma-direct address in the shared world) to a private page;
   * - a private access (private-world address, or any IOMMU-translated access to a private page)
   *   from a device that is not an accepted TDI in RUN;
   * - a private-world access to a shared page (the TDI's T=1 request to a shared GPA).
   */
  deviceAccess(dev: Device, phys: number, len: number, write: boolean): number {
    const privAddr = this.isPrivateAddr(phys);
    const p = this.stripBit(phys);
    const pfn = Math.floor(p / PAGE_SIZE);
    if (pfn >= this.#shared.length) return p; // not RAM: BARs and MMIO have no private/shared state here
    const shared = this.#shared[pfn] === 1;
    let ok: boolean;
    let priv: boolean;
    if (dev.dmaOps !== null) {
      // IOMMU-translated: the IOMMU maps guest physical addresses without the bit; the page decides.
      priv = !shared;
      ok = shared || this.#trusted.has(dev);
    } else {
      priv = privAddr;
      ok = privAddr ? !shared && this.#trusted.has(dev) : shared;
    }
    if (!ok) {
      this.#refused++;
      if (this.#trace.enabled) this.#trace.emit('coco:dma_refused', dev.name, { phys_addr: p, size: len, write, private: priv });
      return -2;
    }
    if (priv) this.#privateAccesses++;
    return p;
  }

  /** set_memory_decrypted / set_memory_encrypted on `[phys, +numPages)`; returns 0 or a negative errno. */
  convert(phys: number, numPages: number, enc: boolean): number {
    const ret = this.#convert(phys, numPages, enc);
    if (ret === 0) {
      if (enc) this.#encryptCalls++;
      else this.#decryptCalls++;
    } else {
      this.#failedCalls++;
    }
    if (this.#trace.enabled) {
      this.#trace.emit(enc ? 'coco:set_memory_encrypted' : 'coco:set_memory_decrypted', '', { addr: phys, numpages: numPages, ret });
    }
    return ret;
  }

  #convert(phys: number, numPages: number, enc: boolean): number {
    // x86 WARNs "misaligned address" and rounds down; the model refuses so no caller converts a
    // page it did not name (arm64's realm code returns -EINVAL for the same input).
    if (!Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) return -Errno.EINVAL;
    if (!Number.isSafeInteger(numPages) || numPages <= 0) return -Errno.EINVAL;
    const len = numPages * PAGE_SIZE;
    const first = Math.floor(phys / PAGE_SIZE);
    // __cpa_process_fault: an address with no direct-map entry (not RAM) is -EFAULT.
    if (first + numPages > this.#shared.length || !this.#memory.isRam(phys, len)) return -Errno.EFAULT;
    // tdx_enc_status_changed / SNP page-state change refuse a page already in the target state:
    // __set_memory_enc_pgtable then WARNs "CPA VMM failure to convert memory" and returns -EIO.
    // Checked for the whole range first, so a refused call converts nothing.
    const want = enc ? 0 : 1;
    for (let i = 0; i < numPages; i++) if (this.#shared[first + i] === want) return -Errno.EIO;
    this.liveMappingCheck?.(phys, len, enc);
    this.#generation++;
    for (let i = 0; i < numPages; i++) {
      this.#shared[first + i] = want;
      this.#scramble(first + i);
    }
    this.#sharedPages += enc ? -numPages : numPages;
    return 0;
  }

  /** Marks a range shared without the checks (boot-time: swiotlb_update_mem_attributes on the pool). */
  bootDecrypt(phys: number, len: number): void {
    const first = Math.floor(phys / PAGE_SIZE);
    const n = Math.ceil(len / PAGE_SIZE);
    for (let i = 0; i < n && first + i < this.#shared.length; i++) {
      if (this.#shared[first + i] === 0) {
        this.#shared[first + i] = 1;
        this.#sharedPages++;
      }
    }
  }

  /** Replace a written page's bytes by a deterministic scramble (the other key's view). */
  #scramble(pfn: number): void {
    const page = this.#memory.peekPage(pfn);
    if (page === undefined) return;
    let x = (Math.imul(pfn, 0x9e3779b1) ^ Math.imul(this.#generation, 0x85ebca6b)) | 1;
    for (let i = 0; i < page.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      page[i] = (page[i] ?? 0) ^ (x & 0xff) ^ 0xa5;
    }
  }
}
