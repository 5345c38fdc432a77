import { describe, expect, it } from 'vitest';
import { getStack, STACKS } from '@dmakit/demo/stacks';
import { Choices, demoCommand, hasVariants, PROPERTY_TASKS, reproCommand, selectTasks, shardSeed, stackRequest, TASKS } from './plan.js';

const SEEDS = Array.from({ length: 300 }, (_, i) => i * 7919 + 1);

describe('the soak plan', () => {
  it('covers every stack of the registry and every property, stacks first', () => {
    expect(TASKS).toEqual([...STACKS.map((s) => s.name), ...PROPERTY_TASKS]);
    for (const s of STACKS) expect(hasVariants(s.name), s.name).toBe(true);
  });

  it('draws only requests the stacks accept, the same for the same seed', () => {
    for (const s of STACKS) {
      for (const seed of SEEDS) {
        const req = stackRequest(s.name, seed);
        expect(() => {
          s.validate(req);
        }, `${s.name} seed ${seed}: ${demoCommand(s.name, req)}`).not.toThrow();
        expect(stackRequest(s.name, seed)).toEqual(req);
      }
    }
  });

  it('varies what matters: every IOMMU mode and mapping path a stack takes, and its own options', () => {
    for (const s of STACKS) {
      const reqs = SEEDS.map((seed) => stackRequest(s.name, seed));
      const modes = new Set(reqs.map((r) => r.iommu ?? s.defaultIommu));
      expect([...modes].sort(), s.name).toEqual([...s.iommuModes].sort());
      // nvme --premapped runs on its own mapping (no --mapping); every other request names a path.
      const mapped = reqs.filter((r) => r.extra?.premapped !== true);
      if (s.mappings.length > 1) expect(new Set(mapped.map((r) => r.mapping ?? 'every path')).size, s.name).toBe(s.mappings.length + (s.comparesMappings ? 1 : 0));
      expect(new Set(reqs.map((r) => r.size)).size, s.name).toBeGreaterThan(s.size.min === s.size.max ? 0 : 2);
    }
    const nvme = SEEDS.map((seed) => stackRequest('nvme', seed).extra ?? {});
    expect(nvme.some((e) => e.premapped === true)).toBe(true);
    expect(nvme.some((e) => e.resetAfter !== undefined)).toBe(true);
    expect(new Set(nvme.map((e) => e.bs)).size).toBeGreaterThan(5);
    expect(new Set(nvme.map((e) => e.rw)).size).toBeGreaterThan(5);
    expect(SEEDS.some((seed) => stackRequest('rdma-odp', seed).extra?.implicit === true)).toBe(true);
    expect(new Set(SEEDS.map((seed) => stackRequest('cc-guest', seed).extra?.vendor))).toEqual(new Set(['tdx', 'sev']));
  });

  it('spells a request as the demo CLI takes it', () => {
    expect(demoCommand('nvme', { seed: 9, iommu: 'lazy', mapping: 'legacy', size: 300, verify: true, extra: { qd: 8, bs: '4k', rw: 'randrw', resetAfter: 17 } })).toBe(
      'pnpm demo nvme --seed 9 --iommu lazy --mapping legacy --ios 300 --verify --qd 8 --bs 4k --rw randrw --reset-after 17',
    );
    expect(demoCommand('rdma-odp', { seed: 2, iommu: 'strict', size: 4, extra: { rounds: 3, implicit: true } })).toBe('pnpm demo rdma-odp --seed 2 --iommu strict --mr-mib 4 --rounds 3 --implicit');
    expect(demoCommand('vfio-migration', { seed: 3, iommu: 'lazy', size: 16 })).toBe('pnpm demo vfio-migration --seed 3 --iommu lazy --size 16');
    expect(reproCommand('iommu-dma/iova-domain', 77, { propertyRuns: 20 })).toBe('pnpm soak --replay iommu-dma/iova-domain --seed 77 --property-runs 20');
    expect(reproCommand('direct', 5, { propertyRuns: 20 })).toBe(demoCommand('direct', stackRequest('direct', 5)));
  });

  it('shards split the seed range: N machines cover every seed once', () => {
    const seen: number[] = [];
    for (let i = 1; i <= 3; i++) for (let k = 0; k < 5; k++) seen.push(shardSeed(1000, i, 3, k));
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 15 }, (_, j) => 1000 + j));
    expect(shardSeed(1000, 1, 1, 4)).toBe(1004);
  });

  it('--only takes names, prefixes and groups', () => {
    expect(selectTasks('nvme')).toEqual({ tasks: ['nvme'] });
    expect(selectTasks('iommu-dma')).toEqual({ tasks: ['iommu-dma/iova-domain', 'iommu-dma/iova-kernel-walk', 'iommu-dma/unmanaged-domain'] });
    expect(selectTasks('properties, direct')).toEqual({ tasks: ['direct', ...PROPERTY_TASKS] });
    expect(selectTasks('stacks')).toEqual({ tasks: STACKS.map((s) => s.name) });
    expect(selectTasks('nv')).toEqual({ error: expect.stringMatching(/^--only: no task called 'nv'/) as unknown });
  });

  it('Choices depend on the seed and the salt only', () => {
    const a = new Choices(12345, 'nvme');
    const xs = Array.from({ length: 8 }, () => a.next());
    const b = new Choices(12345, 'nvme');
    expect(Array.from({ length: 8 }, () => b.next())).toEqual(xs);
    const c = new Choices(12346, 'nvme');
    expect(Array.from({ length: 8 }, () => c.next())).not.toEqual(xs);
    const d = new Choices(7, 'x');
    for (let i = 0; i < 1000; i++) {
      const n = d.logInt(16, 4096);
      expect(n).toBeGreaterThanOrEqual(16);
      expect(n).toBeLessThanOrEqual(4096);
    }
  });

  it('getStack knows every stack the plan names', () => {
    for (const t of TASKS.filter((x) => !x.includes('/'))) expect(getStack(t)).toBeDefined();
  });
});
