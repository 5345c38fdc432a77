// kernel: arch/x86/mm/pat/set_memory.c (set_memory_decrypted, set_memory_encrypted,
// __set_memory_enc_dec), include/linux/cc_platform.h (cc_platform_has), arch/x86/mm/mem_encrypt.c
import type { Device } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';

/**
 * `set_memory_decrypted(addr, numpages)`: convert `numPages` private pages from `phys` (page
 * aligned, RAM) to shared. Returns 0, or -EINVAL (unaligned or bad count), -EFAULT (not RAM),
 * -EIO (a page is already shared: the VMM refuses, nothing converted). On a machine that is not a
 * CC guest it does nothing and returns 0, as `__set_memory_enc_dec` does without
 * CC_ATTR_MEM_ENCRYPT. The contents of converted pages are not preserved (see coco/cc.ts).
 */
export function setMemoryDecrypted(host: DeviceHost, phys: number, numPages: number): number {
  const cc = host.cc;
  return cc == null ? 0 : cc.convert(phys, numPages, false);
}

/** `set_memory_encrypted(addr, numpages)`: shared back to private; the errnos of setMemoryDecrypted. */
export function setMemoryEncrypted(host: DeviceHost, phys: number, numPages: number): number {
  const cc = host.cc;
  return cc == null ? 0 : cc.convert(phys, numPages, true);
}

/** `cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT)`: is this machine a confidential guest? */
export function ccGuestMemEncrypt(host: DeviceHost): boolean {
  return host.cc != null;
}

/**
 * `force_dma_unencrypted(dev)`: in a CC guest, DMA must use shared memory unless the device is an
 * accepted TDI in RUN (see CcPlatform.forceDmaUnencrypted).
 */
export function forceDmaUnencrypted(dev: Device): boolean {
  const cc = dev.host.cc;
  return cc != null && cc.forceDmaUnencrypted(dev);
}
