/**
 * @dmakit/nvme-pci: the NVMe PCI host driver and a simulated NVMe controller.
 *
 * - Host (drivers/nvme/host/pci.c): `NvmeDev` brings a controller up through its BAR (enable,
 *   admin queue, Identify, Set Features, Create I/O CQ/SQ), maps block requests through the
 *   `BlkRqDmaMapper` contract into PRPs or SGLs, completes them with the phase bit, handles
 *   timeouts, abort and reset with requeue.
 * - Device (NVMe base specification, QEMU hw/nvme): `NvmeController` with registers, queues,
 *   admin and NVM command sets, PRP/SGL parsing, every access through its device-side DMA port.
 */
export * from './controller/index.js';
export * from './host/index.js';
export * from './host/premapped.js';
export * from './costModel.js';
export * from './drive.js';
