/**
 * `pnpm release-check`: the release, end to end, the way a maintainer publishes and a user
 * installs — against a throwaway Verdaccio on 127.0.0.1, on a temporary clone of HEAD.
 *
 *  1. clone HEAD into a temp dir, `pnpm install --offline --frozen-lockfile` there;
 *  2. start Verdaccio (storage, config, users in the temp dir; `@dmakit/*` never proxied);
 *  3. version (when changesets are pending) and publish with the project's own `pnpm release`;
 *  4. per package, in a blank project: `npm install <pkg>@<version>` (+ its optional peers),
 *     type-check its README example with `tsc --strict` (nodenext), run the emitted JavaScript;
 *     `publint` and `attw` on the published tarball;
 *  5. the CLI package: `npx dmakit <stack> --verify --json` for every stack, `verified: true`;
 *  6. independent versions: a patch changeset on nvme-pci only, release again, only the packages
 *     changesets should bump are republished; a consumer pinned to the old version still works,
 *     and upgrading works;
 *  7. one dma-core: a dma-core minor and the subsystems released against it; two subsystems
 *     released against different dma-core minors in one project resolve cleanly or fail loudly;
 *  8. a table, and exit 1 on any failure. Verdaccio and every child are stopped whatever happens
 *     (success, failure, SIGINT, SIGTERM); the temp dir is removed (`--keep` keeps it).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { declaredPackages, expectedRepublished, extractExample, importedPackages, optionalPeers } from './examples.js';
import type { Manifest } from './examples.js';
import { publishablePackages } from './packages.js';
import { killAll, run } from './proc.js';
import type { RunResult } from './proc.js';
import { startRegistry } from './registry.js';
import type { LocalRegistry } from './registry.js';

const STACKS = ['direct', 'nvme', 'rdma-odp', 'gpu-svm', 'vfio-migration', 'dmabuf-p2p'] as const;
const CLI_PACKAGE = '@dmakit/demo';
const PATCHED = '@dmakit/nvme-pci';
const CORE = '@dmakit/dma-core';
const CONCURRENCY = 3;

interface Row {
  pkg: string;
  version: string;
  size: string;
  files: string;
  example: string;
  types: string;
  publint: string;
  attw: string;
}

const failures: string[] = [];
const t0 = Date.now();
let registry: LocalRegistry | null = null;
let workDir: string | null = null;
const keep = process.argv.includes('--keep');

function log(msg: string): void {
  const s = ((Date.now() - t0) / 1000).toFixed(1).padStart(6);
  console.log(`[release-check ${s}s] ${msg}`);
}

function fail(msg: string, detail?: RunResult | string): void {
  failures.push(msg);
  console.error(`[release-check] FAIL: ${msg}`);
  if (detail !== undefined) {
    const text = typeof detail === 'string' ? detail : `${detail.stdout}\n${detail.stderr}`;
    console.error(text.trim().split('\n').slice(-25).map((l) => `    ${l}`).join('\n'));
  }
}

async function cleanup(): Promise<void> {
  if (registry !== null) {
    await registry.stop();
    registry = null;
  }
  await killAll();
  if (workDir !== null && !keep) rmSync(workDir, { recursive: true, force: true });
  else if (workDir !== null) console.log(`[release-check] kept ${workDir}`);
  workDir = null;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\n[release-check] ${sig}: stopping Verdaccio and every child, removing the temp dir`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}

function must(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code})\n${(r.stdout + '\n' + r.stderr).trim().split('\n').slice(-40).join('\n')}`);
  return r;
}

async function main(): Promise<void> {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const root = must(await run('git', ['rev-parse', '--show-toplevel'], { cwd: here }), 'git rev-parse').stdout.trim();
  workDir = mkdtempSync(join(tmpdir(), 'dmakit-release-check-'));
  const repo = join(workDir, 'repo');
  const npmrc = join(workDir, 'npmrc');
  const tarballs = join(workDir, 'tarballs');
  const consumers = join(workDir, 'consumers');
  mkdirSync(tarballs);
  mkdirSync(consumers);

  // The registry npm is configured with, read outside any project (no hard-coded host).
  const upstream = must(
    await run('npm', ['config', 'get', 'registry'], { cwd: workDir, env: { ...process.env, npm_config_logs_dir: join(workDir, 'npm-logs') } }),
    'npm config get registry',
  ).stdout.trim();

  log(`cloning HEAD of ${root} into ${repo}`);
  const sha = must(await run('git', ['rev-parse', 'HEAD'], { cwd: root }), 'git rev-parse HEAD').stdout.trim();
  must(await run('git', ['clone', '--quiet', '--no-hardlinks', '--no-checkout', root, repo], { cwd: workDir }), 'git clone');
  must(await run('git', ['checkout', '--quiet', '--detach', sha], { cwd: repo }), 'git checkout');
  const head = must(await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo }), 'git rev-parse').stdout.trim();
  for (const [k, v] of [['user.name', 'release-check'], ['user.email', 'release-check@example.invalid'], ['commit.gpgsign', 'false'], ['tag.gpgsign', 'false']]) {
    must(await run('git', ['config', k!, v!], { cwd: repo }), 'git config');
  }

  log(`starting Verdaccio (uplink for third-party packages: ${upstream})`);
  registry = await startRegistry(join(workDir, 'verdaccio'), upstream);
  const host = registry.url.replace(/^http:/, '');
  writeFileSync(npmrc, `registry=${registry.url}\n${host}:_authToken=${registry.token}\n`);
  log(`Verdaccio up at ${registry.url}`);

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    npm_config_userconfig: npmrc,
    npm_config_registry: registry.url,
    npm_config_cache: join(workDir, 'npm-cache'),
    npm_config_logs_dir: join(workDir, 'npm-logs'),
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    npm_config_git_checks: 'false',
    npm_config_yes: 'true',
    CI: 'true',
    TURBO_TELEMETRY_DISABLED: '1',
    DO_NOT_TRACK: '1',
    NO_COLOR: '1',
    FORCE_COLOR: '0',
  };
  // The developer's pnpm/npm settings stay out of the temp project except the pnpm store.
  delete env['npm_config_prefix'];

  log('pnpm install --offline --frozen-lockfile (temp clone)');
  must(await run('pnpm', ['install', '--offline', '--frozen-lockfile'], { cwd: repo, env }), 'pnpm install');

  const pendingChangesets = (): string[] => readdirSync(join(repo, '.changeset')).filter((f) => f.endsWith('.md') && f !== 'README.md');
  const versionAndRelease = async (label: string): Promise<void> => {
    if (pendingChangesets().length > 0) {
      log(`${label}: pnpm changeset version (${pendingChangesets().length} pending changesets)`);
      must(await run('pnpm', ['changeset', 'version'], { cwd: repo, env }), 'changeset version');
      must(await run('git', ['add', '-A'], { cwd: repo }), 'git add');
      must(await run('git', ['commit', '--quiet', '-m', `chore(release): ${label}`], { cwd: repo }), 'git commit');
    }
    log(`${label}: pnpm release`);
    must(await run('pnpm', ['release'], { cwd: repo, env, timeoutMs: 900_000 }), `pnpm release (${label})`);
  };

  // ---- 1. the first release ------------------------------------------------------------
  await versionAndRelease('release 1');
  const first = await publishedManifests(registry.url, repo);

  const tscBin = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
  const typeRoots = join(repo, 'node_modules', '@types');
  const rows: Row[] = [];

  const checkPackage = async (name: string, m: Manifest, row: Row): Promise<void> => {
    // The tarball, as the registry serves it.
    const packed = await run('npm', ['pack', `${name}@${m.version}`, '--json', '--pack-destination', tarballs], { cwd: tarballs, env });
    if (packed.code !== 0) {
      fail(`npm pack ${name}@${m.version} from the registry`, packed);
      return;
    }
    const info = (JSON.parse(packed.stdout) as { filename: string; size: number; entryCount: number }[])[0]!;
    const tgz = join(tarballs, info.filename);
    row.size = `${(info.size / 1024).toFixed(1)} KiB`;
    row.files = String(info.entryCount);

    const pl = await run(process.execPath, [bin('publint', 'publint'), 'run', tgz, '--level', 'warning'], { cwd: tarballs, env });
    const plText = pl.stdout + pl.stderr;
    row.publint = pl.code !== 0 ? 'error' : /warning|warn/i.test(plText) && !/All good/i.test(plText) ? 'warn' : 'ok';
    if (pl.code !== 0) fail(`publint ${name}`, pl);

    const hasTypes = m.name !== CLI_PACKAGE;
    if (hasTypes) {
      const at = await run(process.execPath, [bin('@arethetypeswrong/cli', 'attw'), tgz, '--profile', 'esm-only', '--format', 'ascii', '--no-color'], { cwd: tarballs, env });
      row.attw = at.code === 0 ? 'ok' : 'error';
      if (at.code !== 0) fail(`attw ${name}`, at);
    } else {
      row.attw = 'n/a (bin)';
    }

    if (name === CLI_PACKAGE) {
      row.example = await checkCli(consumers, env, name, m.version);
      row.types = 'n/a';
      return;
    }
    const ex = await checkExample(repo, consumers, env, tscBin, typeRoots, m, name.replace('@dmakit/', ''));
    row.example = ex.example;
    row.types = ex.types;
  };
  const queue = [...first].map(([name, m]) => {
    const row: Row = { pkg: name, version: m.version, size: '-', files: '-', example: '-', types: '-', publint: '-', attw: '-' };
    rows.push(row);
    return (): Promise<void> => checkPackage(name, m, row);
  });
  // A few at a time: installs wait on the registry, tsc and the examples on the CPU.
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    for (let job = queue.shift(); job !== undefined; job = queue.shift()) await job();
  }));

  // ---- 2. independent versions: a patch on nvme-pci only -------------------------------
  const before = await registryVersions(registry.url, [...first.keys()]);
  writeFileSync(join(repo, '.changeset', 'release-check-nvme-pci-patch.md'), `---\n"${PATCHED}": patch\n---\n\nrelease-check: a patch release of one subsystem.\n`);
  await versionAndRelease('release 2 (nvme-pci patch)');
  const second = await publishedManifests(registry.url, repo);
  const after = await registryVersions(registry.url, [...first.keys()]);
  const republished = new Set([...first.keys()].filter((n) => (after.get(n)?.length ?? 0) > (before.get(n)?.length ?? 0)));
  const newNvme = second.get(PATCHED)!.version;
  const expected = expectedRepublished([...first.values()], PATCHED, newNvme);
  const same = republished.size === expected.size && [...expected].every((n) => republished.has(n));
  log(`release 2 republished: ${[...republished].map((n) => `${n}@${second.get(n)?.version}`).join(', ') || 'nothing'}; expected: ${[...expected].join(', ')}`);
  if (!same) fail(`release 2 republished ${[...republished].join(', ')} but changesets should bump exactly ${[...expected].join(', ')}`);
  const oldNvme = first.get(PATCHED)!.version;
  if (newNvme === oldNvme) fail(`${PATCHED} kept version ${oldNvme} after a patch changeset`);
  const indep = await checkPinnedAndUpgrade(repo, consumers, env, tscBin, typeRoots, first.get(PATCHED)!, second.get(PATCHED)!);
  // The CLI was not republished, yet a fresh install picks the patched subsystem up (^ range).
  const cliFresh = join(consumers, 'cli-after-patch');
  mkdirSync(cliFresh);
  writeFileSync(join(cliFresh, 'package.json'), JSON.stringify({ name: 'cli-after-patch', private: true, type: 'module' }));
  const cliInstall = await run('npm', ['install', `${CLI_PACKAGE}@${second.get(CLI_PACKAGE)!.version}`], { cwd: cliFresh, env });
  const cliNvme = cliInstall.code === 0 ? installedVersion(cliFresh, PATCHED) : null;
  if (cliNvme !== newNvme) fail(`a fresh ${CLI_PACKAGE} install resolved ${PATCHED}@${cliNvme ?? 'nothing'}, expected ${newNvme}`, cliInstall);
  else {
    const r = await run('npx', ['--no', 'dmakit', 'nvme', '--verify', '--json'], { cwd: cliFresh, env });
    if (!verified(r)) fail(`dmakit nvme with ${PATCHED}@${newNvme}`, r);
  }

  // ---- 3. one dma-core: a dma-core minor and subsystems built against it ---------------
  writeFileSync(join(repo, '.changeset', 'release-check-dma-core-minor.md'), `---\n"${CORE}": minor\n---\n\nrelease-check: a dma-core minor.\n`);
  await versionAndRelease('release 3 (dma-core minor)');
  const third = await publishedManifests(registry.url, repo);
  const oneCore = await checkOneDmaCore(consumers, env, second, third);

  // ---- report --------------------------------------------------------------------------
  console.log('');
  console.log(`dmakit release check — HEAD ${head}, registry ${registry.url}`);
  printTable(rows);
  console.log('');
  console.log(`independent versions: patch on ${PATCHED} ${oldNvme} -> ${newNvme}; republished: ${[...republished].map((n) => `${n}@${second.get(n)?.version}`).join(', ')} (expected ${[...expected].join(', ')}: ${same ? 'ok' : 'FAIL'})`);
  console.log(`  pinned ${PATCHED}@${oldNvme}: ${indep.pinned}; upgrade to ${newNvme}: ${indep.upgrade}; fresh ${CLI_PACKAGE} resolves ${PATCHED}@${cliNvme ?? '?'}`);
  console.log(`one dma-core: ${oneCore}`);
}

function bin(pkg: string, name: string): string {
  const dir = resolve(fileURLToPath(new URL('..', import.meta.url)), 'node_modules', pkg);
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { bin: string | Record<string, string> };
  const rel = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin[name];
  if (rel === undefined) throw new Error(`${pkg} has no bin ${name}`);
  return join(dir, rel);
}

async function registryDocs(url: string, names: readonly string[]): Promise<Map<string, Record<string, Manifest>>> {
  const out = new Map<string, Record<string, Manifest>>();
  for (const n of names) {
    const r = await fetch(`${url}${n.replace('/', '%2f')}`);
    if (r.status === 404) {
      out.set(n, {});
      continue;
    }
    const doc = (await r.json()) as { versions?: Record<string, Manifest> };
    out.set(n, doc.versions ?? {});
  }
  return out;
}

async function registryVersions(url: string, names: readonly string[]): Promise<Map<string, string[]>> {
  return new Map([...(await registryDocs(url, names))].map(([n, v]) => [n, Object.keys(v)]));
}

/** The manifests as published (workspace: ranges replaced), for the versions in the temp clone now. */
async function publishedManifests(url: string, repo: string): Promise<Map<string, Manifest>> {
  const local = publishablePackages(repo).map((p) => p.manifest as Manifest);
  const docs = await registryDocs(url, local.map((m) => m.name));
  const out = new Map<string, Manifest>();
  for (const m of local) {
    const pub = docs.get(m.name)?.[m.version];
    if (pub === undefined) {
      fail(`${m.name}@${m.version} is not in the registry after pnpm release`);
      continue;
    }
    const leaked = Object.entries({ ...(pub.dependencies ?? {}), ...(pub.peerDependencies ?? {}) }).filter(([, r]) => r.startsWith('workspace:'));
    if (leaked.length > 0) fail(`${m.name}@${m.version} was published with workspace: ranges (${leaked.map(([n, r]) => `${n}@${r}`).join(', ')})`);
    out.set(m.name, pub);
  }
  return out;
}

