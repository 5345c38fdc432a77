/**
 * @dmakit/dmabuf: not implemented yet.
 *
 * Will model: The dma-buf framework (exporters, attachments, reservation objects, move_notify), phys_vec to sg table mapping for MMIO exporters, and system-heap, GPU VRAM and VFIO BAR exporters.
 * Kernel counterpart: drivers/dma-buf/dma-buf.c, drivers/dma-buf/dma-buf-mapping.c, drivers/vfio/pci/vfio_pci_dmabuf.c
 */
export const NOT_IMPLEMENTED = true as const;
