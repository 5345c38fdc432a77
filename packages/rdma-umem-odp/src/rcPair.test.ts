// Mlx5RcPair through the package surface: the remote HCA RDMA-WRITEs into and RDMA-READs from
// ODP MRs of the local one (page faults on both ends), an access error takes the QP to the error
// state, and reconnect() gives a working pair again.
import { describe, expect, it } from 'vitest';
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, SZ_1G, createMachine } from '@dmakit/dma-core';
import type { Process } from '@dmakit/dma-core';
import { IB_ACCESS_LOCAL_WRITE, IB_ACCESS_ON_DEMAND, IB_ACCESS_REMOTE_READ, IB_ACCESS_REMOTE_WRITE, IbWcStatus, Mlx5IbDev, Mlx5RcPair } from '@dmakit/rdma-umem-odp';
import type { Mlx5IbMr } from '@dmakit/rdma-umem-odp';
import { createFakeHmm } from './testing/fakeHmm.js';

const RW = IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_READ | IB_ACCESS_REMOTE_WRITE | IB_ACCESS_ON_DEMAND;
const LEN = 64 * 1024;

function pair(): { proc: Process; rc: Mlx5RcPair } {
  const m = createMachine({ ramBytes: SZ_1G, seed: 3, dmaDebug: 'warn' });
  const hmm = createFakeHmm();
  const dev = (name: string): Mlx5IbDev => new Mlx5IbDev({ dev: m.pci.addDevice({ name, dmaMaskBits: 64 }), hmm, scheduler: m.scheduler, name });
  const proc = m.createProcess();
  return { proc, rc: new Mlx5RcPair(dev('mlx5_0'), dev('mlx5_1'), proc.mm) };
}

function odpMr(proc: Process, ib: Mlx5IbDev, pd: Mlx5RcPair['pdLocal']): { addr: number; mr: Mlx5IbMr } {
  const addr = proc.mm.mmap({ length: LEN, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  if (addr < 0) throw new Error(`mmap ${addr}`);
  const mr = ib.regUserMr(pd, addr, LEN, addr, RW);
  if (typeof mr === 'number') throw new Error(`reg_user_mr ${mr}`);
  return { addr, mr };
}

function fill(seed: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return out;
}

describe('Mlx5RcPair: a loopback RC connection between two mlx5 devices', () => {
  it('rdmaWrite pushes remote bytes into a local MR, rdmaRead pulls them back, at offsets', () => {
    const { proc, rc } = pair();
    const local = odpMr(proc, rc.local, rc.pdLocal);
    const remote = odpMr(proc, rc.remote, rc.pdRemote);
    const data = fill(1, 16 * 1024);
    proc.mm.write(remote.addr + 4096, data);
    expect(rc.rdmaWrite(remote.mr, 4096, local.mr, 8192, data.length)).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(proc.mm.read(local.addr + 8192, data.length)).toEqual(data);
    expect(rc.rdmaRead(local.mr, 8192, remote.mr, 32 * 1024, data.length)).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(proc.mm.read(remote.addr + 32 * 1024, data.length)).toEqual(data);
    expect(rc.local.stats.pageFaults).toBeGreaterThan(0);
    expect(rc.remote.stats.pageFaults).toBeGreaterThan(0);
    expect(rc.qpRemote.state).toBe('RTS');
  });

  it('an access outside the MR fails (remote access error), the QP is in error until reconnect()', () => {
    const { proc, rc } = pair();
    const local = odpMr(proc, rc.local, rc.pdLocal);
    const remote = odpMr(proc, rc.remote, rc.pdRemote);
    expect(rc.rdmaRead(local.mr, LEN - 4096, remote.mr, 0, 8192)).toBe(IbWcStatus.IB_WC_REM_ACCESS_ERR);
    expect(rc.qpRemote.state).toBe('ERR');
    const old = rc.qpRemote;
    expect(rc.rdmaRead(local.mr, 0, remote.mr, 0, 4096)).toBe(IbWcStatus.IB_WC_WR_FLUSH_ERR);
    rc.reconnect();
    expect(rc.qpRemote).not.toBe(old);
    expect(rc.qpRemote.state).toBe('RTS');
    expect(rc.qpLocal.peer).toBe(rc.qpRemote);
    const data = fill(2, 4096);
    proc.mm.write(local.addr, data);
    expect(rc.rdmaRead(local.mr, 0, remote.mr, 0, 4096)).toBe(IbWcStatus.IB_WC_SUCCESS);
    expect(proc.mm.read(remote.addr, 4096)).toEqual(data);
  });
});