function installedVersion(project: string, name: string): string | null {
  const p = join(project, 'node_modules', ...name.split('/'), 'package.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version : null;
}

function verified(r: RunResult): boolean {
  if (r.code !== 0) return false;
  try {
    return (JSON.parse(r.stdout) as { verified?: unknown }).verified === true;
  } catch {
    return false;
  }
}

function newProject(consumers: string, name: string): string {
  const dir = join(consumers, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, version: '0.0.0', private: true, type: 'module' }, null, 2));
  return dir;
}

/** Install `m` by name and version (+ optional peers), type-check and run its README example. */
async function checkExample(
  repo: string,
  consumers: string,
  env: NodeJS.ProcessEnv,
  tscBin: string,
  typeRoots: string,
  m: Manifest,
  short: string,
  projectName = short,
): Promise<{ example: string; types: string }> {
  const readmePath = join(repo, 'packages', short, 'README.md');
  const code = existsSync(readmePath) ? extractExample(readFileSync(readmePath, 'utf8')) : null;
  if (code === null) {
    fail(`${m.name}: README has no \`## Example\` with a \`\`\`ts block`);
    return { example: 'missing', types: 'missing' };
  }
  const declared = declaredPackages(m);
  const undeclared = importedPackages(code).filter((p) => !declared.has(p));
  if (undeclared.length > 0) fail(`${m.name}: README example imports ${undeclared.join(', ')}, which the package does not declare`);
  const dir = newProject(consumers, projectName);
  const specs = [`${m.name}@${m.version}`, ...optionalPeers(m).map((p) => `${p.name}@${p.range}`)];
  const inst = await run('npm', ['install', ...specs], { cwd: dir, env });
  if (inst.code !== 0) {
    fail(`npm install ${specs.join(' ')}`, inst);
    return { example: 'install failed', types: '-' };
  }
  if (installedVersion(dir, m.name) !== m.version) fail(`${m.name}: installed ${installedVersion(dir, m.name) ?? 'nothing'}, asked for ${m.version}`);
  writeFileSync(join(dir, 'example.ts'), code);
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify(
      {
        compilerOptions: {
          strict: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          lib: ['es2023'],
          types: ['node'],
          typeRoots: [typeRoots],
          outDir: 'out',
          rootDir: '.',
          noEmitOnError: false,
        },
        files: ['example.ts'],
      },
      null,
      2,
    ),
  );
  const tsc = await run(process.execPath, [tscBin, '-p', 'tsconfig.json'], { cwd: dir, env });
  const types = tsc.code === 0 ? 'ok' : 'error';
  if (tsc.code !== 0) fail(`${m.name}: README example does not type-check (tsc --strict, nodenext)`, tsc);
  if (!existsSync(join(dir, 'out', 'example.js'))) return { example: 'not emitted', types };
  const ran = await run(process.execPath, [join('out', 'example.js')], { cwd: dir, env, timeoutMs: 120_000 });
  const ok = ran.code === 0 && ran.stdout.trim() !== '';
  if (!ok) fail(`${m.name}: README example did not run as JavaScript`, ran);
  else log(`${m.name}@${m.version} example: ${ran.stdout.trim().split('\n')[0]!.slice(0, 110)}`);
  return { example: ok ? 'ok' : 'error', types };
}

