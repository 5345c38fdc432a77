/**
 * Where a missed target's time goes: runs the contender under V8's CPU profiler (node:inspector,
 * in this process, compiled code as measured) and returns its top functions by self time.
 */
import { Session } from 'node:inspector';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function post<T>(session: Session, method: string, params?: object): Promise<T> {
  return new Promise((resolve, reject) => {
    session.post(method, params ?? {}, (err, res) => {
      if (err) reject(err);
      else resolve(res as T);
    });
  });
}

/** Top `n` functions by self time while `work` runs, as "43.1% mapPages (iommu-dma/dist/pageTable.js:149)". */
export async function profileTop(work: () => void, n = 6): Promise<string[]> {
  const session = new Session();
  session.connect();
  try {
    await post(session, 'Profiler.enable');
    await post(session, 'Profiler.setSamplingInterval', { interval: 100 });
    await post(session, 'Profiler.start');
    work();
    const { profile } = await post<{ profile: CpuProfile }>(session, 'Profiler.stop');
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const self = new Map<string, number>();
    let total = 0;
    profile.samples.forEach((id, i) => {
      const node = byId.get(id);
      const dt = profile.timeDeltas[i] ?? 0;
      if (node === undefined) return;
      const f = node.callFrame;
      if (f.functionName === '(program)' || f.functionName === '(idle)') return;
      // The inspector session's own native frame (Session.post → dispatch), not the workload.
      if (f.functionName === 'dispatch' && f.url === '') return;
      const where = f.url.split('/').slice(-3).join('/');
      const key = `${f.functionName || '(anonymous)'} (${where}:${f.lineNumber + 1})`;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    });
    return [...self]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, t]) => `${((100 * t) / Math.max(total, 1)).toFixed(1)}% ${k}`);
  } finally {
    session.disconnect();
  }
}
