import { defineConfig } from 'vitest/config';

/** Browser tests (pnpm test:browser): Playwright (playwright-core) driving Debian's chromium against dist/. */
export default defineConfig({
  test: {
    include: ['test/browser/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