async function checkCli(consumers: string, env: NodeJS.ProcessEnv, name: string, version: string): Promise<string> {
  const dir = newProject(consumers, 'cli');
  const inst = await run('npm', ['install', `${name}@${version}`], { cwd: dir, env });
  if (inst.code !== 0) {
    fail(`npm install ${name}@${version}`, inst);
    return 'install failed';
  }
  let ok = 0;
  for (const stack of STACKS) {
    const r = await run('npx', ['--no', 'dmakit', stack, '--verify', '--json'], { cwd: dir, env, timeoutMs: 180_000 });
    if (verified(r)) ok++;
    else fail(`npx dmakit ${stack} --verify --json did not report "verified": true`, r);
  }
  const human = await run('npx', ['--no', 'dmakit', 'nvme', '--iommu', 'strict', '--verify'], { cwd: dir, env });
  if (human.code !== 0) fail('npx dmakit nvme --iommu strict --verify', human);
  log(`${name}@${version}: ${ok}/${STACKS.length} stacks verified via npx dmakit`);
  return `${ok}/${STACKS.length} stacks`;
}

async function checkPinnedAndUpgrade(
  repo: string,
  consumers: string,
  env: NodeJS.ProcessEnv,
  tscBin: string,
  typeRoots: string,
  old: Manifest,
  next: Manifest,
): Promise<{ pinned: string; upgrade: string }> {
  const short = old.name.replace('@dmakit/', '');
  // Pinned to the old version: installs exactly it and the example still runs.
  const pinned = await checkExample(repo, consumers, env, tscBin, typeRoots, old, short, `${short}-pinned-${old.version}`);
  const dir = join(consumers, `${short}-pinned-${old.version}`);
  const pinnedOk = pinned.example === 'ok' && installedVersion(dir, old.name) === old.version;
  if (!pinnedOk) fail(`consumer pinned to ${old.name}@${old.version}`);
  // Upgrade in place.
  const up = await run('npm', ['install', `${next.name}@${next.version}`], { cwd: dir, env });
  let upgradeOk = up.code === 0 && installedVersion(dir, next.name) === next.version;
  if (!upgradeOk) fail(`upgrade to ${next.name}@${next.version}`, up);
  else {
    const ran = await run(process.execPath, [join('out', 'example.js')], { cwd: dir, env });
    upgradeOk = ran.code === 0 && ran.stdout.trim() !== '';
    if (!upgradeOk) fail(`${next.name}@${next.version}: example after the upgrade`, ran);
  }
  return { pinned: pinnedOk ? `ok (installed ${old.version})` : 'FAIL', upgrade: upgradeOk ? `ok (installed ${next.version})` : 'FAIL' };
}

