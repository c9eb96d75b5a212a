// What `lazysnap pull` asks of containerd, worked out from the manifest and
// the config alone: the chain of snapshots, the labels each Prepare carries
// (the ones CRI's image service sends with remote-snapshot annotations on),
// which layers lazysnapd serves remotely, and the GC labels that keep the
// image's content and snapshots alive once the pull's lease is gone.
import { createHash } from 'node:crypto';
import type { Descriptor, ImageManifest } from '../registry/manifest';
import { LABEL } from '../snapshotter/remote';

/** Descriptor annotations with this prefix are passed to the snapshotter as labels. */
const SNAPSHOT_LABEL_PREFIX = 'containerd.io/snapshot/';

export interface LayerStep {
  layer: Descriptor;
  diffId: string;
  chainId: string;
  /** '' for the base layer */
  parent: string;
  /** a nydus data blob: lazysnapd commits it without content (AlreadyExists) */
  remote: boolean;
  labels: Record<string, string>;
}

export interface UnpackPlan {
  steps: LayerStep[];
  /** the chain ID of the top layer: what `ctr run` looks up */
  top: string;
  /** layers whose content goes into containerd's content store (to be applied) */
  fetched: Descriptor[];
}

/** OCI chain IDs: the first is its diff ID, each next one sha256("<parent> <diffID>"). */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`);
  }
  return out;
}

export function planUnpack(o: { imageRef: string; manifestDigest: string; manifest: ImageManifest; diffIds: string[] }): UnpackPlan {
  const { manifest, diffIds } = o;
  if (manifest.layers.length === 0) throw new Error('the image has no layers');
  if (diffIds.length !== manifest.layers.length) {
    throw new Error(`the config lists ${diffIds.length} diff IDs for ${manifest.layers.length} layers`);
  }
  const chain = chainIds(diffIds);
  const steps = manifest.layers.map((layer, i): LayerStep => {
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(layer.annotations ?? {})) if (k.startsWith(SNAPSHOT_LABEL_PREFIX)) labels[k] = v;
    labels[LABEL.snapshotRef] = chain[i];
    labels[LABEL.imageRef] = o.imageRef;
    labels[LABEL.manifestDigest] = o.manifestDigest;
    labels[LABEL.layerDigest] = layer.digest;
    return { layer, diffId: diffIds[i], chainId: chain[i], parent: i === 0 ? '' : chain[i - 1], remote: labels[LABEL.nydusBlob] === 'true', labels };
  });
  return { steps, top: chain[chain.length - 1], fetched: steps.filter((s) => !s.remote).map((s) => s.layer) };
}

/**
 * containerd's GC follows these labels: the index to its manifest, the
 * manifest to its config and the layers it holds, the config to the top
 * snapshot (whose parents hold the rest of the chain).
 */
export function gcLabels(plan: UnpackPlan, manifest: ImageManifest, snapshotter: string) {
  const manifestLabels: Record<string, string> = { 'containerd.io/gc.ref.content.config': manifest.config.digest };
  manifest.layers.forEach((l, i) => {
    if (plan.fetched.includes(l)) manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest;
  });
  return {
    index: (manifestDigest: string) => ({ 'containerd.io/gc.ref.content.m.0': manifestDigest }),
    manifest: manifestLabels,
    config: { [`containerd.io/gc.ref.snapshot.${snapshotter}`]: plan.top },
  };
}

/** The name containerd gives the image: host/repo:tag, or host/repo@digest. */
export function imageName(ref: { host: string; repo: string; tag?: string; digest?: string }): string {
  return `${ref.host}/${ref.repo}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
}
