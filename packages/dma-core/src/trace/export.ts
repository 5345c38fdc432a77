// kernel: include/trace/events/dma.h, swiotlb.h, iommu.h (TP_printk formats); kernel/trace/trace.c (trace file layout)
/**
 * Exporters for recorded events: Chrome Trace Event JSON (opens in Perfetto / chrome://tracing)
 * and ftrace-like text in the layout of /sys/kernel/tracing/trace.
 */
import { dmaAttrsName } from '../units/attrs.js';
import { DMA_MAPPING_ERROR } from '../units/dmaAddr.js';
import { dmaDirectionName } from '../units/direction.js';
import { splitTraceEventName } from './events.js';
import type { TraceEvent, TraceFieldValue } from './events.js';

/** Fields that hold addresses (printed as hex). */
const ADDRESS_FIELDS = new Set([
  'phys_addr',
  'dma_addr',
  'addr',
  'virt_addr',
  'iova',
  'paddr',
  'dev_addr',
  'dma_mask',
  'phys_addrs',
  'dma_addrs',
  'addrs',
]);

function hex0x(x: number): string {
  if (x === DMA_MAPPING_ERROR) return '0xffffffffffffffff';
  return Number.isFinite(x) && x >= 0 ? `0x${x.toString(16)}` : String(x);
}

/** `%llx` (no prefix). */
function llx(x: number): string {
  if (x === DMA_MAPPING_ERROR) return 'ffffffffffffffff';
  return Number.isFinite(x) && x >= 0 ? x.toString(16) : String(x);
}

/** `0x%016llx` */
function x016(x: number): string {
  return `0x${llx(x).padStart(16, '0')}`;
}

// ------------------------------------------------------------------------------------------------
// Chrome Trace Event format

/** One event of the Chrome Trace Event format (what Perfetto and chrome://tracing load). */
export interface ChromeTraceEvent {
  readonly name: string;
  readonly ph: 'i' | 'X' | 'M';
  readonly ts: number;
  readonly pid: number;
  readonly tid: number;
  readonly cat?: string;
  /** Instant-event scope: thread. */
  readonly s?: 't';
  readonly dur?: number;
  readonly args: Readonly<Record<string, unknown>>;
}

/** A whole Chrome trace: the events plus display metadata. */
export interface ChromeTrace {
  readonly traceEvents: ChromeTraceEvent[];
  readonly displayTimeUnit: 'ns' | 'ms';
  readonly otherData: Readonly<Record<string, string>>;
}

/** Options of the Chrome trace exporter: process name and pid. */
export interface ChromeTraceOptions {
  /** Process name shown in Perfetto (default "dmakit"). */
  processName?: string;
  pid?: number;
}

function chromeArg(key: string, v: TraceFieldValue): unknown {
  if (key === 'dir' && typeof v === 'number') return dmaDirectionName(v);
  if (key === 'attrs' && typeof v === 'number') return dmaAttrsName(v);
  if (ADDRESS_FIELDS.has(key)) {
    if (typeof v === 'number') return hex0x(v);
    if (typeof v !== 'string' && typeof v !== 'boolean') return v.map(hex0x);
  }
  return v;
}

/**
 * Chrome Trace Event JSON object: one instant event ("ph":"i") per record, `ts` in microseconds
 * of simulated time, one track (tid) per device with `thread_name` metadata, fields as `args`
 * (addresses as hex strings, dir/attrs symbolic). `JSON.stringify` it (or use toChromeTraceJson).
 */
export function toChromeTrace(events: readonly TraceEvent[], opts: ChromeTraceOptions = {}): ChromeTrace {
  const pid = opts.pid ?? 1;
  const tids = new Map<string, number>();
  const out: ChromeTraceEvent[] = [{ name: 'process_name', ph: 'M', ts: 0, pid, tid: 0, args: { name: opts.processName ?? 'dmakit' } }];
  const body: ChromeTraceEvent[] = [];
  for (const ev of events) {
    let tid = tids.get(ev.device);
    if (tid === undefined) {
      tid = tids.size + 1;
      tids.set(ev.device, tid);
      out.push({ name: 'thread_name', ph: 'M', ts: 0, pid, tid, args: { name: ev.device } });
      out.push({ name: 'thread_sort_index', ph: 'M', ts: 0, pid, tid, args: { sort_index: tid } });
    }
    const [system, name] = splitTraceEventName(ev.name);
    const args: Record<string, unknown> = { device: ev.device };
    for (const [k, v] of Object.entries(ev.fields)) args[k] = chromeArg(k, v);
    body.push({ name, cat: system === '' ? 'dmakit' : system, ph: 'i', s: 't', ts: ev.ts / 1000, pid, tid, args });
  }
  for (const e of body) out.push(e);
  return { traceEvents: out, displayTimeUnit: 'ns', otherData: { generator: 'dmakit', clock: 'simulated' } };
}

