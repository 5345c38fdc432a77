// The NVMe controller model driven by hand, like a spec conformance test: queues and commands are
// written into simulated physical memory, doorbells rung, the clock advanced, completions read back.
import { createMachine, SZ_1M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AQA,
  CAP,
  CC,
  CSTS,
  NVME_CQ_IRQ_ENABLED,
  NVME_DSMGMT_AD,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_REG_AQA,
  NVME_REG_ACQ,
  NVME_REG_ASQ,
  NVME_REG_CAP,
  NVME_REG_CC,
  NVME_REG_CSTS,
  NVME_REG_VS,
  NvmeAdminOpcode,
  NvmeController,
  NvmeFeat,
  NvmeIdCns,
  NvmeOpcode,
  NvmeSglType,
  NvmeStatus,
  nvmeDoorbellOffset,
  nvmeStatusCode,
  nvmeStatusName,
  regGet,
  regSet,
} from '@dmakit/nvme-pci';
import type { NvmeControllerOptions } from '@dmakit/nvme-pci';
import { pattern } from '@dmakit/testkit';

const PAGE = 4096;
const LAT = { fetch: 100, admin: 1000, read: 2000, write: 2000, perByte: 0, interrupt: 50, ready: 500_000, reset: 50_000, shutdown: 20_000 };

// ---- a hand-driven host ------------------------------------------------------------------------

interface Cqe {
  dw0: number;
  sqhd: number;
  sqid: number;
  cid: number;
  status: number;
  phase: number;
}

interface SqeFields {
  opc: number;
  cid?: number;
  nsid?: number;
  psdt?: number;
  prp1?: number;
  prp2?: number;
  /** SGL1 in DPTR: address, length, type (high nibble of the identifier byte). */
  sgl?: { addr: number; len: number; type: number; subtype?: number };
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
}

function le64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 2 ** 32), true);
}

function sqe(f: SqeFields): Uint8Array {
  const b = new Uint8Array(64);
  const dv = new DataView(b.buffer);
  dv.setUint8(0, f.opc);
  dv.setUint8(1, (f.psdt ?? (f.sgl ? 1 : 0)) << 6);
  dv.setUint16(2, f.cid ?? 0, true);
  dv.setUint32(4, f.nsid ?? 0, true);
  if (f.sgl) {
    le64(dv, 24, f.sgl.addr);
    dv.setUint32(32, f.sgl.len, true);
    dv.setUint8(39, (f.sgl.type << 4) | (f.sgl.subtype ?? 0));
  } else {
    le64(dv, 24, f.prp1 ?? 0);
    le64(dv, 32, f.prp2 ?? 0);
  }
  dv.setUint32(40, f.cdw10 ?? 0, true);
  dv.setUint32(44, f.cdw11 ?? 0, true);
  dv.setUint32(48, f.cdw12 ?? 0, true);
  return b;
}

/** A 16-byte SGL descriptor. */
function sglDesc(addr: number, len: number, type: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  le64(dv, 0, addr);
  dv.setUint32(8, len, true);
  dv.setUint8(15, type << 4);
  return b;
}

interface HostQueue {
  sqBase: number;
  cqBase: number;
  sqSize: number;
  cqSize: number;
  sqTail: number;
  cqHead: number;
  phase: number;
}

/* eslint-disable vitest/no-standalone-expect -- HandHost is a test double whose methods run only inside tests */
class HandHost {
  readonly machine: Machine;
  readonly ctrl: NvmeController;
  readonly queues = new Map<number, HostQueue>();
  nextCid = 1;

  constructor(machine: Machine, ctrl: NvmeController) {
    this.machine = machine;
    this.ctrl = ctrl;
  }

  /** Physically contiguous, page-aligned host memory (dma address = phys without an IOMMU). */
  alloc(bytes: number): number {
    const pages = Math.ceil(bytes / PAGE);
    const order = Math.ceil(Math.log2(pages));
    const phys = this.machine.memory.allocPages(order);
    expect(phys).not.toBe(0);
    this.machine.memory.fill(phys, PAGE << order, 0);
    return phys;
  }

  write(phys: number, bytes: Uint8Array): void {
    this.machine.memory.write(phys, bytes);
  }

  read(phys: number, len: number): Uint8Array {
    return this.machine.memory.read(phys, len);
  }

  csts(): number {
    return this.ctrl.mmioRead32(NVME_REG_CSTS);
  }

  /** Program AQA/ASQ/ACQ and set CC.EN (nvme_pci_configure_admin_queue + nvme_enable_ctrl). */
  enable(adminEntries = 32, mps = 0): void {
    const q: HostQueue = { sqBase: this.alloc(adminEntries * 64), cqBase: this.alloc(adminEntries * 16), sqSize: adminEntries, cqSize: adminEntries, sqTail: 0, cqHead: 0, phase: 1 };
    this.queues.set(0, q);
    this.ctrl.mmioWrite32(NVME_REG_AQA, regSet(regSet(0, AQA.ASQS, adminEntries - 1), AQA.ACQS, adminEntries - 1));
    this.ctrl.mmioWrite64(NVME_REG_ASQ, q.sqBase);
    this.ctrl.mmioWrite64(NVME_REG_ACQ, q.cqBase);
    let cc = regSet(0, CC.MPS, mps);
    cc = regSet(cc, CC.IOSQES, 6);
    cc = regSet(cc, CC.IOCQES, 4);
    cc = regSet(cc, CC.EN, 1);
    this.ctrl.mmioWrite32(NVME_REG_CC, cc);
  }

  enableAndWait(): void {
    this.enable();
    this.machine.advance(LAT.ready);
    expect(regGet(this.csts(), CSTS.RDY)).toBe(1);
  }

