import { describe, expect, it } from 'vitest';
import type { Machine } from '@dmakit/dma-core';
import { getStack, STACKS, StackUsageError } from './index.js';
import type { StackName, StackRunRequest } from './index.js';
import { runGpuSvmStack } from './gpuSvm.js';

/** A small run of each stack (a few seconds in all). */
const SMALL: Readonly<Record<StackName, Omit<StackRunRequest, 'seed'>>> = {
  direct: { iommu: 'lazy' },
  nvme: { size: 150, verify: true, extra: { bs: '3k', qd: 8 } },
  'rdma-odp': { size: 4, extra: { rounds: 1 } },
  'vfio-migration': { size: 8, mapping: 'iova' },
  'dmabuf-p2p': { size: 1 },
  'gpu-svm': { size: 64 },
  'cc-guest': { size: 16, extra: { qd: 4 } },
};

/** The result as JSON without wall-clock fields (wallMs, wallIops: the only non-deterministic ones). */
function stable(result: unknown): string {
  return JSON.stringify(result, (k, v: unknown) => (k.startsWith('wall') ? undefined : v));
}

function stack(name: string) {
  const s = getStack(name);
  if (s === undefined) throw new Error(`no stack ${name}`);
  return s;
}

describe('the stack registry', () => {
  it('lists every stack once, with a consistent description', () => {
    expect(STACKS.map((s) => s.name).sort()).toEqual(['cc-guest', 'direct', 'dmabuf-p2p', 'gpu-svm', 'nvme', 'rdma-odp', 'vfio-migration']);
    expect(getStack('no-such-stack')).toBeUndefined();
    for (const s of STACKS) {
      expect(getStack(s.name)).toBe(s);
      expect(s.iommuModes).toContain(s.defaultIommu);
      expect(s.mappings.length).toBeGreaterThan(0);
      expect(s.size.min).toBeLessThanOrEqual(s.size.default);
      expect(s.size.default).toBeLessThanOrEqual(s.size.max);
      expect(s.summary).not.toContain('\n');
      expect(s.help.endsWith('\n')).toBe(true);
      expect(new Set(s.options.map((o) => o.key)).size).toBe(s.options.length);
    }
  });

  for (const s of STACKS) {
    it(`${s.name}: run({seed}) at a small size verifies, reports its machines and its progress`, () => {
      const machines: string[] = [];
      const progress: [number, number][] = [];
      const r = stack(s.name).run({
        seed: 3,
        ...SMALL[s.name],
        onMachine: (m: Machine, role) => {
          expect(m.clock.now()).toBe(0);
          machines.push(role);
        },
        onProgress: (done, total) => progress.push([done, total]),
      });
      expect(r.verified).toBe(true);
      expect(machines.length).toBeGreaterThan(0);
      expect(progress.length).toBeGreaterThan(0);
      expect(progress.length).toBeLessThanOrEqual(110);
      const total = progress[0]?.[1] ?? 0;
      for (const [d, t] of progress) {
        expect(t).toBe(total);
        expect(d).toBeGreaterThan(0);
        expect(d).toBeLessThanOrEqual(t);
      }
      expect(progress.at(-1)?.[0]).toBe(total);
      expect(s.format(r)).toContain(s.name === 'direct' ? 'direct' : s.name.split('-')[0]);
    });
  }

  it('the same seed gives the same JSON (nvme: another seed gives another)', () => {
    for (const name of ['nvme', 'gpu-svm', 'dmabuf-p2p'] as const) {
      const a = stable(stack(name).run({ seed: 5, ...SMALL[name] }));
      const b = stable(stack(name).run({ seed: 5, ...SMALL[name] }));
      expect(b).toBe(a);
    }
    // gpu-svm's result is counts only (the same for any seed); nvme's depends on the seed.
    expect(stable(stack('nvme').run({ seed: 6, ...SMALL.nvme }))).not.toBe(stable(stack('nvme').run({ seed: 5, ...SMALL.nvme })));
  });

  it('returns what the stack function returns for the same inputs (the CLI --json object)', () => {
    const viaRegistry = stack('gpu-svm').run({ seed: 9, size: 64 });
    expect(stable(viaRegistry)).toBe(stable(runGpuSvmStack({ seed: 9, pages: 64 })));
  });

  it('nvme: --compare runs strict, lazy and off on three machines; --premapped on six', () => {
    const roles: string[] = [];
    const r = stack('nvme').run({ seed: 1, size: 40, extra: { compare: true }, onMachine: (_m, role) => roles.push(role) });
    expect(roles).toEqual(['strict', 'lazy', 'off']);
    expect(r.verified).toBe(true);
    roles.length = 0;
    const p = stack('nvme').run({ seed: 1, size: 40, extra: { premapped: true }, onMachine: (_m, role) => roles.push(role) });
    expect(roles).toHaveLength(6);
    expect(p.verified).toBe(true);
  });

  const bad: [string, StackRunRequest, RegExp][] = [
    ['direct', { seed: -1 }, /^--seed must be a non-negative integer, got -1$/],
    ['direct', { seed: 1.5 }, /--seed/],
    ['direct', { seed: 1, iommu: 'bogus' as 'off' }, /^--iommu must be strict, lazy or off/],
    ['direct', { seed: 1, size: 2 }, /fixed workload/],
    ['vfio-migration', { seed: 1, iommu: 'off' }, /vfio-migration does not run with --iommu off/],
    ['vfio-migration', { seed: 1, size: 12 }, /multiple of 8/],
    ['gpu-svm', { seed: 1, mapping: 'legacy' }, /only the iova mapping path/],
    ['gpu-svm', { seed: 1, size: 8 }, /from 16 to 16384/],
    ['dmabuf-p2p', { seed: 1, size: 33 }, /from 1 to 32/],
    ['rdma-odp', { seed: 1, size: 2 }, /^--mr-mib .* from 4 to 1024, got 2$/],
    ['rdma-odp', { seed: 1, extra: { rounds: '-1' } }, /^--rounds must be an integer/],
    ['rdma-odp', { seed: 1, extra: { qd: 4 } }, /rdma-odp takes no option --qd/],
    ['nvme', { seed: 1, size: 0 }, /^--ios .* got 0$/],
    ['nvme', { seed: 1, extra: { bs: '3000' } }, /^--bs must be a multiple of 512/],
    ['nvme', { seed: 1, extra: { bs: '2m' } }, /^--bs must be a multiple of 512 .* from 512 to 1m/],
    ['nvme', { seed: 1, extra: { bs: 'big' } }, /^--bs/],
    ['nvme', { seed: 1, extra: { qd: 0 } }, /^--qd must be an integer from 1 to 1023, got 0$/],
    ['nvme', { seed: 1, extra: { qd: '1024' } }, /^--qd/],
    ['nvme', { seed: 1, extra: { rw: 'sideways' } }, /^--rw must be one of/],
    ['nvme', { seed: 1, extra: { compare: true, premapped: true } }, /^--compare and --premapped cannot be used together/],
    ['nvme', { seed: 1, iommu: 'strict', extra: { compare: true } }, /^--compare and --iommu cannot be used together/],
    ['nvme', { seed: 1, mapping: 'legacy', extra: { premapped: true } }, /^--premapped and --mapping cannot be used together/],
    ['nvme', { seed: 1, extra: { premapped: true, bs: '4k' } }, /^--premapped and --bs cannot be used together/],
    ['nvme', { seed: 1, extra: { compare: 'yes' } }, /--compare is a switch/],
  ];
  for (const [name, req, msg] of bad) {
    it(`${name} ${JSON.stringify(req)}: StackUsageError before any work`, () => {
      let machines = 0;
      const s = stack(name);
      const go = (): unknown => s.run({ ...req, onMachine: () => machines++ });
      expect(go).toThrow(StackUsageError);
      expect(go).toThrow(msg);
      expect(() => {
        s.validate(req);
      }).toThrow(StackUsageError);
      expect(machines).toBe(0);
      try {
        go();
      } catch (e) {
        expect((e as Error).message).not.toContain('\n');
      }
    });
  }
});
