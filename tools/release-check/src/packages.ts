/** Reading the workspace: its publishable packages, their build inputs and their dist files. */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { isBookkeeping, sha256 } from './guard.js';
import type { InputFile, PackageJsonLike } from './guard.js';

export interface WorkspacePackage {
  readonly name: string;
  readonly dir: string;
  readonly manifest: PackageJsonLike & {
    private?: boolean;
    dependencies?: Record<string, string>;
    peerDependencies?: Record<string, string>;
    peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  };
}

/** Non-private packages under packages/*, apps/* and tools/* (pnpm-workspace.yaml's globs). */
export function publishablePackages(root: string): WorkspacePackage[] {
  const out: WorkspacePackage[] = [];
  for (const group of ['packages', 'apps', 'tools']) {
    const base = join(root, group);
    if (!existsSync(base)) continue;
    for (const d of readdirSync(base).sort()) {
      const manifestPath = join(base, d, 'package.json');
      if (!existsSync(manifestPath)) continue;
      const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as WorkspacePackage['manifest'];
      if (manifest.private === true || manifest.name === undefined) continue;
      out.push({ name: manifest.name, dir: join(base, d), manifest });
    }
  }
  return out;
}

function posix(p: string): string {
  return p.split(sep).join('/');
}

/** A tsconfig `include`/`exclude` glob as a RegExp over `/`-separated relative paths. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  const g = glob.replace(/^\.\//, '');
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === '*' && g[i + 1] === '*' && g[i + 2] === '/') {
      re += '(?:.*/)?';
      i += 2;
    } else if (c === '*' && g[i + 1] === '*') {
      re += '.*';
      i += 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  // A pattern without a wildcard in its last segment names a directory (or a file): match below it too.
  return new RegExp(`^${re}(?:/.*)?$`);
}

const TS_SOURCE = /\.(ts|tsx|mts|cts)$/;

/**
 * The files `tsc -b tsconfig.build.json` compiles (its `include` minus its `exclude`, TypeScript
 * sources only), plus the tsconfig itself. Read without loading the compiler, so a build's stamp
 * step stays cheap.
 */
export function buildInputs(pkgDir: string): InputFile[] {
  const configPath = join(pkgDir, 'tsconfig.build.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as { include?: string[]; exclude?: string[]; files?: string[] };
  const include = (config.include ?? ['**/*']).map(globToRegExp);
  const exclude = (config.exclude ?? []).map(globToRegExp);
  const picked: string[] = [...(config.files ?? [])];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir)) {
      if (e === 'node_modules' || e === 'dist' || e.startsWith('.')) continue;
      const full = join(dir, e);
      if (statSync(full).isDirectory()) walk(full);
      else {
        const rel = posix(relative(pkgDir, full));
        if (TS_SOURCE.test(rel) && include.some((r) => r.test(rel)) && !exclude.some((r) => r.test(rel))) picked.push(rel);
      }
    }
  };
  walk(pkgDir);
  return ['tsconfig.build.json', ...new Set(picked)].map((rel) => ({ path: rel, content: readFileSync(join(pkgDir, rel)) }));
}

/** sha256 of every file under dist (paths relative to the package), bookkeeping excluded. */
export function distFiles(pkgDir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir)) {
      const full = join(dir, e);
      if (statSync(full).isDirectory()) walk(full);
      else {
        const rel = posix(relative(pkgDir, full));
        if (!isBookkeeping(rel)) out[rel] = sha256(readFileSync(full));
      }
    }
  };
  walk(join(pkgDir, 'dist'));
  return out;
}
