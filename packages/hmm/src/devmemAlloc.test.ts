// Fault-injection site 'devmem_alloc' (lib/test_hmm.c dmirror_devmem_alloc_page() returning NULL).
import { expect, it } from 'vitest';
import { createMachine, Errno, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE } from '@dmakit/dma-core';
import { DmirrorDevice } from '@dmakit/hmm';

it("a device page that cannot be allocated ('devmem_alloc') leaves that page in RAM: migrate_vma is best effort and the data stays right", () => {
  const machine = createMachine({ ramBytes: 256 << 20, dmaDebug: 'strict' });
  const dev = machine.pci.addDevice({ name: 'gpu0', dmaMaskBits: 64 });
  const gpu = DmirrorDevice.create({ dev, memory: machine.memory, devmemBytes: 1 << 20 });
  if (typeof gpu === 'number') throw new Error(`errno ${gpu}`);
  const proc = machine.createProcess();
  const buf = proc.mm.mmap({ length: 4 * 4096, prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE | MAP_ANONYMOUS });
  const data = machine.rng.fill(new Uint8Array(4 * 4096));
  proc.mm.write(buf, data);
  const mirror = gpu.open(proc.mm);
  machine.faultInjection.arm('devmem_alloc', 2);
  const r = mirror.migrateToDevice(buf, 4);
  // test_hmm returns the migrated data through the mirror: the page left in RAM is not in the
  // device's memory, so that read-back ends with -ENOENT (dmirror_do_read), as in the kernel.
  expect(r.ret).toBe(-Errno.ENOENT);
  expect(gpu.devicePagesInUse).toBe(3);
  expect(mirror.lookup(buf + 4096)?.local === true).toBe(false);
  expect(proc.mm.read(buf, 4 * 4096)).toEqual(data);
  mirror.close();
  proc.exit();
  expect(machine.dmaDebug.entries).toBe(0);
});