  /** Write an SQE at the tail and ring the SQ tail doorbell. */
  submit(qid: number, f: SqeFields): number {
    const q = this.queues.get(qid);
    if (q === undefined) throw new Error(`no queue ${qid}`);
    const cid = f.cid ?? this.nextCid++ & 0xffff;
    this.write(q.sqBase + q.sqTail * 64, sqe({ ...f, cid }));
    q.sqTail = (q.sqTail + 1) % q.sqSize;
    this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, false), q.sqTail);
    return cid;
  }

  /** Consume every new CQE (phase tag matches), then ring the CQ head doorbell. */
  reap(qid: number, ringDoorbell = true): Cqe[] {
    const q = this.queues.get(qid);
    if (q === undefined) throw new Error(`no queue ${qid}`);
    const out: Cqe[] = [];
    for (;;) {
      const b = this.read(q.cqBase + q.cqHead * 16, 16);
      const dv = new DataView(b.buffer);
      const sf = dv.getUint16(14, true);
      if ((sf & 1) !== q.phase) break;
      out.push({ dw0: dv.getUint32(0, true), sqhd: dv.getUint16(8, true), sqid: dv.getUint16(10, true), cid: dv.getUint16(12, true), status: sf >> 1, phase: sf & 1 });
      q.cqHead++;
      if (q.cqHead === q.cqSize) {
        q.cqHead = 0;
        q.phase ^= 1;
      }
    }
    if (out.length > 0 && ringDoorbell) this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, true), q.cqHead);
    return out;
  }

  /** Submit one command, run the simulation until idle, return its completion. */
  sync(qid: number, f: SqeFields): Cqe {
    const cid = this.submit(qid, f);
    this.machine.scheduler.runUntilIdle();
    const cqes = this.reap(qid);
    expect(cqes).toHaveLength(1);
    const c = cqes[0]!;
    expect(c.cid).toBe(cid);
    return c;
  }

  admin(f: SqeFields): Cqe {
    return this.sync(0, f);
  }

  /** Create I/O CQ `qid` then I/O SQ `qid` bound to it. */
  createIoQueuePair(qid: number, entries: number, vector = qid, ien = true): void {
    const q: HostQueue = { sqBase: this.alloc(entries * 64), cqBase: this.alloc(entries * 16), sqSize: entries, cqSize: entries, sqTail: 0, cqHead: 0, phase: 1 };
    const cq = this.admin({ opc: NvmeAdminOpcode.CREATE_CQ, prp1: q.cqBase, cdw10: ((entries - 1) << 16) | qid, cdw11: ((vector << 16) | NVME_QUEUE_PHYS_CONTIG | (ien ? NVME_CQ_IRQ_ENABLED : 0)) >>> 0 });
    expect(nvmeStatusName(cq.status)).toBe('SUCCESS');
    const sq = this.admin({ opc: NvmeAdminOpcode.CREATE_SQ, prp1: q.sqBase, cdw10: ((entries - 1) << 16) | qid, cdw11: ((qid << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0 });
    expect(nvmeStatusName(sq.status)).toBe('SUCCESS');
    this.queues.set(qid, q);
  }

  /**
   * PRP1/PRP2 for `len` bytes of a buffer made of `pages` (page addresses) starting at `off` in the
   * first page, the way the spec lays them out: PRP2 is the second page, or a PRP list whose last
   * slot chains to the next list page when more entries follow.
   */
  prps(pages: readonly number[], off: number, len: number): { prp1: number; prp2: number; listPages: number } {
    const prp1 = pages[0]! + off;
    const first = Math.min(len, PAGE - off);
    const rest = pages.slice(1, 1 + Math.ceil((len - first) / PAGE));
    if (rest.length === 0) return { prp1, prp2: 0, listPages: 0 };
    if (rest.length === 1) return { prp1, prp2: rest[0]!, listPages: 0 };
    const lists: number[] = [];
    let i = 0;
    let listAddr = 0;
    while (i < rest.length) {
      const page = this.alloc(PAGE);
      if (lists.length > 0) this.#putEntry(listAddr, 511, page); // chain from the last slot
      lists.push(page);
      listAddr = page;
      const remaining = rest.length - i;
      const n = remaining > 512 ? 511 : remaining;
      for (let k = 0; k < n; k++) this.#putEntry(page, k, rest[i + k]!);
      i += n;
    }
    return { prp1, prp2: lists[0]!, listPages: lists.length };
  }

  #putEntry(list: number, slot: number, value: number): void {
    const b = new Uint8Array(8);
    le64(new DataView(b.buffer), 0, value);
    this.write(list + slot * 8, b);
  }
}
/* eslint-enable vitest/no-standalone-expect */

function setup(opts: Partial<NvmeControllerOptions> = {}): { machine: Machine; ctrl: NvmeController; host: HandHost } {
  const machine = createMachine({ ramBytes: 256 * SZ_1M, swiotlbBytes: 0 });
  const dev = machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
  const ctrl = new NvmeController(machine, dev, {
    namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }],
    maxQueues: 4,
    latencyNs: LAT,
    ...opts,
  });
  return { machine, ctrl, host: new HandHost(machine, ctrl) };
}

function rw(opc: number, slba: number, nlb: number, extra: Partial<SqeFields>): SqeFields {
  return { opc, nsid: 1, cdw10: slba >>> 0, cdw11: Math.floor(slba / 2 ** 32), cdw12: nlb - 1, ...extra };
}

const status = (c: Cqe): string => nvmeStatusName(c.status);

/** Byte equality without vitest's element-by-element diff (megabyte buffers). */
function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  expect(at, `first differing byte at ${at}`).toBe(-1);
}

