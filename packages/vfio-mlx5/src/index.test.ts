import { describe, expect, it } from 'vitest';
import * as pkg from '@dmakit/vfio-mlx5';

describe('@dmakit/vfio-mlx5', () => {
  it('says plainly that it is not implemented yet', () => {
    expect(pkg.NOT_IMPLEMENTED).toBe(true);
  });
});
