/**
 * @dmakit/testkit: test fakes, rigs and fixtures that more than one dmakit package needs.
 *
 * Private and never published; imported only by test files (`*.test.ts`) and a package's own
 * test helpers (`src/testing/*.ts`), never by package code (eslint enforces both). A helper that
 * one package alone needs lives in that package's `src/testing/<name>.ts` instead. Everything
 * here goes through `@dmakit/dma-core`'s public surface and contracts, as a subsystem would.
 */
export { pattern, sameBytes } from './bytes.js';
export { mmapAnon } from './mm.js';
export type { MmapAnonOptions } from './mm.js';
export { FakeIommu } from './fakeIommu.js';
export type { FakeIommuCounts } from './fakeIommu.js';
export { buildP2pSwitch } from './p2pTopology.js';
export type { P2pSwitch, P2pSwitchOptions } from './p2pTopology.js';
export { FakeDmaBuf, FakeDmaBufAttachment, FakeDmaResv, createFakeDmaBufExporter } from './dmaBufExporter.js';
export type { FakeDmaBufChunk, FakeDmaBufExporter } from './dmaBufExporter.js';