// ---- controller registers and state machine ----------------------------------------------------

describe('NVMe controller registers and the CC/CSTS state machine', () => {
  it('reports CAP and VS as the spec lays them out', () => {
    const { ctrl } = setup({ maxQueueEntries: 256, doorbellStride: 0 });
    const cap = ctrl.mmioRead64(NVME_REG_CAP);
    expect(regGet(cap, CAP.MQES)).toBe(255); // 0's based
    expect(regGet(cap, CAP.CQR)).toBe(1);
    expect(regGet(cap, CAP.DSTRD)).toBe(0);
    expect(regGet(cap, CAP.CSS) & 1).toBe(1); // NVM command set
    expect(regGet(cap, CAP.MPSMIN)).toBe(0);
    expect(regGet(cap, CAP.MPSMAX)).toBe(1);
    expect(Number.isSafeInteger(cap)).toBe(true);
    expect(regGet(cap, CAP.TO)).toBeGreaterThanOrEqual(1);
    expect(ctrl.mmioRead32(NVME_REG_VS)).toBe(0x00010400);
  });

  it('raises CSTS.RDY only after the ready delay once CC.EN goes 0 -> 1', () => {
    const { machine, host } = setup();
    host.enable();
    expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
    machine.advance(LAT.ready - 1);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
    machine.advance(1);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(1);
  });

  it('CC.EN 1 -> 0 resets: queues are dropped at once, RDY falls after the reset delay', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    ctrl.mmioWrite32(NVME_REG_CC, ctrl.mmioRead32(NVME_REG_CC) & ~1);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(1);
    machine.advance(LAT.reset);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
    // A doorbell now is ignored: nothing is fetched.
    host.submit(0, { opc: NvmeAdminOpcode.IDENTIFY, cdw10: NvmeIdCns.CTRL });
    machine.scheduler.runUntilIdle();
    expect(ctrl.stats.ignoredDoorbells).toBe(1);
    expect(ctrl.stats.completions).toBe(0);
  });

  it('CC.SHN = normal: SHST goes occurring, then complete', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    ctrl.mmioWrite32(NVME_REG_CC, regSet(ctrl.mmioRead32(NVME_REG_CC), CC.SHN, 1));
    expect(regGet(host.csts(), CSTS.SHST)).toBe(1);
    machine.advance(LAT.shutdown);
    expect(regGet(host.csts(), CSTS.SHST)).toBe(2);
    expect(ctrl.ready).toBe(false);
  });

  it('stays not ready on a bad configuration (admin queue base not page aligned to CC.MPS)', () => {
    const { machine, ctrl, host } = setup();
    host.enable(32, 1); // 8 KiB pages; an order-0 allocation may not be 8 KiB aligned
    const asq = ctrl.mmioRead64(NVME_REG_ASQ);
    machine.advance(LAT.ready * 2);
    if (asq % 8192 !== 0) {
      expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
      expect(ctrl.lastError).toMatch(/ASQ/);
    }
    ctrl.mmioWrite32(NVME_REG_CC, 0);
    ctrl.mmioWrite64(NVME_REG_ASQ, 0);
    ctrl.mmioWrite32(NVME_REG_CC, regSet(regSet(regSet(0, CC.IOSQES, 6), CC.IOCQES, 4), CC.EN, 1));
    machine.advance(LAT.ready * 2);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
    expect(ctrl.lastError).toMatch(/ASQ/);
  });
});

// ---- admin command set ----------------------------------------------------------------------------

