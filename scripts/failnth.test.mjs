// `pnpm failnth` (scripts/failnth.mjs): nonsense arguments get a one-line error and exit 2; a
// sweep of the smallest stack prints its table and exits 0. Runs in `pnpm lint` (vitest run --dir scripts).
/* global process, URL -- a Node test */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseFailNthArgs } from './failnth-args.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NAMES = ['direct', 'nvme', 'rdma-odp'];

function failnth(args) {
  return spawnSync(process.execPath, ['--conditions=@dmakit/source', '--import', 'tsx', 'scripts/failnth.mjs', ...args], { cwd: ROOT, encoding: 'utf8' });
}

describe('pnpm failnth arguments', () => {
  it('parses --stack, --max-runs and --seed (also as --name=value), with defaults', () => {
    expect(parseFailNthArgs([], NAMES)).toEqual({ stacks: NAMES, maxRuns: undefined, seed: 1 });
    expect(parseFailNthArgs(['--stack', 'nvme', '--max-runs', '50', '--seed', '7'], NAMES)).toEqual({ stacks: ['nvme'], maxRuns: 50, seed: 7 });
    expect(parseFailNthArgs(['--stack=all', '--max-runs=1', '--seed=0'], NAMES)).toEqual({ stacks: NAMES, maxRuns: 1, seed: 0 });
    expect(parseFailNthArgs(['--help'], NAMES)).toEqual({ help: true });
  });

  it.each([
    [['--stack', 'nope'], /--stack must be one of direct, nvme, rdma-odp or all, got 'nope'/],
    [['--stack'], /--stack needs a value/],
    [['--max-runs', '0'], /--max-runs must be an integer/],
    [['--max-runs', '-2'], /--max-runs must be an integer/],
    [['--max-runs', '1.5'], /--max-runs must be an integer/],
    [['--max-runs', 'many'], /--max-runs must be an integer/],
    [['--seed', '4294967296'], /--seed must be an integer/],
    [['--max-runs', '--seed', '1'], /--max-runs needs a value/],
    [['--frobnicate'], /unknown argument '--frobnicate'/],
    [['nvme'], /unknown argument 'nvme'/],
  ])('rejects %j', (argv, message) => {
    const r = parseFailNthArgs(argv, NAMES);
    expect(r).toHaveProperty('error');
    expect(r.error).toMatch(message);
  });

  it.each([[['--stack', 'nope']], [['--max-runs', 'x']], [['--bogus']], [['--seed']]])('exits 2 with one line on stderr for %j', (argv) => {
    const r = failnth(argv);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^pnpm failnth: /);
  }, 60_000);

  it('a sweep of the direct stack prints its table and exits 0', () => {
    const r = failnth(['--stack', 'direct']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/stack\s+sites\s+runs\s+clean\s+reported\s+leaks\s+corruptions\s+exceptions/);
    expect(r.stdout).toMatch(/^direct\s+7\s+7\s+7\s+\d+\s+0\s+0\s+0$/m);
  }, 60_000);
});
