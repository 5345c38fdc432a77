import { describe, expect, it } from 'vitest';
import { parseSoakArgs } from './args.js';

describe('pnpm soak arguments', () => {
  it('defaults: one minute, workers from the machine, a fresh seed-start, shard 1/1', () => {
    expect(parseSoakArgs([])).toEqual({
      minutes: 1,
      workers: undefined,
      seedStart: undefined,
      shard: { index: 1, count: 1 },
      only: undefined,
      runs: undefined,
      recheck: 8,
      propertyRuns: 20,
      timeoutSeconds: 300,
      replay: undefined,
    });
  });

  it('parses every option, also as --name=value', () => {
    expect(parseSoakArgs(['--minutes', '2.5', '--workers=2', '--seed-start', '4000000000', '--shard', '3/4', '--only', 'nvme,properties', '--runs', '10', '--recheck', '0', '--property-runs', '5', '--timeout-seconds', '30'])).toEqual({
      minutes: 2.5,
      workers: 2,
      seedStart: 4_000_000_000,
      shard: { index: 3, count: 4 },
      only: 'nvme,properties',
      runs: 10,
      recheck: 0,
      propertyRuns: 5,
      timeoutSeconds: 30,
      replay: undefined,
    });
    expect(parseSoakArgs(['--replay', 'nvme', '--seed', '42'])).toMatchObject({ replay: { task: 'nvme', seed: 42 } });
    expect(parseSoakArgs(['--help'])).toEqual({ help: true });
  });

  it.each([
    [['--minutes', '0'], /--minutes must be a number greater than 0/],
    [['--minutes', '-1'], /--minutes must be a number/],
    [['--minutes', 'abc'], /--minutes must be a number/],
    [['--minutes', '1e3'], /--minutes must be a number/],
    [['--minutes', '99999'], /--minutes must be a number/],
    [['--workers', '0'], /--workers must be an integer 1\.\.256/],
    [['--workers', '1.5'], /--workers must be an integer/],
    [['--seed-start', '4294967296'], /--seed-start must be an integer 0\.\.4294967295/],
    [['--seed-start', '-3'], /--seed-start must be an integer/],
    [['--shard', '0/2'], /--shard must be I\/N/],
    [['--shard', '3/2'], /--shard must be I\/N/],
    [['--shard', '2'], /--shard must be I\/N/],
    [['--runs', '0'], /--runs must be an integer/],
    [['--property-runs', 'x'], /--property-runs must be an integer/],
    [['--timeout-seconds', '0'], /--timeout-seconds must be an integer/],
    [['--workers'], /--workers needs a value/],
    [['--workers', '--minutes', '1'], /--workers needs a value/],
    [['--workers', '2', '--workers', '3'], /--workers given twice/],
    [['--frobnicate'], /unknown argument '--frobnicate'/],
    [['nvme'], /unknown argument 'nvme'/],
    [['--replay', 'nvme'], /--replay needs --seed/],
    [['--replay', 'nvme', '--seed', '1', '--workers', '2'], /--workers does not apply/],
    [['--seed', '1'], /--seed goes with --replay/],
  ])('rejects %j with one line', (argv, message) => {
    const r = parseSoakArgs(argv);
    expect(r).toHaveProperty('error');
    const error = (r as { error: string }).error;
    expect(error).toMatch(message);
    expect(error).toMatch(/^pnpm soak: /);
    expect(error).not.toContain('\n');
  });
});
