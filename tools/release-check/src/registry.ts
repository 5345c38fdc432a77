/** A throwaway Verdaccio on a loopback port: config, storage and users in one temporary directory. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { killTree, start } from './proc.js';

export interface LocalRegistry {
  /** `http://127.0.0.1:<port>/` */
  readonly url: string;
  /** Token of the user that publishes. */
  readonly token: string;
  /** Last lines Verdaccio printed (for failure reports). */
  log(): string;
  stop(): Promise<void>;
}

/** A port the kernel says is free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr !== null && typeof addr === 'object') resolve(addr.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/**
 * Verdaccio's config: `@dmakit/*` lives only here (never proxied, so nothing of ours comes from
 * the real registry); everything else is proxied to `upstream` (the registry npm is configured
 * with) so consumers can install third-party packages. Publishing needs a logged-in user.
 */
export function verdaccioConfig(dir: string, upstream: string): string {
  return [
    `storage: ${JSON.stringify(join(dir, 'storage'))}`,
    `plugins: ${JSON.stringify(join(dir, 'plugins'))}`,
    'auth:',
    '  htpasswd:',
    `    file: ${JSON.stringify(join(dir, 'htpasswd'))}`,
    '    max_users: 100',
    'uplinks:',
    '  upstream:',
    `    url: ${JSON.stringify(upstream)}`,
    '    timeout: 60s',
    '    max_fails: 5',
    'packages:',
    "  '@dmakit/*':",
    '    access: $all',
    '    publish: $authenticated',
    '    unpublish: $authenticated',
    "  '**':",
    '    access: $all',
    '    publish: $authenticated',
    '    proxy: upstream',
    'web:',
    '  enable: false',
    'log: { type: stdout, format: pretty, level: warn }',
    '',
  ].join('\n');
}

async function waitUntilUp(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`verdaccio exited with ${child.exitCode} before it answered`);
    try {
      const r = await fetch(`${url}-/ping`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`verdaccio did not answer ${url}-/ping within ${timeoutMs} ms`);
}

async function addUser(url: string, name: string, password: string): Promise<string> {
  const r = await fetch(`${url}-/user/org.couchdb.user:${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ _id: `org.couchdb.user:${name}`, name, password, email: `${name}@example.invalid`, type: 'user', roles: [], date: new Date().toISOString() }),
  });
  const body = (await r.json()) as { token?: string; error?: string };
  if (!r.ok || typeof body.token !== 'string') throw new Error(`verdaccio refused the user: ${r.status} ${body.error ?? ''}`);
  return body.token;
}

export async function startRegistry(dir: string, upstream: string): Promise<LocalRegistry> {
  mkdirSync(join(dir, 'storage'), { recursive: true });
  mkdirSync(join(dir, 'plugins'), { recursive: true });
  const config = join(dir, 'config.yaml');
  writeFileSync(config, verdaccioConfig(dir, upstream));
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('verdaccio/package.json');
  const binField = (JSON.parse(readFileSync(pkgPath, 'utf8')) as { bin: string | Record<string, string> }).bin;
  const bin = typeof binField === 'string' ? binField : binField['verdaccio'];
  if (bin === undefined) throw new Error('verdaccio has no bin');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const child = start(process.execPath, [join(dirname(pkgPath), bin), '--config', config, '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env: { ...process.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (d: Buffer): void => {
    log = (log + d.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => {
      child.once('exit', () => {
        r();
      });
    });
    killTree(child, 'SIGTERM');
    const t = setTimeout(() => {
      killTree(child, 'SIGKILL');
    }, 3000);
    await exited;
    clearTimeout(t);
  };
  try {
    await waitUntilUp(url, child, 30_000);
    const token = await addUser(url, 'release-check', `rc-${port}-${Date.now()}`);
    return { url, token, log: () => log, stop };
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${log}`, { cause: e });
  }
}
