// kernel: dev_warn / dev_WARN_ONCE lines printed by kernel/dma/*.c
import type { Device } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';

const MAX_LINES = 512;
const logs = new WeakMap<DeviceHost, string[]>();

/** Record a kernel-log line ("dev: message") for the device's machine (bounded, oldest dropped). */
export function dmaWarn(dev: Device, message: string): void {
  let log = logs.get(dev.host);
  if (log === undefined) {
    log = [];
    logs.set(dev.host, log);
  }
  if (log.length >= MAX_LINES) log.shift();
  log.push(`${dev.name}: ${message}`);
}

/** The DMA layer's kernel-log lines for a machine (WARNs that are not dma-debug reports). */
export function dmaKernelLog(host: DeviceHost): readonly string[] {
  return logs.get(host) ?? [];
}
