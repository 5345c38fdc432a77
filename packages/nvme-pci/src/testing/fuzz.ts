/**
 * Test helper of @dmakit/nvme-pci (not shipped): a seeded fuzzer for the simulated NVMe
 * controller, driven through its BAR like a driver would. It owns an admin queue and one I/O queue
 * pair (the "host queues", never handed to the device as data pointers) and an arena of guest
 * memory: every PRP, PRP list, SGL segment, data block and scratch queue it hands the device lies in
 * the arena, so random commands cannot trample the host's own queues. Guard pages around the arena
 * prove the device wrote nowhere else.
 *
 * Invariants checked after every batch: no exception escapes the controller; every submitted
 * command completes exactly once with a status the spec defines (or CSTS.CFS reports a fatal
 * error); LBAs outside successful writes keep their bytes (a shadow copy of every namespace);
 * after a controller reset (CC.EN 1 -> 0 -> 1) a known write + read round trip succeeds.
 * Used by controller/fuzz.test.ts and by `pnpm fuzz` (scripts/fuzz.mjs).
 */
import { createMachine, Rng, SZ_1M } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import {
  AQA,
  CC,
  CSTS,
  NVME_CQ_IRQ_ENABLED,
  NVME_QUEUE_PHYS_CONTIG,
  NVME_REG_ACQ,
  NVME_REG_AQA,
  NVME_REG_ASQ,
  NVME_REG_CC,
  NVME_REG_CSTS,
  NvmeAdminOpcode,
  NvmeController,
  NvmeFeat,
  NvmeOpcode,
  NvmeSglType,
  NvmeStatus,
  nvmeDoorbellOffset,
  nvmeStatusCode,
  nvmeStatusName,
  regGet,
  regSet,
  readLe64,
  writeLe64,
} from '../index.js';
import type { NvmeNamespace } from '../index.js';
import { TEST_LATENCY_NS } from './blockLayer.js';

const PAGE = 4096;
const ADMIN_ENTRIES = 32;
const IO_ENTRIES = 64;
const IO_QID = 1;
/** Scratch queue ids the fuzzer may create and delete (its queues live in the arena). */
const SCRATCH_QIDS = [2, 3, 4];
const MAX_QUEUES = 4;
/** MDTS 2^5 pages: 128 KiB per command. */
const MDTS = 5;
const MDTS_BYTES = PAGE << MDTS;
/** Arena layout, in pages: lists | scratch queues | data | tail margin (one MDTS). */
const LIST_PAGES = 64;
const QUEUE_PAGES = 8;
const DATA_PAGES = 64;
const ARENA_PAGES = LIST_PAGES + QUEUE_PAGES + DATA_PAGES + MDTS_BYTES / PAGE; // 168 (+ 2 guard pages: order 8)
const GUARD_BYTE = 0xa5;
/** A bus address past the end of the machine's 64 MiB of RAM: DMA there faults. */
const BEYOND_RAM = 0x1_0000_0000;

const KNOWN_STATUS = new Set<number>(Object.entries(NvmeStatus).filter(([k]) => k !== 'MORE' && k !== 'DNR').map(([, v]) => v));

export interface NvmeFuzzOptions {
  seed: number;
  commands: number;
  /** Called every `progressEvery` commands (the CLI prints progress). */
  onProgress?: (done: number, report: NvmeFuzzReport) => void;
  progressEvery?: number;
}

export interface NvmeFuzzReport {
  seed: number;
  commands: number;
  completions: number;
  /** Completions per status name ("SUCCESS", "LBA_RANGE|DNR", ...). */
  byStatus: Map<string, number>;
  /** Times CSTS.CFS was seen (each followed by a reset). */
  fatalEvents: number;
  /** Scratch SQs placed beyond RAM and rung, to make the controller report a fatal error. */
  fatalProbes: number;
  resets: number;
  /** Async Event Requests the controller holds (they complete only on an event; dropped at reset). */
  heldAers: number;
  /** The first invariant violation, or null. */
  violation: string | null;
}

interface Outstanding {
  opc: number;
  /** LBA range a Write / Write Zeroes / DSM may change on success ([nsid, slba, nlb] or whole ns). */
  touches: { nsid: number; slba: number; nlb: number } | 'dsm' | null;
}

interface HostQ {
  sqBase: number;
  cqBase: number;
  size: number;
  tail: number;
  head: number;
  phase: number;
  outstanding: Map<number, Outstanding>;
  nextCid: number;
}

class FuzzViolation extends Error {}

/** The fuzzer rig: machine, controller, host queues, arena, shadow namespaces. */
export class NvmeCtrlFuzzer {
  readonly machine: Machine;
  readonly ctrl: NvmeController;
  readonly rng: Rng;
  readonly report: NvmeFuzzReport;
  readonly #arena: number;
  readonly #guardLo: number;
  readonly #guardHi: number;
  readonly #shadow = new Map<number, Uint8Array>();
  readonly #queues = new Map<number, HostQ>();
  readonly #hostPages: number[] = [];
  #listCursor = 0;
  #dsmDirty = new Set<number>();

