// One flat config for the whole monorepo (typescript-eslint strict, type-checked).
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import vitest from '@vitest/eslint-plugin';

const SUBSYSTEMS = ['iommu-dma', 'hmm', 'rdma-umem-odp', 'vfio-mlx5', 'nvme-pci', 'block-rq-dma', 'dmabuf'];

/** The shared test kit (tools/testkit): for tests and a package's own test helpers, never for package code. */
const TESTKIT_ONLY_IN_TESTS = {
  regex: '^@dmakit/testkit$',
  message: '@dmakit/testkit is for tests only (*.test.ts and src/testing/); package code never imports it.',
};
/** Package tests import the package's public surface (DESIGN.md section 4), their own src/testing/ helpers or the kit. */
const TESTS_USE_PUBLIC_SURFACE = {
  regex: '^\\.{1,2}/(?!(\\.\\./)*(index\\.js$|testing/))',
  message: "A package test imports the package's surface (@dmakit/<pkg> or ./index.js) and test helpers (src/testing/, @dmakit/testkit), not internals; a pure helper's own unit test may, with a disable comment saying why.",
};
const NO_RELATIVE_REACH = { regex: '^\\.\\./\\.\\./', message: 'Do not reach into another package by relative path.' };
const TEST_HELPERS = (dir) => [`${dir}/src/**/*.test.ts`, `${dir}/src/testing/**/*.ts`];

/**
 * A subsystem package may import only @dmakit/dma-core (DESIGN.md section 1); its own tests import
 * its own surface, and may use @dmakit/testkit.
 */
const subsystemBoundary = SUBSYSTEMS.flatMap((pkg) => [
  {
    files: [`packages/${pkg}/src/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: `^@dmakit/(?!dma-core$|${pkg}$|testkit$)`,
              message: 'A subsystem package may import only @dmakit/dma-core; declare a contract in dma-core/src/contracts instead.',
            },
            TESTKIT_ONLY_IN_TESTS,
            NO_RELATIVE_REACH,
          ],
        },
      ],
    },
  },
  {
    files: TEST_HELPERS(`packages/${pkg}`),
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: `^@dmakit/(?!dma-core$|${pkg}$|testkit$)`,
              message: 'A subsystem test may import only @dmakit/dma-core, its own package and @dmakit/testkit.',
            },
            NO_RELATIVE_REACH,
          ],
        },
      ],
    },
  },
  {
    files: [`packages/${pkg}/src/**/*.test.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: `^@dmakit/(?!dma-core$|${pkg}$|testkit$)`,
              message: 'A subsystem test may import only @dmakit/dma-core, its own package and @dmakit/testkit.',
            },
            NO_RELATIVE_REACH,
            TESTS_USE_PUBLIC_SURFACE,
          ],
        },
      ],
    },
  },
]);

/** dma-core's tests: its own surface; not the kit (the kit depends on dma-core: a workspace cycle). */
const dmaCoreTests = {
  files: ['packages/dma-core/src/**/*.test.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          { regex: '^@dmakit/(?!dma-core$)', message: "dma-core's tests import only @dmakit/dma-core (@dmakit/testkit depends on dma-core)." },
          TESTS_USE_PUBLIC_SURFACE,
        ],
      },
    ],
  },
};

/**
 * Determinism (DESIGN.md, "Determinism"; issue #12 item 6): model code never reads wall time, host
 * timers or ambient randomness, so every run, trace and race replays from its seed. Package code
 * and the platform-neutral stacks are covered; tests, benchmarks (tools/bench), the CLI
 * (apps/demo/src/cli*), the visualiser's UI and tools are not. The stacks' one wall-clock read (the
 * `wallMs` a report prints) lives in apps/demo/src/stacks/wallClock.ts. scripts/determinism-rule.test.mjs
 * proves these rules fire.
 */
