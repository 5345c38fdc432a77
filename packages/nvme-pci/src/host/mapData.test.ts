// Direct unit tests of the PRP and SGL builders (drivers/nvme/host/pci.c: nvme_pci_setup_data_prp,
// nvme_pci_setup_data_sgl, nvme_pci_sgl_set_data/_seg, nvme_unmap_data), without a controller.
// Why this test imports internals (./mapData.js, ./dev.js) while every other test uses the
// package's surface: the builders are pure functions over the iod and the driver state, kept out
// of the public API on purpose (a user drives them through NvmeDev.queueRq), and driving them
// through NvmeDev cannot pin list-page layouts, chaining and limits this exactly. Everything else
// comes from the public surface.
import { BlkStatus, createMachine, dmaPoolCreate, ReqOp, SZ_1M } from '@dmakit/dma-core';
import type { BlkRequest, DmaPool, Machine, QueueLimits } from '@dmakit/dma-core';
import { describe, expect, it } from 'vitest';
import {
  IOD_SMALL_DESCRIPTOR,
  NVME_ADMIN_TIMEOUT_NS,
  NVME_CTRL_PAGE_SIZE,
  NVME_DEFAULT_SGL_THRESHOLD,
  NVME_IO_TIMEOUT_NS,
  NVME_MAX_SEGS,
  NVME_PRPS_PER_PAGE,
  NVME_SMALL_POOL_SIZE,
  NvmeIod,
  NvmeSglType,
  readLe64,
  SGL_FORCED,
  SGL_SUPPORTED,
  SGL_UNSUPPORTED,
  SQE,
} from '@dmakit/nvme-pci';
import type { NvmeBar } from '@dmakit/nvme-pci';
// eslint-disable-next-line no-restricted-imports -- the driver state the builders take (see the header)
import { NvmeDevState } from './dev.js';
// eslint-disable-next-line no-restricted-imports -- the builders under test (see the header)
import {
  NVME_CMD_SGL_METABUF,
  nvmePciSetupDataPrp,
  nvmePciSetupDataSgl,
  nvmePciSglSetData,
  nvmePciSglSetSeg,
  nvmeUnmapData,
  nvmeWantSgl,
} from './mapData.js';
import { ListBlkMapper } from '../testing/blockLayer.js';

const PAGE = NVME_CTRL_PAGE_SIZE;
/** DMA addresses the fake iterator hands out: any 64-bit bus range will do, nothing reads them. */
const BUS = 0x10_0000_0000;

const noBar: NvmeBar = {
  mmioRead32: () => 0,
  mmioWrite32: () => undefined,
  mmioRead64: () => 0,
  mmioWrite64: () => undefined,
  onInterrupt: () => () => undefined,
};

interface Rig {
  m: Machine;
  d: NvmeDevState;
  blk: ListBlkMapper;
  iod: NvmeIod;
  small: DmaPool;
  large: DmaPool;
}

function rig(): Rig {
  const m = createMachine({ ramBytes: 64 * SZ_1M, swiotlbBytes: 0 });
  const dev = m.pci.addDevice({ name: 'nvme0', dmaMaskBits: 64, bars: [{ size: 0x4000 }] });
  const blk = new ListBlkMapper();
  const d = new NvmeDevState(m, dev, noBar, blk, {
    ioQueues: 1,
    ioQueueDepth: 64,
    sglThreshold: NVME_DEFAULT_SGL_THRESHOLD,
    forceSgl: false,
    ioTimeoutNs: NVME_IO_TIMEOUT_NS,
    adminTimeoutNs: NVME_ADMIN_TIMEOUT_NS,
    maxRetries: 5,
    pollIntervalNs: 10_000,
    mapping: 'iter',
    nsid: 0,
    mmioWorld: 'shared',
  });
  const large = dmaPoolCreate('nvme descriptor page', dev, PAGE, PAGE, 0);
  const small = dmaPoolCreate('nvme descriptor small', dev, NVME_SMALL_POOL_SIZE, NVME_SMALL_POOL_SIZE, 0);
  if (large === null || small === null) throw new Error('pools');
  d.poolLarge = large;
  d.poolSmall = small;
  const iod = new NvmeIod(0);
  iod.reset();
  return { m, d, blk, iod, small, large };
}

