// `lazysnap convert`: an OCI image → a nydus RAFS v6 image. Each layer is
// streamed once into its data blob and a layer tree; the trees are merged with
// overlay semantics into one bootstrap; then the bootstrap layer, config and
// manifest are written and everything is published to DST in one step.
import fs from 'node:fs/promises';
import path from 'node:path';
import { BlobResult, BlobWriter, HOLE } from '../blob/writer';
import { encodeChunkIndex, encodeHoleIndex, writeRafsBootstrap } from '../rafs/writer';
import type { WriterNode } from '../erofs/writer';
import { LayerStats, applyLayer } from './layer';
import {
  BlobLayer,
  blobDescriptor,
  bootstrapDescriptor,
  bootstrapLayer,
  manifestDescriptor,
  nydusConfig,
  nydusManifest,
} from './manifest';
import { emptyRoot, mergeLayer } from './merge';
import { Descriptor, ImageDest, ImageError, ImageSource, LayoutDest, LayoutSource, parseLayoutRef, parsePlatform } from './oci';
import { Registries, RegistryDest, RegistryOptions, RegistrySource, parseDockerRef } from './docker';
import { LayerBlob, LayerTree, Node } from './tree';

import { DEFAULT_CHUNK_SIZE, DEFAULT_JOBS } from './defaults';

export { DEFAULT_CHUNK_SIZE, DEFAULT_JOBS };

export interface ConvertOptions extends RegistryOptions {
  chunkSize?: number;
  /** zstd level for chunks */
  level?: number;
  /** batches of chunks (up to a chunk size of bytes each) compressing at once on the threadpool */
  jobs?: number;
  /** os/arch[/variant] to pick from an index */
  platform?: string;
  /** staging directory root for registry destinations */
  tmpDir?: string;
  /**
   * Paths to fetch first, in order (`lazysnap trace IMAGE --paths`): written
   * into the bootstrap's prefetch table, so a node that never ran the image
   * starts it as one that did. Paths missing from the image are skipped (warned).
   */
  prefetchPaths?: string[];
  warn?(msg: string): void;
  /** called as each layer starts, progresses and ends */
  onLayerStart?(i: number, n: number, d: Descriptor): void;
  onLayerBytes?(i: number, bytes: number): void;
  onLayerDone?(i: number, n: number, d: Descriptor, r: LayerReport): void;
}

export interface LayerReport {
  source: Descriptor;
  stats: LayerStats;
  blob: BlobResult | null;
  /** blob index this layer's data went to (-1: no data) */
  blobIndex: number;
  seconds: number;
}

export interface ConvertResult {
  source: string;
  dest: string;
  manifest: Descriptor;
  layers: LayerReport[];
  blobs: Descriptor[];
  bootstrap: Descriptor;
  bootstrapSize: number;
  inputBytes: number;
  uncompressedBytes: number;
  seconds: number;
}

/** The registry hosts SRC and DST name (--user's credentials go to these). */
function registryHosts(...refs: string[]): string[] {
  return refs.filter((s) => !parseLayoutRef(s)).map((s) => parseDockerRef(s)?.ref.host).filter((h): h is string => !!h);
}

export function openSource(s: string, opts: ConvertOptions, registries = new Registries(opts, registryHosts(s))): ImageSource {
  const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
  const layout = parseLayoutRef(s);
  if (layout) return new LayoutSource(layout, platform);
  const reg = parseDockerRef(s);
  if (reg) return new RegistrySource(reg, registries, platform);
  throw new ImageError(`cannot tell what "${s}" is: use oci:DIR[:TAG], a path, or docker://HOST/REPO:TAG`);
}

export function openDest(s: string, opts: ConvertOptions, registries = new Registries(opts, registryHosts(s))): ImageDest {
  const layout = parseLayoutRef(s);
  if (layout) return new LayoutDest(layout);
  const reg = parseDockerRef(s);
  if (reg) return new RegistryDest(reg, registries, opts, opts.tmpDir);
  throw new ImageError(`cannot tell what "${s}" is: use oci:DIR[:TAG], a path, or docker://HOST/REPO:TAG`);
}

/** The 8-byte chunk indexes of a file, from its layer blob's chunk offsets. */
function chunkIndexes(node: WriterNode): Buffer {
  const n = node as Node;
  const chunks = n.data?.chunks ?? new Int32Array(0);
  const out = Buffer.alloc(chunks.length * 8);
  chunks.forEach((ci, i) => {
    if (ci === HOLE) encodeHoleIndex(out, i * 8);
    else {
      const b = n.data!.blob!;
      encodeChunkIndex(out, i * 8, b.index, ci, b.uOffsets[ci] / 4096);
    }
  });
  return out;
}

