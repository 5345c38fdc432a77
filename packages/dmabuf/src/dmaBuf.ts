// kernel: drivers/dma-buf/dma-buf.c, include/linux/dma-buf.h (~6.15+: no sg_table caching in the
// core, pin on map for static importers, CONFIG_DMABUF_MOVE_NOTIFY=y)
import { DmaResvUsage, Errno, MAX_SCHEDULE_TIMEOUT, SgTable, validDmaDirection } from '@dmakit/dma-core';
import type { Device, DmaBuf, DmaBufAttachOps, DmaBufAttachment, DmaDataDirection, DmaResv } from '@dmakit/dma-core';
import { DmaResvObject, dmaResvAssertHeld, dmaResvInit, dmaResvLock, dmaResvUnlock, dmaResvUsageRw, dmaResvWaitTimeout } from './resv.js';

/** `struct iosys_map`: a CPU view of the buffer (`dma_buf_vmap`). */
export interface IosysMap {
  /** True for I/O memory (a BAR), false for system RAM. */
  readonly isIomem: boolean;
  /** Copies len bytes at offset out of the mapping (kernel: iosys_map_memcpy_from()). */
  read(offset: number, len: number): Uint8Array;
  /** Copies bytes into the mapping at offset (kernel: iosys_map_memcpy_to()). */
  write(offset: number, bytes: Uint8Array): void;
}

/** `struct dma_buf_ops`: what an exporter provides. `pin` and `unpin` come together or not at all. */
export interface DmaBufOps {
  /** `attach(dmabuf, attach)`: accept or refuse an importer; 0 or -errno. */
  attach?(dmabuf: DmaBufObject, attach: DmaBufAttachmentObject): number;
  /** `detach(dmabuf, attach)`. */
  detach?(dmabuf: DmaBufObject, attach: DmaBufAttachmentObject): void;
  /** Keep the backing store where it is until unpin (resv held). 0 or -errno. */
  pin?(attach: DmaBufAttachmentObject): number;
  /** `unpin(attach)`: release what pin() held. */
  unpin?(attach: DmaBufAttachmentObject): void;
  /** `map_dma_buf(attach, dir)`: a DMA-mapped table for `attach.dev`, or -errno (resv held). */
  mapDmaBuf(attach: DmaBufAttachmentObject, dir: DmaDataDirection): SgTable | number;
  /** `unmap_dma_buf(attach, sgt, dir)` (resv held). */
  unmapDmaBuf(attach: DmaBufAttachmentObject, sgt: SgTable, dir: DmaDataDirection): void;
  /** `release(dmabuf)`: the last reference is gone; free the backing store. */
  release(dmabuf: DmaBufObject): void;
  /** `begin_cpu_access(dmabuf, dir)`: make the buffer coherent for the CPU; 0 or -errno. */
  beginCpuAccess?(dmabuf: DmaBufObject, dir: DmaDataDirection): number;
  /** `end_cpu_access(dmabuf, dir)`: hand the buffer back to devices; 0 or -errno. */
  endCpuAccess?(dmabuf: DmaBufObject, dir: DmaDataDirection): number;
  /** resv held. A CPU view or -errno. */
  vmap?(dmabuf: DmaBufObject): IosysMap | number;
  /** `vunmap(dmabuf, map)`: drop a CPU view from vmap() (resv held). */
  vunmap?(dmabuf: DmaBufObject, map: IosysMap): void;
}

/** `struct dma_buf_export_info`. */
export interface DmaBufExportInfo {
  /** Model: the exporting device (dma-debug reports, the clock). The kernel passes none. */
  exporter: Device;
  expName: string;
  ops: DmaBufOps;
  size: number;
  flags?: number;
  priv?: unknown;
  /** Share an existing reservation object (e.g. a GEM object's), else a new one. */
  resv?: DmaResv;
}

/** One live mapping of an attachment: direction, the move sequence it was made at, pinned or not. */
export interface LiveMapping {
  readonly dir: DmaDataDirection;
  /** `dmabuf.moveSeq` when mapped: older than the buffer's means move_notify has passed. */
  readonly seq: number;
  readonly pinned: boolean;
}

