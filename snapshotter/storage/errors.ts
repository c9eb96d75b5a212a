// Errors that cross the gRPC boundary. containerd's errdefs.FromGRPC maps the
// status code back to its own error kinds, so the code is the contract and the
// message is for humans.
import { status } from '@grpc/grpc-js';
import { excerpt } from '../../log/excerpt';

export { excerpt };

export class SnapshotError extends Error {
  constructor(readonly code: status, message: string) {
    super(message);
    this.name = 'SnapshotError';
  }
}

export const notFound = (msg: string) => new SnapshotError(status.NOT_FOUND, `${msg}: not found`);
export const alreadyExists = (msg: string) => new SnapshotError(status.ALREADY_EXISTS, `${msg}: already exists`);
export const invalidArgument = (msg: string) => new SnapshotError(status.INVALID_ARGUMENT, `${msg}: invalid argument`);
export const failedPrecondition = (msg: string) =>
  new SnapshotError(status.FAILED_PRECONDITION, `${msg}: failed precondition`);
export const unavailable = (msg: string) => new SnapshotError(status.UNAVAILABLE, `${msg}: unavailable`);

/** The gRPC code for any thrown value; unknown errors become UNKNOWN. */
export function codeOf(err: unknown): status {
  return err instanceof SnapshotError ? err.code : status.UNKNOWN;
}

/**
 * The message a status carries. Messages quote user strings through
 * excerpt(); this bounds the whole, whatever threw it: grpc-message is
 * percent-encoded (up to 9 bytes a character) and clients refuse trailers
 * past a few KiB (node's HTTP/2: 64 KiB for all headers), failing the call.
 */
export const MAX_DETAILS_CHARS = 512;
export function detailsOf(err: unknown): string {
  return excerpt(err instanceof Error ? err.message : String(err), MAX_DETAILS_CHARS);
}