/** NVMe's queue limits (`NvmeDev.queueLimits()` for 512-byte blocks and no MDTS). */
const LIMITS: QueueLimits = {
  logicalBlockSize: 512,
  maxHwSectors: 8 * SZ_1M / 512,
  maxSectors: 8 * SZ_1M / 512,
  maxSegments: NVME_MAX_SEGS,
  maxSegmentSize: 0xffff_ffff,
  segBoundaryMask: 0xffff_ffff,
  virtBoundaryMask: PAGE - 1,
  dmaAlignment: 3,
  maxIntegritySegments: 0,
  integrityTupleSize: 0,
  integrityIntervalExp: 9,
};

/** A read request of `len` bytes in `nseg` physical segments (the builders read nothing else). */
function req(len: number, nseg: number): BlkRequest {
  return {
    tag: 0,
    op: ReqOp.READ,
    cmdFlags: 0,
    rqFlags: 0,
    sector: 0,
    dataLen: len,
    bio: null,
    nrPhysSegments: nseg,
    nrIntegritySegments: 0,
    limits: LIMITS,
    specialVec: null,
    pdu: null,
    endIo: null,
  };
}

function le64s(m: Machine, phys: number, n: number): number[] {
  const dv = new DataView(m.memory.read(phys, n * 8).buffer);
  return Array.from({ length: n }, (_, i) => readLe64(dv, i * 8));
}

/** Runs the PRP builder over `segs`; the request's length is their sum. */
function prp(r: Rig, segs: (readonly [number, number])[]): BlkStatus {
  r.blk.start(r.iod.iter, segs);
  const len = segs.reduce((t, s) => t + s[1], 0);
  return nvmePciSetupDataPrp(r.d, r.iod, req(len, segs.length));
}

function sgl(r: Rig, segs: (readonly [number, number])[], nseg = segs.length, coalesced = false): BlkStatus {
  r.blk.start(r.iod.iter, segs);
  const len = segs.reduce((t, s) => t + s[1], 0);
  return nvmePciSetupDataSgl(r.d, r.iod, req(len, nseg), coalesced);
}

const pagesFrom = (base: number, n: number): number[] => Array.from({ length: n }, (_, i) => base + i * PAGE);