  constructor(seed: number) {
    this.rng = new Rng(seed);
    this.machine = createMachine({ ramBytes: 64 * SZ_1M, swiotlbBytes: 0 });
    const dev = this.machine.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
    this.ctrl = new NvmeController(this.machine, dev, {
      namespaces: [
        { nsid: 1, lbaSize: 512, capacityLbas: 4096 },
        { nsid: 2, lbaSize: 4096, capacityLbas: 256 },
      ],
      maxQueues: MAX_QUEUES,
      maxQueueEntries: 256,
      mdts: MDTS,
      latencyNs: TEST_LATENCY_NS,
    });
    this.report = { seed, commands: 0, completions: 0, byStatus: new Map(), fatalEvents: 0, fatalProbes: 0, resets: 0, heldAers: 0, violation: null };
    // guard page | arena | guard page, physically contiguous (order 8 = 256 pages covers 122)
    const base = this.machine.memory.allocPages(8);
    if (base === 0) throw new Error('fuzz: no memory for the arena');
    this.#guardLo = base;
    this.#arena = base + PAGE;
    this.#guardHi = this.#arena + ARENA_PAGES * PAGE;
    this.machine.memory.fill(this.#guardLo, PAGE, GUARD_BYTE);
    this.machine.memory.fill(this.#guardHi, PAGE, GUARD_BYTE);
    this.machine.memory.fill(this.#arena, ARENA_PAGES * PAGE, 0);
    this.#resetListArea();
    for (const ns of this.ctrl.namespaces) {
      // Start from random contents so zeroing and stale reads are visible.
      const bytes = this.rng.fill(new Uint8Array(ns.capacityLbas * ns.lbaSize));
      ns.writeLbas(0, bytes);
      this.#shadow.set(ns.nsid, bytes);
    }
    this.#enable(true);
  }

  // ---- addresses ------------------------------------------------------------------------------

  get #listBase(): number {
    return this.#arena;
  }
  get #queueBase(): number {
    return this.#arena + LIST_PAGES * PAGE;
  }
  get #dataBase(): number {
    return this.#queueBase + QUEUE_PAGES * PAGE;
  }

  /** Fill the list area with data-area page addresses: any stray list read yields arena pointers. */
  #resetListArea(): void {
    const b = new Uint8Array(LIST_PAGES * PAGE);
    const dv = new DataView(b.buffer);
    // Slot 511 of a page is what the device follows as a PRP list chain: point it into the list
    // area (whose bytes only the fuzzer writes), every other slot at a data page.
    for (let i = 0; i < b.length; i += 8) writeLe64(dv, i, i % PAGE === PAGE - 8 ? this.#listBase : this.#dataBase + ((i / 8) % DATA_PAGES) * PAGE);
    this.machine.memory.write(this.#listBase, b);
    this.#listCursor = 0;
  }

  /** Room in the list area for `bytes` (16-byte aligned; page aligned when `pageAligned`). */
  #listAlloc(bytes: number, pageAligned: boolean): number {
    let off = pageAligned ? Math.ceil(this.#listCursor / PAGE) * PAGE : Math.ceil(this.#listCursor / 16) * 16;
    if (off + bytes > LIST_PAGES * PAGE) {
      off = 0; // wrap: lists of commands already completed are reused
    }
    this.#listCursor = off + bytes;
    return this.#listBase + off;
  }

  #dataAddr(align: number): number {
    const off = this.rng.nextInt(DATA_PAGES * PAGE);
    return this.#dataBase + off - (off % align);
  }

