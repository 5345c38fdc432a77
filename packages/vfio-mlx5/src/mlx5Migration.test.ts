import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Errno, PAGE_SIZE } from '@dmakit/dma-core';
import {
  ENOMSG,
  MLX5VF_MAX_NUM_CHUNKS,
  MLX5_FAULT_SAVE,
  MLX5_MIGF_HEADER_BYTES,
  MLX5_MIGF_HEADER_TAG_FW_DATA,
  MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE,
  Mlx5VfMigfState,
  Mlx5VfMigrationFile,
  VfioDeviceMigState as S,
  readMigrationHeader,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  vfioMigArcIsLegal,
  vfioMigGetNextState,
} from './index.js';
import type { VfioMigFile } from './index.js';
import { configureAndRun, drain, makeHost } from './testing/host.js';
import type { TestHost } from './testing/host.js';

function setState(h: TestHost, s: number): { ret: number; dataFd: VfioMigFile | null } {
  return h.drv.vdev.setMigDeviceState(s);
}

/** Records of a stream: [tag, size] pairs; throws on a malformed stream. */
function records(bytes: Uint8Array): [number, number][] {
  const out: [number, number][] = [];
  let p = 0;
  while (p < bytes.length) {
    const h = readMigrationHeader(bytes, p);
    out.push([h.tag, h.recordSize]);
    p += MLX5_MIGF_HEADER_BYTES + h.recordSize;
  }
  expect(p).toBe(bytes.length);
  return out;
}

function resumeOnto(target: TestHost, stream: Uint8Array, pieces = 7): number {
  const r = setState(target, S.RESUMING);
  expect(r.ret).toBe(0);
  const fd = r.dataFd;
  if (fd === null) throw new Error('no resume fd');
  let p = 0;
  let i = 0;
  while (p < stream.length) {
    const n = Math.min(stream.length - p, 1 + ((i++ * 977) % (Math.floor(stream.length / pieces) + 1)));
    const w = fd.write(stream, p, n);
    if (w < 0) return w;
    p += w;
  }
  return setState(target, S.RUNNING).ret;
}