describe('admin commands', () => {
  it('Identify Controller, Identify Namespace and the active namespace list return data by DMA to PRP1', () => {
    const { host } = setup({ namespaces: [{ nsid: 1, lbaSize: 512, capacityLbas: 1 << 16 }, { nsid: 3, lbaSize: 4096, capacityLbas: 100 }], mdts: 5 });
    host.enableAndWait();
    const buf = host.alloc(PAGE);
    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, prp1: buf, cdw10: NvmeIdCns.CTRL }))).toBe('SUCCESS');
    const id = host.read(buf, PAGE);
    const dv = new DataView(id.buffer);
    expect(new TextDecoder().decode(id.subarray(24, 64)).trim()).toBe('dmakit NVMe Ctrl');
    expect(id[77]).toBe(5); // MDTS
    expect(id[512]).toBe(0x66); // SQES
    expect(id[513]).toBe(0x44); // CQES
    expect(dv.getUint32(516, true)).toBe(3); // NN
    expect(dv.getUint32(536, true) & 3).toBe(1); // SGLS: supported

    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, nsid: 3, prp1: buf, cdw10: NvmeIdCns.NS }))).toBe('SUCCESS');
    const ns = new DataView(host.read(buf, PAGE).buffer);
    expect(ns.getUint32(0, true)).toBe(100); // NSZE
    expect(ns.getUint8(130)).toBe(12); // LBAF0.LBADS: 4096-byte blocks
    expect(ns.getUint8(33) & 7).toBe(1); // DLFEAT: deallocated blocks read as zeros

    // Identify NS for an inactive but valid nsid returns zeros; nsid 0 is Invalid Namespace.
    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, nsid: 2, prp1: buf, cdw10: NvmeIdCns.NS }))).toBe('SUCCESS');
    expect(host.read(buf, 8).every((b) => b === 0)).toBe(true);
    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, nsid: 0, prp1: buf, cdw10: NvmeIdCns.NS }))).toBe('INVALID_NS|DNR');

    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, nsid: 0, prp1: buf, cdw10: NvmeIdCns.NS_ACTIVE_LIST }))).toBe('SUCCESS');
    const list = new DataView(host.read(buf, 12).buffer);
    expect([list.getUint32(0, true), list.getUint32(4, true), list.getUint32(8, true)]).toEqual([1, 3, 0]);

    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, prp1: buf, cdw10: 0x55 }))).toBe('INVALID_FIELD|DNR');
    expect(status(host.admin({ opc: 0x7f }))).toBe('INVALID_OPCODE|DNR');
  });

  it('Set Features (Number of Queues) allocates queues and reports them 0-based in DW0', () => {
    const { host } = setup({ maxQueues: 4 });
    host.enableAndWait();
    const c = host.admin({ opc: NvmeAdminOpcode.SET_FEATURES, cdw10: NvmeFeat.NUM_QUEUES, cdw11: (1 << 16) | 1 });
    expect(status(c)).toBe('SUCCESS');
    expect(c.dw0).toBe((1 << 16) | 1); // 2 SQs and 2 CQs
    expect(host.admin({ opc: NvmeAdminOpcode.GET_FEATURES, cdw10: NvmeFeat.NUM_QUEUES }).dw0).toBe((1 << 16) | 1);
    expect(status(host.admin({ opc: NvmeAdminOpcode.SET_FEATURES, cdw10: NvmeFeat.NUM_QUEUES, cdw11: 0xffff }))).toBe('INVALID_FIELD|DNR');
    // Queue 3 is beyond the allocation now.
    const cq = host.alloc(PAGE);
    expect(status(host.admin({ opc: NvmeAdminOpcode.CREATE_CQ, prp1: cq, cdw10: (15 << 16) | 3, cdw11: NVME_QUEUE_PHYS_CONTIG }))).toBe('QID_INVALID|DNR');
  });

  it('Create I/O CQ/SQ check queue id, size, vector, base alignment and contiguity with the command-specific codes', () => {
    const { host } = setup({ maxQueues: 4, maxQueueEntries: 64, msixVectors: 5 });
    host.enableAndWait();
    const base = host.alloc(PAGE);
    const createCq = (qid: number, entries: number, cdw11: number, prp1 = base): string =>
      status(host.admin({ opc: NvmeAdminOpcode.CREATE_CQ, prp1, cdw10: (((entries - 1) << 16) | qid) >>> 0, cdw11: cdw11 >>> 0 }));
    const createSq = (qid: number, entries: number, cqid: number, prp1 = base): string =>
      status(host.admin({ opc: NvmeAdminOpcode.CREATE_SQ, prp1, cdw10: (((entries - 1) << 16) | qid) >>> 0, cdw11: ((cqid << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0 }));

    expect(createCq(0, 16, NVME_QUEUE_PHYS_CONTIG)).toBe('QID_INVALID|DNR'); // the admin queue id
    expect(createCq(5, 16, NVME_QUEUE_PHYS_CONTIG)).toBe('QID_INVALID|DNR'); // beyond maxQueues
    expect(createCq(1, 65, NVME_QUEUE_PHYS_CONTIG)).toBe('QUEUE_SIZE|DNR'); // > CAP.MQES + 1
    expect(createCq(1, 1, NVME_QUEUE_PHYS_CONTIG)).toBe('QUEUE_SIZE|DNR'); // a 1-entry queue
    expect(createCq(1, 16, NVME_QUEUE_PHYS_CONTIG, base + 512)).toBe('PRP_INVALID_OFFSET|DNR');
    expect(createCq(1, 16, (5 << 16) | NVME_QUEUE_PHYS_CONTIG)).toBe('INVALID_VECTOR|DNR');
    expect(createCq(1, 16, 0)).toBe('INVALID_FIELD|DNR'); // PC = 0 while CAP.CQR = 1
    expect(createCq(1, 16, (1 << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED)).toBe('SUCCESS');
    expect(createCq(1, 16, NVME_QUEUE_PHYS_CONTIG)).toBe('QID_INVALID|DNR'); // exists already

    const sqBase = host.alloc(PAGE);
    expect(createSq(1, 16, 2, sqBase)).toBe('CQ_INVALID|DNR'); // no CQ 2
    expect(createSq(1, 16, 0, sqBase)).toBe('CQ_INVALID|DNR'); // I/O SQs cannot use the admin CQ
    expect(createSq(1, 16, 1, sqBase)).toBe('SUCCESS');

    expect(status(host.admin({ opc: NvmeAdminOpcode.DELETE_CQ, cdw10: 1 }))).toBe('INVALID_QUEUE|DNR'); // SQ 1 still uses it
    expect(status(host.admin({ opc: NvmeAdminOpcode.DELETE_SQ, cdw10: 2 }))).toBe('QID_INVALID|DNR');
    expect(status(host.admin({ opc: NvmeAdminOpcode.DELETE_SQ, cdw10: 1 }))).toBe('SUCCESS');
    expect(status(host.admin({ opc: NvmeAdminOpcode.DELETE_CQ, cdw10: 1 }))).toBe('SUCCESS');
  });
});

// ---- I/O through PRPs ------------------------------------------------------------------------------

describe('I/O with PRPs (spec 4.3)', () => {
  function ioSetup(): { machine: Machine; ctrl: NvmeController; host: HandHost } {
    const s = setup();
    s.host.enableAndWait();
    s.host.createIoQueuePair(1, 16);
    return s;
  }

  function pagesOf(host: HandHost, n: number): number[] {
    const base = host.alloc(n * PAGE);
    return Array.from({ length: n }, (_, i) => base + i * PAGE);
  }

  /** Write `data` at LBA `slba` through PRPs over `pages` at offset `off`, then read it back through fresh pages. */
  function roundTrip(host: HandHost, ctrl: NvmeController, len: number, off: number, slba: number): { listPages: number } {
    const data = pattern(len, len + off);
    const src = pagesOf(host, Math.ceil((off + len) / PAGE));
    host.write(src[0]! + off, data);
    const w = host.prps(src, off, len);
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, slba, len / 512, { prp1: w.prp1, prp2: w.prp2 })))).toBe('SUCCESS');
    expectBytes(ctrl.namespace(1)!.readLbas(slba, len / 512), data);
    const dst = pagesOf(host, Math.ceil((off + len) / PAGE));
    const r = host.prps(dst, off, len);
    expect(status(host.sync(1, rw(NvmeOpcode.READ, slba, len / 512, { prp1: r.prp1, prp2: r.prp2 })))).toBe('SUCCESS');
    expectBytes(host.read(dst[0]! + off, len), data);
    return { listPages: w.listPages };
  }

  it('PRP1 with an offset: the first page holds PAGE - offset bytes, PRP2 the rest', () => {
    const { ctrl, host } = ioSetup();
    roundTrip(host, ctrl, 4096, 0x200, 10);
    expect(ctrl.stats.prpListPages).toBe(0);
  });

  it('exactly two pages: PRP2 is the second data page, no list', () => {
    const { ctrl, host } = ioSetup();
    roundTrip(host, ctrl, 8192, 0, 20);
    expect(ctrl.stats.prpListPages).toBe(0);
  });

  it('more than two pages: PRP2 points to a PRP list', () => {
    const { ctrl, host } = ioSetup();
    const { listPages } = roundTrip(host, ctrl, 5 * PAGE, 0, 30);
    expect(listPages).toBe(1);
    expect(ctrl.stats.prpListPages).toBe(2); // one list page per command, write then read
  });

  it('a hand-written PRP list: PRP1 unaligned, list entries page aligned', () => {
    const { ctrl, host } = ioSetup();
    const [p0, p1, p2, p3] = pagesOf(host, 4) as [number, number, number, number];
    const list = host.alloc(PAGE);
    // 3 KiB in page 0 (offset 1 KiB), then pages 1, 2, 3: 3 + 4 + 4 + 1 = 12 KiB
    const entries = new DataView(new ArrayBuffer(24));
    le64(entries, 0, p1);
    le64(entries, 8, p2);
    le64(entries, 16, p3);
    host.write(list, new Uint8Array(entries.buffer));
    const data = pattern(12 * 1024, 7);
    host.write(p0 + 1024, data);
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 0, 24, { prp1: p0 + 1024, prp2: list })))).toBe('SUCCESS');
    expectBytes(ctrl.namespace(1)!.readLbas(0, 24), data);
  });

  it('a chained PRP list (more than 512 entries): the last slot of a full list page points to the next list page', () => {
    const { ctrl, host } = ioSetup();
    const { listPages } = roundTrip(host, ctrl, 520 * PAGE, 0, 100);
    expect(listPages).toBe(2);
    expect(ctrl.stats.prpListPages).toBe(4);
  });

  it('a PRP list entry with a non-zero offset completes with Invalid PRP Offset and writes nothing', () => {
    const { ctrl, host } = ioSetup();
    const pages = pagesOf(host, 3);
    host.write(pages[0]!, pattern(3 * PAGE, 1));
    const list = host.alloc(PAGE);
    const entries = new DataView(new ArrayBuffer(16));
    le64(entries, 0, pages[1]!);
    le64(entries, 8, pages[2]! + 0x100); // offset bits set in a list entry
    host.write(list, new Uint8Array(entries.buffer));
    const c = host.sync(1, rw(NvmeOpcode.WRITE, 0, 24, { prp1: pages[0]!, prp2: list }));
    expect(status(c)).toBe('PRP_INVALID_OFFSET|DNR');
    expect(ctrl.namespace(1)!.readLbas(0, 24).every((b) => b === 0)).toBe(true);
    // PRP2 as a second page must be page aligned too; PRP1 must be dword aligned.
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 0, 16, { prp1: pages[0]!, prp2: pages[1]! + 8 })))).toBe('PRP_INVALID_OFFSET|DNR');
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 0, 1, { prp1: pages[0]! + 2 })))).toBe('PRP_INVALID_OFFSET|DNR');
  });

  it('LBA Out of Range, MDTS, unknown namespace and unknown opcode', () => {
    const { ctrl, host } = setup({ mdts: 1 }); // 8 KiB max transfer
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    const buf = host.alloc(4 * PAGE);
    const cap = ctrl.namespace(1)!.capacityLbas;
    expect(status(host.sync(1, rw(NvmeOpcode.READ, cap - 1, 2, { prp1: buf, prp2: buf + PAGE })))).toBe('LBA_RANGE|DNR');
    expect(status(host.sync(1, rw(NvmeOpcode.READ, cap - 2, 2, { prp1: buf })))).toBe('SUCCESS');
    expect(status(host.sync(1, rw(NvmeOpcode.READ, 0, 24, { prp1: buf, prp2: buf + PAGE })))).toBe('INVALID_FIELD|DNR'); // 12 KiB > MDTS
    expect(status(host.sync(1, rw(NvmeOpcode.READ, 0, 1, { nsid: 9, prp1: buf })))).toBe('INVALID_NS|DNR');
    expect(status(host.sync(1, { opc: 0x55, nsid: 1 }))).toBe('INVALID_OPCODE|DNR');
    expect(status(host.sync(1, { opc: NvmeOpcode.FLUSH, nsid: 0xffffffff }))).toBe('SUCCESS');
    expect(ctrl.stats.errorsByStatus.get(NvmeStatus.LBA_RANGE)).toBe(1);
  });

  it('a DMA fault mid-transfer (no memory behind a page) completes with Data Transfer Error; the namespace is unchanged', () => {
    const { machine, ctrl, host } = ioSetup();
    const good = host.alloc(PAGE);
    host.write(good, pattern(PAGE, 3));
    const hole = 0x8000_0000; // 2 GiB: no RAM in a 256 MiB machine
    const c = host.sync(1, rw(NvmeOpcode.WRITE, 0, 16, { prp1: good, prp2: hole }));
    expect(status(c)).toBe('DATA_XFER_ERROR');
    expect(ctrl.namespace(1)!.readLbas(0, 16).every((b) => b === 0)).toBe(true);
    expect(machine.faults.at(-1)?.dmaAddr).toBe(hole);
    // The controller keeps going: the next command succeeds.
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 0, 8, { prp1: good })))).toBe('SUCCESS');
    // A PRP list behind a hole is a Data Transfer Error too.
    expect(status(host.sync(1, rw(NvmeOpcode.READ, 0, 24, { prp1: good, prp2: hole })))).toBe('DATA_XFER_ERROR');
  });

  it('property: any write then read through PRPs at any dword offset returns the same bytes', () => {
    const { ctrl, host } = ioSetup();
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 0, max: 1000 }), (nlb, offDw, slba) => {
        roundTrip(host, ctrl, nlb * 512, offDw * 4, slba);
      }),
      { numRuns: 40 },
    );
  });
});

