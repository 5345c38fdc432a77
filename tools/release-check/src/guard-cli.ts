/**
 * The pre-publish guard, run by `pnpm release` between the build and `changeset publish`:
 * for every publishable package, the build must be current (its stamp matches the sources and
 * dist) and its tarball (`pnpm pack --dry-run --json`, exactly what `pnpm publish` would send)
 * must hold every file its manifest points to. Any problem: exit 1 before anything is published.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { checkReleaseState, checkStamp, checkTarball, hashInputs } from './guard.js';
import type { BuildStamp } from './guard.js';
import { buildInputs, distFiles, publishablePackages } from './packages.js';

interface PackDryRun {
  files: { path: string }[];
}

export function guardPackage(dir: string): string[] {
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string };
  const stampPath = join(dir, 'dist', '.build-stamp.json');
  const stamp = existsSync(stampPath) ? (JSON.parse(readFileSync(stampPath, 'utf8')) as BuildStamp) : null;
  const problems = checkStamp(stamp, hashInputs(buildInputs(dir), manifest.version), distFiles(dir));
  const packed = JSON.parse(
    execFileSync('pnpm', ['pack', '--dry-run', '--json'], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }),
  ) as PackDryRun;
  const files = packed.files.map((f) => f.path);
  const maps = new Map<string, { sources?: unknown; sourcesContent?: unknown }>();
  for (const f of files) {
    if (f.endsWith('.map')) maps.set(f, JSON.parse(readFileSync(join(dir, f), 'utf8')) as { sources?: unknown });
  }
  problems.push(...checkTarball(manifest, files, maps, { requireChangelog: manifest.version !== '0.0.0' }));
  return problems;
}

function main(): number {
  const root = process.argv[2] ?? process.cwd();
  let failed = 0;
  const packages = publishablePackages(root);
  const changesetDir = join(root, '.changeset');
  const pending = existsSync(changesetDir) ? readdirSync(changesetDir).filter((f) => f.endsWith('.md') && f !== 'README.md') : [];
  const state = checkReleaseState(pending, packages.map((p) => ({ name: p.name, version: p.manifest.version ?? '0.0.0' })));
  for (const p of state) console.error(`release guard: ${p}`);
  if (state.length > 0) failed++;
  for (const pkg of packages) {
    const problems = guardPackage(pkg.dir);
    if (problems.length === 0) {
      console.log(`release guard: ${pkg.name}@${pkg.manifest.version ?? '?'} ok`);
    } else {
      failed++;
      for (const p of problems) console.error(`release guard: ${pkg.name}: ${p}`);
    }
  }
  if (failed > 0) {
    console.error(`release guard: ${failed} problem group(s); nothing was published`);
    return 1;
  }
  return 0;
}

process.exitCode = main();
