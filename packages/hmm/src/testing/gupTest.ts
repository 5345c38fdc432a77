/**
 * Test helper of @dmakit/hmm (not shipped): the part of the kernel's gup_test debugfs driver
 * (mm/gup_test.c, /sys/kernel/debug/gup_test) that hmm-tests' hmm_gup_test uses. One ioctl runs
 * get_user_pages*() or pin_user_pages*() over [addr, addr + size) in batches of nrPagesPerCall,
 * checks the pins as verify_dma_pinned() does, and puts every page back (put_back_pages).
 */
import {
  Errno,
  FOLL_LONGTERM,
  PAGE_SIZE,
  getUserPages,
  getUserPagesFast,
  pinUserPages,
  pinUserPagesFast,
  putUserPages,
  unpinUserPages,
} from '@dmakit/dma-core';
import type { MmStruct } from '@dmakit/dma-core';

// mm/gup_test.h: the commands hmm_gup_test issues (the ioctl numbers' 'g' sequence numbers).
/** get_user_pages_fast(). kernel: GUP_FAST_BENCHMARK in mm/gup_test.h. */
export const GUP_FAST_BENCHMARK = 1;
/** pin_user_pages_fast(). kernel: PIN_FAST_BENCHMARK in mm/gup_test.h. */
export const PIN_FAST_BENCHMARK = 2;
/** pin_user_pages(..., gup_flags | FOLL_LONGTERM). kernel: PIN_LONGTERM_BENCHMARK in mm/gup_test.h. */
export const PIN_LONGTERM_BENCHMARK = 3;
/** get_user_pages(). kernel: GUP_BASIC_TEST in mm/gup_test.h. */
export const GUP_BASIC_TEST = 4;
/** pin_user_pages(). kernel: PIN_BASIC_TEST in mm/gup_test.h. */
export const PIN_BASIC_TEST = 5;

/** `struct gup_test` (the fields hmm-tests sets). */
export interface GupTestArgs {
  addr: number;
  size: number;
  nrPagesPerCall: number;
  gupFlags: number;
}

/** What one ioctl did (the model's stand-in for get/put_delta_usec). */
export interface GupTestResult {
  /** 0, or the errno the ioctl fails with (a positive number, as hmm-tests' gup_test_exec returns errno). */
  err: number;
  /** Pages taken and put back. */
  pages: number;
}

/** `gup_test_ioctl` -> `__gup_test_ioctl`: returns the errno (0 on success) and the page count. */
export function gupTestIoctl(mm: MmStruct, cmd: number, gup: GupTestArgs): GupTestResult {
  const { addr, size, gupFlags } = gup;
  const nrPages = Math.floor(size / PAGE_SIZE);
  const perCall = gup.nrPagesPerCall;
  if (nrPages <= 0 || perCall <= 0 || addr % PAGE_SIZE !== 0) return { err: Errno.EINVAL, pages: 0 };
  const pages = new Float64Array(nrPages);
  let taken = 0;
  let err = 0;
  const pin = cmd === PIN_FAST_BENCHMARK || cmd === PIN_LONGTERM_BENCHMARK || cmd === PIN_BASIC_TEST;
  for (let i = 0; i < nrPages; ) {
    const n = Math.min(perCall, nrPages - i);
    const slice = pages.subarray(i, i + n);
    const a = addr + i * PAGE_SIZE;
    let r: number;
    switch (cmd) {
      case GUP_FAST_BENCHMARK:
        r = getUserPagesFast(mm, a, n, gupFlags, slice);
        break;
      case GUP_BASIC_TEST:
        r = getUserPages(mm, a, n, gupFlags, slice);
        break;
      case PIN_FAST_BENCHMARK:
        r = pinUserPagesFast(mm, a, n, gupFlags, slice);
        break;
      case PIN_BASIC_TEST:
        r = pinUserPages(mm, a, n, gupFlags, slice);
        break;
      case PIN_LONGTERM_BENCHMARK:
        r = pinUserPages(mm, a, n, gupFlags | FOLL_LONGTERM, slice);
        break;
      default:
        return { err: Errno.EINVAL, pages: 0 };
    }
    if (r <= 0) {
      err = r < 0 ? -r : 0;
      break;
    }
    taken += r;
    i += r;
    if (r < n) break;
  }
  // verify_dma_pinned: every page of a PIN_* command must look pinned.
  if (pin && err === 0) for (let i = 0; i < taken; i++) if (!mm.memory.pageMaybeDmaPinned(pages[i] ?? 0)) err = Errno.EFAULT;
  // put_back_pages
  if (pin) unpinUserPages(mm.memory, pages, taken);
  else putUserPages(mm.memory, pages, taken);
  return { err, pages: taken };
}
