import { describe, expect, it } from 'vitest';
import { NvmeNamespace } from '../index.js';

describe('NvmeNamespace', () => {
  const CHUNK = 1 << 16;

  it('storedView: the stored chunk holding a range, or null where readBytes must stage', () => {
    const ns = new NvmeNamespace({ nsid: 1, lbaSize: 512, capacityLbas: 1024 });
    const data = Uint8Array.from({ length: 8192 }, (_, i) => (i * 7 + 3) & 0xff);
    ns.writeBytes(CHUNK - 4096, data, 0, data.length); // straddles the first chunk boundary
    // Inside one written chunk: a view whose bytes at viewOffset are what readBytes returns.
    for (const [pos, len] of [[CHUNK - 4096, 4096], [CHUNK, 4096], [CHUNK + 100, 512]] as const) {
      const v = ns.storedView(pos, len);
      expect(v).not.toBeNull();
      const staged = new Uint8Array(len);
      ns.readBytes(pos, staged, 0, len);
      expect(v?.subarray(ns.viewOffset, ns.viewOffset + len)).toEqual(staged);
    }
    expect(ns.storedView(CHUNK - 4096, 8192)).toBeNull(); // crosses chunks
    expect(ns.storedView(4 * CHUNK, 4096)).toBeNull(); // never written: reads as zeros via readBytes
    expect(ns.storedView(CHUNK, 0)).toBeNull();
    ns.zeroBytes(CHUNK, CHUNK); // a whole chunk dropped
    expect(ns.storedView(CHUNK, 4096)).toBeNull();
  });
});
