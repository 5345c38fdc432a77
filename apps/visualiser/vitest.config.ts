import { defineConfig } from 'vitest/config';
import { sharedConfig } from '../../vitest.shared.js';

/** Unit tests only (node); the browser suite has its own config (vitest.browser.config.ts, pnpm test:browser). */
export default defineConfig({
  ...sharedConfig,
  test: { ...sharedConfig.test, include: ['src/**/*.test.ts', 'scripts/**/*.test.ts'] },
});
