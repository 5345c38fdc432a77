/** Pure helpers of the release check: README examples, declared packages, expected republishes. */

/**
 * The runnable example of a README: the first ```ts block after a `## Example` heading (the
 * heading may go on, as in `## Example: the two-step API`). Null when there is none.
 */
export function extractExample(readme: string): string | null {
  const lines = readme.split(/\r?\n/);
  const heading = lines.findIndex((l) => /^##\s+Example\b/.test(l));
  if (heading < 0) return null;
  let i = heading + 1;
  while (i < lines.length && !/^```(ts|typescript)\s*$/.test(lines[i] ?? '')) {
    if (/^##\s/.test(lines[i] ?? '')) return null; // next section: the example has no code block
    i++;
  }
  if (i >= lines.length) return null;
  const end = lines.findIndex((l, j) => j > i && /^```\s*$/.test(l));
  if (end < 0) return null;
  return lines.slice(i + 1, end).join('\n') + '\n';
}

/** Bare package names a module imports (static `import ... from 'x'`, `import 'x'`, `import('x')`). */
export function importedPackages(code: string): string[] {
  const specs = new Set<string>();
  const re = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of code.matchAll(re)) {
    const spec = m[1] ?? m[2];
    if (spec === undefined || spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) continue;
    const parts = spec.split('/');
    specs.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? spec));
  }
  return [...specs].sort();
}

export interface Manifest {
  readonly name: string;
  readonly version: string;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly peerDependencies?: Readonly<Record<string, string>>;
  readonly peerDependenciesMeta?: Readonly<Record<string, { readonly optional?: boolean }>>;
}

/** Packages a package declares: itself, its dependencies and its peers (optional ones included). */
export function declaredPackages(m: Manifest): Set<string> {
  return new Set([m.name, ...Object.keys(m.dependencies ?? {}), ...Object.keys(m.peerDependencies ?? {})]);
}

/** Optional peers a consumer installs next to the package (npm does not install them by itself). */
export function optionalPeers(m: Manifest): { name: string; range: string }[] {
  return Object.entries(m.peerDependencies ?? {})
    .filter(([n]) => m.peerDependenciesMeta?.[n]?.optional === true)
    .map(([name, range]) => ({ name, range }));
}

/** Minimal semver for x.y.z against `^x.y.z`, `~x.y.z`, `x.y.z`, `>=a <b` (what the workspace uses). */
export function satisfies(version: string, range: string): boolean {
  const parse = (v: string): number[] => v.replace(/^[=v]+/, '').split('-')[0]!.split('.').map(Number);
  const cmp = (a: number[], b: number[]): number => {
    for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
    return 0;
  };
  const v = parse(version);
  return range.split('||').some((alt) =>
    alt.trim().split(/\s+/).every((c) => {
      if (c === '*' || c === '') return true;
      if (c.startsWith('^')) {
        const b = parse(c.slice(1));
        const upper = b[0]! > 0 ? [b[0]! + 1, 0, 0] : b[1]! > 0 ? [0, b[1]! + 1, 0] : [0, 0, b[2]! + 1];
        return cmp(v, b) >= 0 && cmp(v, upper) < 0;
      }
      if (c.startsWith('~')) {
        const b = parse(c.slice(1));
        return cmp(v, b) >= 0 && cmp(v, [b[0]!, b[1]! + 1, 0]) < 0;
      }
      if (c.startsWith('>=')) return cmp(v, parse(c.slice(2))) >= 0;
      if (c.startsWith('<=')) return cmp(v, parse(c.slice(2))) <= 0;
      if (c.startsWith('>')) return cmp(v, parse(c.slice(1))) > 0;
      if (c.startsWith('<')) return cmp(v, parse(c.slice(1))) < 0;
      return cmp(v, parse(c)) === 0;
    }),
  );
}

/**
 * What a patch release of `changed` to `newVersion` must republish under the config in
 * .changeset/config.json (no `updateInternalDependents: always`; peers bumped only when out of
 * range): the package itself, and, transitively, each package whose dependency or peer range
 * on a republished package no longer admits the new version.
 */
export function expectedRepublished(manifests: readonly Manifest[], changed: string, newVersion: string): Set<string> {
  const out = new Set([changed]);
  const next = new Map([[changed, newVersion]]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const m of manifests) {
      if (out.has(m.name)) continue;
      const ranges = { ...(m.dependencies ?? {}), ...(m.peerDependencies ?? {}) };
      for (const [dep, v] of next) {
        const range = ranges[dep];
        if (range !== undefined && !satisfies(v, range)) {
          out.add(m.name);
          grew = true;
        }
      }
    }
  }
  return out;
}