describe('VFIO_DEVICE_FEATURE_MIGRATION and the arcs', () => {
  it('advertises STOP_COPY | P2P | PRE_COPY and walks the kernel arcs RUNNING -> STOP_COPY', () => {
    const h = makeHost();
    expect(h.drv.vdev.featureMigration()).toEqual({ flags: VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY });
    const r = setState(h, S.STOP_COPY);
    expect(r.ret).toBe(0);
    expect(r.dataFd).toBeInstanceOf(Mlx5VfMigrationFile);
    expect(h.drv.arcLog).toEqual([
      [S.RUNNING, S.RUNNING_P2P],
      [S.RUNNING_P2P, S.STOP],
      [S.STOP, S.STOP_COPY],
    ]);
    expect(h.fw.initiatorSuspended && h.fw.responderSuspended).toBe(true);
    expect(setState(h, S.STOP).ret).toBe(0);
    expect(r.dataFd?.read(new Uint8Array(8))).toBe(-Errno.ENODEV);
  });

  // kernel: mlx5vf_pci_save_device_data() opens the save file O_RDONLY and
  // mlx5vf_pci_resume_device_data() the resume file O_WRONLY (drivers/vfio/pci/mlx5/main.c,
  // anon_inode_getfile(..., O_RDONLY / O_WRONLY)); vfs_read() and vfs_write() check the mode before
  // anything else (fs/read_write.c: `if (!(file->f_mode & FMODE_READ)) return -EBADF;` and
  // `if (!(file->f_mode & FMODE_WRITE)) return -EBADF;`).
  it('write() on a save fd and read() on a resume fd fail with -EBADF (FMODE_READ/FMODE_WRITE), touching nothing', () => {
    const src = makeHost({ seed: 4 });
    configureAndRun(src, 8);
    const save = setState(src, S.PRE_COPY).dataFd!;
    const stream = drain(save).bytes;
    expect(stream.length).toBeGreaterThan(0);
    const pos = save.pos;
    expect(save.write(stream)).toBe(-Errno.EBADF);
    expect(save.write(new Uint8Array(0))).toBe(-Errno.EBADF); // the mode check comes before any length check
    expect(save.pos).toBe(pos);
    expect(src.drv.stats.bytesWritten).toBe(0);
    // The save file still works: the final state arrives and ends the stream.
    expect(setState(src, S.STOP_COPY).ret).toBe(0);
    const rest = drain(save);
    expect(rest.ret).toBe(0);
    expect(rest.bytes.length).toBeGreaterThan(0);
    setState(src, S.STOP);
    expect(save.write(stream)).toBe(-Errno.EBADF); // still -EBADF once released, not -ENODEV

    const dst = makeHost({ seed: 5 });
    const resume = setState(dst, S.RESUMING).dataFd!;
    expect(resume.read(new Uint8Array(64))).toBe(-Errno.EBADF);
    expect(resume.read(new Uint8Array(0))).toBe(-Errno.EBADF);
    expect(resume.pos).toBe(0);
    expect(dst.drv.stats.bytesRead).toBe(0);
    // The resume file still accepts the stream afterwards.
    const all = new Uint8Array(stream.length + rest.bytes.length);
    all.set(stream);
    all.set(rest.bytes, stream.length);
    expect(resume.write(all)).toBe(all.length);
    expect(setState(dst, S.RUNNING).ret).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(src.fw.stateSnapshot());
    setState(dst, S.STOP);
    expect(resume.read(new Uint8Array(64))).toBe(-Errno.EBADF);
  });

  it('an illegal request returns -EINVAL and leaves the state unchanged', () => {
    const h = makeHost();
    expect(setState(h, S.STOP_COPY).ret).toBe(0);
    expect(setState(h, S.PRE_COPY).ret).toBe(-Errno.EINVAL);
    expect(h.drv.migState).toBe(S.STOP_COPY);
    expect(setState(h, S.ERROR).ret).toBe(-Errno.EINVAL);
    expect(setState(h, 99).ret).toBe(-Errno.EINVAL);
    expect(h.drv.migState).toBe(S.STOP_COPY);
    const np = makeHost({ noP2p: true });
    expect(setState(np, S.RUNNING_P2P).ret).toBe(-Errno.EINVAL);
    expect(np.drv.migState).toBe(S.RUNNING);
  });

  it('every supported target is reached from every state the device can be driven to (each flag set)', () => {
    for (const o of [{}, { noP2p: true }, { noPreCopy: true }, { noP2p: true, noPreCopy: true }]) {
      const targets = [S.STOP, S.RUNNING, S.RUNNING_P2P, S.PRE_COPY, S.PRE_COPY_P2P, S.STOP_COPY, S.RESUMING];
      for (const a of targets) {
        for (const b of targets) {
          const h = makeHost(o);
          const flags = h.drv.migrationFlags;
          const okA = setState(h, a).ret;
          if (okA !== 0) continue; // not supported with these flags
          const before = h.drv.migState;
          const r = setState(h, b);
          const pre = (x: number): boolean => x === S.PRE_COPY || x === S.PRE_COPY_P2P;
          if (before === S.STOP_COPY && pre(b)) {
            expect(r.ret).toBe(-Errno.EINVAL);
            expect(h.drv.migState).toBe(before);
          } else if (b === S.RESUMING && before !== S.STOP && before !== S.RESUMING && h.drv.migState !== S.RESUMING) {
            expect(r.ret, `${a}->${b} flags ${flags}`).not.toBe(0);
          } else if (r.ret === 0) {
            expect(h.drv.migState, `${a}->${b} flags ${flags}`).toBe(b);
          }
        }
      }
    }
  });
});

