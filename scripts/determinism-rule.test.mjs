// Proves eslint.config.js's determinism rules (issue #12 item 6) fire where they should and stay
// quiet where they should not, so they cannot silently rot (a renamed folder, a rule overridden by a
// later config block). Runs in `pnpm lint`: vitest run --dir scripts.
//
// The snippets are linted as if they lived at the given paths (ESLint's lintText with filePath),
// with type-aware rules switched off: the files do not exist, so no TypeScript project holds them.
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import tseslint from 'typescript-eslint';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const eslint = new ESLint({
  cwd: ROOT,
  overrideConfig: [{ files: ['**/*.ts'], ...tseslint.configs.disableTypeChecked }],
});

/** The determinism findings (rule id and message) for `code` linted as the file at `path`. */
async function findings(path, code) {
  const [result] = await eslint.lintText(code, { filePath: path });
  const fatal = result.messages.filter((m) => m.fatal === true);
  expect(fatal, `parse errors in the ${path} snippet`).toEqual([]);
  return result.messages
    .filter((m) => m.ruleId?.startsWith('no-restricted-') === true && m.ruleId !== 'no-restricted-imports')
    .map((m) => ({ rule: m.ruleId, message: m.message }));
}

const FORBIDDEN = [
  ['Math.random', 'export const x = Math.random();\n', 'no-restricted-properties'],
  ['Date.now', 'export const x = Date.now();\n', 'no-restricted-properties'],
  ['new Date()', 'export const x = new Date();\n', 'no-restricted-syntax'],
  ['Date()', 'export const x = Date();\n', 'no-restricted-syntax'],
  ['performance.now', 'export const x = performance.now();\n', 'no-restricted-properties'],
  ['globalThis.performance', 'export const x = globalThis.performance.now();\n', 'no-restricted-properties'],
  ['process.hrtime', 'export const x = process.hrtime.bigint();\n', 'no-restricted-properties'],
  ['setTimeout', 'setTimeout(() => undefined, 1);\n', 'no-restricted-globals'],
  ['setInterval', 'setInterval(() => undefined, 1);\n', 'no-restricted-globals'],
  ['setImmediate', 'setImmediate(() => undefined);\n', 'no-restricted-globals'],
  ['queueMicrotask', 'queueMicrotask(() => undefined);\n', 'no-restricted-globals'],
  ['globalThis.setTimeout', 'globalThis.setTimeout(() => undefined, 1);\n', 'no-restricted-properties'],
  ['crypto.getRandomValues', 'export const x = crypto.getRandomValues(new Uint8Array(4));\n', 'no-restricted-properties'],
  ['crypto.randomUUID', 'export const x = crypto.randomUUID();\n', 'no-restricted-properties'],
  ["import from 'node:crypto'", "import { randomBytes } from 'node:crypto';\nexport const x = randomBytes(4);\n", 'no-restricted-syntax'],
  ["import from 'node:perf_hooks'", "import { performance as p } from 'node:perf_hooks';\nexport const x = p.now();\n", 'no-restricted-syntax'],
  ["import from 'node:timers/promises'", "import { setTimeout as sleep } from 'node:timers/promises';\nawait sleep(1);\n", 'no-restricted-syntax'],
];

describe('determinism rule: package code', () => {
  for (const [what, code, rule] of FORBIDDEN) {
    it(`forbids ${what} in packages/*/src and names the seeded RNG and the simulation clock`, async () => {
      const got = await findings('packages/nvme-pci/src/host/snippet.ts', code);
      expect(got.map((f) => f.rule)).toContain(rule);
      for (const f of got) {
        expect(f.message).toContain('src/sim/rng.ts');
        expect(f.message).toContain('simulation clock');
      }
    });
  }

  it('forbids it in every package, dma-core included', async () => {
    for (const pkg of ['dma-core', 'iommu-dma', 'hmm', 'rdma-umem-odp', 'vfio-mlx5', 'nvme-pci', 'block-rq-dma', 'dmabuf']) {
      expect(await findings(`packages/${pkg}/src/snippet.ts`, 'export const x = Math.random();\n'), pkg).toHaveLength(1);
    }
  });

  it('leaves deterministic code alone: the seeded Rng, the simulation clock, Date arithmetic on given values', async () => {
    const code = [
      "import { Rng, SimClock } from '@dmakit/dma-core';",
      'const rng = new Rng(7);',
      'const clock = new SimClock();',
      'export const x = rng.nextU32() + clock.now + Math.imul(3, 5) + new Date(0).getTime() + Date.UTC(2020, 0);',
      '',
    ].join('\n');
    expect(await findings('packages/hmm/src/snippet.ts', code)).toEqual([]);
  });
});

describe('determinism rule: the stacks', () => {
  it('forbids wall time and timers in apps/demo/src/stacks, and keeps the platform-neutral rule', async () => {
    const code = 'export const x = performance.now() + Date.now();\nsetTimeout(() => undefined, 1);\nexport const y = process.argv;\n';
    const got = await findings('apps/demo/src/stacks/snippet.ts', code);
    expect(got.map((f) => f.rule).sort()).toEqual(['no-restricted-globals', 'no-restricted-globals', 'no-restricted-properties', 'no-restricted-properties']);
    expect(got.some((f) => f.message.includes('platform-neutral'))).toBe(true);
  });

  it('lets wallClock.ts, and only it, read the wall clock for the report', async () => {
    expect(await findings('apps/demo/src/stacks/wallClock.ts', 'export const x = performance.now();\n')).toEqual([]);
    expect(await findings('apps/demo/src/stacks/wallClock.ts', 'setTimeout(() => undefined, 1);\n')).toHaveLength(1);
  });
});

describe('determinism rule: exempt places', () => {
  const WALL_TIME = 'export const x = Math.random() + Date.now() + performance.now() + new Date().getTime();\nsetTimeout(() => undefined, 1);\n';
  for (const path of [
    'packages/nvme-pci/src/host/nvmeDev.test.ts',
    'packages/dma-core/src/sim/clock.bench.ts',
    'packages/dma-core/src/testing/rig.ts',
    'tools/bench/src/run.ts',
    'tools/release-check/src/registry.ts',
    'apps/demo/src/cli.ts',
    'apps/demo/src/cli/progress.ts',
    'apps/demo/src/stacks/nvme.e2e.test.ts',
    'apps/visualiser/src/main.ts',
  ]) {
    it(`allows wall time and timers in ${path}`, async () => {
      expect(await findings(path, WALL_TIME)).toEqual([]);
    });
  }
});
