// Recognising the layers of a nydus image from the labels containerd sends
// with Prepare (formats.md §1.5-1.6): data blob layers are committed without
// being downloaded, or refused when they cannot be located; the bootstrap
// layer is unpacked as usual; a container's
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

/** Why a nydus blob layer is refused: a bounded token (metrics) and the message containerd shows. */
export interface Refusal {
  reason: 'no_lazy_backend' | 'no_snapshot_ref' | 'no_image_ref' | 'rafs_version';
  message: string;
}

/**
 * Why a nydus data blob layer cannot be committed remotely, saying what to
 * change; null if it can. There is no other way to handle such a layer: a
 * nydus blob is not a tar, so containerd cannot unpack it ("no processor for
 * media-type"), and a layer without a location would give a container
 * without its files. So a refusal fails the pull at once, with this message.
 */
export function remoteRefusal(labels: Labels, fscache: boolean): Refusal | null {
  if (!fscache) return { reason: 'no_lazy_backend', message: 'lazysnapd serves no nydus images on this node (fscache.enabled = false, or a kernel without EROFS; lazysnapd logs why at start)' };
  if (!labels[LABEL.snapshotRef]) return { reason: 'no_snapshot_ref', message: `containerd sent no ${LABEL.snapshotRef} label` };
  if (!labels[LABEL.imageRef]) {
    return {
      reason: 'no_image_ref',
      message: `containerd sent no ${LABEL.imageRef} label, so the layer's blobs cannot be located. ` +
        'containerd 2.x: add exports = { enable_remote_snapshot_annotations = "true" } to [proxy_plugins.lazysnap]; ' +
        'CRI: set disable_snapshot_annotations = false; ctr on 1.6/1.7: pull with `lazysnap pull`',
    };
  }
  const v = labels[LABEL.nydusFsVersion];
  if (v !== undefined && v !== '6') return { reason: 'rafs_version', message: `RAFS v${v} image: only v6 (EROFS) can be mounted through fscache` };
  return null;
}

/** A committed snapshot holds a nydus bootstrap if containerd unpacked one into it. */
export function bootstrapIn(upperDir: string): string | null {
  const p = path.join(upperDir, BOOTSTRAP_IN_LAYER);
  return fs.existsSync(p) ? p : null;
}