describe('nvme_pci_setup_data_prp', () => {
  it('one page: PRP1 only, PRP2 zero, no list', () => {
    const r = rig();
    expect(prp(r, [[BUS + 0x200, 0x800]])).toBe(BlkStatus.OK);
    expect(readLe64(r.iod.cmdDv, SQE.PRP1)).toBe(BUS + 0x200);
    expect(readLe64(r.iod.cmdDv, SQE.PRP2)).toBe(0);
    expect(r.iod.nrDescriptors).toBe(0);
    expect(r.iod.totalLen).toBe(0x800);
  });

  it('unaligned start crossing one page boundary: PRP2 is a direct data pointer, not a list', () => {
    const r = rig();
    expect(prp(r, [[BUS + 0x200, PAGE]])).toBe(BlkStatus.OK);
    expect(readLe64(r.iod.cmdDv, SQE.PRP1)).toBe(BUS + 0x200);
    expect(readLe64(r.iod.cmdDv, SQE.PRP2)).toBe(BUS + PAGE);
    expect(r.iod.nrDescriptors).toBe(0);
    expect(r.d.stats.prpListEntries).toBe(0);
  });

  it('PRP2 direct from the second segment', () => {
    const r = rig();
    expect(prp(r, [[BUS, PAGE], [BUS + 0x40_0000, PAGE]])).toBe(BlkStatus.OK);
    expect(readLe64(r.iod.cmdDv, SQE.PRP2)).toBe(BUS + 0x40_0000);
    expect(r.iod.nrDescriptors).toBe(0);
  });

  it('PRP2 as a list: up to 32 entries from the small pool, one entry per controller page', () => {
    const r = rig();
    // 0x200 into the first page, then 32 more pages: 32 list entries, the small pool's capacity.
    const len = PAGE - 0x200 + 32 * PAGE;
    expect(prp(r, [[BUS + 0x200, len]])).toBe(BlkStatus.OK);
    expect(r.iod.nrDescriptors).toBe(1);
    expect(r.iod.flags & IOD_SMALL_DESCRIPTOR).toBe(IOD_SMALL_DESCRIPTOR);
    expect(r.small.stats.active).toBe(1);
    const prp2 = readLe64(r.iod.cmdDv, SQE.PRP2);
    expect(prp2 % NVME_SMALL_POOL_SIZE).toBe(0);
    expect(le64s(r.m, r.iod.descriptorsPhys[0] ?? 0, 32)).toEqual(pagesFrom(BUS + PAGE, 32));
    expect(r.iod.totalLen).toBe(len);
    expect(r.d.stats.prpListEntries).toBe(32);
  });

  it('33 entries take a large page; entries follow the segments across their boundaries', () => {
    const r = rig();
    const segs: [number, number][] = [
      [BUS, 2 * PAGE],
      [BUS + 0x100_0000, 16 * PAGE],
      [BUS + 0x200_0000, 16 * PAGE],
    ];
    expect(prp(r, segs)).toBe(BlkStatus.OK);
    expect(r.iod.flags & IOD_SMALL_DESCRIPTOR).toBe(0);
    expect(r.large.stats.active).toBe(1);
    const want = [BUS + PAGE, ...pagesFrom(BUS + 0x100_0000, 16), ...pagesFrom(BUS + 0x200_0000, 16)];
    expect(le64s(r.m, r.iod.descriptorsPhys[0] ?? 0, 33)).toEqual(want);
  });

  it('the last list page holds 512 entries: no chain when nothing follows', () => {
    const r = rig();
    expect(prp(r, [[BUS, (NVME_PRPS_PER_PAGE + 1) * PAGE]])).toBe(BlkStatus.OK);
    expect(r.iod.nrDescriptors).toBe(1);
    expect(le64s(r.m, r.iod.descriptorsPhys[0] ?? 0, NVME_PRPS_PER_PAGE)).toEqual(pagesFrom(BUS + PAGE, NVME_PRPS_PER_PAGE));
  });

  it('a full list page chains: slot 511 points at the next page, whose slot 0 holds the moved entry', () => {
    const r = rig();
    // PRP1 + 513 list entries: the 513th does not fit, so slot 511's entry moves to slot 0 of a
    // new page and slot 511 becomes the chain pointer (511 data entries per chained page).
    const n = NVME_PRPS_PER_PAGE + 2;
    expect(prp(r, [[BUS, n * PAGE]])).toBe(BlkStatus.OK);
    expect(r.iod.nrDescriptors).toBe(2);
    expect(r.large.stats.active).toBe(2);
    const page0 = le64s(r.m, r.iod.descriptorsPhys[0] ?? 0, NVME_PRPS_PER_PAGE);
    const page1 = le64s(r.m, r.iod.descriptorsPhys[1] ?? 0, 2);
    const entries = pagesFrom(BUS + PAGE, n - 1);
    expect(page0.slice(0, NVME_PRPS_PER_PAGE - 1)).toEqual(entries.slice(0, NVME_PRPS_PER_PAGE - 1));
    const chain = page0[NVME_PRPS_PER_PAGE - 1] ?? 0;
    expect(chain % PAGE).toBe(0);
    expect(chain).not.toBe(readLe64(r.iod.cmdDv, SQE.PRP2));
    expect(page1).toEqual(entries.slice(NVME_PRPS_PER_PAGE - 1));
    // nvme_free_descriptors follows PRP2 and the chain slot: both pages go back to the pool.
    nvmeUnmapData(r.d, req(n * PAGE, 1), r.iod);
    expect(r.large.stats.active).toBe(0);
    expect(r.iod.nrDescriptors).toBe(0);
  });

  it('a segment ending inside a controller page (virt_boundary broken) fails with IOERR and gives the list back', () => {
    const r = rig();
    expect(prp(r, [[BUS, 2 * PAGE], [BUS + 0x100_0000, PAGE / 2], [BUS + 0x200_0000, 2 * PAGE]])).toBe(BlkStatus.IOERR);
    expect(r.d.log.some((l) => l.includes('Invalid SGL for payload'))).toBe(true);
    expect(r.large.stats.active + r.small.stats.active).toBe(0);
    expect(r.iod.nrDescriptors).toBe(0);
  });

  it('the iterator ending before the payload does fails with IOERR', () => {
    const r = rig();
    r.blk.start(r.iod.iter, [[BUS, 2 * PAGE]]);
    expect(nvmePciSetupDataPrp(r.d, r.iod, req(4 * PAGE, 1))).toBe(BlkStatus.IOERR);
    expect(r.small.stats.active).toBe(0);
  });

  it('no list page available: RESOURCE, PRP1/PRP2 still recorded for unmap', () => {
    const r = rig();
    r.d.poolSmall = null;
    expect(prp(r, [[BUS, 8 * PAGE]])).toBe(BlkStatus.RESOURCE);
    expect(readLe64(r.iod.cmdDv, SQE.PRP1)).toBe(BUS);
    expect(r.iod.nrDescriptors).toBe(0);
  });
});

