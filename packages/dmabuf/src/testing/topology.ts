// Test fixture of @dmakit/dmabuf (not shipped: src/testing/ is excluded from the build and the
// tarball): the PCI topology of issue 7's demo. Byte helpers come from @dmakit/testkit.
//   host bridge 0 ── root port A ── switch ── dsp0: gpu (VRAM BAR, P2P)
//                 │                       └─ dsp1: peer (an NVMe-like endpoint)
//                 └─ root port B ── nic
//   host bridge 1 ── root port C ── far  (only for the "not allow-listed" route)
import { SZ_1M, createMachine } from '@dmakit/dma-core';
import type { Device, DmaDebugMode, Machine } from '@dmakit/dma-core';

/** Devices raise dma_set_max_seg_size like real NIC/NVMe/GPU drivers do. */
const MAX_SEG = 0xffff_f000;

export interface Topology {
  machine: Machine;
  gpu: Device;
  peer: Device;
  nic: Device;
  far: Device;
  vfioDev: Device;
}

export interface TopologyOptions {
  /** Host bridge 0 is on the P2P allow-list (default true). */
  allowed?: boolean;
  debug?: DmaDebugMode;
  /** PCI bus address − CPU address of BARs below host bridge 0. */
  busOffset?: number;
  vramBytes?: number;
  seed?: number;
  /** Build a confidential guest (TDX/SEV) machine. */
  cc?: 'tdx' | 'sev';
}

export function buildTopology(opts: TopologyOptions = {}): Topology {
  const machine = createMachine({
    ramBytes: 256 * SZ_1M,
    seed: opts.seed ?? 1,
    ...(opts.debug === undefined ? {} : { dmaDebug: opts.debug }),
    ...(opts.cc === undefined ? {} : { cc: opts.cc }),
  });
  // x86: dma_get_cache_alignment() is 1, so dma-debug skips the cacheline-overlap check (~7.0).
  machine.dmaDebug.cacheAlignment = 1;
  const pci = machine.pci;
  const hb0 = pci.addHostBridge({ p2pAllowed: opts.allowed ?? true, busOffset: opts.busOffset ?? 0 });
  const hb1 = pci.addHostBridge({ p2pAllowed: false });
  const rpA = pci.addRootPort(hb0);
  const sw = pci.addSwitch(rpA, { downstreamPorts: 3 });
  const [d0, d1, d2] = sw.downstreamPorts;
  if (d0 === undefined || d1 === undefined || d2 === undefined) throw new Error('switch without ports');
  const gpu = pci.addDevice({ name: 'gpu0', parent: d0, dmaMaskBits: 64, maxSegmentSize: MAX_SEG, bars: [{ size: SZ_1M }, { size: opts.vramBytes ?? 16 * SZ_1M, prefetch: true, p2p: true }] });
  const peer = pci.addDevice({ name: 'nvme0', parent: d1, dmaMaskBits: 64, maxSegmentSize: MAX_SEG });
  const vfioDev = pci.addDevice({ name: 'vfio0', parent: d2, dmaMaskBits: 64, maxSegmentSize: MAX_SEG, bars: [{ size: SZ_1M }, { size: 4 * SZ_1M, prefetch: true }] });
  const nic = pci.addDevice({ name: 'mlx5_0', parent: pci.addRootPort(hb0), dmaMaskBits: 64, maxSegmentSize: MAX_SEG });
  const far = pci.addDevice({ name: 'far0', parent: pci.addRootPort(hb1), dmaMaskBits: 64, maxSegmentSize: MAX_SEG });
  return { machine, gpu, peer, nic, far, vfioDev };
}
