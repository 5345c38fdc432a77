import { describe, expect, it } from 'vitest';
import * as pkg from '@dmakit/iommu-dma';

describe('@dmakit/iommu-dma', () => {
  it('says plainly that it is not implemented yet', () => {
    expect(pkg.NOT_IMPLEMENTED).toBe(true);
  });
});
