// The soak's worker thread (tinypool loads this file in every thread of the pool). tsx's
// `--import tsx` hook does not reach worker threads on Node 20, so each thread registers tsx
// through its API before importing the TypeScript task runner; the pool starts the threads with
// `--conditions=@dmakit/source`, so every @dmakit package resolves to its src (no build, never a
// stale dist), exactly as the tests and `pnpm demo` do.
import { register } from 'tsx/esm/api';

register();
const { runSoakTask } = await import('./task.ts');

export default runSoakTask;