/** `struct dma_buf_attachment`. */
export class DmaBufAttachmentObject implements DmaBufAttachment {
  readonly dmabuf: DmaBufObject;
  readonly dev: Device;
  readonly peer2peer: boolean;
  readonly importerOps: DmaBufAttachOps | null;
  importerPriv: unknown;
  /** Exporter-private (`attach->priv`). */
  priv: unknown = null;
  /** Still on the buffer's attachment list. */
  attached = false;
  /** `dma_buf_pin` count of a dynamic importer. */
  pinCount = 0;
  readonly maps = new Map<SgTable, LiveMapping>();
  /** move_notify calls this attachment received. */
  moveNotifies = 0;

  constructor(dmabuf: DmaBufObject, dev: Device, importerOps: DmaBufAttachOps | null, importerPriv: unknown) {
    this.dmabuf = dmabuf;
    this.dev = dev;
    this.importerOps = importerOps;
    this.importerPriv = importerPriv;
    this.peer2peer = importerOps?.allowPeer2peer === true;
  }
}

/** Counters the property tests and benchmarks read. */
export interface DmaBufStats {
  maps: number;
  unmaps: number;
  moveNotifies: number;
  pins: number;
  unpins: number;
}

/** `struct dma_buf`. */
export class DmaBufObject implements DmaBuf {
  readonly size: number;
  readonly resv: DmaResvObject;
  readonly expName: string;
  name = '';
  readonly ops: DmaBufOps;
  readonly priv: unknown;
  readonly exporter: Device;
  readonly flags: number;
  refcount = 1;
  released = false;
  readonly attachments: DmaBufAttachmentObject[] = [];
  /** Incremented by every dma_buf_move_notify. */
  moveSeq = 0;
  vmappingCounter = 0;
  vmapPtr: IosysMap | null = null;
  readonly stats: DmaBufStats = { maps: 0, unmaps: 0, moveNotifies: 0, pins: 0, unpins: 0 };

  constructor(info: DmaBufExportInfo, resv: DmaResvObject) {
    this.size = info.size;
    this.resv = resv;
    this.expName = info.expName;
    this.ops = info.ops;
    this.priv = info.priv ?? null;
    this.exporter = info.exporter;
    this.flags = info.flags ?? 0;
  }

  get attachmentCount(): number {
    return this.attachments.length;
  }

  /** Live mappings over every attachment. */
  get mappedCount(): number {
    let n = 0;
    for (const a of this.attachments) n += a.maps.size;
    return n;
  }

  /** Mappings made before the last move_notify that the importer has not unmapped yet. */
  get staleMappings(): number {
    let n = 0;
    for (const a of this.attachments) for (const m of a.maps.values()) if (m.seq < this.moveSeq) n++;
    return n;
  }
}

function isBuf(x: unknown): x is DmaBufObject {
  return x instanceof DmaBufObject;
}

function isAttach(x: unknown): x is DmaBufAttachmentObject {
  return x instanceof DmaBufAttachmentObject;
}

/** `dma_buf_is_dynamic(dmabuf)`: the exporter can move the buffer (it implements pin). */
export function dmaBufIsDynamic(dmabuf: DmaBuf): boolean {
  return isBuf(dmabuf) && dmabuf.ops.pin !== undefined;
}

/** `dma_buf_attachment_is_dynamic(attach)`: the importer handles move_notify. */
export function dmaBufAttachmentIsDynamic(attach: DmaBufAttachment): boolean {
  return attach.importerOps !== null;
}

/** `dma_buf_pin_on_map(attach)`: static importers pin for as long as they hold a mapping. */
function pinOnMap(attach: DmaBufAttachmentObject): boolean {
  return attach.dmabuf.ops.pin !== undefined && attach.importerOps === null;
}

/** Is this mapping from before the buffer's last move_notify (the importer must not use it)? */
export function dmaBufMappingIsStale(attach: DmaBufAttachment, sgt: SgTable): boolean {
  if (!isAttach(attach)) return true;
  const m = attach.maps.get(sgt);
  return m === undefined || m.seq < attach.dmabuf.moveSeq;
}

/**
 * `dma_buf_export(exp_info)`: a buffer with one reference (the file), or -EINVAL when the
 * mandatory ops are missing or pin/unpin are not both given (the kernel WARNs).
 */