describe('save and load of the function state', () => {
  it('STOP_COPY on the source, RESUMING on the target: the target state equals the source state at stop', () => {
    const src = makeHost({ seed: 3 });
    configureAndRun(src, 200);
    const r = setState(src, S.STOP_COPY);
    const at = src.fw.stateSnapshot();
    const { bytes, ret } = drain(r.dataFd!);
    expect(ret).toBe(0);
    const recs = records(bytes);
    expect(recs[0]).toEqual([MLX5_MIGF_HEADER_TAG_STOP_COPY_SIZE, 8]);
    expect(recs.slice(1).every(([t]) => t === MLX5_MIGF_HEADER_TAG_FW_DATA)).toBe(true);
    const dst = makeHost({ seed: 4 });
    expect(resumeOnto(dst, bytes)).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(at);
    expect(dst.drv.migState).toBe(S.RUNNING);
    // The target keeps working from the restored producer indices.
    expect(dst.fw.step() + dst.fw.step() + dst.fw.step()).toBeGreaterThan(0);
    setState(src, S.STOP);
    expect(src.fw.liveMkeys).toBe(0);
  });

  it('pre-copy: initial image, PRECOPY_INFO initial/dirty bytes, incremental saves, final increment', () => {
    const src = makeHost({ seed: 5, iommu: true });
    configureAndRun(src, 50);
    const r = setState(src, S.PRE_COPY);
    expect(r.ret).toBe(0);
    const fd = r.dataFd!;
    const info0 = fd.precopyInfo();
    expect(typeof info0).toBe('object');
    if (typeof info0 === 'number') return;
    expect(info0.initialBytes).toBeGreaterThan(src.fw.stateBytes);
    const parts: Uint8Array[] = [];
    let d = drain(fd);
    expect(d.ret).toBe(-ENOMSG);
    parts.push(d.bytes);
    expect(d.bytes.length).toBe(info0.initialBytes);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 20; i++) src.fw.step(); // the device keeps running and changing state
      const info = fd.precopyInfo();
      if (typeof info === 'number') throw new Error(`precopy info ${info}`);
      expect(info.initialBytes).toBe(0);
      expect(info.dirtyBytes).toBeGreaterThan(0);
      d = drain(fd);
      expect(d.ret).toBe(-ENOMSG);
      expect(d.bytes.length).toBeLessThan(src.fw.stateBytes); // increments are small
      parts.push(d.bytes);
    }
    for (let i = 0; i < 10; i++) src.fw.step();
    expect(setState(src, S.STOP_COPY).ret).toBe(0);
    const at = src.fw.stateSnapshot();
    d = drain(fd);
    expect(d.ret).toBe(0);
    parts.push(d.bytes);
    const stream = new Uint8Array(parts.reduce((t, p) => t + p.length, 0));
    let o = 0;
    for (const p of parts) {
      stream.set(p, o);
      o += p.length;
    }
    records(stream);
    const dst = makeHost({ seed: 6, iommu: true });
    expect(resumeOnto(dst, stream)).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(at);
    expect(src.iommu!.syncs).toBeGreaterThan(0);
  });

  it('chunk mode with tiny chunks: many FW_DATA records, never more than two chunks buffered', () => {
    const src = makeHost({ seed: 7, caps: { chunkBytes: PAGE_SIZE }, stateBytes: 32 * 1024 });
    configureAndRun(src, 100);
    const r = setState(src, S.STOP_COPY);
    const migf = r.dataFd as Mlx5VfMigrationFile;
    const at = src.fw.stateSnapshot();
    const parts: Uint8Array[] = [];
    const buf = new Uint8Array(3000);
    let maxReady = 0;
    for (;;) {
      maxReady = Math.max(maxReady, migf.numReadyChunks);
      expect(migf.numReadyChunks).toBeLessThanOrEqual(MLX5VF_MAX_NUM_CHUNKS);
      const n = migf.read(buf);
      if (n <= 0) {
        expect(n).toBe(0);
        break;
      }
      parts.push(buf.slice(0, n));
      src.machine.advance(1_000_000); // userspace is slow: the firmware fills both chunk buffers
    }
    expect(maxReady).toBe(2);
    const stream = new Uint8Array(parts.reduce((t, p) => t + p.length, 0));
    let o = 0;
    for (const p of parts) {
      stream.set(p, o);
      o += p.length;
    }
    const recs = records(stream);
    expect(recs.filter(([t]) => t === MLX5_MIGF_HEADER_TAG_FW_DATA).length).toBe(Math.ceil((32 + 32 * 1024) / PAGE_SIZE));
    const dst = makeHost({ seed: 8, stateBytes: 32 * 1024 });
    expect(resumeOnto(dst, stream, 13)).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(at);
  });

  it('a SAVE failure during pre-copy moves to PRE_COPY_ERROR and the next save is a full image', () => {
    const src = makeHost({ seed: 9 });
    configureAndRun(src, 30);
    const r = setState(src, S.PRE_COPY);
    const migf = r.dataFd as Mlx5VfMigrationFile;
    const d0 = drain(migf);
    expect(d0.ret).toBe(-ENOMSG);
    for (let i = 0; i < 10; i++) src.fw.step();
    src.machine.faultInjection.arm(MLX5_FAULT_SAVE, 1);
    expect(typeof migf.precopyInfo()).toBe('object'); // issues the incremental SAVE, which fails
    expect(drain(migf).ret).toBe(-ENOMSG);
    expect(migf.state).toBe(Mlx5VfMigfState.PRE_COPY_ERROR);
    const info = migf.precopyInfo();
    if (typeof info === 'number') throw new Error('info');
    expect(info.dirtyBytes).toBeGreaterThanOrEqual(src.fw.stateBytes); // the next save is full
    const d1 = drain(migf);
    expect(d1.bytes.length).toBeGreaterThan(src.fw.stateBytes);
    expect(migf.state).toBe(Mlx5VfMigfState.PRE_COPY);
    expect(setState(src, S.STOP_COPY).ret).toBe(0);
    const at = src.fw.stateSnapshot();
    const d2 = drain(migf);
    expect(d2.ret).toBe(0);
    const stream = new Uint8Array([...d0.bytes, ...d1.bytes, ...d2.bytes]);
    const dst = makeHost({ seed: 10 });
    expect(resumeOnto(dst, stream)).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(at);
  });

  it('a SAVE failure in STOP_COPY moves the file to ERROR (reads return -ENODEV)', () => {
    const src = makeHost({ seed: 11 });
    src.machine.faultInjection.arm(MLX5_FAULT_SAVE, 1);
    const r = setState(src, S.STOP_COPY);
    expect(r.ret).toBe(0);
    const d = drain(r.dataFd!);
    expect(d.ret).toBe(-Errno.ENODEV);
  });
});

