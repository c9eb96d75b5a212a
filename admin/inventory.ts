// What lazysnap holds, for `lazysnap status`: the images whose layers are in
// its snapshots (by the cri.image-ref label containerd sends) and how each
// is served, plus counts of the rest. Pure: snapshot infos and lazy mounts in.
import { Kind, type Info } from '../snapshotter/storage/info';
import type { FscacheImage } from '../snapshotter/storage/images';
import { LABEL, nydusLayer } from '../snapshotter/remote';

export interface ImageSummary {
  ref: string;
  /** its layers among the committed snapshots */
  layers: number;
  served: 'lazy' | 'unpacked';
  /** why, in a few words */
  why: string;
}

export interface Inventory {
  images: ImageSummary[];
  snapshots: { committed: number; active: number; view: number; nydusBlobLayers: number; withoutImageLabel: number };
}

export function inventory(infos: Info[], lazy: FscacheImage[], backend: string | null): Inventory {
  const byRef = new Map<string, Info[]>();
  const snapshots = { committed: 0, active: 0, view: 0, nydusBlobLayers: 0, withoutImageLabel: 0 };
  for (const i of infos) {
    if (i.kind === Kind.Active) snapshots.active++;
    else if (i.kind === Kind.View) snapshots.view++;
    if (i.kind !== Kind.Committed) continue;
    snapshots.committed++;
    if (nydusLayer(i.labels) === 'blob') snapshots.nydusBlobLayers++;
    const ref = i.labels[LABEL.imageRef];
    if (!ref) {
      snapshots.withoutImageLabel++;
      continue;
    }
    byRef.set(ref, [...(byRef.get(ref) ?? []), i]);
  }
  const images = [...byRef.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([ref, layers]): ImageSummary => {
    if (!layers.some((l) => nydusLayer(l.labels) !== null)) {
      return { ref, layers: layers.length, served: 'unpacked', why: 'a plain OCI image: containerd unpacked its layers, as with overlayfs' };
    }
    const mounted = lazy.find((m) => m.imageRef === ref && m.mountpoint);
    return {
      ref, layers: layers.length, served: 'lazy',
      why: mounted ? `nydus: mounted through ${backend ?? 'its backend'}, blobs fetched as read` : 'nydus: not mounted now (culled from the cache, or not started since lazysnapd started); mounts at its next container',
    };
  });
  return { images, snapshots };
}