export function dmaBufExport(info: DmaBufExportInfo): DmaBufObject | number {
  const dev = info.exporter;
  const ops = info.ops as Partial<DmaBufOps> | undefined;
  const bad = (why: string): number => {
    dev.host.dmaDebug.report('dmabuf-bad-export', dev, `dma_buf_export: ${why}`);
    return -Errno.EINVAL;
  };
  if (ops === undefined || typeof ops.mapDmaBuf !== 'function' || typeof ops.unmapDmaBuf !== 'function' || typeof ops.release !== 'function') {
    return bad('ops must provide map_dma_buf, unmap_dma_buf and release');
  }
  if ((ops.pin === undefined) !== (ops.unpin === undefined)) return bad('pin and unpin must come together');
  if (!Number.isSafeInteger(info.size) || info.size <= 0) return bad(`invalid size ${String(info.size)}`);
  let resv: DmaResvObject;
  if (info.resv !== undefined) {
    if (!(info.resv instanceof DmaResvObject)) return bad('resv is not a reservation object of this framework');
    resv = info.resv;
  } else {
    resv = dmaResvInit(dev);
  }
  return new DmaBufObject(info, resv);
}

/** `get_dma_buf(dmabuf)`: take another reference. */
export function getDmaBuf(dmabuf: DmaBuf): void {
  if (isBuf(dmabuf) && !dmabuf.released) dmabuf.refcount++;
}

/** `dma_buf_put(dmabuf)`: drop a reference; the last one releases the buffer. */
export function dmaBufPut(dmabuf: DmaBuf): void {
  if (!isBuf(dmabuf)) return;
  const dev = dmabuf.exporter;
  if (dmabuf.released || dmabuf.refcount <= 0) {
    dev.host.dmaDebug.report('dmabuf-refcount', dev, `dma_buf_put: ${dmabuf.expName} buffer already released`);
    return;
  }
  dmabuf.refcount--;
  if (dmabuf.refcount === 0) release(dmabuf);
}

/**
 * `dma_buf_release`: importers must hold a reference while attached; if they did not, the model
 * tears the attachments down (so nothing leaks), releases, then reports.
 */
function release(dmabuf: DmaBufObject): void {
  const leftover = dmabuf.attachments.length;
  const mapped = dmabuf.mappedCount;
  for (const a of [...dmabuf.attachments]) teardown(a);
  if (dmabuf.vmappingCounter > 0 && dmabuf.vmapPtr !== null) {
    dmabuf.ops.vunmap?.(dmabuf, dmabuf.vmapPtr);
    dmabuf.vmappingCounter = 0;
    dmabuf.vmapPtr = null;
  }
  dmabuf.released = true;
  dmabuf.ops.release(dmabuf);
  if (leftover > 0) {
    const dev = dmabuf.exporter;
    dev.host.dmaDebug.report('dmabuf-release-attached', dev, `dma_buf_release: ${dmabuf.expName} buffer released with ${leftover} attachment(s) and ${mapped} live mapping(s)`, { count: leftover });
  }
}

/** Unmap what an attachment still maps, undo its pins, take it off the list, exporter detach. */
function teardown(a: DmaBufAttachmentObject): void {
  const buf = a.dmabuf;
  for (const [sgt, m] of [...a.maps]) {
    buf.ops.unmapDmaBuf(a, sgt, m.dir);
    a.maps.delete(sgt);
    buf.stats.unmaps++;
    if (m.pinned) exporterUnpin(a);
  }
  while (a.pinCount > 0) {
    a.pinCount--;
    exporterUnpin(a);
  }
  const i = buf.attachments.indexOf(a);
  if (i >= 0) buf.attachments.splice(i, 1);
  a.attached = false;
  buf.ops.detach?.(buf, a);
}

function exporterUnpin(a: DmaBufAttachmentObject): void {
  a.dmabuf.ops.unpin?.(a);
  a.dmabuf.stats.unpins++;
}

/**
 * `dma_buf_dynamic_attach(dmabuf, dev, importer_ops, importer_priv)`: the attachment or -errno
 * (-EINVAL bad arguments; -ENOMEM when the attachment cannot be allocated, fault-injection site
 * 'dmabuf_attach'; the exporter's attach may refuse, e.g. -EOPNOTSUPP / -ENODEV).
 */
