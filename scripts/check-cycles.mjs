#!/usr/bin/env node
// Fails (exit 1) on any import cycle between the files of one workspace package (issue #12).
// Every relative import counts: `import`, `import type`, `export ... from`, side-effect imports
// and `import('./x.js')` types; TypeScript's own scanner (ts.preProcessFile) finds them, so
// comments and strings never count. Imports of other packages are the lint boundary's business.
//
//   node scripts/check-cycles.mjs                  every package of pnpm-workspace.yaml
//   node scripts/check-cycles.mjs packages/hmm     only these package folders
//
// Known cycles waiting for their fix are listed, one per line with the issue that tracks it, in
// scripts/check-cycles.allow; a cycle that is not listed fails, a listed one that is gone warns.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ALLOW_FILE = join(ROOT, 'scripts', 'check-cycles.allow');
const SOURCE = /\.(?:ts|tsx|mts|cts)$/;
const SKIP_DIRS = new Set(['node_modules', 'dist', '.turbo', 'coverage', 'results']);
/** Enumerating elementary cycles is exponential in the worst case; stop and say so past this. */
const MAX_CYCLES = 1000;

const posix = (p) => p.split(sep).join('/');

/** Package folders named by pnpm-workspace.yaml (`- dir/*` and `- dir` entries). */
function workspacePackages() {
  const yaml = readFileSync(join(ROOT, 'pnpm-workspace.yaml'), 'utf8');
  const section = yaml.split(/^packages:\s*$/m)[1]?.split(/^\S/m)[0] ?? '';
  const dirs = [];
  for (const m of section.matchAll(/^\s*-\s*['"]?([^'"\s#]+)['"]?/gm)) {
    const pattern = m[1];
    if (pattern.endsWith('/*')) {
      const base = join(ROOT, pattern.slice(0, -2));
      if (!existsSync(base)) continue;
      for (const d of readdirSync(base).sort()) if (existsSync(join(base, d, 'package.json'))) dirs.push(join(base, d));
    } else if (existsSync(join(ROOT, pattern, 'package.json'))) dirs.push(join(ROOT, pattern));
  }
  return dirs;
}

function sourceFiles(dir, out = []) {
  for (const name of readdirSync(dir).sort()) {
    if (SKIP_DIRS.has(name) || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sourceFiles(p, out);
    else if (SOURCE.test(name)) out.push(p);
  }
  return out;
}

/** TypeScript's resolution of a relative specifier (`./x.js` names `./x.ts`), within `files`. */
function resolveImport(from, spec, files) {
  const base = resolve(dirname(from), spec);
  const stem = base.replace(/\.(?:[cm]?js|jsx)$/, '');
  const candidates = [base, `${stem}.ts`, `${stem}.tsx`, `${stem}.mts`, `${stem}.cts`, join(base, 'index.ts'), join(base, 'index.tsx')];
  return candidates.find((c) => files.has(c));
}

function importGraph(pkgDir) {
  const list = sourceFiles(pkgDir);
  const files = new Set(list);
  const graph = new Map();
  for (const f of list) {
    const deps = new Set();
    for (const { fileName } of ts.preProcessFile(readFileSync(f, 'utf8'), true, true).importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const target = resolveImport(f, fileName, files);
      if (target !== undefined) deps.add(target);
    }
    graph.set(f, [...deps].sort());
  }
  return graph;
}

/** Tarjan's strongly connected components (iterative, so deep graphs cannot overflow the stack). */
function stronglyConnected(graph) {
  const index = new Map();
  const low = new Map();
  const onStack = new Set();
  const stack = [];
  const sccs = [];
  let next = 0;
  for (const root of graph.keys()) {
    if (index.has(root)) continue;
    const work = [[root, 0]];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const frame = work[work.length - 1];
      const [v, i] = frame;
      const deps = graph.get(v) ?? [];
      if (i < deps.length) {
        frame[1]++;
        const w = deps[i];
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(v)));
      }
      if (low.get(v) === index.get(v)) {
        const scc = [];
        let w;
        do {
          w = stack.pop();
          onStack.delete(w);
          scc.push(w);
        } while (w !== v);
        if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) sccs.push(scc.sort());
      }
    }
  }
  return sccs;
}