/** Count the copies of dma-core an install holds. */
function dmaCoreCopies(dir: string): string[] {
  const found: string[] = [];
  const walk = (nm: string): void => {
    if (!existsSync(nm)) return;
    for (const e of readdirSync(nm)) {
      if (e.startsWith('.')) continue;
      const scoped = e.startsWith('@') ? readdirSync(join(nm, e)).map((s) => join(e, s)) : [e];
      for (const s of scoped) {
        const pj = join(nm, s, 'package.json');
        if (existsSync(pj)) {
          const m = JSON.parse(readFileSync(pj, 'utf8')) as { name?: string; version?: string };
          if (m.name === CORE) found.push(`${m.version ?? '?'} at ${join(nm, s).slice(dir.length + 1)}`);
        }
        walk(join(nm, s, 'node_modules'));
      }
    }
  };
  walk(join(dir, 'node_modules'));
  return found;
}

async function checkOneDmaCore(consumers: string, env: NodeJS.ProcessEnv, second: Map<string, Manifest>, third: Map<string, Manifest>): Promise<string> {
  const core2 = third.get(CORE)!.version;
  const core1 = second.get(CORE)!.version;
  if (core2 === core1) {
    fail(`${CORE} kept ${core1} after a minor changeset`);
    return 'FAIL';
  }
  // A subsystem from before (peer ^core1) and one released against the new dma-core (peer ^core2).
  const oldSub = second.get('@dmakit/hmm')!;
  const newSub = third.get('@dmakit/iommu-dma')!;
  const newPeer = newSub.peerDependencies?.[CORE] ?? '?';
  log(`one dma-core: ${oldSub.name}@${oldSub.version} (peer ${oldSub.peerDependencies?.[CORE] ?? '?'}) + ${newSub.name}@${newSub.version} (peer ${newPeer})`);
  const dir = newProject(consumers, 'two-dma-core-minors');
  const inst = await run('npm', ['install', `${oldSub.name}@${oldSub.version}`, `${newSub.name}@${newSub.version}`], { cwd: dir, env });
  let outcome: string;
  if (inst.code !== 0) {
    const eresolve = /ERESOLVE/.test(inst.stderr + inst.stdout);
    if (!eresolve) fail('installing two subsystems against different dma-core minors failed, but not with ERESOLVE', inst);
    const lines = (inst.stderr + inst.stdout).split('\n').map((l) => l.replace(/^npm (error|ERR!)\s*/, '').trim());
    const peers = lines.filter((l) => /peer @dmakit\/dma-core@/.test(l)).slice(0, 2);
    outcome = `npm refuses loudly: ERESOLVE (${peers.join('; ') || lines.find((l) => /Could not resolve/.test(l)) || 'see npm output'})`;
  } else {
    const copies = dmaCoreCopies(dir);
    if (copies.length <= 1) outcome = `npm resolved cleanly to one copy (${copies.join('') || 'none'})`;
    else {
      const ran = await run(process.execPath, ['--input-type=module', '-e', `await import('${oldSub.name}'); await import('${newSub.name}');`], { cwd: dir, env });
      if (/DuplicateDmaCoreError|ERR_DMAKIT_DUPLICATE_DMA_CORE/.test(ran.stderr)) outcome = `two copies installed (${copies.join(', ')}); loading them throws DuplicateDmaCoreError`;
      else {
        outcome = `FAIL: two silent copies (${copies.join(', ')})`;
        fail(outcome, ran);
      }
    }
  }
  // The runtime guard itself: force a second copy next to the first (npm alias) and load both.
  const forced = newProject(consumers, 'forced-second-copy');
  const alias = await run('npm', ['install', `${CORE}@${core2}`, `dma-core-old@npm:${CORE}@${core1}`], { cwd: forced, env });
  let runtime = 'not run';
  if (alias.code !== 0) fail('installing two aliased dma-core copies', alias);
  else {
    const ran = await run(process.execPath, ['--input-type=module', '-e', `await import('${CORE}'); await import('dma-core-old');`], { cwd: forced, env });
    const line = ran.stderr.split('\n').find((l) => l.includes('Two copies of @dmakit/dma-core')) ?? '';
    if (ran.code !== 0 && line !== '') runtime = `a forced second copy (npm alias) throws: ${line.trim()}`;
    else {
      runtime = 'FAIL: a second copy loaded silently';
      fail(runtime, ran);
    }
  }
  return `${CORE} ${core1} -> ${core2}; ${newSub.name}@${newSub.version} peers on ${newPeer}.\n  ${oldSub.name}@${oldSub.version} + ${newSub.name}@${newSub.version}: ${outcome}\n  ${runtime}`;
}

