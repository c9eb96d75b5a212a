// `lazysnap pull REF`: a lazy pull without a kubelet, for containerd 1.6
// and 1.7, whose ctr sends no remote-snapshot labels (what `ctr-remote
// image rpull` and `soci image rpull` do for their snapshotters). Under one
// lease: the layers that must be unpacked (a nydus bootstrap, plain tar
// layers) go into containerd's content store and are applied by its diff
// service; the nydus data blob layers are prepared with the labels that let
// lazysnapd commit them remotely; then the config, the manifest (and index)
// with their GC labels, and the image record. No data blob is downloaded.
import { randomBytes } from 'node:crypto';
import type { RegistryClient } from '../registry/client';
import { MediaType, parseImageRef, type Platform } from '../registry/manifest';
import { ContainerdApi, Code, codeOf, type ApiDescriptor } from './containerd-api';
import { gcLabels, imageName, planUnpack } from './plan';

export interface PullOptions {
  ref: string;
  /** containerd's socket */
  address: string;
  namespace: string;
  snapshotter: string;
  platform: Platform;
  registry: RegistryClient;
  /** one line per step, for a terminal */
  progress?: (line: string) => void;
}

export interface PullResult {
  name: string;
  manifestDigest: string;
  layers: { digest: string; chainId: string; how: 'remote' | 'unpacked' | 'present' }[];
}

export class PullError extends Error {}

const desc = (d: { mediaType: string; digest: string; size: number }): ApiDescriptor => ({ media_type: d.mediaType, digest: d.digest, size: d.size });

export async function pullImage(o: PullOptions): Promise<PullResult> {
  const ref = parseImageRef(o.ref);
  const name = imageName(ref);
  const say = o.progress ?? (() => undefined);
  const repo = o.registry.repository(ref.host, ref.repo);
  const m = await repo.getManifest(ref.digest ?? ref.tag ?? 'latest', { platform: o.platform });
  const configRaw = await repo.fetchBlob(m.manifest.config.digest, { maxBytes: 8 << 20 });
  let diffIds: unknown;
  try {
    diffIds = (JSON.parse(configRaw.toString('utf8')) as { rootfs?: { diff_ids?: unknown } }).rootfs?.diff_ids;
  } catch {
    throw new PullError(`${name}: the image config ${m.manifest.config.digest} is not JSON`);
  }
  if (!Array.isArray(diffIds) || !diffIds.every((d) => typeof d === 'string')) {
    throw new PullError(`${name}: the image config has no rootfs.diff_ids`);
  }
  const plan = planUnpack({ imageRef: name, manifestDigest: m.digest, manifest: m.manifest, diffIds: diffIds as string[] });
  say(`${name}: manifest ${m.digest}, ${plan.steps.length} layers (${plan.steps.filter((s) => s.remote).length} served lazily)`);

  const api = new ContainerdApi(o.address, o.namespace);
  const layers: PullResult['layers'] = [];
  try {
    await api.withLease(async () => {
      for (const l of plan.fetched) {
        if (await api.hasContent(l.digest)) continue;
        say(`fetching layer ${l.digest} (${l.size} bytes)`);
        await api.putContent(l.digest, await repo.fetchBlob(l.digest, { maxBytes: 1 << 30 }), {});
      }
      const snap = api.snapshot(o.snapshotter);
      for (const s of plan.steps) {
        const done = (how: PullResult['layers'][number]['how']) => {
          layers.push({ digest: s.layer.digest, chainId: s.chainId, how });
          say(`layer ${s.layer.digest}: ${how}`);
        };
        if (await snap.stat(s.chainId)) {
          done('present');
          continue;
        }
        const key = `extract-${randomBytes(6).toString('hex')} ${s.chainId}`;
        let mounts;
        try {
          mounts = await snap.prepare(key, s.parent, s.labels);
        } catch (e) {
          // A remote snapshotter that has the layer answers AlreadyExists; containerd records it as committed.
          if (codeOf(e) === Code.ALREADY_EXISTS) {
            done(s.remote ? 'remote' : 'present');
            continue;
          }
          throw new PullError(`layer ${s.layer.digest}: ${(e as Error).message}`);
        }
        if (s.remote) {
          await snap.remove(key).catch(() => undefined);
          throw new PullError(`layer ${s.layer.digest} is a nydus data blob, but snapshotter ${o.snapshotter} prepared it ` +
            'instead of taking it remotely: is it lazysnap?');
        }
        try {
          await api.apply(desc(s.layer), mounts);
          await snap.commit(s.chainId, key, s.labels);
        } catch (e) {
          await snap.remove(key).catch(() => undefined);
          if (codeOf(e) !== Code.ALREADY_EXISTS) throw new PullError(`layer ${s.layer.digest}: ${(e as Error).message}`);
        }
        done('unpacked');
      }
      const gc = gcLabels(plan, m.manifest, o.snapshotter);
      await api.putContent(m.manifest.config.digest, configRaw, gc.config);
      const manifestType = m.mediaType || m.manifest.mediaType || MediaType.OciManifest;
      await api.putContent(m.digest, m.raw, gc.manifest);
      let target = desc({ mediaType: manifestType, digest: m.digest, size: m.raw.length });
      if (m.index) {
        const index = await repo.fetchManifest(m.index.digest);
        await api.putContent(index.digest, index.raw, gc.index(m.digest));
        target = desc({ mediaType: m.index.mediaType || MediaType.OciIndex, digest: index.digest, size: index.raw.length });
      }
      await api.putImage(name, target);
    });
  } finally {
    api.close();
  }
  return { name, manifestDigest: m.digest, layers };
}
