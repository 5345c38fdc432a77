import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { HELP, main } from './cli.js';
import { createProgress } from './cli/progress.js';
import { getStack } from './stacks/index.js';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** main() with captured output; `tty` makes stderr look like a terminal (progress shown at once). */
function cli(argv: string[], tty = false): Run {
  let stdout = '';
  let stderr = '';
  const code = main(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s), isTTY: tty, columns: 120 },
    progressDelayMs: 0,
  });
  return { code, stdout, stderr };
}

const HINT = "Run 'dmakit --help' for usage.\n";
/** Carriage return + erase the line (ECMA-48 EL 2). */
const CLEAR = '\r\x1b[2K';
const tmp = mkdtempSync(join(tmpdir(), 'dmakit-cli-'));
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Strip the wall-clock fields (the only ones that differ between two runs). */
function stable(json: string): unknown {
  return JSON.parse(json, (k, v: unknown) => (k.startsWith('wall') ? undefined : v));
}

describe('dmakit CLI: usage errors are one line and exit 2', () => {
  it('--help names the published command and the workspace one once', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(HELP);
    expect(r.stdout).toContain('Usage: dmakit [stack] [options]');
    expect(r.stdout.match(/pnpm demo/g)).toHaveLength(1);
    for (const s of ['direct', 'nvme', 'rdma-odp', 'vfio-migration', 'dmabuf-p2p', 'gpu-svm']) expect(r.stdout).toContain(`  ${s}`);
  });

  it('an unknown stack: the error and a one-line hint, no help dump', () => {
    const r = cli(['nvmee']);
    expect(r).toEqual({ code: 2, stdout: '', stderr: `dmakit: unknown stack "nvmee" (stacks: direct, nvme, rdma-odp, vfio-migration, dmabuf-p2p, gpu-svm, cc-guest)\n${HINT}` });
  });

  it('an unknown option, a missing value, a value given to a switch, a second stack', () => {
    expect(cli(['nvme', '--qdepth', '4'])).toEqual({ code: 2, stdout: '', stderr: `dmakit: unknown option --qdepth\n${HINT}` });
    expect(cli(['nvme', '--qd'])).toEqual({ code: 2, stdout: '', stderr: `dmakit: --qd needs a value\n${HINT}` });
    expect(cli(['nvme', '--trace', '--json'])).toEqual({ code: 2, stdout: '', stderr: `dmakit: --trace needs a value\n${HINT}` });
    expect(cli(['nvme', '--json=yes'])).toEqual({ code: 2, stdout: '', stderr: `dmakit: --json takes no value\n${HINT}` });
    expect(cli(['nvme', 'direct'])).toEqual({ code: 2, stdout: '', stderr: `dmakit: unexpected argument "direct" (one stack per run)\n${HINT}` });
  });

  it('--seed -1 and --seed=-1 reach the CLI\'s own message', () => {
    const want = { code: 2, stdout: '', stderr: 'dmakit: --seed must be a non-negative integer, got -1\n' };
    expect(cli(['nvme', '--seed', '-1'])).toEqual(want);
    expect(cli(['nvme', '--seed=-1'])).toEqual(want);
    expect(cli(['--seed', 'x'])).toEqual({ ...want, stderr: 'dmakit: --seed must be a non-negative integer, got x\n' });
  });

  it('bad values are checked before the run: --bs, --qd, --ios, --iommu, --mapping, --size', () => {
    const one = (argv: string[], msg: string): void => {
      expect(cli(argv)).toEqual({ code: 2, stdout: '', stderr: `dmakit: ${msg}\n` });
    };
    one(['nvme', '--bs', '3000'], '--bs must be a multiple of 512 (the namespace\'s LBA size) from 512 to 1m, or "mixed", got "3000"');
    one(['nvme', '--bs', '2m'], '--bs must be a multiple of 512 (the namespace\'s LBA size) from 512 to 1m, or "mixed", got "2m"');
    one(['nvme', '--qd', '0'], '--qd must be an integer from 1 to 1023, got "0"');
    one(['nvme', '--ios', '-5'], '--ios (I/Os in I/Os) must be an integer from 1 to 10000000, got -5');
    one(['nvme', '--ios', 'many'], '--ios (I/Os in I/Os) must be an integer from 1 to 10000000, got "many"');
    one(['direct', '--iommu', 'on'], '--iommu must be strict, lazy or off, got "on"');
    one(['vfio-migration', '--iommu', 'off'], 'vfio-migration does not run with --iommu off: use strict or lazy');
    one(['gpu-svm', '--mapping', 'legacy'], 'gpu-svm has only the iova mapping path: --mapping legacy is not supported');
    one(['nvme', '--mapping', 'fast'], '--mapping must be iova or legacy, got "fast"');
    one(['dmabuf-p2p', '--size', '64'], '--size (file in MiB) must be an integer from 1 to 32, got 64');
  });

  it('conflicting flags name both and exit 2', () => {
    const one = (argv: string[], msg: string): void => {
      expect(cli(argv)).toEqual({ code: 2, stdout: '', stderr: `dmakit: ${msg}\n` });
    };
    one(['nvme', '--compare', '--premapped'], '--compare and --premapped cannot be used together: --premapped already compares the IOMMU modes; pick one');
    one(['nvme', '--compare', '--iommu', 'lazy'], '--compare and --iommu cannot be used together: --compare runs strict, lazy and off');
    one(['nvme', '--premapped', '--bs', '4k'], '--premapped and --bs cannot be used together: --premapped runs 4 KiB random reads on its own mapping');
    one(['rdma-odp', '--legacy', '--mapping', 'iova'], '--legacy and --mapping iova cannot be used together');
    one(['nvme', '--ios', '10', '--size', '20'], "--size and --ios cannot be used together (--ios is the nvme stack's name for --size)");
    one(['direct', '--qd', '4'], '--qd is not an option of the direct stack (it belongs to nvme, cc-guest)');
    one(['rdma-odp', '--compare'], '--compare is not an option of the rdma-odp stack (it belongs to nvme)');
    one(['nvme', '--rounds', '2'], '--rounds is not an option of the nvme stack (it belongs to rdma-odp)');
    one(['gpu-svm', '--legacy'], '--legacy is not an option of the gpu-svm stack (it has only the iova mapping path)');
  });

  it('an unwritable --trace path is one line and exit 2, before any work', () => {
    const missing = join(tmp, 'no', 'such', 'dir', 't.json');
    expect(cli(['nvme', '--trace', missing])).toEqual({ code: 2, stdout: '', stderr: `dmakit: cannot write trace file ${missing}: no such directory\n` });
    expect(cli(['direct', '--trace', tmp])).toEqual({ code: 2, stdout: '', stderr: `dmakit: cannot write trace file ${tmp}: it is a directory\n` });
    // A bad option is reported before the trace file is touched.
    const file = join(tmp, 'untouched.json');
    expect(cli(['nvme', '--bs', '3000', '--trace', file]).code).toBe(2);
    expect(existsSync(file)).toBe(false);
  });
});

