/**
 * @dmakit/vfio-mlx5: not implemented yet.
 *
 * Will model: VFIO migration uAPI v2 state machine and the mlx5 variant driver: page-array migration buffers registered through the two-step API, device dirty tracking, and a simulated mlx5 function.
 * Kernel counterpart: drivers/vfio/vfio_main.c, drivers/vfio/pci/mlx5/
 */
export const NOT_IMPLEMENTED = true as const;
