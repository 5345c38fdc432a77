import { fileURLToPath } from 'node:url';
import { defaultClientConditions, defineConfig } from 'vite';
import { benchChartsPlugin } from './scripts/chartsPlugin.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The page runs the stacks from source, like the tests do: every workspace package's `exports`
 * starts with the `@dmakit/source` condition (its src), which Vite picks before `import` (dist), for
 * `@dmakit/demo/stacks` (the demo's platform-neutral registry) and each `@dmakit/<pkg>` alike; see
 * vitest.shared.ts. Relative base: the built site works from any static server.
 */
export default defineConfig({
  base: './',
  resolve: { conditions: ['@dmakit/source', ...defaultClientConditions] },
  plugins: [benchChartsPlugin(`${root}tools/bench/results/charts`)],
  worker: { format: 'es' },
  build: {
    target: 'es2022',
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      input: {
        index: fileURLToPath(new URL('./index.html', import.meta.url)),
        claims: fileURLToPath(new URL('./claims.html', import.meta.url)),
      },
    },
  },
  server: { port: 5173, strictPort: false },
});
