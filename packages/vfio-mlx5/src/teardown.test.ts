// Teardown of a migrating VF (kernel: drivers/vfio/pci/mlx5/main.c mlx5vf_pci_close_device,
// cmd.c mlx5vf_cmd_close_migratable; drivers/vfio/vfio_iommu_type1.c vfio_remove_dma) and the
// pre-copy error flow of VFIO_MIG_GET_PRECOPY_INFO (main.c mlx5vf_precopy_ioctl, mlx5vf_mark_err).
import { describe, expect, it } from 'vitest';
import { Errno, PAGE_SIZE, SZ_1M, createMachine, resourceCountChanges } from '@dmakit/dma-core';
import type {
  Mlx5VfMigrationFile} from './index.js';
import {
  ENOMSG,
  KvmGuest,
  MLX5_FAULT_SAVE,
  Mlx5SimFunction,
  Mlx5VfMigfState,
  Mlx5VfPciCoreDevice,
  VfioDeviceMigState as S,
  createGuestMemory,
  destroyGuestMemory,
  vfioVmmTeardown,
} from './index.js';
import { fakeUnmanagedDomain } from './testing/fakeIommu.js';
import { configureAndRun, drain, makeHost } from './testing/host.js';

describe('close_device: the VMM closes the VF fd in the middle of a migration', () => {
  it('frees both migration files, every buffer, mkey and the dirty tracker, and the function is RUNNING again', () => {
    const h = makeHost({ seed: 21, iommu: true });
    configureAndRun(h, 40);
    const base = h.machine.resourceCounts();
    const vdev = h.drv.vdev;
    expect(vdev.dmaLoggingStart([{ iova: 0, length: 64 * PAGE_SIZE }], PAGE_SIZE)).toBe(PAGE_SIZE);
    const r = vdev.setMigDeviceState(S.PRE_COPY);
    expect(r.ret).toBe(0);
    const fd = r.dataFd as Mlx5VfMigrationFile;
    expect(drain(fd).ret).toBe(-ENOMSG);
    for (let i = 0; i < 10; i++) h.fw.step();
    expect(typeof fd.precopyInfo()).toBe('object'); // an incremental SAVE is now in flight
    expect(h.fw.saveInFlight).toBe(true);
    expect(h.drv.bufferStats.livePages).toBeGreaterThan(0);
    expect(h.fw.liveMkeys).toBeGreaterThan(0);

    vdev.close();
    expect(h.fw.saveInFlight).toBe(false); // mlx5vf_disable_fds waits for it
    expect(h.drv.savingMigf).toBeNull();
    expect(fd.state).toBe(Mlx5VfMigfState.ERROR);
    expect(drain(fd).ret).toBe(-Errno.ENODEV);
    expect(h.drv.bufferStats.livePages).toBe(0);
    expect(h.fw.liveMkeys).toBe(0);
    expect(h.drv.tracker).toBeNull();
    expect(h.fw.trackerActive).toBe(false);
    expect(h.drv.migState).toBe(S.RUNNING); // vfio_pci_core_disable's reset -> reset_done
    expect(resourceCountChanges(base, h.machine.resourceCounts())).toEqual([]);
    // The fd is gone: every ioctl on it is -EBADF, and a second close does nothing.
    expect(vdev.closed).toBe(true);
    expect(vdev.setMigDeviceState(S.STOP).ret).toBe(-Errno.EBADF);
    expect(vdev.dmaLoggingStop()).toBe(-Errno.EBADF);
    vdev.close();
    expect(h.drv.stats.resets).toBe(1);
  });

  it('a target closed while RESUMING frees the resume file', () => {
    const h = makeHost({ seed: 22 });
    const base = h.machine.resourceCounts();
    const r = h.drv.vdev.setMigDeviceState(S.RESUMING);
    expect(r.ret).toBe(0);
    const fd = r.dataFd!;
    expect(fd.write(new Uint8Array(7))).toBe(7); // part of a header
    h.drv.vdev.close();
    expect(h.drv.resumingMigf).toBeNull();
    expect(fd.write(new Uint8Array(1))).toBe(-Errno.ENODEV);
    expect(h.drv.bufferStats.livePages).toBe(0);
    expect(resourceCountChanges(base, h.machine.resourceCounts())).toEqual([]);
  });
});

