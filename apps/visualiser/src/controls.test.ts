import { describe, expect, it } from 'vitest';
import { ControlError, extraToCliArgs, pageDefaultSize, parseExtra, parseSeed, parseSize } from './controls.js';

const SIZE = { label: 'I/Os', unit: 'I/Os', default: 2000, min: 1, max: 10_000 };
const OPTS = [
  { key: 'rounds', flag: 'rounds', type: 'value' as const },
  { key: 'implicit', flag: 'implicit', type: 'boolean' as const },
  { key: 'resetAfter', flag: 'reset-after', type: 'value' as const },
];

describe('controls', () => {
  it('seed: a non-negative safe integer, else a ControlError naming the value', () => {
    expect(parseSeed('42')).toBe(42);
    expect(parseSeed(' 0 ')).toBe(0);
    for (const bad of ['abc', '1.5', '-1', '', '1e3', '99999999999999999999']) expect(() => parseSeed(bad)).toThrow(ControlError);
    expect(() => parseSeed('abc')).toThrow('Seed must be a non-negative integer, got "abc".');
  });

  it('size: an integer inside the stack’s range', () => {
    expect(parseSize('500', SIZE)).toBe(500);
    expect(() => parseSize('0', SIZE)).toThrow('I/Os must be in 1..10000 I/Os, got 0.');
    expect(() => parseSize('10001', SIZE)).toThrow(ControlError);
    expect(() => parseSize('12k', SIZE)).toThrow(/must be an integer/);
  });

  it('page default sizes never exceed the CLI default and stay in range', () => {
    expect(pageDefaultSize('nvme', SIZE)).toBe(500);
    expect(pageDefaultSize('gpu-svm', { default: 1024, min: 16, max: 16384 })).toBe(1024);
    expect(pageDefaultSize('rdma-odp', { default: 32, min: 8, max: 1024 })).toBe(8);
  });

  it('options: key=value and switches, by key or CLI flag; unknown or malformed ones refused; back to CLI arguments', () => {
    const extra = parseExtra('rounds=2 implicit --reset-after=100', OPTS);
    expect(extra).toEqual({ rounds: '2', implicit: true, resetAfter: '100' });
    expect(extraToCliArgs(extra, OPTS)).toEqual(['--rounds', '2', '--implicit', '--reset-after', '100']);
    expect(parseExtra('  ', OPTS)).toEqual({});
    expect(() => parseExtra('qd=4', OPTS)).toThrow(/Unknown option "qd"; this stack takes rounds=…, implicit, resetAfter=…/);
    expect(() => parseExtra('implicit=1', OPTS)).toThrow(/switch/);
    expect(() => parseExtra('rounds', OPTS)).toThrow(/needs a value/);
    expect(() => parseExtra('x', [])).toThrow(/takes none/);
  });
});
