/**
 * The version of this copy of dma-core. In source it is a placeholder; the package build
 * (`scripts/stamp-version.mjs`) writes the version from package.json into `dist/instance/version.js`,
 * so a published copy always names its own version and the two can never drift.
 */
export const DMA_CORE_VERSION: string = '0.0.0-source';