function printTable(rows: readonly Row[]): void {
  const head: Row = { pkg: 'package', version: 'version', size: 'tarball', files: 'files', example: 'example', types: 'types', publint: 'publint', attw: 'attw' };
  const keys = Object.keys(head) as (keyof Row)[];
  const width = Object.fromEntries(keys.map((k) => [k, Math.max(...[head, ...rows].map((r) => r[k].length))])) as Record<keyof Row, number>;
  const line = (r: Row): string => keys.map((k) => r[k].padEnd(width[k])).join('  ');
  console.log(line(head));
  console.log(keys.map((k) => '-'.repeat(width[k])).join('  '));
  for (const r of rows) console.log(line(r));
}

let code = 0;
try {
  await main();
} catch (e) {
  fail((e as Error).message);
  const reg = registry as LocalRegistry | null;
  if (reg !== null) console.error(`[release-check] Verdaccio log tail:\n${reg.log().split('\n').slice(-15).join('\n')}`);
} finally {
  await cleanup();
}
const secs = ((Date.now() - t0) / 1000).toFixed(1);
if (failures.length > 0) {
  console.error(`\nrelease-check: ${failures.length} failure(s) in ${secs}s:`);
  for (const f of failures) console.error(`  - ${f.split('\n')[0]!}`);
  code = 1;
} else {
  console.log(`\nrelease-check: all checks passed in ${secs}s`);
}
process.exit(code);