  #dataPage(): number {
    return this.#dataBase + this.rng.nextInt(DATA_PAGES) * PAGE;
  }

  // ---- host side ------------------------------------------------------------------------------

  #hostAlloc(bytes: number): number {
    const order = Math.max(0, Math.ceil(Math.log2(Math.ceil(bytes / PAGE))));
    const phys = this.machine.memory.allocPages(order);
    if (phys === 0) throw new Error('fuzz: no memory for a host queue');
    this.machine.memory.fill(phys, PAGE << order, 0);
    this.#hostPages.push(phys);
    return phys;
  }

  #newQ(size: number, sqBase?: number, cqBase?: number): HostQ {
    return { sqBase: sqBase ?? this.#hostAlloc(size * 64), cqBase: cqBase ?? this.#hostAlloc(size * 16), size, tail: 0, head: 0, phase: 1, outstanding: new Map(), nextCid: 0 };
  }

  /** CC.EN 0 -> 1 with fresh host queues, then the I/O queue pair; `first`: no disable before. */
  #enable(first: boolean): void {
    const old = this.#queues.get(0);
    const admin = old ? this.#newQ(ADMIN_ENTRIES, old.sqBase, old.cqBase) : this.#newQ(ADMIN_ENTRIES);
    this.machine.memory.fill(admin.cqBase, ADMIN_ENTRIES * 16, 0);
    this.#queues.set(0, admin);
    if (!first) {
      this.ctrl.mmioWrite32(NVME_REG_CC, 0);
      this.machine.scheduler.runUntilIdle();
      if (regGet(this.ctrl.mmioRead32(NVME_REG_CSTS), CSTS.RDY) !== 0) this.#fail('CSTS.RDY still set after CC.EN 1 -> 0');
    }
    this.ctrl.mmioWrite32(NVME_REG_AQA, regSet(regSet(0, AQA.ASQS, ADMIN_ENTRIES - 1), AQA.ACQS, ADMIN_ENTRIES - 1));
    this.ctrl.mmioWrite64(NVME_REG_ASQ, admin.sqBase);
    this.ctrl.mmioWrite64(NVME_REG_ACQ, admin.cqBase);
    let cc = regSet(0, CC.IOSQES, 6);
    cc = regSet(cc, CC.IOCQES, 4);
    cc = regSet(cc, CC.EN, 1);
    this.ctrl.mmioWrite32(NVME_REG_CC, cc);
    this.machine.scheduler.runUntilIdle();
    const csts = this.ctrl.mmioRead32(NVME_REG_CSTS);
    if (regGet(csts, CSTS.RDY) !== 1 || regGet(csts, CSTS.CFS) !== 0) this.#fail(`controller not ready after enable (CSTS 0x${csts.toString(16)}, ${this.ctrl.lastError})`);
    const oldIo = this.#queues.get(IO_QID);
    this.#queues.delete(IO_QID); // recreated below: not reaped meanwhile
    const io = oldIo ? this.#newQ(IO_ENTRIES, oldIo.sqBase, oldIo.cqBase) : this.#newQ(IO_ENTRIES);
    this.machine.memory.fill(io.cqBase, IO_ENTRIES * 16, 0);
    const cq = this.#adminSync(NvmeAdminOpcode.CREATE_CQ, io.cqBase, ((IO_ENTRIES - 1) << 16) | IO_QID, ((IO_QID << 16) | NVME_QUEUE_PHYS_CONTIG | NVME_CQ_IRQ_ENABLED) >>> 0);
    const sq = this.#adminSync(NvmeAdminOpcode.CREATE_SQ, io.sqBase, ((IO_ENTRIES - 1) << 16) | IO_QID, ((IO_QID << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0);
    if (cq !== 0 || sq !== 0) this.#fail(`creating the I/O queue pair failed: ${nvmeStatusName(cq)} / ${nvmeStatusName(sq)}`);
    this.#queues.set(IO_QID, io);
    this.report.heldAers = 0;
  }

  #writeSqe(q: HostQ, sqe: Uint8Array, o: Outstanding): void {
    const cid = q.nextCid;
    q.nextCid = (q.nextCid + 1) & 0xffff;
    new DataView(sqe.buffer).setUint16(2, cid, true);
    this.machine.memory.write(q.sqBase + q.tail * 64, sqe);
    q.tail = (q.tail + 1) % q.size;
    q.outstanding.set(cid, o);
    this.report.commands++;
  }

  #ring(qid: number): void {
    const q = this.#queues.get(qid);
    if (q) this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, false), q.tail);
  }

  #adminSync(opc: number, prp1: number, cdw10: number, cdw11: number): number {
    const q = this.#queues.get(0);
    if (!q) throw new Error('fuzz: no admin queue');
    const sqe = new Uint8Array(64);
    const dv = new DataView(sqe.buffer);
    dv.setUint8(0, opc);
    writeLe64(dv, 24, prp1);
    dv.setUint32(40, cdw10, true);
    dv.setUint32(44, cdw11, true);
    this.#writeSqe(q, sqe, { opc, touches: null });
    this.#ring(0);
    this.machine.scheduler.runUntilIdle();
    const got = this.#reapAll();
    const st = got.find((c) => c.qid === 0)?.status;
    if (st === undefined) this.#fail(`admin opcode 0x${opc.toString(16)} did not complete`);
    return st;
  }

  /** Consume every new CQE of every host queue; check each one against the outstanding set. */
  #reapAll(): { qid: number; status: number }[] {
    const out: { qid: number; status: number }[] = [];
    for (const [qid, q] of this.#queues) {
      let n = 0;
      for (;;) {
        const b = this.machine.memory.read(q.cqBase + q.head * 16, 16);
        const dv = new DataView(b.buffer);
        const sf = dv.getUint16(14, true);
        if ((sf & 1) !== q.phase) break;
        const sqhd = dv.getUint16(8, true);
        const sqid = dv.getUint16(10, true);
        const cid = dv.getUint16(12, true);
        const status = sf >> 1;
        if (sqid !== qid) this.#fail(`CQ ${qid} got a completion for SQ ${sqid} (cid ${cid}, status ${nvmeStatusName(status)}, head ${q.head})`);
        if (sqhd >= q.size) this.#fail(`CQE SQ head ${sqhd} outside SQ ${qid} of ${q.size} entries`);
        const o = q.outstanding.get(cid);
        if (o === undefined) this.#fail(`completion for SQ ${qid} cid ${cid} that is not outstanding (duplicate or invented)`);
        q.outstanding.delete(cid);
        const code = nvmeStatusCode(status);
        if ((status & ~(0x7ff | NvmeStatus.MORE | NvmeStatus.DNR)) !== 0 || !KNOWN_STATUS.has(code)) this.#fail(`invalid status 0x${status.toString(16)} for SQ ${qid} cid ${cid}`);
        const name = nvmeStatusName(status);
        this.report.byStatus.set(name, (this.report.byStatus.get(name) ?? 0) + 1);
        this.report.completions++;
        if (code === NvmeStatus.SUCCESS && o.touches) this.#noteWrite(o.touches);
        out.push({ qid, status });
        q.head++;
        n++;
        if (q.head === q.size) {
          q.head = 0;
          q.phase ^= 1;
        }
      }
      if (n > 0) this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, true), q.head);
    }
    return out;
  }

  /** A successful write changed these LBAs: take them into the shadow. */
  #noteWrite(t: NonNullable<Outstanding['touches']>): void {
    if (t === 'dsm') {
      for (const ns of this.ctrl.namespaces) this.#dsmDirty.add(ns.nsid);
      return;
    }
    const ns = this.ctrl.namespace(t.nsid);
    const sh = this.#shadow.get(t.nsid);
    if (!ns || !sh) return;
    ns.readBytes(t.slba * ns.lbaSize, sh, t.slba * ns.lbaSize, t.nlb * ns.lbaSize);
  }

  #fail(msg: string): never {
    throw new FuzzViolation(msg);
  }

  // ---- random commands ------------------------------------------------------------------------

  #pickNsid(): number {
    const r = this.rng.nextInt(20);
    if (r < 9) return 1;
    if (r < 16) return 2;
    if (r === 16) return 0;
    if (r === 17) return 0xffffffff;
    if (r === 18) return 3;
    return this.rng.nextU32();
  }

  /** PRP1/PRP2 for `len` bytes: in the data area, PRP lists (sometimes chained, sometimes bogus) in the list area. */
  #prps(dv: DataView, len: number): void {
    const r = this.rng.nextInt(20);
    const align = r < 14 ? PAGE : r < 18 ? 4 : 1;
    const prp1 = this.#dataAddr(align);
    writeLe64(dv, 24, prp1);
    const first = PAGE - (prp1 % PAGE);
    const entries = len <= first ? 0 : Math.ceil((len - first) / PAGE);
    let prp2: number;
    if (entries === 0 && this.rng.nextInt(4) !== 0) prp2 = 0;
    else if (entries <= 1 && this.rng.nextInt(4) !== 0) prp2 = this.rng.nextInt(8) === 0 ? this.#dataAddr(4) : this.#dataPage();
    else {
      // A PRP list in the list area. The device takes the last slot of a list page (511) as a
      // pointer to the next list page, so a chained list starts m slots before a page end.
      const n = Math.max(1, entries + (this.rng.nextInt(10) === 0 ? this.rng.between(-2, 2) : 0));
      const chain = n > 1 && this.rng.nextInt(3) === 0;
      const firstTake = chain ? this.rng.between(1, n - 1) : n;
      const page1 = this.#listAlloc(PAGE, true);
      const start = chain ? page1 + (511 - firstTake) * 8 : page1;
      const b = new Uint8Array(8 * (firstTake + (chain ? 1 : 0)));
      const ldv = new DataView(b.buffer);
      for (let k = 0; k < firstTake; k++) writeLe64(ldv, k * 8, this.rng.nextInt(25) === 0 ? this.#dataAddr(4) : this.#dataPage());
      if (chain) {
        // Chain to a second list page (or, rarely, back to this one: a PRP list loop).
        const page2 = this.rng.nextInt(30) === 0 ? page1 : this.#listAlloc(PAGE, true);
        writeLe64(ldv, firstTake * 8, page2);
        const b2 = new Uint8Array(8 * (n - firstTake));
        const l2 = new DataView(b2.buffer);
        for (let k = 0; k < n - firstTake; k++) writeLe64(l2, k * 8, this.#dataPage());
        if (page2 !== page1) this.machine.memory.write(page2, b2);
      }
      this.machine.memory.write(start, b);
      prp2 = start + (!chain && this.rng.nextInt(12) === 0 ? 8 * this.rng.between(1, 4) : 0);
    }
    writeLe64(dv, 32, prp2);
  }

  /** One random data descriptor (data block or bit bucket) in the data area. */
  #sglData(dv: DataView, off: number, len: number): void {
    const bb = this.rng.nextInt(6) === 0;
    writeLe64(dv, off, bb ? 0 : this.#dataAddr(this.rng.nextInt(3) === 0 ? 1 : 4));
    dv.setUint32(off + 8, len, true);
    const r = this.rng.nextInt(40);
    const type = r === 0 ? NvmeSglType.KEYED_DATA_BLOCK : r === 1 ? 0xf : bb ? NvmeSglType.BIT_BUCKET : NvmeSglType.DATA_BLOCK;
    dv.setUint8(off + 15, (type << 4) | (this.rng.nextInt(40) === 0 ? 1 : 0));
  }

  /** Split `len` into 1..n random pieces (sometimes too short or too long in total). */
  #pieces(len: number, maxPieces: number): number[] {
    const n = this.rng.between(1, maxPieces);
    const out: number[] = [];
    let left = len;
    for (let i = 0; i < n - 1 && left > 1; i++) {
      const p = this.rng.between(1, left - 1);
      out.push(p);
      left -= p;
    }
    out.push(left);
    const r = this.rng.nextInt(12);
    if (r === 0) out[out.length - 1] = (out[out.length - 1] ?? 0) + this.rng.between(1, 512);
    else if (r === 1 && len > 1) out[out.length - 1] = Math.max(0, (out[out.length - 1] ?? 0) - this.rng.between(1, 64));
    else if (r === 2) out.splice(this.rng.nextInt(out.length), 0, 0);
    return out;
  }

  /** SGL1 in DPTR: a data block, or a chain of segments (sometimes looping) in the list area. */
  #sgl(dv: DataView, len: number): void {
    if (this.rng.nextInt(4) === 0) {
      this.#sglData(dv, 24, this.rng.nextInt(8) === 0 ? this.rng.between(0, len + 64) : len);
      return;
    }
    const pieces = this.#pieces(len, 12);
    const segCount = this.rng.between(1, Math.min(4, pieces.length));
    const segs: { addr: number; descs: number }[] = [];
    let pi = 0;
    for (let s = 0; s < segCount; s++) {
      const dataDescs = s === segCount - 1 ? pieces.length - pi : this.rng.between(1, pieces.length - pi - (segCount - 1 - s));
      const descs = dataDescs + (s === segCount - 1 ? 0 : 1);
      segs.push({ addr: this.#listAlloc(descs * 16, false), descs });
      const b = new Uint8Array(descs * 16);
      const ldv = new DataView(b.buffer);
      for (let k = 0; k < dataDescs; k++) this.#sglData(ldv, k * 16, pieces[pi++] ?? 0);
      this.machine.memory.write(segs[s]?.addr ?? 0, b);
    }
    // Link the segments: the last descriptor of each one points to the next (or loops back).
    for (let s = 0; s < segCount - 1; s++) {
      const seg = segs[s];
      const next = segs[s + 1];
      if (!seg || !next) continue;
      const b = new Uint8Array(16);
      const ldv = new DataView(b.buffer);
      const loop = this.rng.nextInt(15) === 0;
      const target = loop ? (segs[this.rng.nextInt(s + 1)] ?? seg) : next;
      writeLe64(ldv, 0, target.addr);
      ldv.setUint32(8, target.descs * 16 + (this.rng.nextInt(30) === 0 ? 8 : 0), true);
      ldv.setUint8(15, (s + 1 === segCount - 1 && this.rng.nextInt(3) !== 0 ? NvmeSglType.LAST_SEGMENT : NvmeSglType.SEGMENT) << 4);
      this.machine.memory.write(seg.addr + (seg.descs - 1) * 16, b);
    }
    const head = segs[0];
    writeLe64(dv, 24, head?.addr ?? 0);
    dv.setUint32(32, (head?.descs ?? 1) * 16, true);
    dv.setUint8(39, (segCount === 1 && this.rng.nextInt(2) === 0 ? NvmeSglType.LAST_SEGMENT : NvmeSglType.SEGMENT) << 4);
  }

  #dptr(dv: DataView, len: number): void {
    const r = this.rng.nextInt(20);
    const psdt = r < 12 ? 0 : r < 19 ? 1 : this.rng.between(2, 3);
    dv.setUint8(1, (psdt << 6) | (this.rng.nextInt(40) === 0 ? this.rng.between(1, 3) : 0));
    if (psdt === 0) this.#prps(dv, len);
    else this.#sgl(dv, len);
  }

  /** A random I/O command: mostly Read/Write, some Flush, Write Zeroes, DSM and junk opcodes. */
  #ioCmd(): { sqe: Uint8Array; o: Outstanding } {
    const sqe = new Uint8Array(64);
    const dv = new DataView(sqe.buffer);
    const r = this.rng.nextInt(100);
    const opc = r < 35 ? NvmeOpcode.WRITE : r < 70 ? NvmeOpcode.READ : r < 75 ? NvmeOpcode.FLUSH : r < 83 ? NvmeOpcode.WRITE_ZEROES : r < 90 ? NvmeOpcode.DSM : this.rng.nextInt(256);
    dv.setUint8(0, opc);
    const nsid = this.#pickNsid();
    dv.setUint32(4, nsid, true);
    const ns = this.ctrl.namespace(nsid);
    const cap = ns?.capacityLbas ?? 4096;
    const lbaSize = ns?.lbaSize ?? 512;
    const maxNlb = Math.max(1, Math.floor(MDTS_BYTES / lbaSize));
    const rn = this.rng.nextInt(20);
    let nlb = rn < 14 ? this.rng.between(1, Math.min(16, maxNlb)) : rn < 18 ? this.rng.between(1, maxNlb) : this.rng.between(1, 0x10000);
    const rs = this.rng.nextInt(20);
    const slba = rs < 17 ? this.rng.nextInt(cap) : rs < 19 ? cap - this.rng.between(0, 4) : this.rng.nextU32() * 0x10000 + this.rng.nextU32();
    writeLe64(dv, 40, slba);
    let touches: Outstanding['touches'] = null;
    if (opc === NvmeOpcode.DSM) {
      const nr = this.rng.between(1, 8);
      dv.setUint32(40, nr - 1, true);
      dv.setUint32(44, this.rng.nextInt(2) === 0 ? 1 << 2 : this.rng.nextU32(), true);
      // The range list in the data area (so reads can scribble it: that is allowed)
      const ranges = new Uint8Array(nr * 16);
      const rdv = new DataView(ranges.buffer);
      for (let i = 0; i < nr; i++) {
        rdv.setUint32(i * 16 + 4, this.rng.between(0, 64), true);
        writeLe64(rdv, i * 16 + 8, this.rng.nextInt(10) === 0 ? cap : this.rng.nextInt(cap));
      }
      this.#dptr(dv, nr * 16);
      // With PRPs the list sits at PRP1 (it may cross into PRP2's page: then part is stale data).
      if (dv.getUint8(1) >> 6 === 0) this.machine.memory.write(readLe64(dv, 24), ranges);
      touches = 'dsm';
    } else {
      dv.setUint32(48, (this.rng.nextInt(30) === 0 ? this.rng.nextU32() & 0xffff0000 : 0) | ((nlb - 1) & 0xffff), true);
      nlb = ((nlb - 1) & 0xffff) + 1;
      if (opc === NvmeOpcode.WRITE || opc === NvmeOpcode.READ || this.rng.nextInt(4) === 0) this.#dptr(dv, Math.min(nlb * lbaSize, MDTS_BYTES));
      if ((opc === NvmeOpcode.WRITE || opc === NvmeOpcode.WRITE_ZEROES) && ns && ns.inBounds(slba, nlb)) touches = { nsid, slba, nlb };
      if (opc === NvmeOpcode.WRITE && this.rng.nextInt(3) === 0) {
        // Fresh data where the write will gather it from
        const b = this.rng.fill(new Uint8Array(Math.min(nlb * lbaSize, MDTS_BYTES)));
        this.machine.memory.write(this.#dataBase + this.rng.nextInt(DATA_PAGES / 2) * PAGE, b.subarray(0, Math.min(b.length, (DATA_PAGES / 2) * PAGE)));
      }
    }
    return { sqe, o: { opc, touches } };
  }

  /** A random admin command (queues only ever created in the arena, only scratch queues deleted). */
  #adminCmd(): { sqe: Uint8Array; o: Outstanding } {
    const sqe = new Uint8Array(64);
    const dv = new DataView(sqe.buffer);
    const r = this.rng.nextInt(100);
    const scratchQid = (): number => {
      const x = this.rng.nextInt(10);
      return x < 7 ? (SCRATCH_QIDS[this.rng.nextInt(SCRATCH_QIDS.length)] ?? 2) : x === 7 ? 0 : x === 8 ? MAX_QUEUES + 1 + this.rng.nextInt(3) : 0xffff;
    };
    const queueBase = (): number => this.#queueBase + this.rng.nextInt(QUEUE_PAGES / 2) * 2 * PAGE + (this.rng.nextInt(20) === 0 ? 64 : 0);
    let opc: number;
    if (r < 20) {
      opc = NvmeAdminOpcode.IDENTIFY;
      dv.setUint32(40, this.rng.nextInt(5) === 0 ? this.rng.nextU32() : this.rng.nextInt(4), true);
      dv.setUint32(4, this.#pickNsid(), true);
      this.#dptr(dv, 4096);
    } else if (r < 32) {
      opc = NvmeAdminOpcode.GET_LOG_PAGE;
      const numd = this.rng.nextInt(5) === 0 ? this.rng.nextU32() & 0xffff : this.rng.between(0, 1023);
      dv.setUint32(40, ((numd << 16) | this.rng.between(0, 4)) >>> 0, true);
      dv.setUint32(4, this.#pickNsid(), true);
      this.#dptr(dv, Math.min((numd + 1) * 4, MDTS_BYTES));
    } else if (r < 44) {
      opc = this.rng.nextInt(2) === 0 ? NvmeAdminOpcode.GET_FEATURES : NvmeAdminOpcode.SET_FEATURES;
      const fids = Object.values(NvmeFeat);
      dv.setUint32(40, this.rng.nextInt(6) === 0 ? this.rng.nextU32() & 0xff : (fids[this.rng.nextInt(fids.length)] ?? 1), true);
      dv.setUint32(44, this.rng.nextU32(), true);
      if (this.rng.nextInt(3) === 0) this.#dptr(dv, 4096);
    } else if (r < 54) {
      opc = NvmeAdminOpcode.CREATE_CQ;
      const qid = scratchQid();
      const size = this.rng.nextInt(8) === 0 ? this.rng.nextU32() & 0xffff : this.rng.between(1, 127);
      dv.setUint32(40, ((Math.min(size, 255) << 16) | qid) >>> 0, true);
      dv.setUint32(44, ((this.rng.nextInt(8) << 16) | (this.rng.nextInt(6) === 0 ? 0 : NVME_QUEUE_PHYS_CONTIG) | (this.rng.nextInt(2) === 0 ? NVME_CQ_IRQ_ENABLED : 0)) >>> 0, true);
      writeLe64(dv, 24, queueBase());
    } else if (r < 64) {
      opc = NvmeAdminOpcode.CREATE_SQ;
      const qid = scratchQid();
      const size = this.rng.between(1, 127);
      dv.setUint32(40, ((size << 16) | qid) >>> 0, true);
      const cqid = this.rng.nextInt(6) === 0 ? this.rng.nextInt(6) : (SCRATCH_QIDS[this.rng.nextInt(SCRATCH_QIDS.length)] ?? 2);
      dv.setUint32(44, ((cqid << 16) | (this.rng.nextInt(6) === 0 ? 0 : NVME_QUEUE_PHYS_CONTIG) | (this.rng.nextInt(4) << 1)) >>> 0, true);
      writeLe64(dv, 24, queueBase());
    } else if (r < 72) {
      opc = this.rng.nextInt(2) === 0 ? NvmeAdminOpcode.DELETE_SQ : NvmeAdminOpcode.DELETE_CQ;
      // The host's own CQ 1 may be named (its SQ is live: the controller must refuse), SQ 1 never.
      const qid = opc === NvmeAdminOpcode.DELETE_CQ && this.rng.nextInt(5) === 0 ? IO_QID : scratchQid();
      dv.setUint32(40, qid, true);
    } else if (r < 80) {
      opc = NvmeAdminOpcode.ABORT_CMD;
      const io = this.#queues.get(IO_QID);
      const cids = io ? [...io.outstanding.keys()] : [];
      const cid = cids.length > 0 && this.rng.nextInt(3) !== 0 ? (cids[this.rng.nextInt(cids.length)] ?? 0) : this.rng.nextInt(0x10000);
      dv.setUint32(40, ((cid << 16) | (this.rng.nextInt(5) === 0 ? this.rng.nextInt(5) : IO_QID)) >>> 0, true);
    } else if (r < 84) {
      opc = NvmeAdminOpcode.ASYNC_EVENT;
    } else {
      opc = this.rng.nextInt(256);
      dv.setUint32(40, this.rng.nextU32(), true);
      if (this.rng.nextInt(2) === 0) this.#dptr(dv, 4096);
    }
    dv.setUint8(0, opc);
    return { sqe, o: { opc, touches: null } };
  }

  // ---- the run --------------------------------------------------------------------------------

  /**
   * Submit one admin command with PRP1, CDW10 and CDW11 and wait for it; returns its status (the
   * completion passes the same checks as the fuzzer's own). For tests that replay a finding.
   */
  adminCommand(opc: number, prp1: number, cdw10: number, cdw11: number): number {
    return this.#adminSync(opc, prp1, cdw10 >>> 0, cdw11 >>> 0);
  }

  /** A known write + read round trip on the I/O queue (after every reset). */
  roundTrip(): void {
    const q = this.#queues.get(IO_QID);
    if (!q) this.#fail('no I/O queue for the round trip');
    const ns = this.ctrl.namespace(1);
    if (!ns) return;
    const slba = this.rng.nextInt(ns.capacityLbas - 8);
    const data = this.rng.fill(new Uint8Array(8 * ns.lbaSize));
    const src = this.#dataBase;
    const dst = this.#dataBase + PAGE;
    this.machine.memory.write(src, data);
    for (const [opc, buf] of [[NvmeOpcode.WRITE, src], [NvmeOpcode.READ, dst]] as const) {
      const sqe = new Uint8Array(64);
      const dv = new DataView(sqe.buffer);
      dv.setUint8(0, opc);
      dv.setUint32(4, 1, true);
      writeLe64(dv, 24, buf);
      writeLe64(dv, 40, slba);
      dv.setUint32(48, 7, true);
      this.#writeSqe(q, sqe, { opc, touches: opc === NvmeOpcode.WRITE ? { nsid: 1, slba, nlb: 8 } : null });
      this.#ring(IO_QID);
      this.machine.scheduler.runUntilIdle();
      const got = this.#reapAll().filter((c) => c.qid === IO_QID);
      if (got.length !== 1 || got[0]?.status !== 0) this.#fail(`round trip ${opc === NvmeOpcode.WRITE ? 'write' : 'read'} after reset: ${got.map((c) => nvmeStatusName(c.status)).join(',') || 'no completion'}`);
    }
    const back = this.machine.memory.read(dst, data.length);
    if (back.some((b, i) => b !== data[i])) this.#fail('round trip after reset read back other bytes than were written');
  }

  /** CC.EN 1 -> 0 -> 1, drop what the reset dropped, recreate the I/O queues, round trip. */
  reset(): void {
    for (const q of this.#queues.values()) q.outstanding.clear();
    this.#enable(false);
    this.report.resets++;
    this.roundTrip();
  }

  #checkGuards(): void {
    for (const g of [this.#guardLo, this.#guardHi]) {
      const b = this.machine.memory.read(g, PAGE);
      if (b.some((x) => x !== GUARD_BYTE)) this.#fail(`device wrote outside the arena (guard page 0x${g.toString(16)})`);
    }
  }

  #checkShadow(): void {
    for (const ns of this.ctrl.namespaces) {
      const sh = this.#shadow.get(ns.nsid);
      if (!sh) continue;
      if (this.#dsmDirty.has(ns.nsid)) {
        // A DSM deallocate zeroes ranges the fuzzer did not track byte by byte: resync, after
        // checking every changed byte became zero (deallocated blocks read as zeros here).
        const cur = ns.readLbas(0, ns.capacityLbas);
        for (let i = 0; i < cur.length; i++) {
          if (cur[i] !== sh[i] && cur[i] !== 0) this.#fail(`ns ${ns.nsid} byte ${i} (LBA ${Math.floor(i / ns.lbaSize)}) changed outside a successful write`);
        }
        sh.set(cur);
        this.#dsmDirty.delete(ns.nsid);
        continue;
      }
      this.#compare(ns, sh);
    }
  }

  #compare(ns: NvmeNamespace, sh: Uint8Array): void {
    const cur = ns.readLbas(0, ns.capacityLbas);
    for (let i = 0; i < cur.length; i++) {
      if (cur[i] !== sh[i]) this.#fail(`ns ${ns.nsid} byte ${i} (LBA ${Math.floor(i / ns.lbaSize)}) changed outside a successful write`);
    }
  }

  /**
   * A scratch SQ whose ring lies beyond the end of RAM (no host memory at all: nothing the device
   * could corrupt), then its doorbell: the fetch is refused, and the controller must say so through
   * CSTS.CFS (NVMe Base Specification 1.4 section 10.5) instead of failing silently or throwing.
   */
  #fatalProbe(): void {
    const qid = SCRATCH_QIDS[this.rng.nextInt(SCRATCH_QIDS.length)] ?? 2;
    // Any scratch SQ may be bound to this CQ: delete them all first.
    for (const sq of SCRATCH_QIDS) this.#adminSync(NvmeAdminOpcode.DELETE_SQ, 0, sq, 0);
    this.#adminSync(NvmeAdminOpcode.DELETE_CQ, 0, qid, 0);
    const cq = this.#adminSync(NvmeAdminOpcode.CREATE_CQ, this.#queueBase, (3 << 16) | qid, ((0 << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0);
    const sq = this.#adminSync(NvmeAdminOpcode.CREATE_SQ, BEYOND_RAM, (3 << 16) | qid, ((qid << 16) | NVME_QUEUE_PHYS_CONTIG) >>> 0);
    if (cq !== 0 || sq !== 0) this.#fail(`fatal probe: creating scratch queue pair ${qid} failed: ${nvmeStatusName(cq)} / ${nvmeStatusName(sq)}`);
    this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, false), 1);
    this.report.fatalProbes++;
  }

  /** One batch: some admin and I/O commands, stray doorbells, run to idle, reap and check. */
  step(): void {
    const io = this.#queues.get(IO_QID);
    const admin = this.#queues.get(0);
    if (!io || !admin) this.#fail('host queues missing');
    const ioFree = IO_ENTRIES - 1 - io.outstanding.size;
    const adminFree = ADMIN_ENTRIES - 1 - admin.outstanding.size;
    const nIo = this.rng.between(0, Math.min(ioFree, 24));
    const nAdmin = this.rng.nextInt(4) === 0 ? this.rng.between(1, Math.min(adminFree, 4)) : 0;
    this.#listCursor = 0;
    for (let i = 0; i < nIo; i++) {
      const { sqe, o } = this.#ioCmd();
      this.#writeSqe(io, sqe, o);
    }
    for (let i = 0; i < nAdmin; i++) {
      const { sqe, o } = this.#adminCmd();
      this.#writeSqe(admin, sqe, o);
    }
    const before = this.report.fatalProbes;
    if (this.rng.nextInt(200) === 0) this.#fatalProbe();
    const probes = this.report.fatalProbes - before;
    // Doorbells: the real ones, plus stray writes a buggy driver might make.
    if (this.rng.nextInt(10) === 0) {
      const qid = this.rng.nextInt(MAX_QUEUES + 2);
      const isCq = this.rng.nextInt(2) === 0;
      const hostQ = this.#queues.get(qid);
      // Never move the host queues' own pointers to a legal value: only out-of-range values.
      const v = hostQ ? hostQ.size + this.rng.nextInt(0x10000 - hostQ.size) : SCRATCH_QIDS.includes(qid) && isCq ? this.rng.nextInt(256) : this.rng.nextU32();
      if (!hostQ && SCRATCH_QIDS.includes(qid) && !isCq) {
        // a scratch SQ's tail: its entries are zeroed arena memory (Flush of nsid 0), never pointers
      } else this.ctrl.mmioWrite32(nvmeDoorbellOffset(qid, isCq), v);
    }
    this.#ring(IO_QID);
    this.#ring(0);
    this.machine.scheduler.runUntilIdle();
    this.#reapAll();
    const csts = this.ctrl.mmioRead32(NVME_REG_CSTS);
    if (regGet(csts, CSTS.CFS) !== probes) this.#fail(probes === 1 ? 'a refused SQ fetch did not set CSTS.CFS' : 'CSTS.CFS set without a refused queue access');
    if (regGet(csts, CSTS.CFS) === 1) {
      this.report.fatalEvents++;
      this.reset();
      return;
    }
    // Everything but held Async Event Requests has completed once the controller is idle.
    let aers = 0;
    for (const [qid, q] of this.#queues) {
      for (const [cid, o] of q.outstanding) {
        if (qid === 0 && o.opc === NvmeAdminOpcode.ASYNC_EVENT) aers++;
        else this.#fail(`SQ ${qid} cid ${cid} (opcode 0x${o.opc.toString(16)}) never completed`);
      }
    }
    this.report.heldAers = aers;
    this.#checkGuards();
  }

  /** Run until `commands` commands were submitted; the first violation ends the run. */
  run(opts: NvmeFuzzOptions): NvmeFuzzReport {
    const every = opts.progressEvery ?? 10_000;
    let nextProgress = every;
    let batches = 0;
    try {
      while (this.report.commands < opts.commands) {
        this.step();
        batches++;
        if (batches % 64 === 0) this.#checkShadow();
        if (this.rng.nextInt(150) === 0) this.reset();
        if (opts.onProgress && this.report.commands >= nextProgress) {
          opts.onProgress(this.report.commands, this.report);
          nextProgress += every;
        }
      }
      this.#checkShadow();
      this.reset();
      this.#checkShadow();
    } catch (e) {
      this.report.violation = e instanceof FuzzViolation ? e.message : `exception escaped: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
    }
    return this.report;
  }
}

/** Fuzz a fresh controller with `commands` random commands from `seed`. */
export function nvmeCtrlFuzz(opts: NvmeFuzzOptions): NvmeFuzzReport {
  const f = new NvmeCtrlFuzzer(opts.seed);
  return f.run(opts);
}
