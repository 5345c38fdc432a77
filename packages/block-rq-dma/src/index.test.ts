import { describe, expect, it } from 'vitest';
import * as pkg from '@dmakit/block-rq-dma';

describe('@dmakit/block-rq-dma', () => {
  it('says plainly that it is not implemented yet', () => {
    expect(pkg.NOT_IMPLEMENTED).toBe(true);
  });
});