describe('malformed and truncated streams on the target', () => {
  function stream(): { bytes: Uint8Array; at: Uint8Array } {
    const src = makeHost({ seed: 12 });
    configureAndRun(src, 80);
    const r = setState(src, S.STOP_COPY);
    const at = src.fw.stateSnapshot();
    return { bytes: drain(r.dataFd!).bytes, at };
  }

  it('a truncated stream fails the RESUMING -> STOP arc; the function is unusable but safe, reset recovers', () => {
    const { bytes } = stream();
    const dst = makeHost({ seed: 13 });
    const cut = bytes.subarray(0, bytes.length - 100);
    expect(resumeOnto(dst, cut)).toBe(-Errno.EINVAL);
    expect(dst.drv.migState).toBe(S.RESUMING);
    expect(dst.fw.broken).toBe(true);
    expect(dst.fw.step()).toBe(0);
    expect(dst.fw.stateSnapshot().some((b, i) => i >= 64 && b !== 0)).toBe(false); // scrubbed
    expect(setState(dst, S.RUNNING).ret).not.toBe(0);
    dst.drv.reset();
    expect(dst.drv.migState).toBe(S.RUNNING);
    expect(dst.fw.broken).toBe(false);
  });

  it('a corrupted image (bad checksum), a bad header and an unknown mandatory tag are refused', () => {
    const { bytes } = stream();
    const bad = bytes.slice();
    bad[bad.length - 5] = (bad[bad.length - 5] ?? 0) ^ 0xff;
    expect(resumeOnto(makeHost({ seed: 14 }), bad)).toBe(-Errno.EINVAL);
    const junk = new Uint8Array(64).fill(0xee);
    expect(resumeOnto(makeHost({ seed: 15 }), junk)).toBe(-Errno.EINVAL);
    const tag = bytes.slice();
    tag[12] = 7; // unknown mandatory tag in the first record
    tag[8] = 0;
    expect(resumeOnto(makeHost({ seed: 16 }), tag)).toBe(-Errno.EOPNOTSUPP);
    const empty = makeHost({ seed: 17 });
    expect(resumeOnto(empty, new Uint8Array(0))).toBe(-Errno.EINVAL);
  });

  it('an unknown optional record is skipped', () => {
    const { bytes, at } = stream();
    const opt = new Uint8Array(MLX5_MIGF_HEADER_BYTES + 5);
    const dv = new DataView(opt.buffer);
    dv.setBigUint64(0, 5n, true);
    dv.setUint32(8, 1, true);
    dv.setUint32(12, 0x77, true);
    const dst = makeHost({ seed: 18 });
    expect(resumeOnto(dst, new Uint8Array([...opt, ...bytes]))).toBe(0);
    expect(dst.fw.stateSnapshot()).toEqual(at);
  });
});