describe('nvme_pci_setup_data_sgl', () => {
  it('one segment: a data block descriptor inline in the command, PSDT = SGL', () => {
    const r = rig();
    expect(sgl(r, [[BUS + 0x10, 3 * PAGE + 8]])).toBe(BlkStatus.OK);
    const dv = r.iod.cmdDv;
    expect(r.iod.cmd[SQE.FLAGS]).toBe(NVME_CMD_SGL_METABUF);
    expect(readLe64(dv, SQE.DPTR)).toBe(BUS + 0x10);
    expect(dv.getUint32(SQE.DPTR + 8, true)).toBe(3 * PAGE + 8);
    expect(dv.getUint8(SQE.DPTR + 15)).toBe(NvmeSglType.DATA_BLOCK << 4);
    expect(r.iod.nrDescriptors).toBe(0);
  });

  it('an IOVA-coalesced request is one data block whatever its physical segment count', () => {
    const r = rig();
    expect(sgl(r, [[BUS, 64 * PAGE]], 64, true)).toBe(BlkStatus.OK);
    expect(r.iod.nrDescriptors).toBe(0);
    expect(r.iod.cmdDv.getUint32(SQE.DPTR + 8, true)).toBe(64 * PAGE);
  });

  it('several segments: one list behind a Last Segment descriptor, small pool up to 16 entries', () => {
    const r = rig();
    const segs: [number, number][] = [
      [BUS + 0x8, 100],
      [BUS + 0x10_0000, 3 * PAGE],
      [BUS + 0x20_0004, 7],
    ];
    expect(sgl(r, segs)).toBe(BlkStatus.OK);
    const dv = r.iod.cmdDv;
    expect(dv.getUint8(SQE.DPTR + 15)).toBe(NvmeSglType.LAST_SEGMENT << 4);
    expect(dv.getUint32(SQE.DPTR + 8, true)).toBe(3 * 16);
    expect(r.iod.flags & IOD_SMALL_DESCRIPTOR).toBe(IOD_SMALL_DESCRIPTOR);
    const list = new DataView(r.m.memory.read(r.iod.descriptorsPhys[0] ?? 0, 3 * 16).buffer);
    for (let i = 0; i < 3; i++) {
      const s = segs[i] ?? [0, 0];
      expect(readLe64(list, i * 16)).toBe(s[0]);
      expect(list.getUint32(i * 16 + 8, true)).toBe(s[1]);
      expect(list.getUint8(i * 16 + 15)).toBe(NvmeSglType.DATA_BLOCK << 4);
    }
    nvmeUnmapData(r.d, req(100 + 3 * PAGE + 7, 3), r.iod);
    expect(r.small.stats.active).toBe(0);
  });

  it('17 segments take a large page; NVME_MAX_SEGS (256) still fit one page', () => {
    const r = rig();
    const segs = (n: number): [number, number][] => Array.from({ length: n }, (_, i) => [BUS + i * 0x10_0000, 512] as [number, number]);
    expect(sgl(r, segs(17))).toBe(BlkStatus.OK);
    expect(r.iod.flags & IOD_SMALL_DESCRIPTOR).toBe(0);
    expect(r.large.stats.active).toBe(1);
    const r2 = rig();
    expect(sgl(r2, segs(NVME_MAX_SEGS))).toBe(BlkStatus.OK);
    expect(r2.iod.cmdDv.getUint32(SQE.DPTR + 8, true)).toBe(NVME_MAX_SEGS * 16);
    expect(r2.iod.nrDescriptors).toBe(1);
  });

  it('limits: more than NVME_MAX_SEGS segments, or more segments than the request declares, is IOERR', () => {
    const r = rig();
    const segs = (n: number): [number, number][] => Array.from({ length: n }, (_, i) => [BUS + i * 0x10_0000, 512] as [number, number]);
    expect(sgl(r, segs(NVME_MAX_SEGS + 1))).toBe(BlkStatus.IOERR);
    expect(r.iod.nrDescriptors).toBe(0);
    const r2 = rig();
    expect(sgl(r2, segs(5), 4)).toBe(BlkStatus.IOERR);
    expect(r2.small.stats.active).toBe(0);
  });

  it('no descriptor page: RESOURCE', () => {
    const r = rig();
    r.d.poolSmall = null;
    expect(sgl(r, [[BUS, 512], [BUS + PAGE, 512]])).toBe(BlkStatus.RESOURCE);
    expect(r.iod.nrDescriptors).toBe(0);
  });
});

