import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { declaredPackages, expectedRepublished, extractExample, importedPackages, optionalPeers, satisfies } from './examples.js';
import type { Manifest } from './examples.js';

describe('README examples', () => {
  it('takes the first ts block after an Example heading', () => {
    const md = '# x\n\n```ts\nnot this\n```\n\n## Example: two steps\n\nText.\n\n```ts\nconst a = 1;\nconsole.log(a);\n```\n\n```ts\nnor this\n```\n';
    expect(extractExample(md)).toBe('const a = 1;\nconsole.log(a);\n');
    expect(extractExample('# x\n## Example\ntext\n## Next\n```ts\nx\n```\n')).toBeNull();
    expect(extractExample('# x\n')).toBeNull();
  });

  it('lists the bare packages a module imports', () => {
    const code = [
      "import { a } from '@dmakit/dma-core';",
      "import type { B } from '@dmakit/dma-core';",
      "import { c,\n  d } from '@dmakit/hmm';",
      "import 'side-effect';",
      "import x from './local.js';",
      "import { readFileSync } from 'node:fs';",
      "const m = await import('lodash/fp');",
      "export { e } from '@scope/pkg/sub';",
    ].join('\n');
    expect(importedPackages(code)).toEqual(['@dmakit/dma-core', '@dmakit/hmm', '@scope/pkg', 'lodash', 'side-effect']);
  });

  // Every package README in the workspace has a runnable example that imports only what it declares.
  const packagesDir = fileURLToPath(new URL('../../../packages/', import.meta.url));
  for (const dir of readdirSync(packagesDir)) {
    it(`${dir}: README example imports only declared packages`, () => {
      const manifest = JSON.parse(readFileSync(join(packagesDir, dir, 'package.json'), 'utf8')) as Manifest;
      const code = extractExample(readFileSync(join(packagesDir, dir, 'README.md'), 'utf8'));
      expect(code).not.toBeNull();
      const declared = declaredPackages(manifest);
      expect(importedPackages(code!).filter((p) => !declared.has(p))).toEqual([]);
      expect(code).toMatch(/console\.log\(/);
    });
  }
});

describe('versions', () => {
  it('satisfies the ranges the workspace publishes', () => {
    expect(satisfies('0.1.1', '^0.1.0')).toBe(true);
    expect(satisfies('0.2.0', '^0.1.0')).toBe(false);
    expect(satisfies('1.4.0', '^1.2.3')).toBe(true);
    expect(satisfies('2.0.0', '^1.2.3')).toBe(false);
    expect(satisfies('0.0.2', '^0.0.1')).toBe(false);
    expect(satisfies('0.3.0', '>=0.1.0 <1.0.0')).toBe(true);
    expect(satisfies('1.0.0', '>=0.1.0 <1.0.0')).toBe(false);
    expect(satisfies('1.2.9', '~1.2.0')).toBe(true);
    expect(satisfies('1.3.0', '~1.2.0')).toBe(false);
    expect(satisfies('0.1.0', '0.1.0')).toBe(true);
    expect(satisfies('0.5.0', '^0.1.0 || ^0.5.0')).toBe(true);
  });

  const core: Manifest = { name: 'core', version: '0.1.0' };
  const nvme: Manifest = { name: 'nvme', version: '0.1.0', peerDependencies: { core: '^0.1.0', blk: '>=0.1.0 <1.0.0' }, peerDependenciesMeta: { blk: { optional: true } } };
  const cli: Manifest = { name: 'cli', version: '0.1.0', dependencies: { core: '^0.1.0', nvme: '^0.1.0' } };
  const pinned: Manifest = { name: 'pinned', version: '0.1.0', dependencies: { nvme: '0.1.0' } };

  it('expects a patch to republish only the package and dependents whose range it leaves', () => {
    expect([...expectedRepublished([core, nvme, cli], 'nvme', '0.1.1')]).toEqual(['nvme']);
    expect([...expectedRepublished([core, nvme, cli, pinned], 'nvme', '0.1.1')].sort()).toEqual(['nvme', 'pinned']);
    expect([...expectedRepublished([core, nvme, cli], 'core', '0.2.0')].sort()).toEqual(['cli', 'core', 'nvme']);
  });

  it('knows declared packages and optional peers', () => {
    expect([...declaredPackages(nvme)].sort()).toEqual(['blk', 'core', 'nvme']);
    expect(optionalPeers(nvme)).toEqual([{ name: 'blk', range: '>=0.1.0 <1.0.0' }]);
    expect(optionalPeers(cli)).toEqual([]);
  });
});
