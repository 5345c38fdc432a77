/**
 * @dmakit/nvme-pci: not implemented yet.
 *
 * Will model: The NVMe PCI host driver (queues, PRP and SGL builders, DMA pools, completion, reset) and a simulated NVMe controller that moves data through its device-side DMA port.
 * Kernel counterpart: drivers/nvme/host/pci.c, hw/nvme/ctrl.c (QEMU)
 */
export const NOT_IMPLEMENTED = true as const;
