// The README example, kept honest.
import { expect, it } from 'vitest';
import { createMachine, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from '@dmakit/dma-core';
import { DmirrorDevice } from '@dmakit/hmm';

it('README example', () => {
  const machine = createMachine();
  const dev = machine.pci.addDevice({ name: 'gpu0', dmaMaskBits: 64 });
  const gpu = DmirrorDevice.create({ dev, memory: machine.memory, devmemBytes: 16 << 20 });
  if (typeof gpu === 'number') throw new Error(`errno ${gpu}`);
  const proc = machine.createProcess();
  const buf = proc.mm.mmap({ length: 16 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  proc.mm.write(buf, new TextEncoder().encode('hello from the CPU'));
  const mirror = gpu.open(proc.mm);
  const r = mirror.read(buf, 1); // one page: the other 15 would all be the zero page
  expect([r.ret, r.faults, new TextDecoder().decode(r.data.subarray(0, 18))]).toEqual([0, 1, 'hello from the CPU']);
  expect(mirror.migrateToDevice(buf, 1).ret).toBe(0);
  expect(new TextDecoder().decode(proc.mm.read(buf, 5))).toBe('hello');
  mirror.close();
});