export function dmaBufDynamicAttach(dmabuf: DmaBuf, dev: Device, importerOps: DmaBufAttachOps | null, importerPriv: unknown = null): DmaBufAttachmentObject | number {
  if (!isBuf(dmabuf) || typeof dev !== 'object' || (dev as Device | null) === null) return -Errno.EINVAL;
  if (dmabuf.released) {
    dev.host.dmaDebug.report('dmabuf-refcount', dev, 'dma_buf_attach: the buffer was released');
    return -Errno.EINVAL;
  }
  if (importerOps !== null && typeof (importerOps as Partial<DmaBufAttachOps>).moveNotify !== 'function') {
    dev.host.dmaDebug.report('invalid-argument', dev, 'dma_buf_dynamic_attach: importer_ops without move_notify');
    return -Errno.EINVAL;
  }
  // kernel: drivers/dma-buf/dma-buf.c dma_buf_dynamic_attach(): kzalloc of the attachment
  // (fault-injection site 'dmabuf_attach'), ERR_PTR(-ENOMEM) when it fails.
  if (dev.host.faultInjection?.shouldFail('dmabuf_attach') === true) return -Errno.ENOMEM;
  const attach = new DmaBufAttachmentObject(dmabuf, dev, importerOps, importerPriv);
  const ops = dmabuf.ops;
  if (ops.attach !== undefined) {
    const ret = ops.attach(dmabuf, attach);
    if (ret !== 0) return ret;
  }
  const rc = dmaResvLock(dmabuf.resv, `attach ${dev.name}`);
  if (rc !== 0) {
    ops.detach?.(dmabuf, attach);
    return rc;
  }
  dmabuf.attachments.push(attach);
  attach.attached = true;
  dmaResvUnlock(dmabuf.resv);
  return attach;
}

/** `dma_buf_attach(dmabuf, dev)`: a static importer (no move_notify, pinned while mapped). */
export function dmaBufAttach(dmabuf: DmaBuf, dev: Device): DmaBufAttachmentObject | number {
  return dmaBufDynamicAttach(dmabuf, dev, null, null);
}

function checkAttach(attach: unknown, fn: string, dev?: Device): attach is DmaBufAttachmentObject {
  if (isAttach(attach) && attach.attached && !attach.dmabuf.released) return true;
  const d = isAttach(attach) ? attach.dev : dev;
  if (d !== undefined) d.host.dmaDebug.report('dmabuf-bad-attachment', d, `${fn}: the attachment is not attached to a live buffer`);
  return false;
}

/**
 * `dma_buf_detach(dmabuf, attach)`. Live mappings are an importer bug: they are torn down and
 * reported.
 */
export function dmaBufDetach(dmabuf: DmaBuf, attach: DmaBufAttachment): void {
  if (!isBuf(dmabuf) || !checkAttach(attach, 'dma_buf_detach')) return;
  if (attach.dmabuf !== dmabuf) {
    attach.dev.host.dmaDebug.report('dmabuf-bad-attachment', attach.dev, 'dma_buf_detach: the attachment belongs to another buffer');
    return;
  }
  const live = attach.maps.size;
  const rc = dmaResvLock(dmabuf.resv, `detach ${attach.dev.name}`);
  teardown(attach);
  if (rc === 0) dmaResvUnlock(dmabuf.resv);
  if (live > 0) {
    attach.dev.host.dmaDebug.report('dmabuf-detach-mapped', attach.dev, `dma_buf_detach: ${live} mapping(s) still live; unmapped now`, { count: live });
  }
}

/** `dma_buf_pin(attach)`: for dynamic importers that cannot handle moves. Resv held. */
export function dmaBufPin(attach: DmaBufAttachment): number {
  if (!checkAttach(attach, 'dma_buf_pin')) return -Errno.EINVAL;
  const buf = attach.dmabuf;
  if (attach.importerOps === null) {
    attach.dev.host.dmaDebug.report('invalid-argument', attach.dev, 'dma_buf_pin: only for dynamic importers (WARN_ON(!attach->importer_ops))');
    return -Errno.EINVAL;
  }
  dmaResvAssertHeld(buf.resv, attach.dev, 'dma_buf_pin');
  if (buf.ops.pin !== undefined) {
    const ret = buf.ops.pin(attach);
    if (ret !== 0) return ret;
    buf.stats.pins++;
  }
  attach.pinCount++;
  return 0;
}

/** `dma_buf_unpin(attach)`. Resv held. */
export function dmaBufUnpin(attach: DmaBufAttachment): void {
  if (!checkAttach(attach, 'dma_buf_unpin')) return;
  if (attach.pinCount <= 0) {
    attach.dev.host.dmaDebug.report('invalid-argument', attach.dev, 'dma_buf_unpin: not pinned');
    return;
  }
  dmaResvAssertHeld(attach.dmabuf.resv, attach.dev, 'dma_buf_unpin');
  attach.pinCount--;
  if (attach.dmabuf.ops.unpin !== undefined) exporterUnpin(attach);
}

