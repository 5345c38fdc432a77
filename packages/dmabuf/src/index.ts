/**
 * @dmakit/dmabuf: the dma-buf framework (exporters, attachments, reservation objects, fences,
 * move_notify), phys_vec → sg table mapping for MMIO exporters, and three exporters: the system
 * heap, a GPU VRAM exporter that evicts and restores, and the VFIO PCI BAR exporter.
 * Kernel counterpart: drivers/dma-buf/dma-buf.c, dma-buf-mapping.c, dma-resv.c, heaps/system_heap.c,
 * drivers/vfio/pci/vfio_pci_dmabuf.c.
 */
export * from './resv.js';
export * from './dmaBuf.js';
export * from './port.js';
export * from './physVec.js';
export * from './systemHeap.js';
export * from './gpuVram.js';
export * from './vfioPci.js';
