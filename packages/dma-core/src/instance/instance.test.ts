import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  DMA_CORE_INSTANCE,
  DMA_CORE_INSTANCE_KEY,
  DMA_CORE_VERSION,
  DuplicateDmaCoreError,
  registerDmaCoreInstance,
} from '@dmakit/dma-core';

const scratch = mkdtempSync(join(tmpdir(), 'dma-core-copy-'));
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('one dma-core per process', () => {
  it('registers the loaded copy on globalThis under Symbol.for', () => {
    const slot = (globalThis as Record<symbol, unknown>)[Symbol.for('@dmakit/dma-core/instance')];
    expect(DMA_CORE_INSTANCE_KEY).toBe(Symbol.for('@dmakit/dma-core/instance'));
    expect(slot).toEqual({ version: DMA_CORE_VERSION, url: DMA_CORE_INSTANCE.url });
    expect(DMA_CORE_INSTANCE.url).toMatch(/instance\.ts$/);
  });

  it('accepts the same URL again and refuses a different one, naming both copies', () => {
    const registry = {};
    const a = { version: '0.1.0', url: 'file:///app/node_modules/@dmakit/dma-core/dist/instance/instance.js' };
    const b = {
      version: '0.2.0',
      url: 'file:///app/node_modules/@dmakit/nvme-pci/node_modules/@dmakit/dma-core/dist/instance/instance.js',
    };
    expect(registerDmaCoreInstance(a, registry)).toBe(a);
    expect(registerDmaCoreInstance({ ...a }, registry)).toEqual(a);
    let caught: unknown;
    try {
      registerDmaCoreInstance(b, registry);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(DuplicateDmaCoreError);
    const err = caught as DuplicateDmaCoreError;
    expect(err.code).toBe('ERR_DMAKIT_DUPLICATE_DMA_CORE');
    expect(err.first).toEqual(a);
    expect(err.second).toEqual(b);
    expect(err.message).toContain('0.1.0 from file:///app/node_modules/@dmakit/dma-core/');
    expect(err.message).toContain('0.2.0 from file:///app/node_modules/@dmakit/nvme-pci/');
    expect(err.message).toContain('npm dedupe');
    // The first copy stays registered.
    expect(registerDmaCoreInstance(a, registry)).toEqual(a);
  });

  it('survives a module reset (same URL evaluated twice)', async () => {
    vi.resetModules();
    const again = await import('@dmakit/dma-core');
    expect(again.DMA_CORE_INSTANCE).toEqual(DMA_CORE_INSTANCE);
  });

  it('throws when a second copy from another location is imported into this process', async () => {
    const here = fileURLToPath(new URL('.', import.meta.url));
    for (const f of ['instance.ts', 'version.ts']) copyFileSync(join(here, f), join(scratch, f));
    const copy = pathToFileURL(join(scratch, 'instance.ts')).href;
    await expect(import(/* @vite-ignore */ copy)).rejects.toMatchObject({
      name: 'DuplicateDmaCoreError',
      code: 'ERR_DMAKIT_DUPLICATE_DMA_CORE',
      first: { url: DMA_CORE_INSTANCE.url },
      second: { url: copy },
    });
  });
});
