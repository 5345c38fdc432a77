import { getStack } from './stacks/index.js';
import { SWEEP_REQUESTS } from './failNth/sweep.js';
import { iommuDeviceList } from '@dmakit/iommu-dma';
const [name, nth] = [process.argv[2]!, Number(process.argv[3] ?? 0)];
const s = getStack(name)!;
const live = new Map<number, string>();
let M: any;
const r: any = s.run({ ...SWEEP_REQUESTS[name], seed: 1, ...(nth > 0 ? { failNth: { nth } } : {}), onMachine: (m: any) => {
  M = M ?? m;
  if (m !== M) return;
  const mem = m.memory;
  for (const fn of ['allocPages', 'allocPagesBelow', 'allocPagesAbove'] as const) {
    const orig = mem[fn].bind(mem);
    mem[fn] = (...a: any[]) => { const p = orig(...a); if (p !== 0 && !live.has(p)) live.set(p, new Error().stack!.split('\n').slice(2, 9).join('\n')); return p; };
  }
  const of = mem.freePages.bind(mem);
  mem.freePages = (p: number, o: number) => { live.delete(p); return of(p, o); };
  const pp = mem.pagePut.bind(mem);
  mem.pagePut = (p: number, refs = 1) => { const r = pp(p, refs); try { if (mem.getPageRef(p) === 0) live.delete(p); } catch { live.delete(p); } return r; };
} });
for (const i of iommuDeviceList(M)) i.flushQueues();
console.log('verified', r.verified, r.failure, JSON.stringify(M.resourceCounts()));
let k = 0;
for (const [p, st] of live) { let ref = -1; try { ref = M.memory.getPageRef(p); } catch {} if (ref > 0) { console.log('live', p.toString(16), 'ref', ref, '\n', st); if (++k > 5) break; } }