const DETERMINISM = 'Model code is deterministic: take time from the simulation clock (SimClock / EventScheduler, dma-core src/sim/clock.ts and src/sim/scheduler.ts) and randomness from the seeded Rng (dma-core src/sim/rng.ts); a stack\'s wall-clock figure comes from apps/demo/src/stacks/wallClock.ts.';
const DETERMINISM_FILES = ['packages/*/src/**/*.ts', 'apps/demo/src/stacks/**/*.ts'];
const DETERMINISM_EXEMPT = ['**/*.test.ts', '**/*.bench.ts', '**/*.testkit.ts', '**/*.testutil.ts', '**/src/testing/**'];
const determinismGlobals = ['setTimeout', 'setInterval', 'setImmediate', 'queueMicrotask', 'requestAnimationFrame'].map((name) => ({ name, message: DETERMINISM }));
const determinism = [
  {
    files: DETERMINISM_FILES,
    ignores: [...DETERMINISM_EXEMPT, 'apps/demo/src/stacks/wallClock.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        ...[
          ['Math', 'random'],
          ['Date', 'now'],
          ['performance', 'now'],
          ['process', 'hrtime'],
          ['crypto', 'getRandomValues'],
          ['crypto', 'randomUUID'],
          ['globalThis', 'performance'],
          ['globalThis', 'crypto'],
          ...determinismGlobals.map(({ name }) => ['globalThis', name]),
        ].map(([object, property]) => ({ object, property, message: DETERMINISM })),
      ],
      'no-restricted-syntax': [
        'error',
        { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: `new Date() reads wall time. ${DETERMINISM}` },
        { selector: "CallExpression[callee.name='Date']", message: `Date() reads wall time. ${DETERMINISM}` },
        { selector: 'ImportDeclaration[source.value=/^(node:)?(perf_hooks|timers|timers.promises|crypto)$/]', message: DETERMINISM },
      ],
    },
  },
  {
    files: ['packages/*/src/**/*.ts'],
    ignores: DETERMINISM_EXEMPT,
    rules: { 'no-restricted-globals': ['error', ...determinismGlobals] },
  },
];

/** apps/demo/src/stacks/ runs in the CLI and in the browser visualiser: no Node built-ins, no process, no Buffer. */
const PLATFORM_NEUTRAL = 'apps/demo/src/stacks/ is platform-neutral (the browser visualiser runs it): keep Node APIs and file output in the CLI (apps/demo/src/cli*).';
const platformNeutralStacks = {
  files: ['apps/demo/src/stacks/**/*.ts'],
  ignores: ['apps/demo/src/stacks/**/*.test.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          { regex: '^@dmakit/[^/]+/src', message: 'Import the package surface, not its src.' },
          { regex: `^(node:|(${builtinModules.filter((m) => !m.startsWith('_')).join('|')})(/|$))`, message: PLATFORM_NEUTRAL },
          { regex: '(^|/)cli(/|\\.|$)', message: PLATFORM_NEUTRAL },
          TESTKIT_ONLY_IN_TESTS,
        ],
      },
    ],
    'no-restricted-globals': ['error', { name: 'process', message: PLATFORM_NEUTRAL }, { name: 'Buffer', message: PLATFORM_NEUTRAL }, { name: 'require', message: PLATFORM_NEUTRAL }, ...determinismGlobals],
  },
};

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/coverage/**', '**/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-exports': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // Bit manipulation on addresses is the domain; these rules fight it.
      'no-bitwise': 'off',
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
      'no-restricted-imports': ['error', { patterns: [{ regex: '^@dmakit/[^/]+/src', message: 'Import the package surface, not its src.' }, TESTKIT_ONLY_IN_TESTS] }],
    },
  },
  {
    files: ['apps/**/*.test.ts', 'apps/*/test/**/*.ts', 'tools/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^@dmakit/[^/]+/src', message: 'Import the package surface, not its src.' }] }],
    },
  },
  ...subsystemBoundary,
  dmaCoreTests,
  platformNeutralStacks,
  ...determinism,
  /** Test files: @vitest/eslint-plugin's recommended rules (focused, skipped or expect-less tests, titles, ...). */
  {
    files: ['**/*.test.ts'],
    ...vitest.configs.recommended,
    rules: {
      ...vitest.configs.recommended.rules,
      // vitest's expect takes a message as its second argument.
      'vitest/valid-expect': ['error', { maxArgs: 2 }],
      // The model-checking tests (fast-check) assert per generated operation, inside the branch that
      // operation takes; the rule cannot tell those from an expect that might silently not run.
      // try/catch assertions use toThrow or expect.unreachable() instead.
      'vitest/no-conditional-expect': 'off',
      // fc.assert throws on a counterexample: a property whose checks live in a shared src/testing/
      // module (run by the tests and by `pnpm soak`) asserts through it.
      'vitest/expect-expect': ['error', { assertFunctionNames: ['expect', 'fc.assert'] }],
    },
  },
  {
    files: ['**/*.test.ts', '**/*.bench.ts', 'tools/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
