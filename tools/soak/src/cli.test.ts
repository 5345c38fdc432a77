// `pnpm soak` end to end, as a child process (the way scripts/fuzz.test.mjs tests `pnpm fuzz`):
// nonsense arguments get one line and exit 2; a short run prints the table and exits 0; a run that
// fails prints the command that reproduces it and exits 1.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

function soak(args: readonly string[]) {
  return spawnSync(process.execPath, ['--conditions=@dmakit/source', '--import', 'tsx', 'tools/soak/src/cli.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 170_000 });
}

describe('pnpm soak', () => {
  it.each([[['--minutes', '-1']], [['--workers', 'abc']], [['--bogus']], [['--shard', '5/4']], [['--only', 'nope']], [['--replay', 'nope', '--seed', '1']]])('exits 2 with one line on stderr for %j', (argv) => {
    const r = soak(argv);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^pnpm soak: /);
  }, 180_000);

  it('a short run over two workers prints the table and exits 0', () => {
    const args = ['--runs', '6', '--workers', '2', '--seed-start', '40', '--only', 'direct,gpu-svm,dma-core/dma-debug-balanced', '--property-runs', '3'];
    const r = soak(args);
    expect(r.stderr).not.toContain('FAIL'); // progress lines only (every 15 s: stderr is not a terminal)
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^soak: 3 tasks, 2 workers, 1 min or 6 runs, seed-start 40,/);
    expect(r.stdout).toMatch(/^task +runs +failures +slowest seed +slowest +mean$/m);
    expect(r.stdout).toMatch(/^direct +2 +0 +4[01] /m);
    expect(r.stdout).toMatch(/^gpu-svm +2 +0 +4[01] /m);
    expect(r.stdout).toMatch(/^total +6 +0$/m);
    expect(r.stdout).toMatch(/^6 runs in [\d.]+ s: \d+ runs per minute on 2 workers; seeds 40\.\.41, 2 full rounds$/m);
    expect(r.stdout).toMatch(/^ok: no failure$/m);
  }, 180_000);

  it('a failing run prints what failed and the command that reproduces it, and exits 1', () => {
    // 5,000 fast-check runs of the DMA API model take far longer than the 1 s allowed: a timeout.
    const r = soak(['--runs', '1', '--workers', '1', '--seed-start', '7', '--only', 'dma-core/dma-api', '--property-runs', '5000', '--timeout-seconds', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('FAIL dma-core/dma-api seed 7 (timeout): no result after 1 s (the worker was terminated)\n  reproduce: pnpm soak --replay dma-core/dma-api --seed 7 --property-runs 5000\n');
    expect(r.stdout).toMatch(/^dma-core\/dma-api +1 +1 /m);
    expect(r.stdout).toMatch(/^1 failure:\nFAIL dma-core\/dma-api seed 7 \(timeout\)/m);
  }, 180_000);

  it('--replay runs one seed in-process and prints the stack result', () => {
    const r = soak(['--replay', 'direct', '--seed', '5']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^replay direct seed 5: pnpm demo direct --seed 5 --iommu \w+\n/);
    expect(r.stdout).toContain('"verified": true');
    expect(r.stdout).toMatch(/^ok in \d+ ms$/m);
  }, 180_000);
});