/**
 * `dma_buf_map_attachment(attach, dir)`: resv held (reported if not). Static importers pin the
 * buffer and wait for its kernel fences here; dynamic importers must wait themselves.
 */
export function dmaBufMapAttachment(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | number {
  if (!checkAttach(attach, 'dma_buf_map_attachment')) return -Errno.EINVAL;
  const dev = attach.dev;
  if (!validDmaDirection(dir)) {
    dev.host.dmaDebug.report('invalid-direction', dev, `dma_buf_map_attachment: invalid DMA direction ${String(dir)}`);
    return -Errno.EINVAL;
  }
  const buf = attach.dmabuf;
  dmaResvAssertHeld(buf.resv, dev, 'dma_buf_map_attachment');
  const pin = pinOnMap(attach);
  if (pin && buf.ops.pin !== undefined) {
    const ret = buf.ops.pin(attach);
    if (ret !== 0) return ret;
    buf.stats.pins++;
  }
  const sgt = buf.ops.mapDmaBuf(attach, dir);
  if (typeof sgt === 'number' || !(sgt instanceof SgTable)) {
    if (pin) exporterUnpin(attach);
    return typeof sgt === 'number' && sgt < 0 ? sgt : -Errno.ENOMEM;
  }
  if (attach.importerOps === null) {
    // kernel: static importers do not handle fences; the core waits for the kernel fences.
    const r = dmaResvWaitTimeout(buf.resv, DmaResvUsage.KERNEL, true, MAX_SCHEDULE_TIMEOUT);
    if (r <= 0) {
      buf.ops.unmapDmaBuf(attach, sgt, dir);
      if (pin) exporterUnpin(attach);
      return r < 0 ? r : -Errno.ETIMEDOUT;
    }
  }
  attach.maps.set(sgt, { dir, seq: buf.moveSeq, pinned: pin });
  buf.stats.maps++;
  return sgt;
}

/** `dma_buf_unmap_attachment(attach, sgt, dir)`: resv held (reported if not). */
export function dmaBufUnmapAttachment(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  if (!checkAttach(attach, 'dma_buf_unmap_attachment')) return;
  const dev = attach.dev;
  const m = attach.maps.get(sgt);
  if (m === undefined) {
    dev.host.dmaDebug.report('dmabuf-unmap-not-mapped', dev, 'dma_buf_unmap_attachment: this table was not mapped by this attachment (or is already unmapped)');
    return;
  }
  if (m.dir !== dir) {
    dev.host.dmaDebug.report('direction-mismatch', dev, `dma_buf_unmap_attachment: mapped with direction ${m.dir}, unmapped with ${String(dir)}`);
  }
  const buf = attach.dmabuf;
  dmaResvAssertHeld(buf.resv, dev, 'dma_buf_unmap_attachment');
  attach.maps.delete(sgt);
  buf.ops.unmapDmaBuf(attach, sgt, m.dir);
  buf.stats.unmaps++;
  if (m.pinned) exporterUnpin(attach);
}

/** `dma_buf_map_attachment_unlocked(attach, dir)`: takes and drops the reservation lock. */
export function dmaBufMapAttachmentUnlocked(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | number {
  if (!checkAttach(attach, 'dma_buf_map_attachment_unlocked')) return -Errno.EINVAL;
  const resv = attach.dmabuf.resv;
  const rc = dmaResvLock(resv, `map ${attach.dev.name}`);
  if (rc !== 0) return rc;
  try {
    return dmaBufMapAttachment(attach, dir);
  } finally {
    dmaResvUnlock(resv);
  }
}

/** `dma_buf_unmap_attachment_unlocked(attach, sgt, dir)`. */
export function dmaBufUnmapAttachmentUnlocked(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
  if (!checkAttach(attach, 'dma_buf_unmap_attachment_unlocked')) return;
  const resv = attach.dmabuf.resv;
  if (dmaResvLock(resv, `unmap ${attach.dev.name}`) !== 0) return;
  try {
    dmaBufUnmapAttachment(attach, sgt, dir);
  } finally {
    dmaResvUnlock(resv);
  }
}

/**
 * `dma_buf_move_notify(dmabuf)`: resv held. Every dynamic importer hears that the backing store
 * is moving; mappings made before this call are stale from now on.
 */
export function dmaBufMoveNotify(dmabuf: DmaBuf): void {
  if (!isBuf(dmabuf)) return;
  dmaResvAssertHeld(dmabuf.resv, dmabuf.exporter, 'dma_buf_move_notify');
  dmabuf.moveSeq++;
  dmabuf.stats.moveNotifies++;
  for (const a of [...dmabuf.attachments]) {
    if (a.importerOps === null) continue;
    a.moveNotifies++;
    a.importerOps.moveNotify(a);
  }
}

/** `dma_buf_begin_cpu_access(dmabuf, dir)`: waits for the fences the access conflicts with. */
export function dmaBufBeginCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): number {
  if (!isBuf(dmabuf) || dmabuf.released) return -Errno.EINVAL;
  if (!validDmaDirection(dir)) return -Errno.EINVAL;
  const write = dir === 0 || dir === 1; // BIDIRECTIONAL or TO_DEVICE
  const r = dmaResvWaitTimeout(dmabuf.resv, dmaResvUsageRw(write), true, MAX_SCHEDULE_TIMEOUT);
  if (r <= 0) return r < 0 ? r : -Errno.ETIMEDOUT;
  return dmabuf.ops.beginCpuAccess?.(dmabuf, dir) ?? 0;
}

/** `dma_buf_end_cpu_access(dmabuf, dir)`. */
export function dmaBufEndCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): number {
  if (!isBuf(dmabuf) || dmabuf.released) return -Errno.EINVAL;
  if (!validDmaDirection(dir)) return -Errno.EINVAL;
  return dmabuf.ops.endCpuAccess?.(dmabuf, dir) ?? 0;
}