/**
 * Every elementary cycle inside one component, each found once: from each start node, walk only
 * through later nodes (in sorted order) and close the path when it returns to the start.
 */
function elementaryCycles(graph, scc) {
  const rank = new Map(scc.map((f, i) => [f, i]));
  const cycles = [];
  for (const start of scc) {
    const r0 = rank.get(start);
    const path = [start];
    const onPath = new Set(path);
    const walk = (v) => {
      for (const w of graph.get(v) ?? []) {
        if (cycles.length >= MAX_CYCLES) return;
        if (w === start) cycles.push([...path, start]);
        else if ((rank.get(w) ?? -1) > r0 && !onPath.has(w)) {
          path.push(w);
          onPath.add(w);
          walk(w);
          onPath.delete(w);
          path.pop();
        }
      }
    };
    walk(start);
  }
  return cycles;
}

/** `packages/x: src/a.ts -> src/b.ts -> src/a.ts`, as written in the allow-list. */
function cycleKey(pkgDir, cycle) {
  return `${posix(relative(ROOT, pkgDir))}: ${cycle.map((f) => posix(relative(pkgDir, f))).join(' -> ')}`;
}

/** Allow-list lines: `<key>  # <the issue that will remove it>`; lines starting with # are comments. */
function readAllowList() {
  const allowed = new Map();
  if (!existsSync(ALLOW_FILE)) return allowed;
  const lines = readFileSync(ALLOW_FILE, 'utf8').split('\n');
  lines.forEach((line, i) => {
    const text = line.trim();
    if (text === '' || text.startsWith('#')) return;
    const [key, ...why] = text.split(/\s+#\s*/);
    if (why.join(' ').trim() === '') {
      process.stderr.write(`${posix(relative(ROOT, ALLOW_FILE))}:${i + 1}: an allowed cycle must say which issue removes it (\`  # issue #N ...\`)\n`);
      process.exitCode = 1;
    }
    allowed.set(key.trim(), i + 1);
  });
  return allowed;
}

const t0 = performance.now();
const args = process.argv.slice(2);
const pkgDirs = args.length > 0 ? args.map((a) => resolve(a)) : workspacePackages();
for (const dir of pkgDirs) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    process.stderr.write(`check-cycles: ${dir} is not a folder\n`);
    process.exit(2);
  }
}
const allowed = readAllowList();
const seen = new Set();
let failures = 0;
let allowedHits = 0;
let fileCount = 0;
for (const pkgDir of pkgDirs) {
  const graph = importGraph(pkgDir);
  fileCount += graph.size;
  for (const scc of stronglyConnected(graph)) {
    const cycles = elementaryCycles(graph, scc);
    for (const cycle of cycles) {
      const key = cycleKey(pkgDir, cycle);
      seen.add(key);
      if (allowed.has(key)) {
        allowedHits++;
        continue;
      }
      if (failures === 0) process.stderr.write('import cycles (a file reaches itself through its imports):\n');
      process.stderr.write(`  ${key}\n`);
      failures++;
    }
    if (cycles.length >= MAX_CYCLES) {
      process.stderr.write(`  ${posix(relative(ROOT, pkgDir))}: more than ${MAX_CYCLES} cycles among ${scc.map((f) => posix(relative(pkgDir, f))).join(', ')}\n`);
      failures++;
    }
  }
}
if (args.length === 0) {
  for (const [key, line] of allowed) {
    if (!seen.has(key)) process.stderr.write(`warning: ${posix(relative(ROOT, ALLOW_FILE))}:${line}: this cycle is gone; delete the entry: ${key}\n`);
  }
}
const ms = (performance.now() - t0).toFixed(0);
if (failures > 0) {
  process.stderr.write(`check-cycles: ${failures} import cycle(s) in ${pkgDirs.length} package(s), ${fileCount} files (${ms} ms). Break them, or list a known one in scripts/check-cycles.allow with its issue.\n`);
  process.exitCode = 1;
} else {
  process.stdout.write(`check-cycles: no import cycle in ${pkgDirs.length} package(s), ${fileCount} files${allowedHits > 0 ? ` (${allowedHits} allowed, see scripts/check-cycles.allow)` : ''} (${ms} ms)\n`);
}
