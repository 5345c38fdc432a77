/**
 * Open a trace file written by the CLI's `--trace` (Chrome Trace Event JSON, as dma-core's
 * toChromeTrace writes it) back into events for the timeline. Anything else is refused with a
 * TraceFileError whose message says what is wrong; nothing is thrown past the caller.
 */
import type { WireEvent } from './protocol.js';

export class TraceFileError extends Error {
  override readonly name = 'TraceFileError';
}

const HEX = /^0x[0-9a-f]+$/i;

function field(v: unknown): WireEvent['f'][string] | undefined {
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'string') return HEX.test(v) && v.length <= 15 ? Number.parseInt(v, 16) : v;
  if (Array.isArray(v)) {
    const out: number[] = [];
    for (const x of v as unknown[]) {
      const f = field(x);
      if (typeof f !== 'number') return undefined;
      out.push(f);
    }
    return out;
  }
  return undefined;
}

export interface ParsedTrace {
  readonly events: WireEvent[];
  readonly devices: string[];
  readonly processes: string[];
}

/** Parse the text of a Chrome trace file. Throws TraceFileError. */
export function parseTraceFile(text: string): ParsedTrace {
  if (text.trim() === '') throw new TraceFileError('The file is empty.');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/end of (JSON )?(data|input)|Unterminated|Expected .* after|Unexpected end/i.test(msg)) {
      throw new TraceFileError(`The file is truncated: its JSON ends early (${msg}).`);
    }
    throw new TraceFileError(`The file is not JSON, so not a Chrome trace (${msg}).`);
  }
  const list: unknown = Array.isArray(raw) ? raw : typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>).traceEvents : undefined;
  if (!Array.isArray(list)) throw new TraceFileError('Not a Chrome trace: no "traceEvents" array (expected the file `pnpm demo --trace FILE` writes).');
  const threadNames = new Map<string, string>();
  const processNames = new Map<number, string>();
  for (const e of list as unknown[]) {
    if (typeof e !== 'object' || e === null) continue;
    const r = e as Record<string, unknown>;
    const args = r.args as Record<string, unknown> | undefined;
    if (r.ph === 'M' && r.name === 'thread_name' && typeof args?.name === 'string') threadNames.set(`${String(r.pid)}/${String(r.tid)}`, args.name);
    if (r.ph === 'M' && r.name === 'process_name' && typeof args?.name === 'string' && typeof r.pid === 'number') processNames.set(r.pid, args.name);
  }
  const events: WireEvent[] = [];
  const devices: string[] = [];
  const seen = new Set<string>();
  const multi = processNames.size > 1;
  let k = 0;
  for (const e of list as unknown[]) {
    k++;
    if (typeof e !== 'object' || e === null) throw new TraceFileError(`Event #${k} is not an object.`);
    const r = e as Record<string, unknown>;
    if (r.ph === 'M') continue;
    if (typeof r.name !== 'string' || typeof r.ts !== 'number' || !Number.isFinite(r.ts)) {
      throw new TraceFileError(`Event #${k} has no name or no numeric "ts": not a trace event.`);
    }
    const args = (typeof r.args === 'object' && r.args !== null ? r.args : {}) as Record<string, unknown>;
    const thread = threadNames.get(`${String(r.pid)}/${String(r.tid)}`);
    let device = typeof args.device === 'string' ? args.device : (thread ?? `tid ${String(r.tid)}`);
    if (multi && typeof r.pid === 'number') {
      const p = processNames.get(r.pid);
      if (p !== undefined) device = `${p.replace(/^dmakit ?/, '') || p}/${device}`;
    }
    const f: Record<string, WireEvent['f'][string]> = {};
    for (const [key, v] of Object.entries(args)) {
      if (key === 'device') continue;
      const x = field(v);
      if (x !== undefined) f[key] = x;
    }
    const cat = typeof r.cat === 'string' ? r.cat : '';
    events.push({ n: cat === '' || cat === 'dmakit' ? r.name : `${cat}:${r.name}`, t: r.ts * 1000, d: device, f });
    if (!seen.has(device)) {
      seen.add(device);
      devices.push(device);
    }
  }
  if (events.length === 0) throw new TraceFileError('The trace holds no events.');
  events.sort((a, b) => a.t - b.t);
  return { events, devices, processes: [...processNames.values()] };
}