describe('deferred reset', () => {
  it('a reset arriving while the state mutex is held runs at unlock: RUNNING, fds disabled', () => {
    const src = makeHost({ seed: 19 });
    configureAndRun(src, 10);
    // The reset lands while the driver waits for the SAVE to complete (state mutex held).
    src.machine.schedule(1, () => {
      src.fw.flr();
      src.drv.resetDone();
    });
    const r = setState(src, S.PRE_COPY);
    expect(r.ret).toBe(0);
    expect(src.drv.deferredReset).toBe(false);
    expect(src.drv.stats.deferredResets).toBe(0); // not yet: PRE_COPY creation does not wait
    const fd = r.dataFd!;
    fd.precopyInfo(); // waits for the initial SAVE with the mutex held; the reset arrives
    expect(src.drv.stats.deferredResets).toBe(1);
    expect(src.drv.migState).toBe(S.RUNNING);
    expect(fd.read(new Uint8Array(16))).toBe(-Errno.ENODEV);
    expect(src.fw.liveMkeys).toBe(0);
  });

  it('a reset outside the mutex applies at once', () => {
    const h = makeHost();
    setState(h, S.STOP);
    h.drv.reset();
    expect(h.drv.migState).toBe(S.RUNNING);
    expect(h.drv.stats.deferredResets).toBe(1);
  });
});

describe('allocation failures while building migration buffers', () => {
  for (const site of ['alloc_pages', 'iova', 'fake_link'] as const) {
    it(`fail-the-Nth sweep on '${site}' while entering STOP_COPY: the arc fails cleanly, nothing leaked`, () => {
      let failures = 0;
      let fallbacks = 0;
      for (let nth = 1; nth <= 40; nth++) {
        const h = makeHost({ iommu: true, stateBytes: 16 * 1024 });
        configureAndRun(h, 20);
        expect(setState(h, S.STOP).ret).toBe(0);
        const pages0 = h.machine.memory.allocatedPageCount;
        h.machine.faultInjection.arm(site, nth);
        const r = setState(h, S.STOP_COPY);
        h.machine.faultInjection.disarm();
        if (r.ret !== 0) {
          failures++;
          expect(r.ret).toBe(-Errno.ENOMEM);
          expect(h.drv.migState).toBe(S.STOP);
        } else {
          drain(r.dataFd!);
          expect(setState(h, S.STOP).ret).toBe(0);
        }
        expect(h.machine.memory.allocatedPageCount).toBe(pages0);
        expect(h.iommu!.mapped.size).toBe(0);
        expect(h.fw.liveMkeys).toBe(0);
        expect(h.drv.bufferStats.livePages).toBe(0);
        fallbacks += h.drv.bufferStats.fallbackRegistrations;
      }
      // No IOVA range: register_dma_pages falls back to dma_map_page per page instead of failing.
      if (site === 'iova') expect(fallbacks).toBeGreaterThan(0);
      else expect(failures).toBeGreaterThan(0);
    });
  }
});

describe('property: the driver only ever runs legal arcs', () => {
  it('random request sequences on the mlx5 driver (each flag set): legal arcs, success reaches the target, refusal changes nothing', () => {
    fc.assert(
      fc.property(
        fc.constantFrom({}, { noP2p: true }, { noPreCopy: true }, { noP2p: true, noPreCopy: true }),
        fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 12 }),
        (o, reqs) => {
          const h = makeHost(o);
          configureAndRun(h, 5);
          for (const req of reqs) {
            const before = h.drv.migState;
            const arcsBefore = h.drv.arcLog.length;
            const r = setState(h, req);
            for (const [a, b] of h.drv.arcLog.slice(arcsBefore)) expect(vfioMigArcIsLegal(h.drv.migrationFlags, a, b)).toBe(true);
            if (r.ret === 0) expect(h.drv.migState).toBe(req);
            else if (vfioMigGetNextState(h.drv.migrationFlags, before, req) < 0) expect(h.drv.migState).toBe(before);
            if (r.dataFd !== null && h.drv.savingMigf === r.dataFd) drain(r.dataFd);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
