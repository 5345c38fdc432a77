// `pnpm fuzz` (scripts/fuzz.mjs): nonsense arguments get a one-line error and exit 2; a short run
// prints the summary and exits 0. Runs in `pnpm lint` (vitest run --dir scripts).
/* global process, URL -- a Node test */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseFuzzArgs } from './fuzz-args.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function fuzz(args) {
  return spawnSync(process.execPath, ['--conditions=@dmakit/source', '--import', 'tsx', 'scripts/fuzz.mjs', ...args], { cwd: ROOT, encoding: 'utf8' });
}

describe('pnpm fuzz arguments', () => {
  it('parses --commands and --seed (also as --name=value), with defaults', () => {
    expect(parseFuzzArgs([])).toEqual({ commands: 100_000, seed: 1 });
    expect(parseFuzzArgs(['--commands', '500', '--seed', '42'])).toEqual({ commands: 500, seed: 42 });
    expect(parseFuzzArgs(['--seed=0', '--commands=1'])).toEqual({ commands: 1, seed: 0 });
  });

  it.each([
    [['--commands', '-1'], /--commands must be an integer/],
    [['--commands', 'abc'], /--commands must be an integer/],
    [['--commands', '0'], /--commands must be an integer/],
    [['--commands', '1.5'], /--commands must be an integer/],
    [['--seed', '4294967296'], /--seed must be an integer/],
    [['--seed', '-3'], /--seed must be an integer/],
    [['--seed'], /--seed needs a value/],
    [['--commands', '--seed', '1'], /--commands needs a value/],
    [['--frobnicate'], /unknown argument '--frobnicate'/],
    [['100'], /unknown argument '100'/],
  ])('rejects %j', (argv, message) => {
    const r = parseFuzzArgs(argv);
    expect(r).toHaveProperty('error');
    expect(r.error).toMatch(message);
  });

  it.each([[['--commands', '-1']], [['--commands', 'abc']], [['--bogus']], [['--seed']]])('exits 2 with one line on stderr for %j', (argv) => {
    const r = fuzz(argv);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^pnpm fuzz: /);
  });

  it('a short run prints the summary and exits 0', () => {
    const r = fuzz(['--commands', '300', '--seed', '4']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^commands +\d+$/m);
    expect(r.stdout).toMatch(/^resets +\d+$/m);
    expect(r.stdout).toMatch(/^fatal \(CFS\) +\d+ +\(probes: \d+/m);
    expect(r.stdout).toMatch(/^ok: /m);
  }, 30_000);
});
