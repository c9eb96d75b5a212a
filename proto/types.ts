// Wire types of containerd.services.snapshots.v1 and containerd.types, as
// @grpc/proto-loader hands them over (keepCase, longs as strings, enums as numbers).

/** containerd.types.Mount */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface Timestamp {
  seconds: string | number;
  nanos: number;
}

/** containerd.services.snapshots.v1.Info */
export interface WireInfo {
  name: string;
  parent: string;
  kind: number;
  created_at: Timestamp | null;
  updated_at: Timestamp | null;
  labels: Record<string, string>;
}

export interface PrepareSnapshotRequest {
  snapshotter: string;
  key: string;
  parent: string;
  labels: Record<string, string>;
}
export type ViewSnapshotRequest = PrepareSnapshotRequest;
export interface MountsResponse {
  mounts: Mount[];
}
export interface KeyRequest {
  snapshotter: string;
  key: string;
}
export interface CommitSnapshotRequest {
  snapshotter: string;
  name: string;
  key: string;
  labels: Record<string, string>;
  parent: string;
}
export interface UpdateSnapshotRequest {
  snapshotter: string;
  info: WireInfo | null;
  update_mask: { paths: string[] } | null;
}
export interface ListSnapshotsRequest {
  snapshotter: string;
  filters: string[];
}
export interface ListSnapshotsResponse {
  info: WireInfo[];
}
export interface UsageResponse {
  size: string | number;
  inodes: string | number;
}
export interface CleanupRequest {
  snapshotter: string;
}

/** lazysnap.v1.Admin messages */
export interface MountRequest {
  bootstrap: string;
  mountpoint: string;
  blobs_dir: string;
  domain: string;
  fsid: string;
  image_ref: string;
}
export interface MountResponse {
  fsid: string;
  domain: string;
}
export interface UmountRequest {
  mountpoint: string;
}
export interface StatusRequest {
  brief: boolean;
}
export interface StatusResponse {
  json: string;
}
export interface TraceRequest {
  image: string;
  forget: boolean;
  load: string;
}
export interface TraceResponse {
  json: string;
}
