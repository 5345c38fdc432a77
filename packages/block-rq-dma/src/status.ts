// kernel: block/blk-core.c (blk_errors[], errno_to_blk_status, blk_status_to_errno)
import { BlkStatus, Errno } from '@dmakit/dma-core';

const NAMES: Record<number, string> = {
  [BlkStatus.OK]: 'OK',
  [BlkStatus.NOTSUPP]: 'NOTSUPP',
  [BlkStatus.TIMEOUT]: 'TIMEOUT',
  [BlkStatus.NOSPC]: 'NOSPC',
  [BlkStatus.TRANSPORT]: 'TRANSPORT',
  [BlkStatus.TARGET]: 'TARGET',
  [BlkStatus.RESV_CONFLICT]: 'RESV_CONFLICT',
  [BlkStatus.MEDIUM]: 'MEDIUM',
  [BlkStatus.PROTECTION]: 'PROTECTION',
  [BlkStatus.RESOURCE]: 'RESOURCE',
  [BlkStatus.IOERR]: 'IOERR',
  [BlkStatus.DM_REQUEUE]: 'DM_REQUEUE',
  [BlkStatus.AGAIN]: 'AGAIN',
  [BlkStatus.DEV_RESOURCE]: 'DEV_RESOURCE',
  [BlkStatus.ZONE_OPEN_RESOURCE]: 'ZONE_OPEN_RESOURCE',
  [BlkStatus.ZONE_ACTIVE_RESOURCE]: 'ZONE_ACTIVE_RESOURCE',
  [BlkStatus.OFFLINE]: 'OFFLINE',
  [BlkStatus.DURATION_LIMIT]: 'DURATION_LIMIT',
  [BlkStatus.INVAL]: 'INVAL',
};

/** `blk_status_to_str`: "RESOURCE", "IOERR", ... */
export function blkStatusName(status: number): string {
  return NAMES[status] ?? `UNKNOWN(${status})`;
}

/** `errno_to_blk_status(errno)`: 0 → OK, the table's errnos, anything else → IOERR. */
export function errnoToBlkStatus(errno: number): BlkStatus {
  switch (-errno) {
    case 0:
      return BlkStatus.OK;
    case Errno.EOPNOTSUPP:
      return BlkStatus.NOTSUPP;
    case Errno.ETIMEDOUT:
      return BlkStatus.TIMEOUT;
    case Errno.ENOSPC:
      return BlkStatus.NOSPC;
    case Errno.ENOLINK:
      return BlkStatus.TRANSPORT;
    case Errno.EREMOTEIO:
      return BlkStatus.TARGET;
    case Errno.ENOMEM:
      return BlkStatus.RESOURCE;
    case Errno.EAGAIN:
      return BlkStatus.AGAIN;
    case Errno.EBUSY:
      return BlkStatus.DEV_RESOURCE;
    case Errno.ENODEV:
      return BlkStatus.OFFLINE;
    case Errno.EINVAL:
      return BlkStatus.INVAL;
    default:
      return BlkStatus.IOERR;
  }
}

/** `blk_status_to_errno(status)`: the negative errno a bio completes with. */
export function blkStatusToErrno(status: BlkStatus): number {
  switch (status) {
    case BlkStatus.OK:
      return 0;
    case BlkStatus.NOTSUPP:
      return -Errno.EOPNOTSUPP;
    case BlkStatus.TIMEOUT:
      return -Errno.ETIMEDOUT;
    case BlkStatus.NOSPC:
      return -Errno.ENOSPC;
    case BlkStatus.TRANSPORT:
      return -Errno.ENOLINK;
    case BlkStatus.TARGET:
      return -Errno.EREMOTEIO;
    case BlkStatus.RESOURCE:
      return -Errno.ENOMEM;
    case BlkStatus.AGAIN:
      return -Errno.EAGAIN;
    case BlkStatus.DEV_RESOURCE:
      return -Errno.EBUSY;
    case BlkStatus.OFFLINE:
      return -Errno.ENODEV;
    case BlkStatus.INVAL:
      return -Errno.EINVAL;
    case BlkStatus.RESV_CONFLICT:
    case BlkStatus.MEDIUM:
    case BlkStatus.PROTECTION:
    case BlkStatus.IOERR:
    case BlkStatus.DM_REQUEUE:
    case BlkStatus.ZONE_OPEN_RESOURCE:
    case BlkStatus.ZONE_ACTIVE_RESOURCE:
    case BlkStatus.DURATION_LIMIT:
      return -Errno.EIO;
  }
}
