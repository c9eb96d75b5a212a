// Recognising the layers of a nydus image from the labels containerd sends
// with Prepare (formats.md §1.5-1.6): data blob layers are committed without
// being downloaded; the bootstrap layer is unpacked as usual; a container's
// writable snapshot on top gets EROFS over fscache as its lower layer.
import fs from 'node:fs';
import path from 'node:path';
import type { Labels } from './info';

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

/** A committed snapshot holds a nydus bootstrap if containerd unpacked one into it. */
export function bootstrapIn(upperDir: string): string | null {
  const p = path.join(upperDir, BOOTSTRAP_IN_LAYER);
  return fs.existsSync(p) ? p : null;
}

export interface ImageRef {
  host: string;
  repository: string;
  /** tag or digest, as given */
  reference: string;
}

/** Parses "host[:port]/repo/path[:tag|@digest]" the way containerd's reference docker does, Docker Hub included. */
export function parseImageRef(ref: string): ImageRef {
  let rest = ref;
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at >= 0) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  const slash = rest.indexOf('/');
  const first = slash < 0 ? '' : rest.slice(0, slash);
  const isHost = first.includes('.') || first.includes(':') || first === 'localhost';
  let host = isHost ? first : 'docker.io';
  let repository = isHost ? rest.slice(slash + 1) : rest;
  if (host === 'docker.io' && !repository.includes('/')) repository = `library/${repository}`;
  if (host === 'index.docker.io') host = 'docker.io';
  if (!repository || !/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(repository)) {
    throw new Error(`"${ref}" is not a valid image reference`);
  }
  return { host, repository, reference };
}
