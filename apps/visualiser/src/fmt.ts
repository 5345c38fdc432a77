/** Number formatting for labels: addresses in hex, sizes in binary units, simulated time. */
export function hex(n: number): string {
  return Number.isFinite(n) && n >= 0 ? `0x${Math.floor(n).toString(16)}` : String(n);
}

export function int(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 || u === 0 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2).replace(/\.0+$/, '')} ${units[u] ?? ''}`;
}

/** Simulated ns → "812 ns", "12.4 µs", "3.21 ms", "1.50 s". */
export function simTime(ns: number): string {
  if (!Number.isFinite(ns)) return '–';
  const a = Math.abs(ns);
  if (a < 1e3) return `${Math.round(ns)} ns`;
  if (a < 1e6) return `${(ns / 1e3).toPrecision(3)} µs`;
  if (a < 1e9) return `${(ns / 1e6).toPrecision(3)} ms`;
  return `${(ns / 1e9).toPrecision(3)} s`;
}

export function ratio(a: number, b: number, digits = 2): string {
  return b > 0 ? (a / b).toFixed(digits) : '–';
}
