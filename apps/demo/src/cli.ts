#!/usr/bin/env node
/**
 * dmakit demo CLI: `pnpm demo [stack] [options]`. Builds a whole device stack on a simulated
 * machine, runs real DMA flows through it, verifies the bytes and prints what happened.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createMachine, SZ_1G } from '@dmakit/dma-core';
import type { Machine } from '@dmakit/dma-core';
import { formatDirect } from './format.js';
import { runDirectStack } from './stacks/direct.js';
import { formatDmabufP2p, runDmabufP2pStack } from './stacks/dmabufP2p.js';
import { runNvmePremappedCli } from './stacks/dmabufP2pNvmePremapped.js';
import { NVME_CLI_OPTIONS, NVME_HELP, runNvmeCli } from './stacks/nvmeCli.js';
import { RDMA_ODP_CLI_OPTIONS, RDMA_ODP_HELP, runRdmaOdpCli } from './stacks/rdmaOdp.js';
import { formatGpuSvm, runGpuSvmStack } from './stacks/gpuSvm.js';
import { VFIO_MIGRATION_HELP, runVfioMigrationCli } from './stacks/vfioMigration.js';
import { recordTrace } from './traceFile.js';

const HELP = `dmakit demo: run a simulated DMA stack and verify every byte.

Usage: pnpm demo [stack] [options]

Stacks:
  direct        A device without an IOMMU: streaming DMA, swiotlb bouncing for a 32-bit
                device above 4 GiB, a coherent buffer, and the two-step IOVA API's fallback.
                (default)
${NVME_HELP}                --premapped: 4 KiB random reads into a pre-mapped dma-buf under strict, lazy
                and no IOMMU, next to per-I/O mapping (simulated IOPS, IOTLB invalidations/IO).
${RDMA_ODP_HELP}${VFIO_MIGRATION_HELP}
  dmabuf-p2p    GPU memory shared through dma-buf: an NVMe drive writes it peer-to-peer (bus
                addresses), an RDMA NIC reads it through the host bridge (IOVA + MMIO), the GPU
                evicts and restores it under traffic, a VFIO BAR export is revoked and restored,
                and a host bridge off the P2P allow-list is refused. IOMMU strict by default.
  gpu-svm       A GPU sharing a process's memory through HMM: it faults system pages in (one
                IOVA window per 2 MiB), migrates hot pages to device-private memory, the CPU
                touches one and it migrates back; DMA_MAPPED flags checked. IOMMU strict default.
Options:
  --json              Print the result as JSON instead of a table.
  --trace FILE        Write a Chrome trace (JSON; open it in https://ui.perfetto.dev).
  --seed N            Seed for every random choice (default 1).
  --iommu MODE        strict, lazy or off: the IOMMU the devices sit behind (default: off for
                      direct and nvme; strict for the stacks that need one).
  --verify            Verify every byte (always on for the direct stack).
  -h, --help          Show this help.

Exit status: 0 when every transfer verified, 1 when one did not, 2 on bad usage.
`;

function main(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        json: { type: 'boolean', default: false },
        trace: { type: 'string' },
        seed: { type: 'string', default: '1' },
        verify: { type: 'boolean', default: false },
        iommu: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        ...NVME_CLI_OPTIONS,
        premapped: { type: 'boolean', default: false },
        ...RDMA_ODP_CLI_OPTIONS,
      },
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const stack = positionals[0] ?? 'direct';
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    process.stderr.write(`--seed must be a non-negative integer, got ${values.seed}\n`);
    return 2;
  }
  const given = values.iommu;
  if (given !== undefined && given !== 'strict' && given !== 'lazy' && given !== 'off') {
    process.stderr.write(`--iommu must be strict, lazy or off, got ${given}\n`);
    return 2;
  }
  const iommu = given ?? 'off';
  const iommuGiven = given !== undefined;
  /** Build the machine, record a trace if asked, run the stack, print it; exit 0 iff verified. */
  const runStack = <R extends { verified: boolean }>(ramBytes: number, run: (machine: Machine) => R, format: (r: R) => string): number => {
    const machine = createMachine({ ramBytes, seed, dmaDebug: 'warn' });
    const stopTrace = values.trace !== undefined ? recordTrace(machine) : undefined;
    const result = run(machine);
    if (stopTrace !== undefined && values.trace !== undefined) {
      const n = stopTrace(values.trace, writeFileSync);
      if (!values.json) process.stdout.write(`trace: ${n} events written to ${values.trace}\n`);
    }
    process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : format(result));
    return result.verified ? 0 : 1;
  };
  switch (stack) {
    case 'direct':
      return runStack(8 * SZ_1G, (machine) => runDirectStack({ machine, iommu }), formatDirect);
    case 'dmabuf-p2p':
      // The IOVA-with-MMIO path needs an IOMMU: strict unless --iommu was given.
      return runStack(SZ_1G, (machine) => runDmabufP2pStack({ machine, iommu: given ?? 'strict' }), formatDmabufP2p);
    case 'gpu-svm':
      return runStack(4 * SZ_1G, (machine) => runGpuSvmStack({ machine, iommu: given ?? 'strict' }), formatGpuSvm);
    case 'nvme':
      // --premapped: the same 4 KiB random reads into a registered dma-buf, strict/lazy/off.
      if (values.premapped) return runNvmePremappedCli(values, seed);
      return runNvmeCli(values, seed, iommu);
    case 'rdma-odp':
      return runRdmaOdpCli(values, seed, iommu, iommuGiven);
    case 'vfio-migration':
      return runVfioMigrationCli(values, seed, iommu, iommuGiven);
    default:
      process.stderr.write(`unknown stack "${stack}"\n\n${HELP}`);
      return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
