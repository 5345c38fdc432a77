import { defineConfig } from 'vitest/config';

/**
 * The one mapping from a package name to its sources: every workspace package's `exports` entry
 * starts with the custom condition `@dmakit/source` (pointing at `./src/index.ts`), before `types`
 * and `import`, which point at `dist`. Whoever sets the condition runs from source without a build;
 * whoever does not (a published consumer, `node apps/demo/dist/cli.js`) gets `dist`.
 *   - vitest (here): `ssr.resolve.conditions` for the node-environment tests (vitest also passes it
 *     to its workers as `--conditions`), `resolve.conditions` for anything resolved client-side;
 *   - tsx (`pnpm demo`, the benchmarks, scripts): `node --conditions=@dmakit/source --import tsx`;
 *   - Vite (the visualiser, apps/visualiser/vite.config.ts): `resolve.conditions`;
 *   - TypeScript: `customConditions` in tsconfig.base.json, so the editor and tests see sources,
 *     while `tsc -b` swaps a referenced package's sources for its declarations (project references).
 * Setting `conditions` replaces Vite's defaults, so they are repeated here (Vite's
 * defaultServerConditions / defaultClientConditions; vite is not a root dependency to import them from).
 */
export const SOURCE_CONDITION = '@dmakit/source';

export const sharedConfig = defineConfig({
  resolve: { conditions: [SOURCE_CONDITION, 'module', 'browser', 'development|production'] },
  ssr: { resolve: { conditions: [SOURCE_CONDITION, 'module', 'node', 'development|production'] } },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    environment: 'node',
    pool: 'threads',
    testTimeout: 60_000,
  },
});
