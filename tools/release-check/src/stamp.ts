/**
 * `tsx ../../tools/release-check/src/stamp.ts` — run by each publishable package's `build` script
 * after `tsc -b`: records the hash of the build's inputs and of every emitted file in
 * `dist/.build-stamp.json`, which the pre-publish guard (`guard-cli.ts`) checks.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashInputs } from './guard.js';
import type { BuildStamp } from './guard.js';
import { buildInputs, distFiles } from './packages.js';

const pkgDir = process.cwd();
const version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
const stamp: BuildStamp = { version: 1, inputs: hashInputs(buildInputs(pkgDir), version), outputs: distFiles(pkgDir) };
writeFileSync(join(pkgDir, 'dist', '.build-stamp.json'), JSON.stringify(stamp, null, 1) + '\n');