// ---- I/O through SGLs -----------------------------------------------------------------------------

describe('I/O with SGLs (spec 4.4)', () => {
  function ioSetup(): { ctrl: NvmeController; host: HandHost } {
    const s = setup();
    s.host.enableAndWait();
    s.host.createIoQueuePair(1, 16);
    return s;
  }

  it('one inline Data Block descriptor in the command describes the whole transfer', () => {
    const { ctrl, host } = ioSetup();
    const buf = host.alloc(2 * PAGE);
    const data = pattern(6144, 11);
    host.write(buf + 100, data);
    const c = host.sync(1, rw(NvmeOpcode.WRITE, 5, 12, { sgl: { addr: buf + 100, len: 6144, type: NvmeSglType.DATA_BLOCK } }));
    expect(status(c)).toBe('SUCCESS');
    expectBytes(ctrl.namespace(1)!.readLbas(5, 12), data);
  });

  it('SGL1 is a Last Segment descriptor pointing to a list of data blocks (a bit bucket drops read data)', () => {
    const { ctrl, host } = ioSetup();
    const a = host.alloc(PAGE);
    const b = host.alloc(PAGE);
    const seg = host.alloc(PAGE);
    const data = pattern(4096, 12);
    host.write(a + 8, data.subarray(0, 1000));
    host.write(b + 16, data.subarray(1000));
    host.write(seg, sglDesc(a + 8, 1000, NvmeSglType.DATA_BLOCK));
    host.write(seg + 16, sglDesc(b + 16, 3096, NvmeSglType.DATA_BLOCK));
    const w = host.sync(1, rw(NvmeOpcode.WRITE, 0, 8, { sgl: { addr: seg, len: 32, type: NvmeSglType.LAST_SEGMENT } }));
    expect(status(w)).toBe('SUCCESS');
    expectBytes(ctrl.namespace(1)!.readLbas(0, 8), data);
    expect(ctrl.stats.sglSegments).toBe(1);

    // Read back: 512 bytes into a bit bucket, the rest into one buffer.
    const out = host.alloc(PAGE);
    host.write(seg, sglDesc(0, 512, NvmeSglType.BIT_BUCKET));
    host.write(seg + 16, sglDesc(out, 3584, NvmeSglType.DATA_BLOCK));
    expect(status(host.sync(1, rw(NvmeOpcode.READ, 0, 8, { sgl: { addr: seg, len: 32, type: NvmeSglType.LAST_SEGMENT } })))).toBe('SUCCESS');
    expectBytes(host.read(out, 3584), data.subarray(512));
  });

  it('a Segment chains to a Last Segment', () => {
    const { ctrl, host } = ioSetup();
    const buf = host.alloc(2 * PAGE);
    const seg1 = host.alloc(PAGE);
    const seg2 = host.alloc(PAGE);
    const data = pattern(8192, 13);
    host.write(buf, data);
    host.write(seg1, sglDesc(buf, 4096, NvmeSglType.DATA_BLOCK));
    host.write(seg1 + 16, sglDesc(seg2, 16, NvmeSglType.LAST_SEGMENT));
    host.write(seg2, sglDesc(buf + 4096, 4096, NvmeSglType.DATA_BLOCK));
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 64, 16, { sgl: { addr: seg1, len: 32, type: NvmeSglType.SEGMENT } })))).toBe('SUCCESS');
    expectBytes(ctrl.namespace(1)!.readLbas(64, 16), data);
    // A Last Segment that points on to another segment is an Invalid SGL Segment Descriptor.
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 64, 16, { sgl: { addr: seg1, len: 32, type: NvmeSglType.LAST_SEGMENT } })))).toBe('SGL_INVALID_LAST|DNR');
  });

  it('bad SGLs get their status codes and leave the namespace intact', () => {
    const { ctrl, host } = ioSetup();
    const buf = host.alloc(PAGE);
    const seg = host.alloc(PAGE);
    host.write(buf, pattern(4096, 14));
    const w = (sgl: NonNullable<SqeFields['sgl']>, nlb = 8, extra: Partial<SqeFields> = {}): string => status(host.sync(1, rw(NvmeOpcode.WRITE, 0, nlb, { sgl, ...extra })));

    // Descriptor type 0x7 (reserved) in a segment: SGL Descriptor Type Invalid.
    host.write(seg, sglDesc(buf, 4096, 0x7));
    expect(w({ addr: seg, len: 16, type: NvmeSglType.LAST_SEGMENT })).toBe('SGL_INVALID_TYPE|DNR');
    // A data block with a non-Address subtype: Type Invalid too.
    expect(w({ addr: buf, len: 4096, type: NvmeSglType.DATA_BLOCK, subtype: 1 })).toBe('SGL_INVALID_TYPE|DNR');
    // Zero-length data block: the SGL describes less than the transfer.
    expect(w({ addr: buf, len: 0, type: NvmeSglType.DATA_BLOCK })).toBe('SGL_INVALID_DATA|DNR');
    // Shorter and longer than the transfer.
    expect(w({ addr: buf, len: 2048, type: NvmeSglType.DATA_BLOCK })).toBe('SGL_INVALID_DATA|DNR');
    host.write(seg, sglDesc(buf, 4096, NvmeSglType.DATA_BLOCK));
    host.write(seg + 16, sglDesc(buf, 512, NvmeSglType.DATA_BLOCK));
    expect(w({ addr: seg, len: 32, type: NvmeSglType.LAST_SEGMENT })).toBe('SGL_INVALID_DATA|DNR');
    // Segment length not a multiple of 16, or zero.
    expect(w({ addr: seg, len: 20, type: NvmeSglType.LAST_SEGMENT })).toBe('SGL_INVALID_LAST|DNR');
    expect(w({ addr: seg, len: 0, type: NvmeSglType.LAST_SEGMENT })).toBe('SGL_INVALID_LAST|DNR');
    // A segment descriptor in the middle of a segment: Invalid Number of SGL Descriptors.
    host.write(seg, sglDesc(seg, 16, NvmeSglType.SEGMENT));
    host.write(seg + 16, sglDesc(buf, 4096, NvmeSglType.DATA_BLOCK));
    expect(w({ addr: seg, len: 32, type: NvmeSglType.LAST_SEGMENT })).toBe('SGL_INVALID_COUNT|DNR');
    // A segment behind a hole: Data Transfer Error.
    expect(w({ addr: 0x8000_0000, len: 16, type: NvmeSglType.LAST_SEGMENT })).toBe('DATA_XFER_ERROR');
    // PSDT 11b is reserved; admin commands take PRPs only.
    expect(w({ addr: buf, len: 4096, type: NvmeSglType.DATA_BLOCK }, 8, { psdt: 3 })).toBe('INVALID_FIELD|DNR');
    expect(status(host.admin({ opc: NvmeAdminOpcode.IDENTIFY, cdw10: 1, sgl: { addr: buf, len: 4096, type: 0 } }))).toBe('INVALID_FIELD|DNR');

    expect(ctrl.namespace(1)!.readLbas(0, 8).every((b) => b === 0)).toBe(true);
  });

  it('a segment chain that loops forever is cut off with Invalid Number of SGL Descriptors', () => {
    const { host } = ioSetup();
    const seg = host.alloc(PAGE);
    host.write(seg, sglDesc(seg, 16, NvmeSglType.SEGMENT)); // points to itself
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE, 0, 8, { sgl: { addr: seg, len: 16, type: NvmeSglType.SEGMENT } })))).toBe('SGL_INVALID_COUNT|DNR');
  });
});

