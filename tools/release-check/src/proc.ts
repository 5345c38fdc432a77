/** Child processes the release check starts, and the guarantee that none outlives it. */
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Kill the command (and its process group) after this long. Default 10 minutes. */
  readonly timeoutMs?: number;
  /** Echo the command's output as it runs (default: only on failure, by the caller). */
  readonly echo?: boolean;
}

const live = new Set<ChildProcess>();

/** Kill a child and everything it started (each child leads its own process group). */
export function killTree(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Every child still running: SIGTERM now, SIGKILL for the stubborn after `graceMs`. */
export async function killAll(graceMs = 3000): Promise<void> {
  const children = [...live];
  for (const c of children) killTree(c, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const c of children) killTree(c, 'SIGKILL');
}

/** Start a long-running child in its own process group (tracked until it exits). */
export function start(cmd: string, args: readonly string[], opts: SpawnOptions & { cwd: string }): ChildProcess {
  const child = spawn(cmd, args, { ...opts, detached: true });
  live.add(child);
  child.on('exit', () => live.delete(child));
  child.on('error', () => live.delete(child));
  return child;
}

/** Run a command to completion and collect its output; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = start(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (opts.echo === true) process.stdout.write(d);
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (opts.echo === true) process.stderr.write(d);
    });
    const timer = setTimeout(() => {
      stderr += `\n[release-check] timed out after ${opts.timeoutMs ?? 600_000} ms`;
      killTree(child, 'SIGKILL');
    }, opts.timeoutMs ?? 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: 127, stdout, stderr: `${stderr}\n${e.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal !== null ? 128 : 1), stdout, stderr });
    });
  });
}
