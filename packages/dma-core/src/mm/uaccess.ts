// kernel: include/linux/uaccess.h (copy_from_user, copy_to_user), mm/maccess.c,
// arch/x86/mm/fault.c (do_user_addr_fault: SIGSEGV / SIGBUS on a bad user access)
import { Errno } from '../units/errno.js';
import { PAGE_SIZE } from '../units/page.js';
import { PROT_NONE, PROT_WRITE, PTE_DIRTY, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, TASK_SIZE } from './constants.js';
import { doFault } from './memory.js';
import type { MmCore } from './mmCore.js';
import { PTE_CHUNK } from './pageTable.js';

/** A CPU access the address space refuses (the process would get SIGSEGV, or SIGBUS on OOM). */
export class SegvError extends Error {
  readonly addr: number;
  readonly write: boolean;
  /** SEGV_MAPERR (nothing mapped), SEGV_ACCERR (protection), or 'oom' (VM_FAULT_OOM/SIGBUS). */
  readonly reason: 'maperr' | 'accerr' | 'oom';

  constructor(addr: number, write: boolean, reason: 'maperr' | 'accerr' | 'oom') {
    super(`${reason === 'oom' ? 'SIGBUS' : 'SIGSEGV'} (${reason}) on ${write ? 'write' : 'read'} at 0x${addr.toString(16)}`);
    this.name = 'SegvError';
    this.addr = addr;
    this.write = write;
    this.reason = reason;
  }
}

/** Resolve a CPU access to the physical address, faulting as needed; throws SegvError. */
function translate(mm: MmCore, addr: number, write: boolean): number {
  const pt = mm.pt;
  const vpn = Math.floor(addr / PAGE_SIZE);
  const c = pt.chunkFor(vpn, false);
  const s = vpn % PTE_CHUNK;
  let f = c === undefined ? 0 : (c.flags[s] ?? 0);
  const v = mm.vmas.find(addr);
  if (v === undefined || mm.exited) throw new SegvError(addr, write, 'maperr');
  // x86: any non-PROT_NONE mapping is readable.
  if (write ? (v.prot & PROT_WRITE) === 0 : v.prot === PROT_NONE) throw new SegvError(addr, write, 'accerr');
  if ((f & PTE_PRESENT) === 0 || (write && (f & PTE_WRITE) === 0)) {
    const r = doFault(mm, v, addr, write);
    if (r === -Errno.ENOMEM) throw new SegvError(addr, write, 'oom');
    if (r < 0) throw new SegvError(addr, write, 'accerr');
    f = pt.flags(addr);
  }
  const c2 = pt.chunkFor(vpn, false);
  if (c2 === undefined) throw new SegvError(addr, write, 'maperr');
  c2.flags[s] = f | PTE_YOUNG | (write ? PTE_DIRTY : 0);
  return (c2.pfn[s] ?? 0) * PAGE_SIZE + (addr - vpn * PAGE_SIZE);
}

function checkUser(addr: number, len: number, write: boolean): void {
  if (!Number.isSafeInteger(addr) || addr < 0 || !Number.isSafeInteger(len) || len < 0 || addr + len > TASK_SIZE) {
    throw new SegvError(Number.isSafeInteger(addr) ? addr : -1, write, 'maperr');
  }
}

/** `copy_from_user`: user memory at `addr` into `out[0, len)`, faulting pages in; throws SegvError. */
export function copyFromUser(mm: MmCore, addr: number, out: Uint8Array, len: number): void {
  checkUser(addr, len, false);
  let done = 0;
  while (done < len) {
    const a = addr + done;
    const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), len - done);
    const phys = translate(mm, a, false);
    mm.memory.readInto(phys, out, done, n);
    done += n;
  }
}

/** `copy_to_user`: `bytes` to user memory at `addr`, faulting pages in and breaking COW; throws SegvError. */
export function copyToUser(mm: MmCore, addr: number, bytes: Uint8Array): void {
  const len = bytes.length;
  checkUser(addr, len, true);
  let done = 0;
  while (done < len) {
    const a = addr + done;
    const n = Math.min(PAGE_SIZE - (a % PAGE_SIZE), len - done);
    const phys = translate(mm, a, true);
    mm.memory.write(phys, bytes, done, n);
    done += n;
  }
}
