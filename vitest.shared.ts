import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const packagesDir = fileURLToPath(new URL('./packages/', import.meta.url));

/**
 * Shared vitest settings: tests run from source, so `@dmakit/<pkg>` resolves to
 * `packages/<pkg>/src/index.ts` without a build (published consumers get `dist`).
 */
export const sharedConfig = defineConfig({
  resolve: {
    // @dmakit/testkit (tools/testkit, never built) resolves through its package.json exports.
    alias: [{ find: /^@dmakit\/(?!testkit$)([a-z0-9-]+)$/, replacement: `${packagesDir}$1/src/index.ts` }],
  },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    environment: 'node',
    pool: 'threads',
    testTimeout: 60_000,
  },
});
