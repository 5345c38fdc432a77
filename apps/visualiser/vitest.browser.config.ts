import { defineConfig } from 'vitest/config';
import { sharedConfig } from '../../vitest.shared.js';

/**
 * Browser tests (pnpm test:browser): Playwright (playwright-core) driving Debian's chromium against
 * dist/. `@dmakit/*` resolves to the packages' sources (as in every vitest run) so the tests can
 * call the CLI's main() for the --json numbers they compare with.
 */
export default defineConfig({
  ...sharedConfig,
  test: {
    include: ['test/browser/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
