/**
 * What the fail_nth sweeps found, each replayed by failing the one site that showed it (the call
 * number comes from the unarmed run's site sequence, as `pnpm failnth` numbers them).
 */
import { describe, expect, it } from 'vitest';
import type { Machine } from '@dmakit/dma-core';
import { resourceCountChanges } from '@dmakit/dma-core';
import { iommuDeviceList } from '@dmakit/iommu-dma';
import { getStack } from '../stacks/index.js';
import type { StackResult, StackRunRequest } from '../stacks/index.js';
import { siteSequences, SWEEP_REQUESTS } from './sweep.js';

/** The call number of the `k`-th (1-based) call at `site` on machine `machine` of an unarmed run. */
function callOf(stack: string, site: string, k = 1, machine = 0, request?: Omit<StackRunRequest, 'seed'>): number {
  const def = getStack(stack);
  if (def === undefined) throw new Error(stack);
  const seq = siteSequences(def, request === undefined ? {} : { request })[machine] ?? [];
  let seen = 0;
  const i = seq.findIndex((s) => s === site && ++seen === k);
  if (i < 0) throw new Error(`${stack} passes ${site} fewer than ${k} times`);
  return i + 1;
}

/** Run `stack` failing call `nth` of machine `machine`; the result and whether every machine gave everything back. */
function runFailing(stack: string, nth: number, machine = 0, request?: Omit<StackRunRequest, 'seed'>): { r: StackResult; leaks: string[]; injected: string | null } {
  const def = getStack(stack);
  if (def === undefined) throw new Error(stack);
  const ms: { m: Machine; before: ReturnType<Machine['resourceCounts']> }[] = [];
  const r = def.run({ ...(request ?? SWEEP_REQUESTS[stack]), seed: 1, failNth: { nth, machine }, onMachine: (m) => ms.push({ m, before: m.resourceCounts() }) });
  const leaks = ms.flatMap(({ m, before }) => {
    for (const i of iommuDeviceList(m)) i.flushQueues();
    return resourceCountChanges(before, m.resourceCounts());
  });
  return { r, leaks, injected: ms[machine]?.m.faultInjection.lastInjected?.site ?? null };
}

