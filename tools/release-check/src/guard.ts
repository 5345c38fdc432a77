/**
 * The pre-publish guard's rules, as pure functions over data the CLI collects
 * (`guard-cli.ts`): a package may be published only when its build is current (a stamp written at
 * build time records a hash of the build's inputs and of every file it emitted) and when its
 * tarball holds every file that `exports`, `main`, `types` and `bin` point to, the sources its
 * source maps name, and nothing that must not ship (build info, tests, test kits, fixtures).
 */
import { createHash } from 'node:crypto';

/** Written to `dist/.build-stamp.json` by `stamp.ts` after each build. */
export interface BuildStamp {
  readonly version: 1;
  /** sha256 over the build's inputs (see {@link hashInputs}). */
  readonly inputs: string;
  /** Every file the build left in `dist` (relative to the package), with its sha256. */
  readonly outputs: Readonly<Record<string, string>>;
}

export interface InputFile {
  /** Path relative to the package directory, `/`-separated. */
  readonly path: string;
  readonly content: string | Uint8Array;
}

export function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * One hash over everything the build reads: the compiled sources, the build tsconfig and the
 * package version (dma-core writes it into its dist). Order-independent in the input list.
 */
export function hashInputs(files: readonly InputFile[], packageVersion: string): string {
  const h = createHash('sha256');
  h.update(`version\0${packageVersion}\0`);
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    h.update(`${f.path}\0`);
    h.update(f.content);
    h.update('\0');
  }
  return h.digest('hex');
}

/** Files under dist that are build bookkeeping, not output: neither stamped nor published. */
export function isBookkeeping(path: string): boolean {
  return path.endsWith('.tsbuildinfo') || path.endsWith('/.build-stamp.json') || path === 'dist/.build-stamp.json';
}

/**
 * Staleness: compares a stamp with the current inputs hash and the files now in dist.
 * Returns one problem per difference (empty: the build is current).
 */
export function checkStamp(
  stamp: BuildStamp | null,
  currentInputs: string,
  distNow: Readonly<Record<string, string>>,
): string[] {
  if (stamp === null) return ['not built: no dist/.build-stamp.json (run `pnpm build`)'];
  const problems: string[] = [];
  if (stamp.inputs !== currentInputs) {
    problems.push('stale build: sources, tsconfig.build.json or the version changed since dist was built (run `pnpm build`)');
  }
  for (const [path, hash] of Object.entries(stamp.outputs)) {
    const now = distNow[path];
    if (now === undefined) problems.push(`dist changed since the build: ${path} is missing`);
    else if (now !== hash) problems.push(`dist changed since the build: ${path} was modified`);
  }
  for (const path of Object.keys(distNow)) {
    if (!(path in stamp.outputs)) problems.push(`dist changed since the build: ${path} was not emitted by it (a leftover?)`);
  }
  return problems;
}

export interface PackageJsonLike {
  readonly name?: string;
  readonly version?: string;
  readonly main?: string;
  readonly module?: string;
  readonly types?: string;
  readonly typings?: string;
  readonly bin?: string | Readonly<Record<string, string>>;
  readonly exports?: unknown;
}

function normalize(p: string): string {
  return p.replace(/^\.\//, '');
}

function collectExportTargets(value: unknown, into: string[]): void {
  if (typeof value === 'string') into.push(value);
  else if (Array.isArray(value)) for (const v of value) collectExportTargets(v, into);
  else if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value as Record<string, unknown>)) collectExportTargets(v, into);
  }
}

/** Every file path (relative, no `./`) the manifest points to; `*` subpath patterns kept as patterns. */
export function manifestTargets(pkg: PackageJsonLike): string[] {
  const raw: string[] = [];
  collectExportTargets(pkg.exports, raw);
  for (const f of [pkg.main, pkg.module, pkg.types, pkg.typings]) if (f !== undefined) raw.push(f);
  if (typeof pkg.bin === 'string') raw.push(pkg.bin);
  else if (pkg.bin !== undefined) raw.push(...Object.values(pkg.bin));
  return [...new Set(raw.map(normalize))];
}

function patternToRegExp(pattern: string): RegExp {
  const escaped = pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(`^${escaped.join('.+')}$`);
}

