import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { benchChartsPlugin } from './scripts/chartsPlugin.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The page runs the stacks from source, like the tests do: `@dmakit/demo/stacks` is the demo's
 * platform-neutral registry and `@dmakit/<pkg>` each package's src/index.ts (vitest.shared.ts
 * resolves them the same way). Relative base: the built site works from any static server.
 */
export default defineConfig({
  base: './',
  resolve: {
    alias: [
      { find: /^@dmakit\/demo\/stacks$/, replacement: `${root}apps/demo/src/stacks/index.ts` },
      { find: /^@dmakit\/([a-z0-9-]+)$/, replacement: `${root}packages/$1/src/index.ts` },
    ],
  },
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
