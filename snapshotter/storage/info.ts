// The snapshot model shared by storage, the snapshotter and the gRPC layer.

/** containerd.services.snapshots.v1.Kind; the numbers are the wire values. */
export enum Kind {
  Unknown = 0,
  View = 1,
  Active = 2,
  Committed = 3,
}

export const kindName: Record<Kind, string> = {
  [Kind.Unknown]: 'unknown',
  [Kind.View]: 'view',
  [Kind.Active]: 'active',
  [Kind.Committed]: 'committed',
};

export type Labels = Record<string, string>;

/** snapshots.Info: what Stat, List and Update return. Times are microseconds since the epoch. */
export interface Info {
  name: string;
  parent: string;
  kind: Kind;
  createdUs: number;
  updatedUs: number;
  labels: Labels;
}

/** A snapshot as the snapshotter sees it: its directory id and its ancestors, nearest first. */
export interface Snapshot {
  id: number;
  kind: Kind;
  parentIds: number[];
}

export interface Usage {
  size: number;
  inodes: number;
}

/** containerd's limit on one label (snapshots/snapshotter.go, labels.Validate). */
export const MAX_LABEL_BYTES = 4096;

/**
 * All the labels of one snapshot, each counted as its key, its value and
 * LABEL_OVERHEAD_BYTES (more than its protobuf framing). containerd has no
 * such bound, but Update merges labels: without one, a snapshot could grow
 * until no Stat or List message could carry it. containerd's own labels
 * (CRI's are cut at 4 KiB each) come to a few KiB.
 */
export const MAX_LABELS_BYTES = 1 << 20;
export const LABEL_OVERHEAD_BYTES = 16;

/**
 * Keys and commit names. containerd sets no hard limit, but its keys are
 * "<namespace>/<n>/<chainID>" or "…/extract-<nonce> <chainID>", under 200
 * bytes. 4 KiB is far above them and keeps every message and List batch
 * that carries one small. Only a new snapshot is refused: a lookup of a
 * longer key answers NotFound, as there can be no such snapshot, and
 * NotFound is what containerd's callers test for.
 */
export const MAX_KEY_BYTES = 4096;

export function nowUs(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}