describe('dmakit CLI: runs', () => {
  it('--json prints exactly what the registry returns for the same request', () => {
    const r = cli(['direct', '--iommu', 'lazy', '--seed', '7', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(stable(r.stdout)).toEqual(stable(JSON.stringify(getStack('direct')?.run({ seed: 7, iommu: 'lazy' }))));
  });

  it('nvme --bs 3k runs and verifies; --mapping sg is the legacy path under its old name', () => {
    const r = cli(['nvme', '--bs', '3k', '--ios', '120', '--verify', '--iommu', 'strict', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { verified: boolean; bs: number; verifiedBytes: number };
    expect(j).toMatchObject({ verified: true, bs: 3072 });
    expect(j.verifiedBytes).toBeGreaterThan(0);
    const sg = JSON.parse(cli(['nvme', '--mapping', 'sg', '--ios', '50', '--json']).stdout) as { mapping: string };
    const legacy = JSON.parse(cli(['nvme', '--mapping', 'legacy', '--ios', '50', '--json']).stdout) as { mapping: string };
    expect(sg.mapping).toBe('sg');
    expect(stable(JSON.stringify(legacy))).toEqual(stable(JSON.stringify(sg)));
  });

  it('--trace writes one Chrome trace with a process per machine', () => {
    const file = join(tmp, 'compare.json');
    const r = cli(['nvme', '--compare', '--ios', '30', '--trace', file]);
    expect(r.code).toBe(0);
    const m = /^trace: (\d+) events written to (.+) \(3 machines\)$/m.exec(r.stdout);
    expect(m?.[2]).toBe(file);
    const trace = JSON.parse(readFileSync(file, 'utf8')) as { traceEvents: { name: string; ph: string; pid: number; args?: { name?: string } }[] };
    const processes = trace.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.args?.name);
    expect(processes).toEqual(['dmakit strict', 'dmakit lazy', 'dmakit off']);
    expect(trace.traceEvents.filter((e) => e.ph === 'i')).toHaveLength(Number(m?.[1]));
  });

  it('shows progress on a terminal and clears the line; never with --json or when not a terminal', () => {
    const tty = cli(['nvme', '--ios', '400'], true);
    expect(tty.code).toBe(0);
    expect(tty.stderr.startsWith(`${CLEAR}dmakit nvme [`)).toBe(true);
    expect(tty.stderr).toMatch(/\[[#.]{30}\] +\d+% \d+\/400/);
    expect(tty.stderr).toContain('100% 400/400');
    expect(tty.stderr.endsWith(CLEAR)).toBe(true);
    expect(tty.stdout).toContain('dmakit demo: stack "nvme"');
    expect(cli(['nvme', '--ios', '400', '--json'], true).stderr).toBe('');
    expect(cli(['nvme', '--ios', '400'], false).stderr).toBe('');
  });
});

describe('the progress line', () => {
  const fake = (isTTY: boolean) => {
    const out: string[] = [];
    return { out, stream: { write: (s: string) => out.push(s), isTTY, columns: 40 } };
  };

  it('waits for the delay, redraws at most every interval, fits the terminal, clears at the end', () => {
    let t = 0;
    const { out, stream } = fake(true);
    const p = createProgress(stream, { label: 'dmakit x', delayMs: 1000, intervalMs: 100, now: () => t });
    p.update(1, 10);
    t = 999;
    p.update(2, 10);
    expect(out).toEqual([]);
    t = 1000;
    p.update(3, 10);
    t = 1050;
    p.update(4, 10); // too soon
    t = 1100;
    p.update(5, 10);
    p.update(10, 10); // the last one is always drawn
    expect(out).toHaveLength(3);
    expect(out.every((l) => l.length <= 39 + 5)).toBe(true);
    expect(out[0]).toBe(`\r\x1b[2K${'dmakit x [#########.....................]  30% 3/10'.slice(0, 39)}`);
    p.end();
    p.end();
    expect(out.at(-1)).toBe('\r\x1b[2K');
    expect(out).toHaveLength(4);
  });

  it('writes nothing when the stream is not a terminal, or when the run was quick', () => {
    const a = fake(false);
    const p = createProgress(a.stream, { label: 'x', delayMs: 0 });
    p.update(5, 10);
    p.end();
    expect(a.out).toEqual([]);
    const b = fake(true);
    const q = createProgress(b.stream, { label: 'x', delayMs: 60_000 });
    q.update(10, 10);
    q.end();
    expect(b.out).toEqual([]);
  });
});

describe('dmakit CLI as a program', () => {
  it('node --conditions=@dmakit/source --import tsx src/cli.ts runs a stack: exit 0 and JSON on stdout', () => {
    const cwd = join(dirname(fileURLToPath(import.meta.url)), '..');
    const ok = spawnSync(process.execPath, ['--conditions=@dmakit/source', '--import', 'tsx', 'src/cli.ts', 'direct', '--json'], { cwd, encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect((JSON.parse(ok.stdout) as { verified: boolean }).verified).toBe(true);
    expect(ok.stderr).toBe('');
  }, 30_000);
});
