import { describe, expect, it } from 'vitest';
import { Errno, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, SZ_1G, bytesEqual, createMachine } from '@dmakit/dma-core';
import type { Machine, Process } from '@dmakit/dma-core';
import {
  IB_ACCESS_LOCAL_WRITE,
  IB_ACCESS_ON_DEMAND,
  IB_ACCESS_REMOTE_READ,
  IB_ACCESS_REMOTE_WRITE,
  IB_WR_RDMA_READ,
  IB_WR_RDMA_WRITE,
  IbWcStatus,
  Mlx5IbDev,
  RcConnection,
  RcEndpoint,
  watchOdpAccesses,
} from './index.js';
import type { IbWc } from './index.js';
import { createFakeHmm } from './testing/fakeHmm.js';

const ACCESS = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_ON_DEMAND;
const LEN = 16 * PAGE_SIZE;

interface Setup {
  readonly m: Machine;
  readonly client: Process;
  readonly server: Process;
  readonly conn: RcConnection;
  readonly src: number;
  readonly buf: number;
  readonly lkey: number;
  readonly rkey: number;
}

function setup(): Setup {
  const m = createMachine({ ramBytes: SZ_1G, seed: 7, dmaDebug: 'warn' });
  const hmm = createFakeHmm();
  const ep = (name: string): { proc: Process; ep: RcEndpoint } => {
    const dev = m.pci.addDevice({ name, dmaMaskBits: 64 });
    const ib = new Mlx5IbDev({ dev, hmm, scheduler: m.scheduler });
    const proc = m.createProcess();
    return { proc, ep: new RcEndpoint(ib, proc.mm) };
  };
  const a = ep('mlx5_0');
  const b = ep('mlx5_1');
  const conn = new RcConnection(a.ep, b.ep);
  const map = (p: Process): number => p.mm.mmap({ length: LEN, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const src = map(a.proc);
  const buf = map(b.proc);
  const mrC = a.ep.ib.regUserMr(a.ep.pd, src, LEN, src, ACCESS);
  const mrS = b.ep.ib.regUserMr(b.ep.pd, buf, LEN, buf, ACCESS);
  if (typeof mrC === 'number' || typeof mrS === 'number') throw new Error('reg_mr failed');
  return { m, client: a.proc, server: b.proc, conn, src, buf, lkey: mrC.lkey, rkey: mrS.rkey };
}

function wc(r: IbWc | number): IbWc {
  if (typeof r === 'number') throw new Error(`expected a completion, got ${r}`);
  return r;
}

describe('RcConnection', () => {
  it('RDMA WRITE then READ through ODP MRs: the bytes land and come back, completions polled', () => {
    const s = setup();
    const data = s.m.rng.fill(new Uint8Array(LEN));
    s.client.mm.write(s.src, data);
    const w = wc(s.conn.postAndWait({ wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: LEN, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey }));
    expect(w.status).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(w.wrId).toBe(1);
    expect(bytesEqual(s.server.mm.read(s.buf, LEN), data)).toBe(true);
    s.client.mm.write(s.src, new Uint8Array(LEN));
    const r = wc(s.conn.postAndWait({ wrId: 2, opcode: IB_WR_RDMA_READ, sgList: [{ addr: s.src, length: LEN, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey }));
    expect(r.status).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(bytesEqual(s.client.mm.read(s.src, LEN), data)).toBe(true);
    expect(s.conn.reconnects).toBe(0);
  });

  it('an error completion recreates and reconnects both QPs; the next request succeeds', () => {
    const s = setup();
    const qpBefore = s.conn.requester.qp;
    const bad = wc(s.conn.postAndWait({ wrId: 3, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: PAGE_SIZE, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey + 0x100 }));
    expect(bad.status).not.toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(s.conn.reconnects).toBe(1);
    expect(s.conn.requester.qp).not.toBe(qpBefore);
    expect(s.conn.requester.qp.state).toBe('RTS');
    expect(s.conn.requester.qp.peer).toBe(s.conn.responder.qp);
    const ok = wc(s.conn.postAndWait({ wrId: 4, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: PAGE_SIZE, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey }));
    expect(ok.status).toBe(IbWcStatus.IB_WC_SUCCESS);
  });

  it('returns the post error (-EINVAL) or -ETIMEDOUT, and refuses bad wait options', () => {
    const s = setup();
    s.conn.requester.destroyQp();
    const r = s.conn.postAndWait({ wrId: 5, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: PAGE_SIZE, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey });
    expect(r).toBe(-Errno.EINVAL);
    expect(s.conn.requester.qp.state).toBe('RTS');
    const t = s.conn.postAndWait({ wrId: 6, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: PAGE_SIZE, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey }, { maxSteps: 0 });
    expect(t).toBe(-Errno.ETIMEDOUT);
    expect(s.conn.reconnects).toBe(2);
    expect(() => s.conn.postAndWait({ wrId: 7, opcode: IB_WR_RDMA_WRITE, sgList: [] }, { stepNs: 0 })).toThrow(RangeError);
    expect(() => s.conn.postAndWait({ wrId: 7, opcode: IB_WR_RDMA_WRITE, sgList: [] }, { maxSteps: -1 })).toThrow(RangeError);
    s.conn.disconnect();
    expect(s.conn.requester.qp.state).toBe('RESET');
  });
});

describe('watchOdpAccesses', () => {
  it('counts every HCA access and finds none stale while the MTTs follow the CPU page table', () => {
    const s = setup();
    const watch = watchOdpAccesses(s.conn.responder.ib.hca, s.server.mm);
    s.client.mm.write(s.src, new Uint8Array(LEN).fill(5));
    s.conn.postAndWait({ wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: LEN, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey });
    // The process drops the pages; the next write faults them in again at new physical pages.
    s.server.mm.munmap(s.buf, LEN);
    s.server.mm.mmap({ length: LEN, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, addr: s.buf });
    s.conn.postAndWait({ wrId: 2, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: LEN, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey });
    expect(watch.accesses).toBeGreaterThan(0);
    expect(watch.stale).toBe(0);
    watch.stop();
    expect(s.conn.responder.ib.hca.onAccess).toBeUndefined();
  });

  it('flags accesses whose device address does not reach the page the CPU maps', () => {
    const s = setup();
    const watch = watchOdpAccesses(s.conn.responder.ib.hca, s.server.mm, (dma) => dma + PAGE_SIZE);
    s.conn.postAndWait({ wrId: 1, opcode: IB_WR_RDMA_WRITE, sgList: [{ addr: s.src, length: 2 * PAGE_SIZE, lkey: s.lkey }], remoteAddr: s.buf, rkey: s.rkey });
    expect(watch.stale).toBe(watch.accesses);
    expect(watch.stale).toBeGreaterThan(0);
  });
});
