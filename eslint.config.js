// One flat config for the whole monorepo (typescript-eslint strict, type-checked).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const SUBSYSTEMS = ['iommu-dma', 'hmm', 'rdma-umem-odp', 'vfio-mlx5', 'nvme-pci', 'block-rq-dma', 'dmabuf'];

/** A subsystem package may import only @dmakit/dma-core (DESIGN.md section 1); its own tests import its own surface. */
const subsystemBoundary = SUBSYSTEMS.map((pkg) => ({
  files: [`packages/${pkg}/src/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          {
            regex: `^@dmakit/(?!dma-core$|${pkg}$)`,
            message: 'A subsystem package may import only @dmakit/dma-core; declare a contract in dma-core/src/contracts instead.',
          },
          { regex: '^\\.\\./\\.\\./', message: 'Do not reach into another package by relative path.' },
        ],
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/coverage/**', '**/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-exports': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // Bit manipulation on addresses is the domain; these rules fight it.
      'no-bitwise': 'off',
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
      'no-restricted-imports': ['error', { patterns: [{ regex: '^@dmakit/[^/]+/src', message: 'Import the package surface, not its src.' }] }],
    },
  },
  ...subsystemBoundary,
  {
    files: ['**/*.test.ts', '**/*.bench.ts', 'tools/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
