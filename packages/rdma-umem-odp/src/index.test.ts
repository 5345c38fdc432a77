import { describe, expect, it } from 'vitest';
import * as pkg from '@dmakit/rdma-umem-odp';

describe('@dmakit/rdma-umem-odp', () => {
  it('says plainly that it is not implemented yet', () => {
    expect(pkg.NOT_IMPLEMENTED).toBe(true);
  });
});
