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

export function nowUs(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}
