// kernel: include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h, arch/x86 (TASK_SIZE)

export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_SHARED_VALIDATE = 0x03;
export const MAP_TYPE = 0x0f;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_POPULATE = 0x8000;
export const MAP_HUGETLB = 0x40000;
export const MAP_FIXED_NOREPLACE = 0x100000;

/** Flags the model understands; others make mmap fail with -EINVAL. */
export const MAP_KNOWN_FLAGS = MAP_TYPE | MAP_FIXED | MAP_ANONYMOUS | MAP_POPULATE | MAP_HUGETLB | MAP_FIXED_NOREPLACE;

/** x86-64 4-level paging: user space is [0, 2^47 - PAGE_SIZE). */
export const TASK_SIZE = 2 ** 47 - 4096;
/** Top-down mmap base (below the stack gap). */
export const MMAP_BASE = 0x7f00_0000_0000;
/** `mmap_min_addr` default. */
export const MMAP_MIN_ADDR = 0x10000;

/** Huge page order for MAP_HUGETLB (2 MiB PMD pages, HPAGE_PMD_ORDER). */
export const HPAGE_PMD_ORDER = 9;

/**
 * CPU page-table entry bits of the model (pte_present, pte_write, pte_dirty, pte_young,
 * is_zero_pfn, pmd huge, is_device_private_entry).
 */
export const PTE_PRESENT = 1 << 0;
export const PTE_WRITE = 1 << 1;
export const PTE_DIRTY = 1 << 2;
export const PTE_YOUNG = 1 << 3;
/** Maps the shared zero page (read-only). */
export const PTE_ZERO = 1 << 4;
/** Part of a 2 MiB (order 9) mapping. */
export const PTE_HUGE = 1 << 5;
/** Non-present device-private swap entry (the pfn is device memory); CPU access migrates back. */
export const PTE_DEVICE_PRIVATE = 1 << 6;

// kernel: include/linux/mm.h — vm_flags bits for VmArea.vmFlags (mappings without struct pages).
/** Memory-mapped I/O or similar: no struct page behind it (HMM and GUP refuse it). */
export const VM_IO = 0x0000_4000;
/** Page-ranges managed without struct page, just pure PFN (remap_pfn_range). */
export const VM_PFNMAP = 0x0000_0400;

// kernel: include/uapi/linux/mman.h — mremap flags.
export const MREMAP_MAYMOVE = 1;
export const MREMAP_FIXED = 2;
