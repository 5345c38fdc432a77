// kernel: include/uapi/asm-generic/mman-common.h, include/uapi/linux/mman.h, arch/x86 (TASK_SIZE)

/** Page may not be accessed. kernel: PROT_NONE in include/uapi/asm-generic/mman-common.h. */
export const PROT_NONE = 0x0;
/** Page may be read. kernel: PROT_READ in include/uapi/asm-generic/mman-common.h. */
export const PROT_READ = 0x1;
/** Page may be written. kernel: PROT_WRITE in include/uapi/asm-generic/mman-common.h. */
export const PROT_WRITE = 0x2;
/** Page may be executed. kernel: PROT_EXEC in include/uapi/asm-generic/mman-common.h. */
export const PROT_EXEC = 0x4;

/** Share changes with other mappings of the object. kernel: MAP_SHARED in include/uapi/linux/mman.h. */
export const MAP_SHARED = 0x01;
/** Private copy-on-write mapping. kernel: MAP_PRIVATE in include/uapi/linux/mman.h. */
export const MAP_PRIVATE = 0x02;
/** MAP_SHARED that fails on unknown flags. kernel: MAP_SHARED_VALIDATE in include/uapi/linux/mman.h. */
export const MAP_SHARED_VALIDATE = 0x03;
/** Mask of the mapping-type bits. kernel: MAP_TYPE in include/uapi/linux/mman.h. */
export const MAP_TYPE = 0x0f;
/**
 * Place the mapping exactly at the hint, replacing what is there. kernel: MAP_FIXED in
 * include/uapi/asm-generic/mman-common.h.
 */
export const MAP_FIXED = 0x10;
/**
 * Mapping not backed by a file, zero-filled. kernel: MAP_ANONYMOUS in
 * include/uapi/asm-generic/mman-common.h.
 */
export const MAP_ANONYMOUS = 0x20;
/** Fault the pages in at mmap time. kernel: MAP_POPULATE in include/uapi/asm-generic/mman-common.h. */
export const MAP_POPULATE = 0x8000;
/**
 * Back the mapping with huge pages (2 MiB here). kernel: MAP_HUGETLB in
 * include/uapi/asm-generic/mman-common.h.
 */
export const MAP_HUGETLB = 0x40000;
/**
 * Like MAP_FIXED but fail with -EEXIST instead of replacing. kernel: MAP_FIXED_NOREPLACE in
 * include/uapi/asm-generic/mman-common.h.
 */
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
/** Model PTE bit: the CPU may write through the entry (kernel: pte_write()). */
export const PTE_WRITE = 1 << 1;
/** Model PTE bit: the page was written (kernel: pte_dirty()). */
export const PTE_DIRTY = 1 << 2;
/** Model PTE bit: the page was accessed (kernel: pte_young()). */
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
/**
 * The VMA may map pages with and without struct page (set by vm_insert_page). HMM and GUP treat
 * its normal pages like any other. kernel: VM_MIXEDMAP in include/linux/mm.h.
 */
export const VM_MIXEDMAP = 0x1000_0000;

// kernel: include/uapi/linux/mman.h — mremap flags.
/** mremap may move the mapping. kernel: MREMAP_MAYMOVE in include/uapi/linux/mman.h. */
export const MREMAP_MAYMOVE = 1;
/** mremap to the given new address. kernel: MREMAP_FIXED in include/uapi/linux/mman.h. */
export const MREMAP_FIXED = 2;

// kernel: include/linux/mm.h — vm_flags bits set by madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE).
/** The VMA asked for transparent huge pages (madvise MADV_HUGEPAGE). kernel: VM_HUGEPAGE in include/linux/mm.h. */
export const VM_HUGEPAGE = 0x2000_0000;
/** The VMA refuses transparent huge pages (madvise MADV_NOHUGEPAGE). kernel: VM_NOHUGEPAGE in include/linux/mm.h. */
export const VM_NOHUGEPAGE = 0x4000_0000;

// kernel: include/uapi/asm-generic/mman-common.h — madvise advice values the model implements.
/** Drop the pages of the range now (next access faults in zero pages). kernel: MADV_DONTNEED in include/uapi/asm-generic/mman-common.h. */
export const MADV_DONTNEED = 4;
/** The pages may be freed lazily; their content is kept until reclaim. kernel: MADV_FREE in include/uapi/asm-generic/mman-common.h. */
export const MADV_FREE = 8;
/** Back the range with transparent huge pages. kernel: MADV_HUGEPAGE in include/uapi/asm-generic/mman-common.h. */
export const MADV_HUGEPAGE = 14;
/** Never back the range with transparent huge pages. kernel: MADV_NOHUGEPAGE in include/uapi/asm-generic/mman-common.h. */
export const MADV_NOHUGEPAGE = 15;
/** Collapse the range into transparent huge pages now (synchronous khugepaged). kernel: MADV_COLLAPSE in include/uapi/asm-generic/mman-common.h. */
export const MADV_COLLAPSE = 25;

/** mremap: move the pages but keep the old (now empty) mapping. kernel: MREMAP_DONTUNMAP in include/uapi/linux/mman.h. */
export const MREMAP_DONTUNMAP = 4;
