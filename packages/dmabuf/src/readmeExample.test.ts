// The README example, kept compiling and true.
import { expect, it } from 'vitest';
import { createMachine, DMA_BIDIRECTIONAL, DMA_RESV_USAGE_KERNEL, MAX_SCHEDULE_TIMEOUT, isErrPtr } from '@dmakit/dma-core';
import type { SgTable } from '@dmakit/dma-core';
import { GpuVramExporter, dmaBufDynamicAttach, dmaBufMapAttachmentUnlocked, dmaBufSgtMode, dmaBufUnmapAttachment, dmaResvWaitTimeout } from '@dmakit/dmabuf';

it('README: a GPU buffer written peer-to-peer, evicted while mapped', () => {
  const m = createMachine();
  const sw = m.pci.addSwitch(m.pci.addRootPort(m.pci.addHostBridge({ p2pAllowed: true })), { downstreamPorts: 2 });
  const [p0, p1] = sw.downstreamPorts;
  if (p0 === undefined || p1 === undefined) throw new Error('switch');
  const gpuDev = m.pci.addDevice({ name: 'gpu0', parent: p0, dmaMaskBits: 64, bars: [{ size: 1 << 24, prefetch: true, p2p: true }] });
  const nvme = m.pci.addDevice({ name: 'nvme0', parent: p1, dmaMaskBits: 64, maxSegmentSize: 1 << 30 });
  const gpu = new GpuVramExporter(m, gpuDev);
  const buf = gpu.exportBuffer(1 << 20); // in VRAM
  if (isErrPtr(buf)) throw new Error('export');
  let sgt: SgTable | null = null;
  const at = dmaBufDynamicAttach(buf, nvme, {
    allowPeer2peer: true,
    moveNotify: (a) => {
      if (sgt !== null) dmaBufUnmapAttachment(a, sgt, DMA_BIDIRECTIONAL);
      sgt = null;
    },
  });
  if (isErrPtr(at)) throw new Error('attach');
  const s1 = dmaBufMapAttachmentUnlocked(at, DMA_BIDIRECTIONAL); // BUS_ADDR: PCI bus addresses
  if (isErrPtr(s1)) throw new Error('map');
  sgt = s1;
  expect(dmaBufSgtMode(s1)).toBe('bus-addr');
  nvme.dmaWrite(s1.dmaAddress[0] ?? 0, new Uint8Array([1, 2, 3])); // lands in VRAM
  expect(gpu.evict(buf)).toBe(0); // move_notify: the importer unmapped
  expect(sgt).toBeNull();
  const s2 = dmaBufMapAttachmentUnlocked(at, DMA_BIDIRECTIONAL); // system pages now
  if (isErrPtr(s2)) throw new Error('map');
  dmaResvWaitTimeout(buf.resv, DMA_RESV_USAGE_KERNEL, false, MAX_SCHEDULE_TIMEOUT); // the copy lands
  expect(nvme.dmaRead(s2.dmaAddress[0] ?? 0, 3)).toEqual(new Uint8Array([1, 2, 3]));
});