describe('SGL descriptors and the PRP/SGL choice', () => {
  it('nvme_pci_sgl_set_data / _set_seg encode the 16-byte descriptors', () => {
    const dv = new DataView(new ArrayBuffer(32));
    nvmePciSglSetData(dv, 0, 0x1234_5678_9abc, 0x2000);
    nvmePciSglSetSeg(dv, 16, 0xdead_b000, 5);
    expect(Array.from(new Uint8Array(dv.buffer, 0, 16))).toEqual([0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12, 0, 0, 0x00, 0x20, 0, 0, 0, 0, 0, 0x00]);
    expect(Array.from(new Uint8Array(dv.buffer, 16, 16))).toEqual([0x00, 0xb0, 0xad, 0xde, 0, 0, 0, 0, 80, 0, 0, 0, 0, 0, 0, 0x30]);
  });

  it('nvme_pci_avg_seg_size against sgl_threshold; forced and unsupported override it', () => {
    const r = rig();
    const big = req(4 * NVME_DEFAULT_SGL_THRESHOLD, 4);
    const smallSegs = req(4 * NVME_DEFAULT_SGL_THRESHOLD, 5);
    expect(nvmeWantSgl(r.d, SGL_SUPPORTED, big, 4)).toBe(true);
    expect(nvmeWantSgl(r.d, SGL_SUPPORTED, smallSegs, 5)).toBe(false);
    expect(nvmeWantSgl(r.d, SGL_FORCED, smallSegs, 5)).toBe(true);
    expect(nvmeWantSgl(r.d, SGL_UNSUPPORTED, big, 4)).toBe(false);
  });
});
