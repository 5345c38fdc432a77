/**
 * What the soak runs: every demo stack (apps/demo/src/stacks, through the registry) with options
 * drawn from the seed, and the packages' model-checking properties (their `src/testing/
 * properties.ts`) with fast-check seeded by it. Pure and deterministic: the same task name and
 * seed always give the same stack request, the same `pnpm demo` command and the same fast-check
 * run, whichever worker or machine runs it.
 */
import { getStack, STACKS } from '@dmakit/demo/stacks';
import type { IommuMode, MappingPath, StackInfo, StackRunRequest } from '@dmakit/demo/stacks';

/** The property tasks, by the name `--only` and `--replay` take (the worker maps each to its property). */
export const PROPERTY_TASKS = [
  'dma-core/dma-api',
  'dma-core/dma-debug-balanced',
  'dma-core/dma-debug-iova-link',
  'iommu-dma/iova-domain',
  'iommu-dma/iova-kernel-walk',
  'iommu-dma/unmanaged-domain',
  'hmm/mirror',
] as const;
export type PropertyTaskName = (typeof PROPERTY_TASKS)[number];

/** Every task: the stacks in the registry's order, then the properties. */
export const TASKS: readonly string[] = Object.freeze([...STACKS.map((s) => s.name), ...PROPERTY_TASKS]);

export function isPropertyTask(name: string): name is PropertyTaskName {
  return (PROPERTY_TASKS as readonly string[]).includes(name);
}

/**
 * A small counter-based generator (splitmix32 over the seed and a per-stack salt): option choices
 * depend only on (stack, seed), never on the order tasks ran in.
 */
export class Choices {
  private state: number;

  constructor(seed: number, salt: string) {
    let h = 0x9e3779b9 ^ (seed >>> 0) ^ Math.floor(seed / 2 ** 32);
    for (let i = 0; i < salt.length; i++) h = Math.imul(h ^ salt.charCodeAt(i), 0x01000193);
    this.state = h >>> 0;
  }

  /** Uniform in [0, 2^32). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  }

  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + (this.next() % (max - min + 1));
  }

  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('Choices.pick: empty list');
    return xs[this.next() % xs.length] as T;
  }

  /** True with probability 1/n. */
  oneIn(n: number): boolean {
    return this.next() % n === 0;
  }

  /** Log-uniform integer in [min, max] (small sizes as often as large ones). */
  logInt(min: number, max: number): number {
    const lo = Math.log(min);
    const hi = Math.log(max + 1);
    return Math.min(max, Math.floor(Math.exp(lo + ((hi - lo) * this.next()) / 2 ** 32)));
  }
}

type Variant = Omit<StackRunRequest, 'seed' | 'onMachine' | 'onProgress'>;
type Extra = Record<string, string | number | boolean>;

function clampSize(info: StackInfo, n: number): number {
  return Math.max(info.size.min, Math.min(info.size.max, n));
}

/** The stack-independent part: an IOMMU mode and a mapping path the stack accepts. */
function common(info: StackInfo, c: Choices): { iommu: IommuMode; mapping?: MappingPath } {
  const iommu = c.pick(info.iommuModes);
  // comparesMappings stacks (vfio-migration) also run with no path given: every path, compared.
  const paths: readonly (MappingPath | undefined)[] = info.comparesMappings ? [...info.mappings, undefined] : info.mappings;
  const mapping = paths.length > 1 ? c.pick(paths) : undefined;
  return mapping === undefined ? { iommu } : { iommu, mapping };
}

/**
 * Per-stack option choices. Sizes lean small (more seeds per minute) but reach the defaults; every
 * stack-specific option the CLI takes is varied where it changes what the stack does.
 */
const VARIANTS: Readonly<Record<string, (info: StackInfo, c: Choices) => Variant>> = {
  direct: (info, c) => ({ iommu: c.pick(info.iommuModes) }),
  nvme: (info, c) => {
    const qd = c.pick([1, 2, 3, 8, 16, 32, 64, 256, 1023]);
    if (c.oneIn(8)) {
      // --premapped: 4 KiB random reads into a pre-mapped dma-buf under every IOMMU mode.
      return { size: c.logInt(16, 2000), verify: true, extra: { premapped: true, qd } };
    }
    const bs = c.pick(['512', '1536', '4k', '8k', '60k', '128k', '1m', 'mixed', 'mixed']);
    const ios = clampSize(info, bs === '1m' ? c.logInt(1, 300) : c.logInt(1, 2000));
    const extra: Extra = { qd, bs, rw: c.pick(['randrw', 'randread', 'randwrite', 'rw', 'read', 'write']) };
    if (ios > 1 && c.oneIn(4)) extra.resetAfter = c.int(1, ios - 1);
    return { ...common(info, c), size: ios, verify: true, extra };
  },
  'rdma-odp': (info, c) => {
    const extra: Extra = { rounds: c.int(0, 8) };
    if (c.oneIn(3)) extra.implicit = true;
    return { ...common(info, c), size: clampSize(info, c.pick([4, 4, 8, 16, 32])), extra };
  },
  'vfio-migration': (info, c) => ({ ...common(info, c), size: clampSize(info, c.pick([8, 8, 16, 24, 32])) }),
  'dmabuf-p2p': (info, c) => ({ ...common(info, c), size: clampSize(info, c.logInt(1, 8)) }),
  'gpu-svm': (info, c) => ({ ...common(info, c), size: clampSize(info, c.logInt(16, 4096)) }),
  'cc-guest': (info, c) => {
    const qd = c.int(1, 32);
    return { ...common(info, c), size: clampSize(info, c.logInt(4 * qd, 512)), extra: { qd, vendor: c.pick(['tdx', 'sev']) } };
  },
};

