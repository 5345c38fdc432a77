// The VMM's side of VFIO live migration (QEMU hw/vfio/migration.c: vfio_save_block reads the data
// fd until it ends, vfio_load_buffer writes what arrives to the target's fd; hw/vfio/common.c
// vfio_sync_dirty_bitmap with VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT). Plain functions over the
// uAPI objects of vfioDevice.ts and a guest's memory, usable with any variant driver.
import { Errno } from '@dmakit/dma-core';
import type { Device, IommuUnmanagedDomain, Machine } from '@dmakit/dma-core';
import { destroyGuestMemory } from './kvmGuest.js';
import type { GuestMemory, KvmGuest } from './kvmGuest.js';
import { ENOMSG } from './mlx5Defs.js';
import type { VfioDevice, VfioMigFile } from './vfioDevice.js';

/** Reads after which {@link vfioMigReadAll} gives up on a data fd that never ends. */
export const VFIO_MIG_READ_MAX_CALLS = 1_000_000;

/**
 * Read the data fd in `chunkBytes` reads until it returns 0 (end of stream) or -ENOMSG (no more
 * pre-copy data for now), appending each piece to `sink`. Returns the bytes read, or the fd's
 * -errno, or -EIO when the fd has not ended after `maxReads` reads (default
 * {@link VFIO_MIG_READ_MAX_CALLS}).
 */
export function vfioMigReadAll(fd: VfioMigFile, sink: Uint8Array[], chunkBytes = 64 * 1024, maxReads = VFIO_MIG_READ_MAX_CALLS): number {
  if (!Number.isInteger(chunkBytes) || chunkBytes <= 0 || !Number.isInteger(maxReads) || maxReads <= 0) return -Errno.EINVAL;
  const buf = new Uint8Array(chunkBytes);
  let total = 0;
  for (let i = 0; i < maxReads; i++) {
    const n = fd.read(buf);
    if (n === 0 || n === -ENOMSG) return total;
    if (n < 0) return n;
    sink.push(buf.slice(0, n));
    total += n;
  }
  return -Errno.EIO;
}

/**
 * Write all of `bytes` to a resuming data fd in pieces of `pieceBytes()` bytes (as they come off
 * the network; each call gives the next piece's size, at least 1). Returns 0 or the first -errno.
 */
export function vfioMigWriteAll(fd: VfioMigFile, bytes: Uint8Array, pieceBytes: () => number = () => bytes.length): number {
  let p = 0;
  while (p < bytes.length) {
    const want = pieceBytes();
    if (!Number.isInteger(want) || want <= 0) return -Errno.EINVAL;
    const w = fd.write(bytes, p, Math.min(bytes.length - p, want));
    if (w < 0) return w;
    if (w === 0) return -Errno.EIO;
    p += w;
  }
  return 0;
}

/**
 * The device half of a dirty sync: VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT over each slot of
 * guest memory at `pageSize`, adding the dirty guest pages (indices into `memory`) to `out`.
 * Returns how many pages the device reported, or the first -errno.
 */
export function vfioDeviceDirtySync(vdev: VfioDevice, memory: GuestMemory, pageSize: number, out: Set<number>): number {
  let n = 0;
  for (const reg of memory.regions) {
    const bm = vdev.dmaLoggingReport({ iova: reg.iova, length: reg.length, pageSize });
    if (typeof bm === 'number') return bm;
    for (const a of bm.dirtyPages()) {
      const idx = memory.pageIndex(a);
      if (idx >= 0) {
        out.add(idx);
        n++;
      }
    }
  }
  return n;
}

/** What {@link vfioVmmTeardown} takes down: one assigned device and the VM's memory on one host. */
export interface VfioVmmTeardown {
  readonly machine: Machine;
  /** The assigned device's VFIO device (its fd is closed). */
  readonly vdev: VfioDevice;
  /** The PCI function assigned to the VM (detached from `domain`, back to its default domain). */
  readonly dev: Device;
  /** The unmanaged domain (the VFIO container's / iommufd IOAS's) the VM's memory is mapped in. */
  readonly domain: IommuUnmanagedDomain;
  /** The VM's RAM on this host; unmapped and freed. */
  readonly memory: GuestMemory;
  /** The VM's vCPUs, paused first (none when the VM never ran on this host). */
  readonly guest?: KvmGuest | null;
}

/**
 * The VMM shutting a VM with an assigned device down on one host, in QEMU's order: vCPUs paused,
 * the migration data fds and the device fd closed (hw/vfio/migration.c vfio_migration_exit,
 * vfio_detach_device; kernel: vfio_device_fops_release -> the driver's close_device, which for
 * mlx5 disables its migration files and frees their buffers), the IOMMU's dirty tracking off, the
 * device detached from the container's domain (vfio_iommu_type1_detach_group -> iommu_detach_group),
 * then guest RAM unmapped and unpinned (VFIO_IOMMU_UNMAP_DMA: vfio_remove_dma -> vfio_unmap_unpin)
 * and freed. Returns the guest bytes unmapped, or destroyGuestMemory's -errno. Safe to call on a
 * host the migration left in any state, and twice (the second call does nothing).
 */
export function vfioVmmTeardown(t: VfioVmmTeardown): number {
  t.guest?.stop();
  t.vdev.close();
  if (t.domain.dirtyTrackingSupported) t.domain.setDirtyTracking(false);
  t.domain.detachDevice(t.dev);
  return destroyGuestMemory(t.machine, t.domain, t.memory);
}
