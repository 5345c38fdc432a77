/* global URL */
// Writes this package's version (package.json) into the built dist/instance/version.js, so the
// duplicate-copy error of a published dma-core names its real version. Run by `pnpm build`.
import { readFileSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const target = new URL('../dist/instance/version.js', import.meta.url);
const before = readFileSync(target, 'utf8');
const pattern = /(export const DMA_CORE_VERSION = )'[^']*';/;
if (!pattern.test(before)) throw new Error(`stamp-version: no DMA_CORE_VERSION constant in ${target.pathname}`);
const after = before.replace(pattern, `$1${JSON.stringify(pkg.version).replace(/"/g, "'")};`);
if (after !== before) writeFileSync(target, after);