/** The request the soak runs stack `name` with for `seed` (throws for an unknown stack). */
export function stackRequest(name: string, seed: number): StackRunRequest {
  const info = getStack(name);
  if (info === undefined) throw new Error(`soak: unknown stack ${name}`);
  const c = new Choices(seed, name);
  const variant = VARIANTS[name]?.(info, c) ?? { ...common(info, c) };
  return { seed, ...variant };
}

/** Whether the soak has a variant table of its own for stack `name` (else: IOMMU mode and mapping path only). */
export function hasVariants(name: string): boolean {
  return VARIANTS[name] !== undefined;
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (ch) => `-${ch.toLowerCase()}`);
}

/** The `pnpm demo ...` command that runs exactly `req` on stack `name` (the CLI's flags, in a fixed order). */
export function demoCommand(name: string, req: StackRunRequest): string {
  const info = getStack(name);
  if (info === undefined) throw new Error(`soak: unknown stack ${name}`);
  const args = ['pnpm', 'demo', name, '--seed', String(req.seed)];
  if (req.iommu !== undefined) args.push('--iommu', req.iommu);
  if (req.mapping !== undefined) args.push('--mapping', req.mapping);
  if (req.size !== undefined) args.push(`--${info.size.option ?? 'size'}`, String(req.size));
  if (req.verify === true && info.verifyOption) args.push('--verify');
  for (const [key, value] of Object.entries(req.extra ?? {})) {
    const flag = info.options.find((o) => o.key === key)?.flag ?? kebab(key);
    if (value === true) args.push(`--${flag}`);
    else if (value !== false) args.push(`--${flag}`, String(value));
  }
  return args.join(' ');
}

/** Options of the soak run that a property task's replay command must repeat. */
export interface ReplayOptions {
  readonly propertyRuns: number;
}

/** The command that reproduces task `name` at `seed`: `pnpm demo ...` for a stack, `pnpm soak --replay ...` for a property. */
export function reproCommand(name: string, seed: number, opts: ReplayOptions): string {
  if (isPropertyTask(name)) return `pnpm soak --replay ${name} --seed ${seed} --property-runs ${opts.propertyRuns}`;
  return demoCommand(name, stackRequest(name, seed));
}

/**
 * The seeds one shard runs, in order: seedStart + (index - 1) + k * count for k = 0, 1, 2, ...
 * Shards 1..count of the same seedStart cover every seed exactly once between them, whatever
 * number of workers each machine runs.
 */
export function shardSeed(seedStart: number, index: number, count: number, k: number): number {
  return seedStart + (index - 1) + k * count;
}

/**
 * The tasks `--only` selects: comma-separated task names or prefixes ('nvme', 'dma-core/',
 * 'iommu-dma'), or the groups 'stacks' and 'properties'. Returns the names in TASKS order, or a
 * one-line error naming the first entry that matches nothing.
 */
export function selectTasks(only: string | undefined): { tasks: string[] } | { error: string } {
  if (only === undefined) return { tasks: [...TASKS] };
  const picked = new Set<string>();
  for (const raw of only.split(',')) {
    const want = raw.trim();
    const hits =
      want === 'stacks'
        ? TASKS.filter((t) => !isPropertyTask(t))
        : want === 'properties'
          ? TASKS.filter((t) => isPropertyTask(t))
          : TASKS.filter((t) => t === want || (want.length > 0 && t.startsWith(want.endsWith('/') ? want : `${want}/`)));
    if (hits.length === 0) return { error: `--only: no task called '${want}' (tasks: ${TASKS.join(', ')}; groups: stacks, properties)` };
    for (const h of hits) picked.add(h);
  }
  return { tasks: TASKS.filter((t) => picked.has(t)) };
}
