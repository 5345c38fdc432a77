import { describe, expect, it } from 'vitest';
import { deterministicJson, describeError, firstDifference, leftovers, runSoakTask, whereUnverified } from './task.js';

describe('one soak run', () => {
  it('a stack run verifies, leaves nothing behind and repeats itself (recheck)', () => {
    const r = runSoakTask({ name: 'gpu-svm', seed: 3, propertyRuns: 1, recheck: true });
    expect(r).toMatchObject({ name: 'gpu-svm', seed: 3, failure: null });
    expect(r.ms).toBeGreaterThan(0);
    expect(r).not.toHaveProperty('detail');
  });

  it('a property run checks the shared property with the seed; --replay keeps the whole report', () => {
    const r = runSoakTask({ name: 'dma-core/dma-debug-balanced', seed: 11, propertyRuns: 5, recheck: false, verbose: true });
    expect(r.failure).toBeNull();
    expect(r.detail).toMatch(/5 runs|no counterexample|passed/i);
  });

  it('turns what it cannot run into a failure, never a throw', () => {
    expect(runSoakTask({ name: 'no-such-stack', seed: 1, propertyRuns: 1, recheck: false }).failure).toEqual({ kind: 'exception', message: 'unknown stack no-such-stack' });
  });
});

describe('reading a stack result', () => {
  it('whereUnverified names the innermost step that failed, with its detail', () => {
    const result = { verified: false, steps: [{ step: 'map', verified: true }, { step: 'P2P write', verified: false, detail: '3 bytes differ' }] };
    expect(whereUnverified(result)).toBe('did not verify at .steps[1] step "P2P write": 3 bytes differ');
    expect(whereUnverified({ verified: false, ioErrors: 2, mismatchedBlocks: 0 })).toBe('did not verify (ioErrors 2)');
  });

  it('leftovers lists non-zero leak counters and dma-debug reports anywhere', () => {
    expect(leftovers({ leaks: { mappings: 0, iovaRanges: 0 }, dmaDebugReports: 0 })).toEqual([]);
    expect(leftovers({ strict: { leaks: { poolBlocks: 2, mappings: 0 } }, paths: [{ dmaDebugReports: 1 }] })).toEqual(['.strict.leaks.poolBlocks 2', '.paths[0].dmaDebugReports 1']);
  });

  it('deterministicJson drops wall-clock figures only; firstDifference finds where two results part', () => {
    expect(deterministicJson({ wallMs: 3.2, wallIops: 9, simulatedNs: 5, wall: 1 })).toBe('{"simulatedNs":5,"wall":1}');
    expect(firstDifference({ a: [1, { b: 2 }] }, { a: [1, { b: 3 }] })).toBe('.a[1].b: 2 vs 3');
    expect(firstDifference({ a: 1 }, { a: 1 })).toBeNull();
  });

  it('describeError gives the message and where it was thrown', () => {
    expect(describeError(new RangeError('bad index'))).toMatch(/^RangeError: bad index \(at .*task\.test\.ts/);
    expect(describeError('boom')).toBe('threw boom');
  });
});