/** `toChromeTrace` serialised. */
export function toChromeTraceJson(events: readonly TraceEvent[], opts: ChromeTraceOptions = {}): string {
  return JSON.stringify(toChromeTrace(events, opts));
}

// ------------------------------------------------------------------------------------------------
// ftrace text

/** `__print_array`: {0x1000,0x2000} */
function printArray(v: TraceFieldValue | undefined): string {
  if (v === undefined || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean') return '{}';
  return `{${v.map(hex0x).join(',')}}`;
}

function num(v: TraceFieldValue | undefined): number {
  return typeof v === 'number' ? v : typeof v === 'boolean' ? Number(v) : Number.NaN;
}

function dirOf(f: TraceEvent['fields']): string {
  return dmaDirectionName(num(f.dir));
}

function attrsOf(f: TraceEvent['fields']): string {
  return dmaAttrsName(num(f.attrs));
}

/** `show_gfp_flags`: "none" for 0 (the model has no gfp names). */
function gfp(v: TraceFieldValue | undefined): string {
  const n = num(v);
  return n === 0 || Number.isNaN(n) ? 'none' : hex0x(n);
}

/** `%p` (the kernel hashes pointers; the model prints the address zero-padded). */
function ptr(v: TraceFieldValue | undefined): string {
  return llx(num(v)).padStart(16, '0');
}

/** The TP_printk body of one event (without the "name: " prefix). */
export function formatTraceEvent(ev: TraceEvent): string {
  const f = ev.fields;
  const d = ev.device;
  switch (ev.name) {
    case 'dma:dma_map_phys':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)} phys_addr=${llx(num(f.phys_addr))} attrs=${attrsOf(f)}`;
    case 'dma:dma_unmap_phys':
      return `${d} dir=${dirOf(f)} addr=${llx(num(f.addr))} size=${num(f.size)} attrs=${attrsOf(f)}`;
    case 'dma:dma_alloc':
    case 'dma:dma_alloc_pages':
    case 'dma:dma_alloc_sgt_err':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)} virt_addr=${ptr(f.virt_addr)} flags=${gfp(f.flags)} attrs=${attrsOf(f)}`;
    case 'dma:dma_alloc_sgt':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)} phys_addrs=${printArray(f.phys_addrs)} flags=${gfp(f.flags)} attrs=${attrsOf(f)}`;
    case 'dma:dma_free':
    case 'dma:dma_free_pages':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)} virt_addr=${ptr(f.virt_addr)} attrs=${attrsOf(f)}`;
    case 'dma:dma_free_sgt':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)} phys_addrs=${printArray(f.phys_addrs)}`;
    case 'dma:dma_map_sg':
      return `${d} dir=${dirOf(f)} dma_addrs=${printArray(f.dma_addrs)} sizes=${printArray(f.lengths)} phys_addrs=${printArray(f.phys_addrs)} attrs=${attrsOf(f)}`;
    case 'dma:dma_map_sg_err':
      // kernel: the format labels the physical addresses "dma_addrs"
      return `${d} dir=${dirOf(f)} dma_addrs=${printArray(f.phys_addrs)} err=${num(f.err)} attrs=${attrsOf(f)}`;
    case 'dma:dma_unmap_sg':
      return `${d} dir=${dirOf(f)} phys_addrs=${printArray(f.addrs)} attrs=${attrsOf(f)}`;
    case 'dma:dma_sync_single_for_cpu':
    case 'dma:dma_sync_single_for_device':
      return `${d} dir=${dirOf(f)} dma_addr=${llx(num(f.dma_addr))} size=${num(f.size)}`;
    case 'dma:dma_sync_sg_for_cpu':
    case 'dma:dma_sync_sg_for_device':
      return `${d} dir=${dirOf(f)} dma_addrs=${printArray(f.dma_addrs)} sizes=${printArray(f.lengths)}`;
    case 'swiotlb:swiotlb_bounced':
      return `dev_name: ${d} dma_mask=${llx(num(f.dma_mask))} dev_addr=${llx(num(f.dev_addr))} size=${num(f.size)} ${f.force === true ? 'FORCE' : 'NORMAL'}`;
    case 'iommu:map': {
      const iova = num(f.iova);
      const size = num(f.size);
      return `IOMMU: iova=${x016(iova)} - ${x016(iova + size)} paddr=${x016(num(f.paddr))} size=${size}`;
    }
    case 'iommu:unmap': {
      const iova = num(f.iova);
      const size = num(f.size);
      return `IOMMU: iova=${x016(iova)} - ${x016(iova + size)} size=${size} unmapped_size=${num(f.unmapped_size)}`;
    }
    case 'iommu:io_page_fault': {
      const drv = typeof f.driver === 'string' && f.driver !== '' ? f.driver : d;
      return `IOMMU:${drv} ${d} iova=${x016(num(f.iova))} flags=0x${llx(num(f.flags)).padStart(4, '0')}`;
    }
    default: {
      const parts = [d];
      for (const [k, v] of Object.entries(f)) {
        if (k === 'dir' && typeof v === 'number') parts.push(`dir=${dmaDirectionName(v)}`);
        else if (k === 'attrs' && typeof v === 'number') parts.push(`attrs=${dmaAttrsName(v)}`);
        else if (typeof v === 'number') parts.push(`${k}=${ADDRESS_FIELDS.has(k) ? llx(v) : String(v)}`);
        else if (typeof v === 'string' || typeof v === 'boolean') parts.push(`${k}=${String(v)}`);
        else parts.push(`${k}=${printArray(v)}`);
      }
      return parts.join(' ');
    }
  }
}

/** `%5lu.%06lu` seconds.microseconds of simulated ns. */
function ftraceTime(ns: number): string {
  const us = Math.floor(ns / 1000);
  const sec = Math.floor(us / 1_000_000);
  const frac = us - sec * 1_000_000;
  return `${String(sec).padStart(5, ' ')}.${String(frac).padStart(6, '0')}`;
}

/** Options of the ftrace text exporter (the format of /sys/kernel/tracing/trace). */
export interface FtraceTextOptions {
  /** Print the "# tracer: nop" header block (default true). */
  header?: boolean;
  /** Events lost to ring overwrite, for the header's entries-in-buffer/entries-written line. */
  dropped?: number;
}

/**
 * Text in the layout of the kernel's trace file:
 * `          nvme0-0       [000] .....     0.000012: dma_map_phys: nvme0 dir=TO_DEVICE dma_addr=1000 size=4096 phys_addr=1000 attrs=SKIP_CPU_SYNC`
 * The device name stands in for the task comm (TASK_COMM_LEN 16), pid 0, CPU 0.
 */
export function toFtraceText(events: readonly TraceEvent[], opts: FtraceTextOptions = {}): string {
  const lines: string[] = [];
  if (opts.header ?? true) {
    const n = events.length;
    lines.push(
      '# tracer: nop',
      '#',
      `# entries-in-buffer/entries-written: ${n}/${n + (opts.dropped ?? 0)}   #P:1`,
      '#',
      '#                                _-----=> irqs-off/BH-disabled',
      '#                               / _----=> need-resched',
      '#                              | / _---=> hardirq/softirq',
      '#                              || / _--=> preempt-depth',
      '#                              ||| / _-=> migrate-disable',
      '#                              |||| /     delay',
      '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
      '#              | |         |   |||||     |         |',
    );
  }
  for (const ev of events) {
    const comm = ev.device.slice(0, 15).padStart(16, ' ');
    const [, name] = splitTraceEventName(ev.name);
    lines.push(`${comm}-${'0'.padEnd(7, ' ')} [000] ..... ${ftraceTime(ev.ts)}: ${name}: ${formatTraceEvent(ev)}`);
  }
  return lines.join('\n') + '\n';
}