function seconds(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function convert(src: string, dst: string, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const t0 = process.hrtime.bigint();
  const registries = new Registries(opts, registryHosts(src, dst));
  try {
    return await convertWith(openSource(src, opts, registries), openDest(dst, opts, registries), opts, t0);
  } finally {
    await registries.close();
  }
}

async function convertWith(source: ImageSource, dest: ImageDest, opts: ConvertOptions, t0: bigint): Promise<ConvertResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`));
  const image = await source.resolve();
  const layers = image.manifest.layers;
  if (layers.length === 0) throw new ImageError(`${source.name}: the image has no layers`);
  if (image.config.rootfs.diff_ids.length !== layers.length) {
    warn(`${source.name}: config lists ${image.config.rootfs.diff_ids.length} diff_ids for ${layers.length} layers; not checking them`);
  }
  const jobs = opts.jobs ?? DEFAULT_JOBS;
  if (!Number.isInteger(jobs) || jobs < 1) throw new RangeError(`jobs must be a positive integer, not ${jobs}`);
  const stage = await dest.stage();
  const blobDir = path.join(stage, 'blobs', 'sha256');
  try {
    const merged = emptyRoot();
    const reports: LayerReport[] = [];
    const blobs: BlobResult[] = [];
    for (let i = 0; i < layers.length; i++) {
      const d = layers[i];
      const lt0 = process.hrtime.bigint();
      opts.onLayerStart?.(i, layers.length, d);
      const layerBlob: LayerBlob = { index: -1, uOffsets: [] };
      const writer = await BlobWriter.create(path.join(blobDir, `.partial-${i}`), { chunkSize, level: opts.level, inflight: jobs });
      const tree = new LayerTree(merged);
      let stats: LayerStats;
      let blob: BlobResult | null;
      try {
        stats = await applyLayer(d, await source.blob(d), tree, writer, layerBlob, chunkSize, {
          diffId: image.config.rootfs.diff_ids.length === layers.length ? image.config.rootfs.diff_ids[i] : undefined,
          warn,
          onBytes: (n) => opts.onLayerBytes?.(i, n),
        });
        blob = await writer.finish();
      } catch (e) {
        await writer.abort();
        throw e;
      }
      mergeLayer(merged, tree.root);
      let blobIndex = -1;
      if (blob) {
        // identical layers give identical blobs: one device serves both
        blobIndex = blobs.findIndex((b) => b.id === blob!.id);
        if (blobIndex < 0) {
          blobIndex = blobs.length;
          blob.entry.blobIndex = blobIndex;
          blobs.push(blob);
          blob.path = path.join(blobDir, blob.id);
        }
        await fs.rename(path.join(blobDir, `.partial-${i}`), path.join(blobDir, blob.id));
        layerBlob.index = blobIndex;
        layerBlob.uOffsets = blob.uOffsets;
      }
      const report: LayerReport = { source: d, stats, blob, blobIndex, seconds: seconds(lt0) };
      reports.push(report);
      opts.onLayerDone?.(i, layers.length, d, report);
    }
    if (blobs.length > 254) throw new ImageError(`${blobs.length} data blobs: nydus allows at most 254`);

    const boot = writeRafsBootstrap(merged, {
      prefetch: prefetchNodes(merged, opts.prefetchPaths ?? [], warn),
      chunkSize,
      blobs: blobs.map((b) => b.entry),
      chunkIndexes,
      ...buildTime(image.config),
    });
    const bootLayer = bootstrapLayer(boot);
    const blobLayers: BlobLayer[] = blobs.map((b) => ({ id: b.id, size: b.entry.compressedSize }));
    const config = nydusConfig(image.config, blobLayers, bootLayer);
    const manifest = nydusManifest(config, blobLayers, bootLayer);
    const tag = dest instanceof LayoutDest ? (dest.ref.tag ?? 'latest') : undefined;
    const mdesc = manifestDescriptor(manifest, image.platform, tag);
    const configDesc = JSON.parse(manifest.toString()).config as Descriptor;
    await fs.writeFile(path.join(blobDir, configDesc.digest.slice(7)), config);
    await fs.writeFile(path.join(blobDir, bootLayer.digest.slice(7)), bootLayer.bytes);
    await fs.writeFile(path.join(blobDir, mdesc.digest.slice(7)), manifest);
    const pushed = [...blobLayers.map(blobDescriptor), bootstrapDescriptor(bootLayer), configDesc];
    await dest.commit(pushed, manifest, mdesc);
    return {
      source: source.name,
      dest: dest.name,
      manifest: mdesc,
      layers: reports,
      blobs: blobLayers.map(blobDescriptor),
      bootstrap: bootstrapDescriptor(bootLayer),
      bootstrapSize: boot.length,
      inputBytes: reports.reduce((n, r) => n + r.stats.compressedBytes, 0),
      uncompressedBytes: reports.reduce((n, r) => n + r.stats.uncompressedBytes, 0),
      seconds: seconds(t0),
    };
  } catch (e) {
    await dest.abort();
    throw e;
  }
}

/** build_time from the config's "created" (deterministic: derived from the input), else 0. */
function buildTime(config: { created?: unknown }): { buildTime: number; buildTimeNsec: number } {
  if (typeof config.created !== 'string') return { buildTime: 0, buildTimeNsec: 0 };
  const m = /^(.*?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(config.created);
  const ms = Date.parse(m ? m[1] + m[3] : config.created);
  if (!Number.isFinite(ms) || ms < 0) return { buildTime: 0, buildTimeNsec: 0 };
  const nsec = m?.[2] ? parseInt(m[2].slice(0, 9).padEnd(9, '0'), 10) : 0;
  return { buildTime: Math.floor(ms / 1000), buildTimeNsec: nsec };
}

/** The tree's nodes at `paths` (absolute, as `lazysnap trace --paths` prints them), once each, in order. */
export function prefetchNodes(root: WriterNode, paths: string[], warn: (msg: string) => void): WriterNode[] {
  const out: WriterNode[] = [];
  const seen = new Set<WriterNode>();
  let missing = 0;
  for (const p of paths) {
    let n: WriterNode | undefined = root;
    for (const part of p.split('/').filter(Boolean)) n = n?.children?.get(Buffer.from(part, 'utf8').toString('latin1'));
    if (!n || (n.kind !== 'reg' && n.kind !== 'dir')) {
      missing++;
      continue;
    }
    if (!seen.has(n)) {
      seen.add(n);
      out.push(n);
    }
  }
  if (missing) warn(`${missing} of ${paths.length} prefetch paths are not files or directories of the image; skipped`);
  return out;
}