/** Files that must never be in a tarball. */
export const FORBIDDEN: readonly { readonly re: RegExp; readonly why: string }[] = [
  { re: /\.tsbuildinfo$/, why: 'TypeScript build info' },
  { re: /(^|\/)\.build-stamp\.json$/, why: 'build stamp' },
  { re: /\.(test|spec|e2e\.test|bench)\.[cm]?[jt]sx?$/, why: 'a test or benchmark' },
  { re: /\.(test|spec|bench)\.d\.[cm]?ts(\.map)?$/, why: 'a test declaration' },
  { re: /\.(testkit|testutil)\.(d\.)?[cm]?[jt]s(\.map)?$/, why: 'a test kit' },
  { re: /(^|\/)(testing|__tests__|fixtures?|__fixtures__)\//, why: 'test kits or fixtures' },
];

/** Source map `sources` that do not resolve to a file in the tarball. */
export function unresolvedSources(mapPath: string, map: { sources?: unknown; sourcesContent?: unknown }, files: ReadonlySet<string>): string[] {
  const sources = Array.isArray(map.sources) ? (map.sources as unknown[]) : [];
  const embedded = Array.isArray(map.sourcesContent) ? (map.sourcesContent as unknown[]) : [];
  const dir = mapPath.includes('/') ? mapPath.slice(0, mapPath.lastIndexOf('/')) : '';
  const missing: string[] = [];
  sources.forEach((s, i) => {
    if (typeof embedded[i] === 'string') return; // inlineSources: the content is in the map
    if (typeof s !== 'string') return;
    const parts = (dir === '' ? [] : dir.split('/')).concat(s.split('/'));
    const out: string[] = [];
    for (const part of parts) {
      if (part === '..') {
        if (out.length === 0) {
          missing.push(s);
          return;
        }
        out.pop();
      } else if (part !== '.' && part !== '') out.push(part);
    }
    if (!files.has(out.join('/'))) missing.push(s);
  });
  return missing;
}

/**
 * Tarball rules: manifest targets present, required files present, nothing forbidden,
 * source maps resolvable. `maps` holds the parsed source maps of the tarball (by path).
 */
export function checkTarball(
  pkg: PackageJsonLike,
  fileList: readonly string[],
  maps: ReadonlyMap<string, { sources?: unknown; sourcesContent?: unknown }> = new Map(),
  opts: { requireChangelog?: boolean } = {},
): string[] {
  const files = new Set(fileList.map(normalize));
  const problems: string[] = [];
  for (const target of manifestTargets(pkg)) {
    if (target.includes('*')) {
      const re = patternToRegExp(target);
      if (![...files].some((f) => re.test(f))) problems.push(`tarball has no file matching ${target} (package.json points to it)`);
    } else if (!files.has(target)) {
      problems.push(`tarball lacks ${target} (package.json points to it)`);
    }
  }
  const required = ['package.json', 'README.md', 'LICENSE'];
  if (opts.requireChangelog === true) required.push('CHANGELOG.md');
  for (const r of required) if (!files.has(r)) problems.push(`tarball lacks ${r}`);
  for (const f of files) {
    const bad = FORBIDDEN.find((x) => x.re.test(f));
    if (bad !== undefined) problems.push(`tarball must not ship ${f} (${bad.why})`);
  }
  for (const [path, map] of maps) {
    for (const s of unresolvedSources(path, map, files)) problems.push(`${path}: source ${s} is not in the tarball`);
  }
  return problems;
}

/**
 * Release-level rules: no changeset may be pending (they would not be in the published versions
 * or changelogs) and no package may still be at 0.0.0 (never versioned).
 */
export function checkReleaseState(pendingChangesets: readonly string[], packages: readonly { name: string; version: string }[]): string[] {
  const problems: string[] = [];
  if (pendingChangesets.length > 0) {
    problems.push(`${pendingChangesets.length} pending changeset(s) (${pendingChangesets.join(', ')}): run \`pnpm changeset version\` and commit first`);
  }
  for (const p of packages) if (p.version === '0.0.0') problems.push(`${p.name} was never versioned (0.0.0): run \`pnpm changeset version\` first`);
  return problems;
}
