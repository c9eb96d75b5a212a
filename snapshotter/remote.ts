// Recognising the layers of a nydus image from the labels containerd sends
// with Prepare (formats.md §1.5-1.6): data blob layers are committed without
// being downloaded; the bootstrap layer is unpacked as usual; a container's
// writable snapshot on top gets EROFS over fscache as its lower layer.
import fs from 'node:fs';
import path from 'node:path';
import type { Labels } from './storage/info';

export const LABEL = {
  /** the chainID containerd wants the layer committed as */
  snapshotRef: 'containerd.io/snapshot.ref',
  imageRef: 'containerd.io/snapshot/cri.image-ref',
  layerDigest: 'containerd.io/snapshot/cri.layer-digest',
  manifestDigest: 'containerd.io/snapshot/cri.manifest-digest',
  imageLayers: 'containerd.io/snapshot/cri.image-layers',
  nydusBlob: 'containerd.io/snapshot/nydus-blob',
  nydusBootstrap: 'containerd.io/snapshot/nydus-bootstrap',
  nydusFsVersion: 'containerd.io/snapshot/nydus-fs-version',
} as const;

/** Where containerd unpacks the bootstrap inside the bootstrap layer's snapshot. */
export const BOOTSTRAP_IN_LAYER = path.join('image', 'image.boot');

export type NydusLayer = 'blob' | 'bootstrap' | null;

export function nydusLayer(labels: Labels): NydusLayer {
  if (labels[LABEL.nydusBlob] === 'true') return 'blob';
  if (labels[LABEL.nydusBootstrap] === 'true') return 'bootstrap';
  return null;
}

/**
 * Why a nydus blob layer cannot be committed remotely (and containerd must
 * download it), or null if it can. Only RAFS v6 (EROFS) images can be
 * mounted through fscache.
 */
export function remoteRefusal(labels: Labels, fscache: boolean): string | null {
  if (!fscache) return 'fscache is off';
  if (!labels[LABEL.snapshotRef]) return `containerd sent no ${LABEL.snapshotRef} label`;
  const v = labels[LABEL.nydusFsVersion];
  if (v !== undefined && v !== '6') return `RAFS v${v} image: only v6 (EROFS) can be mounted through fscache`;
  return null;
}

/** A committed snapshot holds a nydus bootstrap if containerd unpacked one into it. */
export function bootstrapIn(upperDir: string): string | null {
  const p = path.join(upperDir, BOOTSTRAP_IN_LAYER);
  return fs.existsSync(p) ? p : null;
}
