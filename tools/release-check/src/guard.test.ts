import { describe, expect, it } from 'vitest';
import { checkReleaseState, checkStamp, checkTarball, hashInputs, manifestTargets, unresolvedSources } from './guard.js';
import type { BuildStamp } from './guard.js';

const files = [
  { path: 'src/index.ts', content: 'export const a = 1;\n' },
  { path: 'tsconfig.build.json', content: '{}' },
];

describe('build stamp', () => {
  const inputs = hashInputs(files, '0.1.0');
  const stamp: BuildStamp = { version: 1, inputs, outputs: { 'dist/index.js': 'h1', 'dist/index.d.ts': 'h2' } };

  it('hashes inputs independently of their order, and sees content, paths and version', () => {
    expect(hashInputs([...files].reverse(), '0.1.0')).toBe(inputs);
    expect(hashInputs([{ ...files[0]!, content: 'export const a = 2;\n' }, files[1]!], '0.1.0')).not.toBe(inputs);
    expect(hashInputs([{ ...files[0]!, path: 'src/other.ts' }, files[1]!], '0.1.0')).not.toBe(inputs);
    expect(hashInputs(files, '0.1.1')).not.toBe(inputs);
  });

  it('accepts a current build', () => {
    expect(checkStamp(stamp, inputs, { 'dist/index.js': 'h1', 'dist/index.d.ts': 'h2' })).toEqual([]);
  });

  it('refuses a missing stamp, changed sources, and a dist touched after the build', () => {
    expect(checkStamp(null, inputs, {})).toEqual([expect.stringContaining('not built')]);
    expect(checkStamp(stamp, hashInputs(files, '0.2.0'), { 'dist/index.js': 'h1', 'dist/index.d.ts': 'h2' })).toEqual([
      expect.stringContaining('stale build'),
    ]);
    expect(checkStamp(stamp, inputs, { 'dist/index.js': 'hX', 'dist/old.js': 'h3' })).toEqual([
      'dist changed since the build: dist/index.js was modified',
      'dist changed since the build: dist/index.d.ts is missing',
      'dist changed since the build: dist/old.js was not emitted by it (a leftover?)',
    ]);
  });
});

describe('tarball contents', () => {
  const pkg = {
    name: '@dmakit/x',
    main: './dist/index.js',
    types: './dist/index.d.ts',
    bin: { x: './dist/cli.js' },
    exports: {
      '.': { types: './dist/index.d.ts', import: './dist/index.js' },
      './feature/*': { types: './dist/feature/*.d.ts', default: './dist/feature/*.js' },
      './package.json': './package.json',
    },
  };
  const good = ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'dist/feature/a.js', 'dist/feature/a.d.ts', 'src/index.ts'];

  it('collects every manifest target once', () => {
    expect(manifestTargets(pkg).sort()).toEqual(
      ['dist/cli.js', 'dist/feature/*.d.ts', 'dist/feature/*.js', 'dist/index.d.ts', 'dist/index.js', 'package.json'].sort(),
    );
  });

  it('accepts a complete tarball', () => {
    expect(checkTarball(pkg, good, new Map(), { requireChangelog: true })).toEqual([]);
  });

  it('refuses a tarball that lacks an exported, bin or pattern target, or a required file', () => {
    const problems = checkTarball(
      pkg,
      good.filter((f) => !['dist/index.d.ts', 'dist/cli.js', 'dist/feature/a.js', 'LICENSE'].includes(f)),
      new Map(),
      { requireChangelog: true },
    );
    expect(problems).toEqual(
      expect.arrayContaining([
        'tarball lacks dist/index.d.ts (package.json points to it)',
        'tarball lacks dist/cli.js (package.json points to it)',
        'tarball has no file matching dist/feature/*.js (package.json points to it)',
        'tarball lacks LICENSE',
      ]),
    );
    expect(problems).toHaveLength(4);
    expect(checkTarball(pkg, good.filter((f) => f !== 'CHANGELOG.md'), new Map(), { requireChangelog: true })).toEqual([
      'tarball lacks CHANGELOG.md',
    ]);
  });

  it('refuses build info, tests, test kits and fixtures', () => {
    const bad = ['dist/.tsbuildinfo', 'src/a.test.ts', 'dist/a.test.js', 'src/fakes.testkit.ts', 'dist/fakes.testkit.d.ts', 'src/testing/rig.ts', 'test/fixtures/x.bin', 'dist/.build-stamp.json'];
    const problems = checkTarball(pkg, [...good, ...bad]);
    expect(problems).toHaveLength(bad.length);
    for (const f of bad) expect(problems.some((p) => p.includes(f))).toBe(true);
  });

  it('checks that source maps resolve inside the tarball (or embed their sources)', () => {
    const set = new Set(good);
    expect(unresolvedSources('dist/index.js.map', { sources: ['../src/index.ts'] }, set)).toEqual([]);
    expect(unresolvedSources('dist/index.js.map', { sources: ['../src/gone.ts'] }, set)).toEqual(['../src/gone.ts']);
    expect(unresolvedSources('dist/index.js.map', { sources: ['../../../outside.ts'] }, set)).toEqual(['../../../outside.ts']);
    expect(unresolvedSources('dist/index.js.map', { sources: ['../src/gone.ts'], sourcesContent: ['x'] }, set)).toEqual([]);
    const maps = new Map([['dist/index.js.map', { sources: ['../src/missing.ts'] }]]);
    expect(checkTarball(pkg, good, maps)).toEqual(['dist/index.js.map: source ../src/missing.ts is not in the tarball']);
  });
});

describe('tsconfig globs', () => {
  it('match like tsc include/exclude', async () => {
    const { globToRegExp } = await import('./packages.js');
    expect(globToRegExp('src').test('src/a/b.ts')).toBe(true);
    expect(globToRegExp('src').test('srcx/a.ts')).toBe(false);
    expect(globToRegExp('src/**/*.test.ts').test('src/a.test.ts')).toBe(true);
    expect(globToRegExp('src/**/*.test.ts').test('src/x/y/a.test.ts')).toBe(true);
    expect(globToRegExp('src/**/*.test.ts').test('src/a.ts')).toBe(false);
    expect(globToRegExp('src/testing/**').test('src/testing/rig.ts')).toBe(true);
    expect(globToRegExp('src/*.ts').test('src/x/a.ts')).toBe(false);
  });
});

describe('release state', () => {
  it('refuses pending changesets and never-versioned packages', () => {
    expect(checkReleaseState([], [{ name: 'a', version: '0.1.0' }])).toEqual([]);
    expect(checkReleaseState(['x.md'], [{ name: 'a', version: '0.1.0' }])).toEqual([expect.stringContaining('1 pending changeset(s) (x.md)')]);
    expect(checkReleaseState([], [{ name: 'a', version: '0.0.0' }])).toEqual([expect.stringContaining('a was never versioned')]);
  });
});