// ---- Write Zeroes, Dataset Management --------------------------------------------------------------

describe('Write Zeroes and Dataset Management', () => {
  it('Write Zeroes makes blocks read as zeros; deallocated blocks read as zeros (DLFEAT 001b)', () => {
    const { ctrl, host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    const ns = ctrl.namespace(1)!;
    ns.writeLbas(0, pattern(64 * 512, 21));
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE_ZEROES, 8, 8, {})))).toBe('SUCCESS');
    expect(ns.readLbas(8, 8).every((b) => b === 0)).toBe(true);
    expectBytes(ns.readLbas(0, 8), pattern(64 * 512, 21).subarray(0, 4096));
    expect(status(host.sync(1, rw(NvmeOpcode.WRITE_ZEROES, ns.capacityLbas - 4, 8, {})))).toBe('LBA_RANGE|DNR');

    // DSM deallocate of two ranges: [20, +4) and [40, +10)
    const ranges = host.alloc(PAGE);
    const r = new DataView(new ArrayBuffer(32));
    r.setUint32(4, 4, true);
    le64(r, 8, 20);
    r.setUint32(20, 10, true);
    le64(r, 24, 40);
    host.write(ranges, new Uint8Array(r.buffer));
    expect(status(host.sync(1, { opc: NvmeOpcode.DSM, nsid: 1, prp1: ranges, cdw10: 1, cdw11: NVME_DSMGMT_AD }))).toBe('SUCCESS');
    const after = ns.readLbas(0, 64);
    const expected = pattern(64 * 512, 21);
    expected.fill(0, 8 * 512, 16 * 512);
    expected.fill(0, 20 * 512, 24 * 512);
    expected.fill(0, 40 * 512, 50 * 512);
    expectBytes(after, expected);

    // A range past the end fails the whole command: nothing is deallocated.
    ns.writeLbas(0, pattern(64 * 512, 22));
    le64(r, 24, ns.capacityLbas - 2);
    host.write(ranges, new Uint8Array(r.buffer));
    expect(status(host.sync(1, { opc: NvmeOpcode.DSM, nsid: 1, prp1: ranges, cdw10: 1, cdw11: NVME_DSMGMT_AD }))).toBe('LBA_RANGE|DNR');
    expectBytes(ns.readLbas(0, 64), pattern(64 * 512, 22));
  });
});