/** `dma_buf_vmap(dmabuf, map)`: resv held; counted, the exporter maps once. */
export function dmaBufVmap(dmabuf: DmaBuf): IosysMap | number {
  if (!isBuf(dmabuf) || dmabuf.released) return -Errno.EINVAL;
  dmaResvAssertHeld(dmabuf.resv, dmabuf.exporter, 'dma_buf_vmap');
  if (dmabuf.ops.vmap === undefined) return -Errno.EINVAL;
  if (dmabuf.vmappingCounter > 0 && dmabuf.vmapPtr !== null) {
    dmabuf.vmappingCounter++;
    return dmabuf.vmapPtr;
  }
  const m = dmabuf.ops.vmap(dmabuf);
  if (typeof m === 'number') return m;
  dmabuf.vmapPtr = m;
  dmabuf.vmappingCounter = 1;
  return m;
}

/** `dma_buf_vunmap(dmabuf, map)`: resv held. */
export function dmaBufVunmap(dmabuf: DmaBuf, map: IosysMap): void {
  if (!isBuf(dmabuf)) return;
  dmaResvAssertHeld(dmabuf.resv, dmabuf.exporter, 'dma_buf_vunmap');
  if (dmabuf.vmappingCounter <= 0 || dmabuf.vmapPtr !== map) {
    dmabuf.exporter.host.dmaDebug.report('invalid-argument', dmabuf.exporter, 'dma_buf_vunmap: not vmapped (or another map)');
    return;
  }
  dmabuf.vmappingCounter--;
  if (dmabuf.vmappingCounter === 0) {
    dmabuf.ops.vunmap?.(dmabuf, map);
    dmabuf.vmapPtr = null;
  }
}

/** `dma_buf_vmap_unlocked`. */
export function dmaBufVmapUnlocked(dmabuf: DmaBuf): IosysMap | number {
  if (!isBuf(dmabuf)) return -Errno.EINVAL;
  const rc = dmaResvLock(dmabuf.resv, 'vmap');
  if (rc !== 0) return rc;
  try {
    return dmaBufVmap(dmabuf);
  } finally {
    dmaResvUnlock(dmabuf.resv);
  }
}

/** `dma_buf_vunmap_unlocked`. */
export function dmaBufVunmapUnlocked(dmabuf: DmaBuf, map: IosysMap): void {
  if (!isBuf(dmabuf) || dmaResvLock(dmabuf.resv, 'vunmap') !== 0) return;
  try {
    dmaBufVunmap(dmabuf, map);
  } finally {
    dmaResvUnlock(dmabuf.resv);
  }
}

/** The buffer behind a contract handle, if it belongs to this framework. */
export function toDmaBufObject(x: unknown): DmaBufObject | null {
  return isBuf(x) ? x : null;
}

/** The attachment behind a contract handle, if it belongs to this framework. */
export function toDmaBufAttachmentObject(x: unknown): DmaBufAttachmentObject | null {
  return isAttach(x) ? x : null;
}
