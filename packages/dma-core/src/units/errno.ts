// kernel: include/uapi/asm-generic/errno-base.h, include/uapi/asm-generic/errno.h
/** Kernel errno values. Calls that return an errno in the kernel return `-Errno.X` here. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  EDEADLK: 35,
  ENOTSUPP: 524,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
  EOVERFLOW: 75,
  EREMOTEIO: 121,
  ENOLINK: 67,
  ECANCELED: 125,
} as const;
/** Name of an errno, e.g. 'ENOMEM' (kernel: include/uapi/asm-generic/errno-base.h, errno.h). */
export type ErrnoName = keyof typeof Errno;
/** Numeric value of an errno (positive; calls return it negated, as in the kernel). */
export type ErrnoValue = (typeof Errno)[ErrnoName];

const NAMES = new Map<number, ErrnoName>(Object.entries(Errno).map(([k, v]) => [v, k as ErrnoName]));

/** `-ENOMEM` → `"ENOMEM"`; non-errno values → `String(value)`. */
export function errnoName(value: number): string {
  return NAMES.get(Math.abs(value)) ?? String(value);
}

/** `IS_ERR_VALUE`-style check for a negative errno return. */
export function isErrno(value: number): boolean {
  return value < 0 && NAMES.has(-value);
}