// ---- completion queues, phase tag, interrupts, abort -------------------------------------------------

describe('completion queue, phase tag, interrupts and abort', () => {
  it('the phase tag flips each time the CQ wraps; SQ head is reported in every CQE', () => {
    const { host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 4);
    const phases: number[] = [];
    const heads: number[] = [];
    for (let i = 0; i < 10; i++) {
      const c = host.sync(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
      phases.push(c.phase);
      heads.push(c.sqhd);
    }
    expect(phases).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 1, 1]);
    expect(heads).toEqual([1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
  });

  it('a full CQ holds completions back until the host frees slots with the CQ head doorbell', () => {
    const { ctrl, host, machine } = setup();
    host.enableAndWait();
    // A 4-entry CQ under an 8-entry SQ: the CQ holds at most 3 completions (full when tail + 1 == head).
    const cqBase = host.alloc(PAGE);
    const sqBase = host.alloc(PAGE);
    expect(status(host.admin({ opc: NvmeAdminOpcode.CREATE_CQ, prp1: cqBase, cdw10: (3 << 16) | 2, cdw11: (2 << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED }))).toBe('SUCCESS');
    expect(status(host.admin({ opc: NvmeAdminOpcode.CREATE_SQ, prp1: sqBase, cdw10: (7 << 16) | 2, cdw11: ((2 << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0 }))).toBe('SUCCESS');
    host.queues.set(2, { sqBase, cqBase, sqSize: 8, cqSize: 4, sqTail: 0, cqHead: 0, phase: 1 });
    for (let i = 0; i < 6; i++) host.submit(2, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(host.reap(2, false)).toHaveLength(3);
    expect(ctrl.stats.completions).toBe(2 + 3);
    // Nothing more arrives until the head doorbell frees the slots.
    machine.scheduler.runUntilIdle();
    expect(host.reap(2, false)).toHaveLength(0);
    ctrl.mmioWrite32(nvmeDoorbellOffset(2, true), host.queues.get(2)!.cqHead);
    const rest = host.reap(2);
    expect(rest).toHaveLength(3);
    expect(rest.map((c) => c.phase)).toEqual([1, 0, 0]); // the CQ wrapped after slot 3
  });

  it('MSI-X: the CQ vector fires once per batch; IEN = 0 raises none; a masked vector stays pending', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    const seen: number[] = [];
    ctrl.onInterrupt((v) => seen.push(v));
    host.createIoQueuePair(1, 16, 3, true);
    seen.length = 0;
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(seen).toEqual([3]);
    expect(host.reap(1)).toHaveLength(2);

    ctrl.setVectorMasked(3, true);
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(seen).toEqual([3]);
    ctrl.setVectorMasked(3, false);
    machine.scheduler.runUntilIdle();
    expect(seen).toEqual([3, 3]);
    host.reap(1);

    host.createIoQueuePair(2, 16, 2, false);
    seen.length = 0;
    host.submit(2, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(seen).toEqual([]);
    expect(host.reap(2)).toHaveLength(1);
  });

  it('processing runs on the simulation clock: fetch, execute and interrupt latencies add up', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    const times: number[] = [];
    ctrl.onInterrupt(() => times.push(machine.clock.now()));
    const t0 = machine.clock.now();
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(times).toEqual([t0 + LAT.fetch + LAT.write + LAT.interrupt]);
  });

  it('Abort completes a stuck command with Command Abort Requested; an unknown command is reported not aborted', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    const buf = host.alloc(PAGE);
    ctrl.injectStall(1);
    const cid = host.submit(1, rw(NvmeOpcode.READ, 0, 8, { prp1: buf }));
    machine.scheduler.runUntilIdle();
    expect(host.reap(1)).toHaveLength(0);
    expect(ctrl.inflightCount).toBe(1);
    const a = host.admin({ opc: NvmeAdminOpcode.ABORT_CMD, cdw10: ((cid << 16) | 1) >>> 0 });
    expect(status(a)).toBe('SUCCESS');
    expect(a.dw0 & 1).toBe(0); // aborted
    const [c] = host.reap(1);
    expect(c?.cid).toBe(cid);
    expect(nvmeStatusCode(c!.status)).toBe(NvmeStatus.ABORT_REQ);
    const b = host.admin({ opc: NvmeAdminOpcode.ABORT_CMD, cdw10: ((999 << 16) | 1) >>> 0 });
    expect(b.dw0 & 1).toBe(1);
  });

  it('Delete I/O SQ completes its outstanding commands with Command Aborted due to SQ Deletion', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    ctrl.injectStall(2);
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    expect(status(host.admin({ opc: NvmeAdminOpcode.DELETE_SQ, cdw10: 1 }))).toBe('SUCCESS');
    const cqes = host.reap(1);
    expect(cqes.map((c) => nvmeStatusCode(c.status))).toEqual([NvmeStatus.ABORT_QUEUE, NvmeStatus.ABORT_QUEUE]);
    expect(ctrl.inflightCount).toBe(0);
  });

  it('a reset drops in-flight commands, and the controller can be enabled again', () => {
    const { machine, ctrl, host } = setup();
    host.enableAndWait();
    host.createIoQueuePair(1, 16);
    ctrl.injectStall(1);
    host.submit(1, { opc: NvmeOpcode.FLUSH, nsid: 1 });
    machine.scheduler.runUntilIdle();
    ctrl.mmioWrite32(NVME_REG_CC, 0);
    machine.advance(LAT.reset);
    expect(ctrl.inflightCount).toBe(0);
    expect(regGet(host.csts(), CSTS.RDY)).toBe(0);
    host.queues.clear();
    host.enableAndWait();
    expect(status(host.admin({ opc: NvmeAdminOpcode.GET_FEATURES, cdw10: NvmeFeat.NUM_QUEUES }))).toBe('SUCCESS');
  });
});