describe('destroyGuestMemory / vfioVmmTeardown: the VM goes away', () => {
  it('VFIO_IOMMU_UNMAP_DMA of every block, then the pages are freed; a second call does nothing', () => {
    const machine = createMachine({ ramBytes: 64 * SZ_1M, seed: 3, dmaDebug: 'strict' });
    const base = machine.resourceCounts();
    const domain = fakeUnmanagedDomain();
    const mem = createGuestMemory(machine, domain, [
      { iova: 0, length: 3 * SZ_1M },
      { iova: 8 * SZ_1M, length: SZ_1M },
    ]);
    if (typeof mem === 'number') throw new Error(`createGuestMemory ${mem}`);
    expect(mem.live).toBe(true);
    expect(machine.resourceCounts().allocatedPages).toBe(mem.pages);
    expect(destroyGuestMemory(machine, domain, mem)).toBe(4 * SZ_1M);
    expect(mem.live).toBe(false);
    expect(domain.iovaToPhys(0)).toBeLessThan(0); // nothing mapped any more
    expect(domain.iovaToPhys(8 * SZ_1M)).toBeLessThan(0);
    expect(resourceCountChanges(base, machine.resourceCounts())).toEqual([]);
    expect(destroyGuestMemory(machine, domain, mem)).toBe(0);
  });

  it('tears a running VM with a migrating VF down: guest paused, device fd closed, VF detached, RAM gone', () => {
    const machine = createMachine({ ramBytes: 128 * SZ_1M, seed: 4, dmaDebug: 'strict' });
    const base = machine.resourceCounts();
    const pf = machine.pci.addDevice({ name: 'pf', dmaMaskBits: 64 });
    const vf = machine.pci.addDevice({ name: 'vf', dmaMaskBits: 64 });
    const domain = fakeUnmanagedDomain();
    const mem = createGuestMemory(machine, domain, [{ iova: 0, length: 2 * SZ_1M }]);
    if (typeof mem === 'number') throw new Error(`createGuestMemory ${mem}`);
    expect(domain.attachDevice(vf)).toBe(0);
    const fw = new Mlx5SimFunction({ machine, pf, vf, stateBytes: 16 * 1024, queues: 2, seed: 9 });
    const drv = new Mlx5VfPciCoreDevice({ machine, fw });
    const guest = new KvmGuest({ machine, memory: mem, seed: 5, devices: [fw] });
    guest.start();
    machine.advance(200_000);
    expect(domain.setDirtyTracking(true)).toBe(0);
    const r = drv.vdev.setMigDeviceState(S.STOP_COPY);
    expect(r.ret).toBe(0);
    expect(vfioVmmTeardown({ machine, vdev: drv.vdev, dev: vf, domain, memory: mem, guest })).toBe(2 * SZ_1M);
    expect(guest.running).toBe(false);
    const writes = guest.writes;
    machine.advance(200_000);
    expect(guest.writes).toBe(writes);
    expect(drv.vdev.closed).toBe(true);
    expect(vf.dmaOps).toBeNull(); // back to its default (none here: dma-direct)
    expect(fw.liveMkeys).toBe(0);
    expect(resourceCountChanges(base, machine.resourceCounts())).toEqual([]);
    expect(vfioVmmTeardown({ machine, vdev: drv.vdev, dev: vf, domain, memory: mem, guest })).toBe(0);
  });
});

describe('VFIO_MIG_GET_PRECOPY_INFO error flow (main.c mlx5vf_precopy_ioctl)', () => {
  it('a SAVE the ioctl cannot issue marks the file in error (mlx5vf_mark_err): reads then fail with -ENODEV, STOP_COPY too', () => {
    // Found comparing the model with the kernel: the model returned the errno but left the file in
    // PRE_COPY, so the stream silently lacked the increment and the migration went on.
    const h = makeHost({ seed: 23 });
    configureAndRun(h, 30);
    const r = h.drv.vdev.setMigDeviceState(S.PRE_COPY);
    const fd = r.dataFd as Mlx5VfMigrationFile;
    expect(drain(fd).ret).toBe(-ENOMSG);
    for (let i = 0; i < 10; i++) h.fw.step();
    h.drv.bufCtx.mdevDetached = true; // the PF driver went away: SAVE returns -ENOTCONN
    const info = fd.precopyInfo();
    expect(typeof info === 'number' && info < 0).toBe(true);
    expect(fd.state).toBe(Mlx5VfMigfState.ERROR);
    h.drv.bufCtx.mdevDetached = false;
    expect(drain(fd).ret).toBe(-Errno.ENODEV);
    expect(fd.precopyInfo()).toBe(-Errno.ENODEV);
    expect(h.drv.vdev.setMigDeviceState(S.STOP_COPY).ret).toBe(-Errno.ENODEV); // mlx5vf_pci_save_device_inc_data
  });

  it('a pre-copy SAVE the firmware fails with BAD_RES_STATE is recoverable (PRE_COPY_ERROR, next save full), as in cmd.c', () => {
    // mlx5vf_mig_file_cleanup_cb: status MLX5_CMD_STAT_BAD_RES_STATE_ERR outside a stop-copy chunk
    // -> MLX5_MIGF_STATE_PRE_COPY_ERROR; mlx5vf_cmd_save_vhca_state then saves a full image.
    const h = makeHost({ seed: 24 });
    configureAndRun(h, 30);
    h.machine.faultInjection.arm(MLX5_FAULT_SAVE, 1); // the initial pre-copy SAVE
    const r = h.drv.vdev.setMigDeviceState(S.PRE_COPY);
    expect(r.ret).toBe(0);
    const fd = r.dataFd as Mlx5VfMigrationFile;
    expect(drain(fd).ret).toBe(-ENOMSG);
    expect(fd.state).toBe(Mlx5VfMigfState.PRE_COPY_ERROR);
    expect(h.drv.vdev.setMigDeviceState(S.STOP_COPY).ret).toBe(0);
    const d = drain(fd);
    expect(d.ret).toBe(0);
    expect(d.bytes.length).toBeGreaterThan(h.fw.stateBytes); // the final image is a full one
  });
});
