// kernel: drivers/pci/probe.c
// SKELETON (the bus room owner replaces it with the full topology and P2PDMA).
import { Device } from '../device/device.js';
import type { DeviceOptions } from '../device/device.js';
import type { DeviceHost } from '../device/host.js';

export type AddDeviceOptions = DeviceOptions;

export class PciTopology {
  readonly #host: DeviceHost;
  readonly devices: Device[] = [];

  constructor(host: DeviceHost) {
    this.#host = host;
  }

  addDevice(opts: AddDeviceOptions): Device {
    if (this.devices.some((d) => d.name === opts.name)) throw new Error(`device ${opts.name} already exists`);
    const dev = new Device(this.#host, opts);
    this.devices.push(dev);
    return dev;
  }

  /** PCIe peer routing for the device port (BUS_ADDR). */
  p2pRoute(_dev: Device, _dmaAddr: number): number {
    return -1;
  }
}
