/** Reading the workspace: its publishable packages, their build inputs and their dist files. */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import ts from 'typescript';
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

/** The files `tsc -b tsconfig.build.json` compiles, plus the tsconfig itself. */
export function buildInputs(pkgDir: string): InputFile[] {
  const configPath = join(pkgDir, 'tsconfig.build.json');
  const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  });
  if (parsed === undefined) throw new Error(`cannot read ${configPath}`);
  const files = [configPath, ...parsed.fileNames];
  return files.map((f) => ({ path: posix(relative(pkgDir, f)), content: readFileSync(f) }));
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
