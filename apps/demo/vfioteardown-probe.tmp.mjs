const { STACKS } = await import('/work/wt-vfioteardown/apps/demo/src/stacks/index.ts');
const { resourceCountChanges } = await import('@dmakit/dma-core');
const { iommuDeviceList } = await import('@dmakit/iommu-dma');
const def = STACKS.find((s) => s.name === 'vfio-migration');
const obs = [];
const r = def.run({ seed: 1, size: 8, mapping: 'iova', onMachine: (m, role) => obs.push({ m, role, before: m.resourceCounts() }) });
console.log('verified', r.verified, r.failure);
for (const o of obs) { for (const i of iommuDeviceList(o.m)) i.flushQueues(); console.log(o.role, resourceCountChanges(o.before, o.m.resourceCounts())); }