describe('fail_nth findings', () => {
  it('nvme: an I/O the driver bounced with BLK_STS_RESOURCE (no PRP-list block) is requeued as the same request, not replaced by a new one', () => {
    // Before: the workload drew a new LBA for the slot, so the blocks recorded for the bounced
    // write were never written: 32 "mismatched" blocks, verified false, no failure reported.
    const nth = callOf('nvme', 'dma_pool', 2);
    const { r, leaks, injected } = runFailing('nvme', nth);
    expect(injected).toBe('dma_pool');
    expect(r.failure).toBeUndefined();
    expect(r.verified).toBe(true);
    expect((r as unknown as { mismatchedBlocks: number }).mismatchedBlocks).toBe(0);
    expect(leaks).toEqual([]);
  });

  it('direct: a swiotlb bounce that cannot get slots gives its pages back and stops with -ENOMEM at the edge', () => {
    // Before: the step returned "map failed" holding its 4 pages (a leak), and a failed page
    // allocation reached freePages(0) (PageAllocError) or threw "no RAM above 4 GiB".
    const nth = callOf('direct', 'swiotlb', 1);
    const { r, leaks } = runFailing('direct', nth);
    expect(r.failure).toEqual({ step: 'swiotlb bounce FROM_DEVICE', error: '-ENOMEM (dma_mapping_error)', dataIntact: true });
    expect(r.verified).toBe(false);
    expect(leaks).toEqual([]);
    const first = runFailing('direct', callOf('direct', 'alloc_pages', 1));
    expect(first.r.failure?.error).toBe('-ENOMEM (alloc_pages)');
    expect(first.leaks).toEqual([]);
  });

  it("gpu-svm: when dma_iova_try_alloc fails, hmm_dma_map_alloc's per-page fallback is a correct run, not an unverified one", () => {
    const nth = callOf('gpu-svm', 'iova', 1);
    const { r, leaks, injected } = runFailing('gpu-svm', nth);
    expect(injected).toBe('iova');
    expect(r.failure).toBeUndefined();
    expect(r.verified).toBe(true);
    expect(leaks).toEqual([]);
  });

  it('gpu-svm: a CPU write the kernel answers with SIGBUS (no page: VM_FAULT_OOM) ends the run at its edge and the process exits clean', () => {
    const { r, leaks } = runFailing('gpu-svm', 1);
    expect(r.failure?.error).toMatch(/^SIGBUS/);
    expect(leaks).toEqual([]);
  });

  it("cc-guest: the rogue device's secret page allocation failing stops the run with -ENOMEM (it used to free page 0)", () => {
    const seq = siteSequences(getStack('cc-guest') ?? (undefined as never))[0] ?? [];
    // The page allocations of the private phase's buffers come just before the rogue's page: find
    // the rogue's by failing each alloc_pages until the step names it.
    let found = false;
    for (let i = 0; i < seq.length && !found; i++) {
      if (seq[i] !== 'alloc_pages') continue;
      const { r, leaks } = runFailing('cc-guest', i + 1);
      expect(leaks).toEqual([]);
      if (r.failure?.step === 'rogue device: secret page') {
        expect(r.failure.error).toBe('-ENOMEM (alloc_pages)');
        expect(r.failure.dataIntact).toBe(true);
        found = true;
      }
    }
    expect(found).toBe(true);
  }, 60_000);

  it('dmabuf-p2p: a BAR MR access on the non-allow-listed host that fails before the P2P check is reported as an error, not taken for the refusal', () => {
    const nth = callOf('dmabuf-p2p', 'iova', 1, 1);
    const { r, leaks } = runFailing('dmabuf-p2p', nth, 1);
    expect(r.failure?.step).toBe('host bridge not on the P2P allow-list');
    expect(r.failure?.error).toMatch(/before the P2P check/);
    expect(r.failure?.dataIntact).toBe(true);
    expect(leaks).toEqual([]);
  }, 60_000);

  it('rdma-odp: an RDMA WRITE whose ODP fault cannot map its pages stops the traffic with the completion status; every byte outside it still reads back right', () => {
    // The first IO page-table page the server's first-touch fault needs cannot be allocated.
    const nth = callOf('rdma-odp', 'pgtable', 1);
    const { r, leaks } = runFailing('rdma-odp', nth);
    expect(r.failure?.step).toBe('RDMA WRITE of 4194304 bytes at offset 0');
    expect(r.failure?.error).toMatch(/^IB_WC_/);
    expect(r.failure?.dataIntact).toBe(true);
    expect(leaks).toEqual([]);
  }, 60_000);

  it('vfio-migration: the stop-copy save (mlx5 SAVE_VHCA_STATE) failing surfaces as the errno of reading the migration fd, not an exception', () => {
    const def = getStack('vfio-migration');
    const saves = (siteSequences(def ?? (undefined as never))[0] ?? []).filter((s) => s === 'mlx5_save_vhca_state').length;
    const nth = callOf('vfio-migration', 'mlx5_save_vhca_state', saves);
    const { r, leaks } = runFailing('vfio-migration', nth);
    expect(r.failure).toEqual({ step: 'iova path: read of the source migration fd', error: '-ENODEV', dataIntact: true });
    expect(r.verified).toBe(false);
    expect(leaks).toEqual([]);
  }, 60_000);

  it('vfio-migration: both hosts are torn down (VF fds closed, guest RAM unmapped and freed) after a verified run, where before they kept everything', () => {
    // Before: 2052 + 2053 pages and 10 IO page-table pages per host stayed allocated after a
    // verified run, so the sweep could not check vfio-migration for leaks at all.
    const def = getStack('vfio-migration');
    if (def === undefined) throw new Error('vfio-migration');
    const ms: { m: Machine; before: ReturnType<Machine['resourceCounts']> }[] = [];
    const r = def.run({ ...SWEEP_REQUESTS['vfio-migration'], seed: 1, onMachine: (m) => ms.push({ m, before: m.resourceCounts() }) });
    expect(r.verified).toBe(true);
    expect(ms).toHaveLength(2);
    for (const { m, before } of ms) expect(resourceCountChanges(before, m.resourceCounts())).toEqual([]);
  }, 60_000);

  it('vfio-migration: the target failing to back guest RAM stops the run at the edge and the source host is torn down too', () => {
    const nth = callOf('vfio-migration', 'alloc_pages', 10, 1);
    const { r, leaks, injected } = runFailing('vfio-migration', nth, 1);
    expect(injected).toBe('alloc_pages');
    expect(r.failure).toEqual({ step: 'iova path: dst: guest RAM setup (VFIO_IOMMU_MAP_DMA)', error: '-ENOMEM', dataIntact: true });
    expect(leaks).toEqual([]);
  }, 60_000);

  it('vfio-migration: the first pre-copy SAVE failing is recovered from, as in the kernel (PRE_COPY_ERROR, full image at stop-copy)', () => {
    // drivers/vfio/pci/mlx5/cmd.c mlx5vf_mig_file_cleanup_cb: a SAVE failing with
    // MLX5_CMD_STAT_BAD_RES_STATE_ERR outside a stop-copy chunk leaves the file in
    // MLX5_MIGF_STATE_PRE_COPY_ERROR, not ERROR; mlx5vf_cmd_save_vhca_state then saves a full
    // (non-incremental) image, so the migration completes and verifies. Only a stop-copy failure
    // (MLX5_MIGF_STATE_ERROR) ends it with -ENODEV on read.
    const nth = callOf('vfio-migration', 'mlx5_save_vhca_state', 1);
    const { r, leaks, injected } = runFailing('vfio-migration', nth);
    expect(injected).toBe('mlx5_save_vhca_state');
    expect(r.failure).toBeUndefined();
    expect(r.verified).toBe(true);
    expect(leaks).toEqual([]);
  }, 60_000);
});
